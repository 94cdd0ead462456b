//! Streaming: a 100 MB message must not make the process 100 MB bigger. In its own test
//! binary so that no other test moves the peak.

#![cfg(target_os = "linux")]

use std::time::SystemTime;

use samotop_core::{Envelope, MailDispatch, Peer, Recipient, SessionInfo, Transaction, trace};
use samotop_delivery::{Layout, Maildir};
use samotop_parser::{ForwardPath, MailParams, RcptParams, ReversePath};

/// A Maildir backend whose directories are made.
fn created(maildir: Maildir) -> Maildir {
    maildir.create_dirs().expect("create_dirs");
    maildir
}

/// The peak resident set size so far, in KiB (`VmHWM`).
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test]
async fn a_100_mb_message_streams_in_bounded_memory() {
    let root = tempfile::tempdir().expect("tempdir");
    let maildir = created(Maildir::new(root.path(), Layout::Single));
    let info = SessionInfo::new(Peer::Stdio, "mx.test");
    let mut env = Envelope::new(ReversePath::Null, MailParams::default(), "id".into());
    let mut tx = maildir.open(&info, &env).await.expect("open");
    let r = Recipient::new(ForwardPath::Postmaster, RcptParams::default());
    tx.add_recipient(&r).await.expect("rcpt");
    env.recipients.push(r);
    tx.begin(&info, &env).await.expect("begin");
    let headers = trace::trace_headers(&info, &env, SystemTime::now());
    tx.write(headers.as_bytes()).await.expect("trace header");

    let chunk = vec![b'z'; 65_536];
    let before = peak_kib();
    const CHUNKS: usize = 100 * 1024 * 1024 / 65_536;
    for _ in 0..CHUNKS {
        tx.write(&chunk).await.expect("chunk");
    }
    assert_eq!(tx.commit().await, vec![Ok(())]);
    let grown = peak_kib().saturating_sub(before);
    eprintln!("peak memory grew by {grown} KiB");
    assert!(
        grown < 16 * 1024,
        "peak memory grew by {grown} KiB for a 100 MiB message"
    );

    let new: Vec<_> = std::fs::read_dir(root.path().join("new"))
        .expect("new/")
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(new.len(), 1);
    let size = new[0].metadata().expect("stat").len() as usize;
    let expected = trace::return_path(&env).len() + headers.len() + CHUNKS * chunk.len();
    assert_eq!(size, expected);
}

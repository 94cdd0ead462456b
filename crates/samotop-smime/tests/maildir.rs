//! A real session into a real Maildir through `Encrypt`: what is on disk is ciphertext plus
//! the readable fields, and decrypts to exactly what the client sent (after our trace
//! fields), for DATA and for binary BDAT content.

mod common;

use common::{cert, decrypt_stored, split};
use samotop_core::{Driver, Peer, SessionConfig, SessionInfo};
use samotop_delivery::{Layout, Maildir};
use samotop_smime::{Encrypt, Keys};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn session(dispatch: Encrypt<Maildir>, script: Vec<u8>) -> String {
    let driver = Driver::new(dispatch, (), SessionConfig::default());
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let run = driver.run(server, SessionInfo::new(Peer::Stdio, "mx.test"));
    let talk = async move {
        client.write_all(&script).await.expect("write");
        let mut replies = String::new();
        client.read_to_string(&mut replies).await.expect("read");
        replies
    };
    let (_, replies) = tokio::join!(run, talk);
    replies
}

fn stored(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("new"))
        .expect("new/")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect()
}

/// The client's data after our trace fields (`Received:` and its folded lines).
fn after_trace(plain: &[u8]) -> &[u8] {
    let mut rest = plain;
    assert!(rest.starts_with(b"Received: "));
    loop {
        let nl = rest.iter().position(|b| *b == b'\n').expect("line") + 1;
        rest = &rest[nl..];
        if !rest.starts_with(b"\t") {
            return rest;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_binary_bdat_are_stored_encrypted() {
    let dir = tempfile::tempdir().expect("tmp");
    let maildir = Maildir::new(dir.path(), Layout::Single);
    let keys = Keys::new()
        .encrypt_to((*cert("p256")).clone())
        .encrypt_to((*cert("rsa2048")).clone());
    let dispatch = Encrypt::new(maildir, keys);

    let text = b"From: a@example.com\r\nSubject: eight bit\r\n\r\n\xc5\xbelu\xc5\xa5ou\xc4\x8dk\xc3\xbd \xff\r\n".to_vec();
    let binary: Vec<u8> = [
        &b"Subject: binary\r\nContent-Type: application/octet-stream\r\n\r\n"[..],
        &(0..=255u8).cycle().take(100_000).collect::<Vec<_>>(),
    ]
    .concat();
    let mut script = b"EHLO client\r\nMAIL FROM:<a@example.com> BODY=8BITMIME\r\nRCPT TO:<b@example.org>\r\nDATA\r\n".to_vec();
    script.extend_from_slice(&text);
    script.extend_from_slice(
        b".\r\nMAIL FROM:<a@example.com> BODY=BINARYMIME\r\nRCPT TO:<b@example.org>\r\n",
    );
    script.extend_from_slice(format!("BDAT {} LAST\r\n", binary.len()).as_bytes());
    script.extend_from_slice(&binary);
    script.extend_from_slice(b"QUIT\r\n");
    let replies = session(dispatch, script).await;
    assert!(
        replies.contains("BINARYMIME") && replies.contains("8BITMIME"),
        "{replies}"
    );
    assert_eq!(
        replies.matches("250 2.0.0 Message accepted").count(),
        2,
        "{replies}"
    );

    let files = stored(dir.path());
    assert_eq!(files.len(), 2);
    for (file, sent) in files.iter().zip([&text, &binary]) {
        let (header, _) = split(file);
        assert!(
            header.starts_with("Return-Path: <a@example.com>\r\nReceived: from client"),
            "{header}"
        );
        assert!(file.is_ascii(), "only 7-bit on disk");
        for key in ["p256", "rsa2048"] {
            let plain = decrypt_stored(file, key).expect(key);
            assert_eq!(after_trace(&plain), sent.as_slice(), "{key}");
        }
    }
}

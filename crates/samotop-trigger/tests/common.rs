//! Shared by the trigger tests: one transaction driven by hand, as the session would.

#![allow(dead_code)]

use samotop_core::{Envelope, MailDispatch, Outcomes, Peer, Recipient, SessionInfo, Transaction};
use samotop_parser::{ForwardPath, Host, MailParams, Mailbox, RcptParams, ReversePath};

pub fn mailbox(address: &str) -> Mailbox {
    let (local, domain) = address.rsplit_once('@').unwrap_or((address, "example.org"));
    Mailbox {
        local: local.to_string(),
        domain: Host::Domain(domain.to_string()),
    }
}

/// Opens, adds `rcpts`, begins (with `digest`), writes `data` in 1000-byte chunks, commits.
pub async fn deliver(
    dispatch: &impl MailDispatch,
    rcpts: &[&str],
    data: &[u8],
    digest: Option<[u8; 32]>,
) -> Outcomes {
    let mut info = SessionInfo::new(
        Peer::Tcp("192.0.2.7:4321".parse().expect("addr")),
        "mx.test",
    );
    info.helo = Some(Host::Domain("client.test".into()));
    let mut env = Envelope::new(
        ReversePath::Mailbox(mailbox("sender@example.com")),
        MailParams::default(),
        "s1.1".into(),
    );
    let mut tx = match dispatch.open(&info, &env).await {
        Ok(tx) => tx,
        Err(r) => return vec![Err(r); rcpts.len()],
    };
    for r in rcpts {
        let rcpt = Recipient::new(ForwardPath::Mailbox(mailbox(r)), RcptParams::default());
        tx.add_recipient(&rcpt).await.expect("rcpt");
        env.recipients.push(rcpt);
    }
    env.digest = digest;
    tx.begin(&info, &env).await.expect("begin");
    for chunk in data.chunks(1000) {
        tx.write(chunk).await.expect("write");
    }
    tx.commit().await
}

/// A reply code and its enhanced code.
pub type Code = (u16, Option<[u16; 3]>);

pub fn code(outcome: &Result<(), samotop_core::Refusal>) -> Code {
    match outcome {
        Ok(()) => (250, None),
        Err(r) => (r.code(), r.enhanced()),
    }
}

//! `Encrypt` over a capturing backend: what reaches the backend is ciphertext and the
//! readable fields only, per recipient group, decrypting to the message byte for byte.

mod common;

use common::{Capture, cert, decrypt_stored, envelope, info, recipient, split};
use samotop_core::{Capabilities, MailDispatch, Transaction, reply};
use samotop_smime::{Certificate, Encrypt, Headers, Keys, Missing};

const TRACE: &[u8] = b"Received: from client (stdio)\r\n\tby mx.test (Samotop) with ESMTP id T1;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n";
const MESSAGE: &[u8] =
    b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: the plan\r\n\
Date: Thu, 01 Jan 1970 00:00:00 +0000\r\nMessage-ID: <1@example.com>\r\nX-Secret-Header: launch\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe launch codes are 0000.\r\n";

fn owned(name: &str) -> Certificate {
    (*cert(name)).clone()
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Sends one message through `dispatch` (trace first, then the message in chunks).
async fn send<D: MailDispatch>(
    dispatch: &D,
    rcpts: &[&str],
    message: &[u8],
    chunk: usize,
) -> (Vec<Result<(), u16>>, Vec<u16>) {
    let mut env = envelope();
    let mut tx = dispatch.open(&info(), &env).await.expect("open");
    let mut refused = Vec::new();
    for r in rcpts {
        let r = recipient(r);
        match tx.add_recipient(&r).await {
            Ok(()) => env.recipients.push(r),
            Err(e) => refused.push(e.code()),
        }
    }
    if env.recipients.is_empty() {
        tx.abort().await;
        return (Vec::new(), refused);
    }
    tx.begin(&info(), &env).await.expect("begin");
    let mut failed = tx.write(TRACE).await.is_err();
    for part in message.chunks(chunk.max(1)) {
        failed |= tx.write(part).await.is_err();
    }
    let _ = failed;
    let outcomes = tx.commit().await;
    (
        outcomes
            .into_iter()
            .map(|o| o.map_err(|e| e.code()))
            .collect(),
        refused,
    )
}

fn full(message: &[u8]) -> Vec<u8> {
    [TRACE, message].concat()
}

#[test]
fn one_recipient_gets_ciphertext_that_decrypts_to_the_message() {
    let backend = Capture::default();
    let enc = Encrypt::new(backend.clone(), Keys::new().encrypt_to(owned("rsa2048")));
    let (outcomes, _) = tokio().block_on(send(&enc, &["bob@example.org"], MESSAGE, 7));
    assert_eq!(outcomes, [Ok(())]);
    let stored = backend.committed();
    assert_eq!(stored.len(), 1);
    let message = &stored[0].data;
    let (header, body) = split(message);
    assert!(
        header.starts_with("Received: from client (stdio)\r\n\tby mx.test"),
        "{header}"
    );
    for clear in [
        "From: Alice",
        "To: bob@",
        "Subject: the plan",
        "Date: ",
        "Message-ID: <1@",
    ] {
        assert!(header.contains(clear), "{clear} in {header}");
    }
    assert!(
        !header.contains("X-Secret") && !header.contains("text/plain"),
        "{header}"
    );
    assert!(!String::from_utf8_lossy(&body).contains("launch"));
    assert!(message.is_ascii());
    assert_eq!(
        decrypt_stored(message, "rsa2048").expect("decrypt"),
        full(MESSAGE)
    );
    // No plaintext of the body reached the backend at all.
    assert!(!backend.all_bytes().windows(6).any(|w| w == b"launch"));
}

#[test]
fn every_key_type_and_several_recipients() {
    for keys in [
        &["rsa2048"][..],
        &["rsa4096"],
        &["p256"],
        &["p384"],
        &["rsa2048", "p256", "p384"],
    ] {
        let backend = Capture::default();
        let mut k = Keys::new();
        for name in keys {
            k = k.encrypt_to(owned(name));
        }
        let enc = Encrypt::new(backend.clone(), k);
        let (outcomes, _) = tokio().block_on(send(&enc, &["a@x.org", "b@x.org"], MESSAGE, 4096));
        assert_eq!(outcomes, [Ok(()), Ok(())]);
        let stored = backend.committed();
        assert_eq!(stored.len(), 1, "one copy for one key set");
        assert_eq!(stored[0].rcpts, ["a@x.org", "b@x.org"]);
        for name in keys {
            assert_eq!(
                decrypt_stored(&stored[0].data, name).expect(name),
                full(MESSAGE),
                "{name}"
            );
        }
    }
}

#[test]
fn per_recipient_keys_make_one_copy_per_key_set_in_rcpt_order() {
    let backend = Capture::default();
    let keys = Keys::new()
        .map("alice@x.org", owned("rsa2048"))
        .map("bob@x.org", owned("p256"))
        .map("carol@x.org", owned("rsa2048"));
    let enc = Encrypt::new(backend.clone(), keys);
    let rcpts = ["alice@x.org", "bob@x.org", "carol@x.org"];
    let (outcomes, _) = tokio().block_on(send(&enc, &rcpts, MESSAGE, 100));
    assert_eq!(outcomes, [Ok(()), Ok(()), Ok(())]);
    let stored = backend.committed();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].rcpts, ["alice@x.org", "carol@x.org"]);
    assert_eq!(stored[0].begun_with, ["alice@x.org", "carol@x.org"]);
    assert_eq!(stored[1].rcpts, ["bob@x.org"]);
    assert_eq!(
        decrypt_stored(&stored[0].data, "rsa2048").expect("alice"),
        full(MESSAGE)
    );
    assert_eq!(
        decrypt_stored(&stored[1].data, "p256").expect("bob"),
        full(MESSAGE)
    );
    // Each copy is for its owner only.
    assert!(decrypt_stored(&stored[0].data, "p256").is_err());
    assert!(decrypt_stored(&stored[1].data, "rsa2048").is_err());
}

#[test]
fn escrow_keys_join_every_mapped_copy() {
    let backend = Capture::default();
    let keys = Keys::new()
        .encrypt_to(owned("p384"))
        .map("alice@x.org", owned("rsa2048"));
    let enc = Encrypt::new(backend.clone(), keys);
    let (outcomes, refused) =
        tokio().block_on(send(&enc, &["alice@x.org", "nobody@x.org"], MESSAGE, 100));
    assert_eq!((outcomes, refused), (vec![Ok(())], vec![550]));
    let stored = backend.committed();
    for key in ["rsa2048", "p384"] {
        assert_eq!(
            decrypt_stored(&stored[0].data, key).expect(key),
            full(MESSAGE)
        );
    }
}

#[test]
fn missing_certificate_is_refused_at_rcpt_by_default() {
    let backend = Capture::default();
    let enc = Encrypt::new(
        backend.clone(),
        Keys::new().map("alice@x.org", owned("rsa2048")),
    );
    let rt = tokio();
    let mut tx = rt.block_on(enc.open(&info(), &envelope())).expect("open");
    let refusal = rt
        .block_on(tx.add_recipient(&recipient("bob@x.org")))
        .expect_err("refused");
    assert_eq!(refusal, reply::NO_CERTIFICATE);
    assert_eq!((refusal.code(), refusal.enhanced()), (550, Some([5, 7, 1])));
    assert!(
        rt.block_on(tx.add_recipient(&recipient("ALICE@x.org")))
            .is_ok()
    );
}

#[test]
fn missing_certificate_with_deliver_stores_that_copy_as_it_came() {
    let backend = Capture::default();
    let enc = Encrypt::new(
        backend.clone(),
        Keys::new().map("alice@x.org", owned("rsa2048")),
    )
    .missing(Missing::Deliver);
    let (outcomes, _) = tokio().block_on(send(&enc, &["bob@x.org", "alice@x.org"], MESSAGE, 9));
    assert_eq!(outcomes, [Ok(()), Ok(())]);
    let stored = backend.committed();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].rcpts, ["bob@x.org"]);
    assert_eq!(stored[0].data, full(MESSAGE));
    assert_eq!(
        decrypt_stored(&stored[1].data, "rsa2048").expect("alice"),
        full(MESSAGE)
    );
}

#[test]
fn a_backend_failure_aborts_with_nothing_in_clear() {
    let backend = Capture {
        fail_after: Some(2000),
        ..Capture::default()
    };
    let enc = Encrypt::new(backend.clone(), Keys::new().encrypt_to(owned("rsa2048")));
    let big: Vec<u8> = [MESSAGE, &b"launch launch launch\r\n".repeat(1000)].concat();
    let (outcomes, _) = tokio().block_on(send(&enc, &["bob@x.org"], &big, 512));
    assert_eq!(outcomes, [Err(452)]);
    let seen = backend.seen();
    assert!(seen.iter().all(|s| !s.committed));
    assert!(seen[0].aborted);
    assert!(!backend.all_bytes().windows(6).any(|w| w == b"launch"));
}

#[test]
fn one_group_failing_leaves_the_others_their_outcome() {
    let backend = Capture {
        refuse: vec!["bob@x.org".into()],
        ..Capture::default()
    };
    let keys = Keys::new()
        .map("alice@x.org", owned("rsa2048"))
        .map("bob@x.org", owned("p256"))
        .map("carol@x.org", owned("p384"));
    let enc = Encrypt::new(backend.clone(), keys);
    let (outcomes, refused) = tokio().block_on(send(
        &enc,
        &["alice@x.org", "bob@x.org", "carol@x.org"],
        MESSAGE,
        50,
    ));
    assert_eq!(refused, [550]);
    assert_eq!(outcomes, [Ok(()), Ok(())]);
    // bob's inner transaction was reused for carol's group: no empty transaction committed.
    let committed = backend.committed();
    assert_eq!(committed.len(), 2);
    assert_eq!(committed[1].rcpts, ["carol@x.org"]);
}

#[test]
fn all_hides_the_metadata() {
    let backend = Capture::default();
    let enc =
        Encrypt::new(backend.clone(), Keys::new().encrypt_to(owned("p256"))).headers(Headers::All);
    let (outcomes, _) = tokio().block_on(send(&enc, &["bob@x.org"], MESSAGE, 4096));
    assert_eq!(outcomes, [Ok(())]);
    let stored = &backend.committed()[0].data;
    let (header, _) = split(stored);
    assert!(
        header.starts_with("From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nDate: "),
        "{header}"
    );
    assert!(header.contains("Subject: Encrypted message\r\n") && !header.contains("the plan"));
    assert!(!header.contains("Received:") && !header.contains("Message-ID"));
    assert_eq!(
        decrypt_stored(stored, "p256").expect("decrypt"),
        full(MESSAGE)
    );
}

#[test]
fn empty_binary_and_headerless_messages_round_trip() {
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let eight_bit =
        "Subject: caf\u{e9}\r\n\r\n\u{17e}lu\u{165}ou\u{10d}k\u{fd} k\u{16f}\u{148}\r\n"
            .as_bytes()
            .to_vec();
    let eight_bit = [eight_bit, vec![0xff, 0x80, b'\r', b'\n']].concat();
    for message in [
        Vec::new(),
        b"Subject: no body\r\n".to_vec(),
        binary,
        eight_bit,
        b"\r\nbody only".to_vec(),
    ] {
        let backend = Capture::default();
        let enc = Encrypt::new(backend.clone(), Keys::new().encrypt_to(owned("rsa2048")));
        let (outcomes, _) = tokio().block_on(send(&enc, &["bob@x.org"], &message, 1000));
        assert_eq!(outcomes, [Ok(())]);
        let stored = &backend.committed()[0].data;
        assert!(stored.is_ascii() || String::from_utf8_lossy(stored).contains("caf"));
        assert_eq!(
            decrypt_stored(stored, "rsa2048").expect("decrypt"),
            full(&message)
        );
    }
}

#[test]
fn an_over_long_header_section_is_encrypted_whole() {
    let backend = Capture::default();
    let enc =
        Encrypt::new(backend.clone(), Keys::new().encrypt_to(owned("rsa2048"))).head_limit(1000);
    let long: Vec<u8> = [
        &b"X-Long: "[..],
        &[b'a'; 5000],
        b"\r\nSubject: hidden\r\n\r\nbody\r\n",
    ]
    .concat();
    let (outcomes, _) = tokio().block_on(send(&enc, &["bob@x.org"], &long, 300));
    assert_eq!(outcomes, [Ok(())]);
    let stored = &backend.committed()[0].data;
    let (header, _) = split(stored);
    assert!(
        header.starts_with("Subject: Encrypted message\r\nMIME-Version: 1.0\r\n"),
        "{header}"
    );
    assert_eq!(
        decrypt_stored(stored, "rsa2048").expect("decrypt"),
        full(&long)
    );
}

#[test]
fn capabilities_after_encryption() {
    let seven_bit = Capabilities {
        eight_bit_mime: false,
        binary_mime: false,
        smtputf8: false,
        chunking: false,
        max_message_size: Some(10_000_000),
    };
    let backend = Capture {
        caps: Some(seven_bit),
        ..Capture::default()
    };
    let enc = Encrypt::new(backend.clone(), Keys::new().encrypt_to(owned("rsa2048")));
    let caps = enc.capabilities();
    assert!(caps.eight_bit_mime && caps.binary_mime && caps.chunking && !caps.smtputf8);
    let max = caps.max_message_size.expect("a limit");
    assert!(max < 7_300_000 && max > 7_000_000, "{max}");
    let clear =
        Encrypt::new(backend, Keys::new().encrypt_to(owned("rsa2048"))).missing(Missing::Deliver);
    let caps = clear.capabilities();
    assert!(!caps.eight_bit_mime && !caps.binary_mime);
}

#[test]
fn the_inner_envelope_declares_no_8bit_body() {
    use samotop_core::parser::{Body, MailParams, ReversePath};
    let backend = Capture::default();
    let enc = Encrypt::new(backend.clone(), Keys::new().encrypt_to(owned("rsa2048")));
    let params = MailParams {
        body: Some(Body::BinaryMime),
        ..MailParams::default()
    };
    let env = samotop_core::Envelope::new(ReversePath::Null, params, "T2".into());
    let rt = tokio();
    let _tx = rt.block_on(enc.open(&info(), &env)).expect("open");
    assert_eq!(backend.seen()[0].body_param, None);
}

#[test]
fn abort_leaves_nothing() {
    let backend = Capture::default();
    let enc = Encrypt::new(backend.clone(), Keys::new().encrypt_to(owned("rsa2048")));
    let rt = tokio();
    rt.block_on(async {
        let mut env = envelope();
        let mut tx = enc.open(&info(), &env).await.expect("open");
        let r = recipient("bob@x.org");
        tx.add_recipient(&r).await.expect("rcpt");
        env.recipients.push(r);
        tx.begin(&info(), &env).await.expect("begin");
        tx.write(MESSAGE).await.expect("write");
        tx.abort().await;
        assert_eq!(tx.commit().await.len(), 1);
    });
    let seen = backend.seen();
    assert!(seen[0].aborted && !seen[0].committed);
    let _ = reply::DELIVERY_FAILED;
}

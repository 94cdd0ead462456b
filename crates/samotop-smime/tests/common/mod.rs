//! Helpers for the tests: the fixture certificates, and OpenSSL as the decrypter.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::SystemTime;

use samotop_smime::Certificate;

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn cert(name: &str) -> Arc<Certificate> {
    let pem = std::fs::read(data(&format!("{name}.pem"))).expect("fixture");
    Arc::new(Certificate::from_bytes(&pem, name, SystemTime::now()).expect("good fixture"))
}

/// `openssl cms -decrypt` (or `smime`) with `key`; the plaintext, or OpenSSL's complaint.
pub fn openssl_decrypt(
    tool: &str,
    inform: &str,
    input: &[u8],
    key: &str,
) -> Result<Vec<u8>, String> {
    let key = data(&format!("{key}.key"));
    let mut child = Command::new("openssl")
        .args([tool, "-decrypt", "-binary", "-inform", inform, "-inkey"])
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("openssl: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = writer.join();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

use std::sync::Mutex;

use samotop_core::{
    Capabilities, Envelope, MailDispatch, Outcomes, Recipient, Refusal, SessionInfo, Transaction,
    reply,
};

/// One inner transaction as the capturing backend saw it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub rcpts: Vec<String>,
    pub begun_with: Vec<String>,
    pub data: Vec<u8>,
    pub committed: bool,
    pub aborted: bool,
    pub body_param: Option<String>,
}

/// A backend that keeps everything in memory; it can be told to fail.
#[derive(Clone, Default)]
pub struct Capture {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Refuse the data once this many bytes were written to one transaction.
    pub fail_after: Option<usize>,
    /// Refuse these recipients at RCPT.
    pub refuse: Vec<String>,
    pub caps: Option<Capabilities>,
}

pub struct CaptureTx {
    backend: Capture,
    index: usize,
}

impl Capture {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
    /// Every byte that reached the backend, committed or not.
    pub fn all_bytes(&self) -> Vec<u8> {
        self.seen().into_iter().flat_map(|s| s.data).collect()
    }
    pub fn committed(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.committed).collect()
    }
}

impl MailDispatch for Capture {
    type Transaction = CaptureTx;
    fn capabilities(&self) -> Capabilities {
        self.caps.unwrap_or_default()
    }
    async fn open(&self, _: &SessionInfo, env: &Envelope) -> Result<CaptureTx, Refusal> {
        let mut seen = self.seen.lock().expect("lock");
        seen.push(Seen {
            body_param: env.params.body.map(|b| format!("{b:?}")),
            ..Seen::default()
        });
        Ok(CaptureTx {
            backend: self.clone(),
            index: seen.len() - 1,
        })
    }
}

impl CaptureTx {
    fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.backend.seen.lock().expect("lock")[self.index])
    }
}

impl Transaction for CaptureTx {
    async fn add_recipient(&mut self, r: &Recipient) -> Result<(), Refusal> {
        if self.backend.refuse.contains(&r.address) {
            return Err(reply::NO_SUCH_USER);
        }
        self.with(|s| s.rcpts.push(r.address.clone()));
        Ok(())
    }
    async fn begin(&mut self, _: &SessionInfo, env: &Envelope) -> Result<(), Refusal> {
        self.with(|s| s.begun_with = env.recipients.iter().map(|r| r.address.clone()).collect());
        Ok(())
    }
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        let limit = self.backend.fail_after;
        self.with(|s| {
            s.data.extend_from_slice(chunk);
            match limit {
                Some(n) if s.data.len() > n => Err(reply::INSUFFICIENT_STORAGE),
                _ => Ok(()),
            }
        })
    }
    async fn commit(&mut self) -> Outcomes {
        self.with(|s| {
            s.committed = true;
            vec![Ok(()); s.rcpts.len()]
        })
    }
    async fn abort(&mut self) {
        self.with(|s| s.aborted = true);
    }
}

/// Splits a stored message into its header (up to the empty line) and body.
pub fn split(message: &[u8]) -> (String, Vec<u8>) {
    let at = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an empty line");
    (
        String::from_utf8_lossy(&message[..at + 2]).into_owned(),
        message[at + 4..].to_vec(),
    )
}

/// Decrypts a stored S/MIME message's body (base64 lines) with `openssl cms`.
pub fn decrypt_stored(message: &[u8], key: &str) -> Result<Vec<u8>, String> {
    let (header, body) = split(message);
    assert!(
        header.contains(
            "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
        ),
        "{header}"
    );
    let pem = [
        b"-----BEGIN CMS-----\n".as_slice(),
        &body,
        b"-----END CMS-----\n",
    ]
    .concat();
    openssl_decrypt("cms", "PEM", &pem, key)
}

pub fn recipient(addr: &str) -> Recipient {
    use samotop_core::parser::{ForwardPath, Host, Mailbox};
    let (local, domain) = addr.split_once('@').expect("local@domain");
    let mailbox = Mailbox {
        local: local.to_string(),
        domain: Host::Domain(domain.to_string()),
    };
    Recipient::new(ForwardPath::Mailbox(mailbox), Default::default())
}

pub fn envelope() -> Envelope {
    use samotop_core::parser::{MailParams, ReversePath};
    Envelope::new(ReversePath::Null, MailParams::default(), "T1".into())
}

pub fn info() -> SessionInfo {
    SessionInfo::new(samotop_core::Peer::Stdio, "mx.test")
}

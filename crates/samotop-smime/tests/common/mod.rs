//! Helpers for the tests: the fixture certificates, and OpenSSL as the decrypter.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::SystemTime;

use samotop_smime::Certificate;

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

pub fn cert(name: &str) -> Arc<Certificate> {
    let pem = std::fs::read(data(&format!("{name}.pem"))).expect("fixture");
    Arc::new(Certificate::from_bytes(&pem, name, SystemTime::now()).expect("good fixture"))
}

/// `openssl cms -decrypt` (or `smime`) with `key`; the plaintext, or OpenSSL's complaint.
pub fn openssl_decrypt(tool: &str, inform: &str, input: &[u8], key: &str) -> Result<Vec<u8>, String> {
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

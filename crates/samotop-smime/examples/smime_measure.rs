//! Run with: cargo run --release -p samotop-smime --example smime_measure
//!
//! What one message costs: the per-message key operation for each key type, and the
//! streaming throughput of AES-256-CBC plus base64 (AES-NI is detected at run time).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use samotop_smime::{Certificate, Encryptor, Output};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    for name in ["rsa2048", "rsa4096", "p256", "p384"] {
        let pem = std::fs::read(format!("{dir}/{name}.pem"))?;
        let cert = Arc::new(Certificate::from_bytes(&pem, name, SystemTime::now())?);
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            let mut enc = Encryptor::new(std::slice::from_ref(&cert), Output::Base64)?;
            let mut out = Vec::new();
            enc.finish(&mut out);
        }
        println!(
            "{name}: {:.0} µs per message (key set-up)",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
    let pem = std::fs::read(format!("{dir}/rsa2048.pem"))?;
    let cert = Arc::new(Certificate::from_bytes(&pem, "rsa2048", SystemTime::now())?);
    let chunk = vec![0x5au8; 64 * 1024];
    for output in [Output::Ber, Output::Base64] {
        let mut enc = Encryptor::new(std::slice::from_ref(&cert), output)?;
        let mut out = Vec::with_capacity(200 * 1024);
        let t = Instant::now();
        let total = 256 * 1024 * 1024;
        for _ in 0..total / chunk.len() {
            out.clear();
            enc.update(&chunk, &mut out);
        }
        enc.finish(&mut out);
        let s = t.elapsed().as_secs_f64();
        println!("{output:?}: {:.0} MB/s", total as f64 / s / 1e6);
    }
    // The raw cipher, blocks in parallel (ECB, not used by S/MIME): shows whether AES-NI is
    // in use (several GB/s) or the software fallback (~100-200 MB/s). CBC encryption is
    // serial (each block needs the one before), so it cannot go as fast.
    {
        use aes::cipher::{BlockCipherEncrypt, KeyInit, array::Array};
        let cipher = aes::Aes256::new(&[7u8; 32].into());
        let mut buf = vec![0u8; 64 * 1024];
        let t = Instant::now();
        let rounds = 4096;
        for _ in 0..rounds {
            let (blocks, _) = Array::slice_as_chunks_mut(&mut buf);
            cipher.encrypt_blocks(blocks);
        }
        let mb = (rounds * buf.len()) as f64 / 1e6;
        println!(
            "AES-256 blocks in parallel: {:.0} MB/s",
            mb / t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

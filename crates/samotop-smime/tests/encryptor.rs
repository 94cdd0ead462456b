//! The EnvelopedData that `Encryptor` makes decrypts with OpenSSL, for every key type.

mod common;

use common::{cert, openssl_decrypt};
use samotop_smime::{Encryptor, Output};

fn encrypt(certs: &[&str], plain: &[u8], chunk: usize, output: Output) -> Vec<u8> {
    let certs: Vec<_> = certs.iter().map(|c| cert(c)).collect();
    let mut enc = Encryptor::new(&certs, output).expect("encryptor");
    let mut out = Vec::new();
    for part in plain.chunks(chunk.max(1)) {
        enc.update(part, &mut out);
    }
    enc.finish(&mut out);
    out
}

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 % 256) as u8).collect()
}

#[test]
fn every_key_type_decrypts_with_openssl_cms() {
    for key in ["rsa2048", "rsa4096", "p256", "p384"] {
        for len in [0, 1, 15, 16, 17, 1000, 70_000] {
            let plain = sample(len);
            let ber = encrypt(&[key], &plain, 4096, Output::Ber);
            let got = openssl_decrypt("cms", "DER", &ber, key)
                .unwrap_or_else(|e| panic!("{key} {len}: {e}"));
            assert_eq!(got, plain, "{key} {len}");
        }
    }
}

#[test]
fn base64_output_decrypts_as_pem_lines() {
    let plain = sample(5000);
    let b64 = encrypt(&["rsa2048"], &plain, 333, Output::Base64);
    for line in b64.split_inclusive(|b| *b == b'\n') {
        assert!(line.ends_with(b"\r\n") && line.len() <= 78, "{line:?}");
    }
    let pem = [
        b"-----BEGIN CMS-----\n".as_slice(),
        &b64,
        b"-----END CMS-----\n",
    ]
    .concat();
    assert_eq!(
        openssl_decrypt("cms", "PEM", &pem, "rsa2048").expect("decrypt"),
        plain
    );
}

#[test]
fn several_recipients_each_decrypt() {
    let plain = sample(3000);
    let all = ["rsa2048", "p256", "rsa4096", "p384"];
    let ber = encrypt(&all, &plain, 1000, Output::Ber);
    for key in all {
        assert_eq!(
            openssl_decrypt("cms", "DER", &ber, key).expect(key),
            plain,
            "{key}"
        );
    }
}

#[test]
fn rsa_only_decrypts_with_openssl_smime_too() {
    let plain = sample(2000);
    let ber = encrypt(&["rsa2048", "rsa4096"], &plain, 512, Output::Ber);
    for key in ["rsa2048", "rsa4096"] {
        assert_eq!(
            openssl_decrypt("smime", "DER", &ber, key).expect(key),
            plain
        );
    }
}

#[test]
fn chunking_does_not_change_the_plaintext() {
    let plain = sample(10_000);
    for chunk in [1, 7, 16, 57, 4096, 100_000] {
        let ber = encrypt(&["p256"], &plain, chunk, Output::Ber);
        assert_eq!(
            openssl_decrypt("cms", "DER", &ber, "p256").expect("decrypt"),
            plain,
            "{chunk}"
        );
    }
}

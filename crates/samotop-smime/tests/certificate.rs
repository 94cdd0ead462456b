//! Certificates are checked when loaded: key type, key usage, validity, no private key; the
//! error names the file. RSA-OAEP certificates get OAEP, and OpenSSL decrypts that.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{data, openssl_decrypt};
use der::{Decode, Encode, asn1::Any};
use samotop_smime::{Certificate, Encryptor, Error, KeyFiles, MapEntry, Output};

fn load(name: &str) -> Result<Certificate, Error> {
    Certificate::load(data(name))
}

#[test]
fn good_certificates_load() {
    for (name, what) in [
        ("rsa2048.pem", "RSA 2048 PKCS#1 v1.5"),
        ("rsa4096.pem", "RSA 4096 PKCS#1 v1.5"),
        ("p256.pem", "EC P-256 ECDH"),
        ("p384.pem", "EC P-384 ECDH"),
    ] {
        let c = load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.key_description(), what);
        assert!(c.subject().contains("CN="), "{}", c.subject());
        assert!(c.source().ends_with(name));
    }
}

#[test]
fn bad_certificates_are_refused_naming_the_file() {
    let cases = [
        ("signonly.pem", "keyEncipherment"),
        ("tlsonly.pem", "emailProtection"),
        ("p521.pem", "P-256 and P-384"),
        ("withkey.pem", "private key"),
        ("rsa2048.key", "private key"),
        ("make.sh", "not an X.509 certificate"),
        ("nonexistent.pem", "cannot read"),
    ];
    for (name, want) in cases {
        let e = load(name).expect_err(name).to_string();
        assert!(e.contains(name) && e.contains(want), "{name}: {e}");
    }
}

#[test]
fn validity_is_checked() {
    let pem = std::fs::read(data("rsa2048.pem")).expect("fixture");
    let later = SystemTime::now() + Duration::from_secs(200 * 365 * 86400);
    let e = Certificate::from_bytes(&pem, "x.pem", later).expect_err("expired");
    assert!(
        matches!(e, Error::Expired { .. }) && e.to_string().contains("expired at"),
        "{e}"
    );
    let e = Certificate::from_bytes(&pem, "x.pem", UNIX_EPOCH).expect_err("not yet");
    assert!(e.to_string().contains("not valid before"), "{e}");
}

#[test]
fn der_input_and_garbage() {
    let pem = std::fs::read_to_string(data("rsa2048.pem")).expect("fixture");
    let (_, der) = der::pem::decode_vec(pem.as_bytes()).expect("pem");
    assert!(Certificate::from_bytes(&der, "x.der", SystemTime::now()).is_ok());
    for junk in [
        &b""[..],
        b"\x30\x80",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let e = Certificate::from_bytes(junk, "junk", SystemTime::now()).expect_err("junk");
        assert!(matches!(e, Error::Parse { .. }), "{e}");
    }
}

/// The fixture RSA certificate with its key marked `id-RSAES-OAEP` (RFC 4055), with these
/// encoded parameters (or none). The signature no longer verifies: nothing here checks it.
fn oaep_certificate(params: Option<&[u8]>) -> Vec<u8> {
    let pem = std::fs::read_to_string(data("rsa2048.pem")).expect("fixture");
    let (_, der) = der::pem::decode_vec(pem.as_bytes()).expect("pem");
    let mut top: Vec<Any> = Vec::from_der(&der).expect("certificate");
    let mut tbs: Vec<Any> = top[0].decode_as().expect("tbs");
    let mut spki: Vec<Any> = tbs[6].decode_as().expect("spki");
    let mut alg = vec![
        0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x07,
    ];
    alg.extend_from_slice(params.unwrap_or_default());
    let mut seq = vec![0x30, alg.len() as u8];
    seq.extend(alg);
    spki[0] = Any::from_der(&seq).expect("alg");
    tbs[6] = Any::from_der(&spki.to_der().expect("spki")).expect("any");
    top[0] = Any::from_der(&tbs.to_der().expect("tbs")).expect("any");
    top.to_der().expect("certificate")
}

#[test]
fn oaep_certificates_get_oaep_and_openssl_decrypts_it() {
    // Absent parameters (SHA-1 defaults), an empty SEQUENCE (the same), and SHA-256 with
    // MGF1-SHA-256.
    // [1] names SHA-1 itself rather than MGF1: refused.
    let bad_mgf: &[u8] = &[
        0x30, 0x1A, 0xA0, 0x0B, 0x30, 0x09, 0x06, 0x05, 0x2B, 0x0E, 0x03, 0x02, 0x1A, 0x05, 0x00,
        0xA1, 0x0B, 0x30, 0x09, 0x06, 0x05, 0x2B, 0x0E, 0x03, 0x02, 0x1A, 0x05, 0x00,
    ];
    let sha256_real: &[u8] = &[
        0x30, 0x2B, 0xA0, 0x0D, 0x30, 0x0B, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
        0x02, 0x01, 0xA1, 0x1A, 0x30, 0x18, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01,
        0x01, 0x08, 0x30, 0x0B, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
    ];
    let e = Certificate::from_bytes(
        &oaep_certificate(Some(bad_mgf)),
        "bad.der",
        SystemTime::now(),
    );
    assert!(
        e.expect_err("bad mgf")
            .to_string()
            .contains("mask generation")
    );
    for (params, want) in [
        (None, "RSA 2048 OAEP Sha1"),
        (Some(&[0x30, 0x00][..]), "RSA 2048 OAEP Sha1"),
        (Some(sha256_real), "RSA 2048 OAEP Sha256"),
    ] {
        let der = oaep_certificate(params);
        let cert = Certificate::from_bytes(&der, "oaep.der", SystemTime::now()).expect("oaep cert");
        assert_eq!(cert.key_description(), want);
        let mut enc = Encryptor::new(&[Arc::new(cert)], Output::Ber).expect("encryptor");
        let mut out = Vec::new();
        enc.update(b"Subject: oaep\r\n\r\nhi\r\n", &mut out);
        enc.finish(&mut out);
        assert!(
            out.windows(9)
                .any(|w| w == [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x07])
        );
        let plain = openssl_decrypt("cms", "DER", &out, "rsa2048")
            .unwrap_or_else(|e| panic!("{want}: {e}"));
        assert_eq!(plain, b"Subject: oaep\r\n\r\nhi\r\n");
    }
}

#[test]
fn key_files_load_files_and_directories() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(
        data("rsa2048.pem"),
        dir.path().join("Alice@Example.org.pem"),
    )
    .expect("copy");
    std::fs::copy(data("p256.pem"), dir.path().join("bob@example.org.pem")).expect("copy");
    std::fs::write(dir.path().join("README"), "not a certificate").expect("write");
    let files = KeyFiles {
        to: vec![data("p384.pem")],
        map: vec![
            MapEntry::Dir(dir.path().to_path_buf()),
            format!("carol@example.org={}", data("rsa4096.pem").display())
                .parse()
                .expect("entry"),
        ],
    };
    let keys = files.load().expect("load");
    assert_eq!(keys.mapped_addresses(), 3);
    assert_eq!(
        keys.for_address("alice@example.org").expect("alice").len(),
        2
    );
    assert_eq!(
        keys.for_address("carol@example.org").expect("carol").len(),
        2
    );
    assert!(keys.for_address("dave@example.org").is_none());
    assert_eq!(keys.certificates().len(), 4);

    std::fs::copy(data("signonly.pem"), dir.path().join("eve@example.org.pem")).expect("copy");
    let e = files
        .load()
        .expect_err("a bad file in the directory")
        .to_string();
    assert!(e.contains("eve@example.org.pem"), "{e}");

    for bad in ["", "=x.pem", "a b@c=x.pem", "a@b="] {
        assert!(bad.parse::<MapEntry>().is_err(), "{bad:?}");
    }
    assert!(KeyFiles::default().load().is_err());
}

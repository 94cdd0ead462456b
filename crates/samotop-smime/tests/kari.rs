//! The EC content key is wrapped under the key derived by ECDH and the X9.63 KDF (RFC 5753),
//! not under a constant: a reader with the recipient's private key unwraps it, the all-zero
//! key (RustCrypto cms 0.3.0-rc.0's builder bug) does not, nor does another key's KEK.

mod common;

use aes::cipher::array::Array;
use aes::cipher::{BlockModeDecrypt, KeyInit, KeyIvInit};
use common::cert;
use p256::pkcs8::DecodePrivateKey;
use samotop_smime::{Encryptor, Output};
use sha2::{Digest, Sha256};

/// One BER element: tag, content (for constructed indefinite ones, up to the end-of-contents).
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
}

/// Parses one element at the start of `input`; returns it and the rest.
fn tlv(input: &[u8]) -> (Tlv<'_>, &[u8]) {
    let tag = input[0];
    let first = input[1];
    if first == 0x80 {
        // Indefinite: walk the children until 00 00.
        let start = 2;
        let mut rest = &input[start..];
        let mut used = 0;
        while rest[..2] != [0, 0] {
            let (_, after) = tlv(rest);
            used += rest.len() - after.len();
            rest = after;
        }
        return (
            Tlv {
                tag,
                content: &input[start..start + used],
            },
            &input[start + used + 2..],
        );
    }
    let (len, hl) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        let len = input[2..2 + n]
            .iter()
            .fold(0usize, |a, b| a << 8 | *b as usize);
        (len, 2 + n)
    };
    (
        Tlv {
            tag,
            content: &input[hl..hl + len],
        },
        &input[hl + len..],
    )
}

fn children(content: &[u8]) -> Vec<Tlv<'_>> {
    let mut out = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (t, after) = tlv(rest);
        out.push(t);
        rest = after;
    }
    out
}

const SHARED_INFO: [u8; 23] = [
    0x30, 0x15, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2d, 0xa2,
    0x06, 0x04, 0x04, 0x00, 0x00, 0x01, 0x00,
];

fn kek_for(key_file: &str, originator_point: &[u8]) -> [u8; 32] {
    let pem = std::fs::read_to_string(common::data(key_file)).expect("key");
    let secret = p256::SecretKey::from_pkcs8_pem(&pem).expect("p256 key");
    let public = p256::PublicKey::from_sec1_bytes(originator_point).expect("point");
    let z = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), public.as_affine());
    let mut h = Sha256::new();
    h.update(z.raw_secret_bytes());
    h.update(1u32.to_be_bytes());
    h.update(SHARED_INFO);
    h.finalize().into()
}

#[test]
fn the_content_key_is_wrapped_under_the_derived_key_only() {
    let plain = b"Subject: secret\r\n\r\nonly bob reads this\r\n".repeat(10);
    let mut enc = Encryptor::new(&[cert("p256")], Output::Ber).expect("encryptor");
    let mut ber = Vec::new();
    enc.update(&plain, &mut ber);
    enc.finish(&mut ber);

    let (content_info, rest) = tlv(&ber);
    assert!(rest.is_empty() && content_info.tag == 0x30);
    let ci = children(content_info.content);
    let enveloped = children(children(ci[1].content)[0].content);
    assert_eq!(enveloped[0].content, [2], "version 2 with a KARI");
    let infos = children(enveloped[1].content);
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].tag, 0xA1, "kari [1]");
    let kari = children(infos[0].content);
    assert_eq!(kari[0].content, [3], "KARI version 3");
    let originator_key = children(children(kari[1].content)[0].content);
    let point = &originator_key[1].content[1..]; // BIT STRING: skip the unused-bits octet
    let scheme = children(kari[2].content);
    assert_eq!(
        scheme[0].content,
        [0x2B, 0x81, 0x04, 0x01, 0x0B, 0x01],
        "sha256kdf"
    );
    let rek = children(children(kari[3].content)[0].content);
    let wrapped = rek[1].content;
    assert_eq!(wrapped.len(), 40);

    let kek = kek_for("p256.key", point);
    let mut cek = [0u8; 32];
    aes_kw::KwAes256::new(&kek.into())
        .unwrap_key(wrapped, &mut cek)
        .expect("the derived key unwraps");

    let zero = aes_kw::KwAes256::new(&[0u8; 32].into());
    assert!(
        zero.unwrap_key(wrapped, &mut [0u8; 32]).is_err(),
        "a zero key must not unwrap it"
    );
    // Another recipient's derived key does not unwrap it either.
    let other = tempfile::NamedTempFile::new().expect("tmp");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(other.path())
        .status()
        .expect("openssl genpkey");
    assert!(status.success());
    let wrong = kek_for(other.path().to_str().expect("path"), point);
    assert!(
        aes_kw::KwAes256::new(&wrong.into())
            .unwrap_key(wrapped, &mut [0u8; 32])
            .is_err()
    );

    // And the key decrypts the content.
    let eci = children(enveloped[2].content);
    let iv = children(eci[1].content)[1].content;
    let mut ciphertext: Vec<u8> = children(eci[2].content)
        .iter()
        .flat_map(|s| s.content.to_vec())
        .collect();
    let (blocks, _) = Array::slice_as_chunks_mut(&mut ciphertext);
    let mut iv16 = [0u8; 16];
    iv16.copy_from_slice(iv);
    cbc::Decryptor::<aes::Aes256>::new(&cek.into(), &iv16.into()).decrypt_blocks(blocks);
    let pad = *ciphertext.last().expect("a block") as usize;
    assert!((1..=16).contains(&pad));
    ciphertext.truncate(ciphertext.len() - pad);
    assert_eq!(ciphertext, plain);
}

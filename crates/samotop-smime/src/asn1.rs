//! The little DER/BER writing this crate needs: tag-length-value, the object identifiers of
//! CMS (RFC 5652), AES (RFC 3565), RSA-OAEP (RFC 4055) and ECDH (RFC 5753), and the
//! indefinite-length frame of a streamed EnvelopedData.

use der::asn1::ObjectIdentifier as Oid;

pub(crate) const ID_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");
pub(crate) const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
pub(crate) const AES256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");
pub(crate) const AES256_WRAP: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.45");
pub(crate) const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const RSAES_OAEP: Oid = Oid::new_unwrap("1.2.840.113549.1.1.7");
pub(crate) const MGF1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.8");
pub(crate) const P_SPECIFIED: Oid = Oid::new_unwrap("1.2.840.113549.1.1.9");
pub(crate) const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
pub(crate) const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
pub(crate) const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
pub(crate) const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
pub(crate) const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
pub(crate) const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");
/// dhSinglePass-stdDH-sha256kdf-scheme (RFC 5753 7.1.4).
pub(crate) const ECDH_SHA256_KDF: Oid = Oid::new_unwrap("1.3.132.1.11.1");
/// dhSinglePass-stdDH-sha384kdf-scheme (RFC 5753 7.1.4).
pub(crate) const ECDH_SHA384_KDF: Oid = Oid::new_unwrap("1.3.132.1.11.2");
pub(crate) const EKU_EMAIL_PROTECTION: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.4");
pub(crate) const EKU_ANY: Oid = Oid::new_unwrap("2.5.29.37.0");

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_NULL: u8 = 0x05;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
pub(crate) const TAG_SET: u8 = 0x31;

/// Context-specific, constructed: `[n]` around a structure.
pub(crate) const fn context(n: u8) -> u8 {
    0xA0 | n
}

/// Appends a definite length (X.690 8.1.3).
pub(crate) fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends tag, definite length and content.
pub(crate) fn push_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    push_len(out, content.len());
    out.extend_from_slice(content);
}

/// Tag, length, content, as a new vector.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    push_tlv(&mut out, tag, content);
    out
}

/// A constructed value made of already encoded parts.
pub(crate) fn constructed(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let content: Vec<u8> = parts.concat();
    tlv(tag, &content)
}

pub(crate) fn oid(oid: &Oid) -> Vec<u8> {
    tlv(TAG_OID, oid.as_bytes())
}

/// `AlgorithmIdentifier` with absent parameters.
pub(crate) fn algorithm(id: &Oid) -> Vec<u8> {
    constructed(TAG_SEQUENCE, &[&oid(id)])
}

/// `AlgorithmIdentifier` with encoded parameters.
pub(crate) fn algorithm_with(id: &Oid, params: &[u8]) -> Vec<u8> {
    constructed(TAG_SEQUENCE, &[&oid(id), params])
}

/// A small non-negative INTEGER.
pub(crate) fn small_integer(n: u8) -> Vec<u8> {
    tlv(TAG_INTEGER, &[n])
}

/// A DER SET OF: the elements sorted by their encodings (X.690 11.6).
pub(crate) fn set_of(mut elements: Vec<Vec<u8>>) -> Vec<u8> {
    elements.sort();
    let refs: Vec<&[u8]> = elements.iter().map(Vec::as_slice).collect();
    constructed(TAG_SET, &refs)
}

/// The indefinite-length end-of-contents octets (X.690 8.1.5).
pub(crate) const END_OF_CONTENTS: [u8; 2] = [0, 0];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        let cases: [(usize, &[u8]); 6] = [
            (0, &[0]),
            (127, &[127]),
            (128, &[0x81, 128]),
            (255, &[0x81, 255]),
            (256, &[0x82, 1, 0]),
            (70000, &[0x83, 1, 0x11, 0x70]),
        ];
        for (len, want) in cases {
            let mut out = Vec::new();
            push_len(&mut out, len);
            assert_eq!(out, want, "{len}");
        }
    }

    #[test]
    fn oids_encode_as_openssl_does() {
        assert_eq!(
            oid(&ID_ENVELOPED_DATA),
            [
                0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x03
            ]
        );
        assert_eq!(
            oid(&ECDH_SHA256_KDF),
            [0x06, 0x06, 0x2B, 0x81, 0x04, 0x01, 0x0B, 0x01]
        );
    }

    #[test]
    fn sets_are_sorted() {
        let s = set_of(vec![vec![0x04, 1, 2], vec![0x02, 1, 1]]);
        assert_eq!(s, [0x31, 6, 0x02, 1, 1, 0x04, 1, 2]);
    }
}

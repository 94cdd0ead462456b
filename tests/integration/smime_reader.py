"""A second S/MIME reader, independent of OpenSSL's CMS code and of ours: asn1crypto (PyPI)
parses the EnvelopedData (BER, indefinite lengths included), Python's `cryptography` (PyPI)
does the cryptography: RSA PKCS#1 v1.5 / OAEP, ECDH with the X9.63 KDF (RFC 5753), AES key
unwrap (RFC 3394), AES-CBC.

    plain = decrypt(p7m_ber_bytes, private_key_pem_bytes)
    plain = decrypt_message(stored_message_bytes, private_key_pem_bytes)   # the base64 body
"""

import base64

from asn1crypto import cms, core
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as apadding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

HASHES = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
KDF_HASH = {
    "1.3.132.1.11.1": hashes.SHA256,  # dhSinglePass-stdDH-sha256kdf-scheme
    "1.3.132.1.11.2": hashes.SHA384,
    "1.3.132.1.11.3": hashes.SHA512,
    "1.3.133.16.840.63.0.2": hashes.SHA1,
}
WRAP_BITS = {"aes128_wrap": 128, "aes192_wrap": 192, "aes256_wrap": 256}


class SharedInfo(core.Sequence):
    """ECC-CMS-SharedInfo (RFC 5753 7.2)."""

    _fields = [
        ("key_info", cms.KeyEncryptionAlgorithm),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


class NoKey(Exception):
    """No RecipientInfo could be opened with the key."""


def _ktri(ri, key):
    alg = ri["key_encryption_algorithm"]
    name = alg["algorithm"].native
    data = ri["encrypted_key"].native
    if name == "rsaes_pkcs1v15" or name == "rsa":
        return key.decrypt(data, apadding.PKCS1v15())
    if name == "rsaes_oaep":
        params = alg["parameters"]
        h = HASHES[params["hash_algorithm"]["algorithm"].native]()
        m = HASHES[params["mask_gen_algorithm"]["parameters"]["algorithm"].native]()
        return key.decrypt(data, apadding.OAEP(mgf=apadding.MGF1(m), algorithm=h, label=None))
    raise NoKey("KTRI algorithm %s" % name)


def _kari(ri, key):
    originator = ri["originator"].chosen
    point = originator["public_key"].native
    peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, point)
    z = key.exchange(ec.ECDH(), peer)
    alg = ri["key_encryption_algorithm"]
    kdf_hash = KDF_HASH[alg["algorithm"].dotted]
    wrap = cms.KeyEncryptionAlgorithm.load(alg["parameters"].dump())
    bits = WRAP_BITS[wrap["algorithm"].native]
    info = SharedInfo({
        "key_info": {"algorithm": wrap["algorithm"].native},
        "supp_pub_info": bits.to_bytes(4, "big"),
    })
    if ri["ukm"].native is not None:
        info["entity_u_info"] = ri["ukm"].native
    kek = X963KDF(algorithm=kdf_hash(), length=bits // 8, sharedinfo=info.dump()).derive(z)
    errors = []
    for rek in ri["recipient_encrypted_keys"]:
        try:
            return aes_key_unwrap(kek, rek["encrypted_key"].native)
        except Exception as e:  # noqa: BLE001 - an unwrap that fails is the next one's turn
            errors.append(e)
    raise NoKey("no KARI key unwraps: %r" % errors)


def decrypt(ber, key_pem):
    """The plaintext of a CMS EnvelopedData (BER) for the private key (PEM)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    info = cms.ContentInfo.load(ber)
    assert info["content_type"].native == "enveloped_data", info["content_type"].native
    env = info["content"]
    cek = None
    for ri in env["recipient_infos"]:
        try:
            if ri.name == "ktri" and isinstance(key, rsa.RSAPrivateKey):
                cek = _ktri(ri.chosen, key)
            elif ri.name == "kari" and isinstance(key, ec.EllipticCurvePrivateKey):
                cek = _kari(ri.chosen, key)
        except (NoKey, ValueError):
            continue
        if cek is not None:
            break
    if cek is None:
        raise NoKey("no RecipientInfo for this key")
    eci = env["encrypted_content_info"]
    alg = eci["content_encryption_algorithm"]
    assert alg["algorithm"].native == "aes256_cbc", alg["algorithm"].native
    iv = alg["parameters"].native
    ciphertext = eci["encrypted_content"].native
    dec = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    padded = dec.update(ciphertext) + dec.finalize()
    unpad = padding.PKCS7(128).unpadder()
    return unpad.update(padded) + unpad.finalize()


def decrypt_message(message, key_pem):
    """The plaintext of a stored S/MIME message (header, empty line, base64 body)."""
    head, _, body = message.partition(b"\r\n\r\n")
    assert b"application/pkcs7-mime" in head, head
    return decrypt(base64.b64decode(body), key_pem)

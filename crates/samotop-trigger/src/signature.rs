//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, sent as `webhook-signature: v1,<base64>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::Error;

/// A webhook signing secret: `whsec_` followed by the base64 of the key (the Standard
/// Webhooks form), or the base64 alone. The key should be 24 to 64 bytes; at least 16 are
/// required.
///
/// ```
/// use samotop_trigger::Secret;
/// assert!(Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
/// assert!(Secret::parse("whsec_not base64!").is_err());
/// ```
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// The shortest key taken, in bytes.
    pub const MIN_LEN: usize = 16;

    /// Parses `whsec_BASE64` or `BASE64`.
    ///
    /// # Errors
    ///
    /// [`Error::BadSecret`]: not base64, or a key shorter than [`MIN_LEN`](Secret::MIN_LEN).
    pub fn parse(text: &str) -> Result<Secret, Error> {
        let b64 = text.trim().strip_prefix("whsec_").unwrap_or(text.trim());
        let key = BASE64
            .decode(b64)
            .map_err(|e| Error::BadSecret(format!("not base64 after whsec_: {e}")))?;
        if key.len() < Self::MIN_LEN {
            return Err(Error::BadSecret(format!(
                "the key is {} bytes, at least {} are needed",
                key.len(),
                Self::MIN_LEN
            )));
        }
        Ok(Secret(key))
    }

    /// Starts a signature of the message `id` sent at `timestamp` (seconds since the epoch);
    /// feed it the body with [`Signer::update`].
    pub fn signer(&self, id: &str, timestamp: u64) -> Signer {
        // Any key length is valid for HMAC.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        Signer(mac)
    }

    /// The whole signature header value for a body at hand.
    ///
    /// ```
    /// use samotop_trigger::Secret;
    /// let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
    /// // The Standard Webhooks specification's own example.
    /// let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
    /// assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    /// # Ok::<(), samotop_trigger::Error>(())
    /// ```
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut signer = self.signer(id, timestamp);
        signer.update(body);
        signer.finish()
    }
}

/// A signature in progress: the body goes in chunk by chunk.
#[derive(Clone)]
pub struct Signer(Hmac<Sha256>);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// The next bytes of the body.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The `webhook-signature` header value, `v1,<base64>`.
    pub fn finish(self) -> String {
        format!("v1,{}", BASE64.encode(self.0.finalize().into_bytes()))
    }
}

//! TLS on rustls (ring provider) through tokio-rustls: certificate loading, the STARTTLS
//! upgrade, implicit TLS (`--smtps`), and reload on SIGHUP.
//!
//! Only TLS 1.3 and 1.2 are offered; rustls has no TLS 1.0/1.1 at all. The key must fit the
//! first certificate of the chain: this is checked at load time (and on every reload), so a
//! mismatched pair fails at start-up with exit code 2 rather than at the first handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use samotop_core::{BoxIo, TlsInfo, TlsUpgrade, UpgradeFuture};
use tokio_rustls::TlsAcceptor;

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// PEM files, reloaded on SIGHUP.
    Files {
        /// Certificate chain, the server's own certificate first.
        cert: PathBuf,
        /// Private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted.
        key: PathBuf,
    },
    /// A self-signed certificate made at start-up for this name (kept on reload).
    SelfSigned(String),
}

/// Why TLS could not be set up. Each names the file and the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The key does not fit the certificate, or rustls refused them.
    #[error("{key} does not fit {cert}: {problem}")]
    Pair {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Generating a self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    SelfSigned(String),
}

/// The server's TLS set-up, shared by all listeners; the acceptor is swapped whole on reload.
#[derive(Clone)]
pub struct Tls {
    source: Source,
    acceptor: Arc<RwLock<TlsAcceptor>>,
}

impl Tls {
    /// Loads the certificate and key (or makes a self-signed pair), checking that they fit.
    pub fn load(source: Source) -> Result<Tls, TlsError> {
        let (acceptor, what) = build(&source)?;
        log::info!("TLS: {what}");
        Ok(Tls {
            source,
            acceptor: Arc::new(RwLock::new(acceptor)),
        })
    }

    /// Reads the files again; new handshakes use the new certificate, sessions in flight
    /// keep theirs. On error the old certificate stays. A self-signed certificate is kept.
    pub fn reload(&self) -> Result<(), TlsError> {
        if let Source::SelfSigned(name) = &self.source {
            log::info!("TLS: keeping the self-signed certificate for {name} (no files to reload)");
            return Ok(());
        }
        let (fresh, what) = build(&self.source)?;
        match self.acceptor.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        log::info!("TLS: {what}");
        Ok(())
    }

    fn current(&self) -> TlsAcceptor {
        match self.acceptor.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The server handshake on `io` (implicit TLS, `--smtps`). Not bounded here: the
    /// [`Server`](crate::Server) and the core's driver bound it by
    /// [`Limits::handshake_timeout`](samotop_core::Limits::handshake_timeout).
    pub async fn accept(&self, io: BoxIo) -> std::io::Result<(BoxIo, TlsInfo)> {
        handshake(self.current(), io).await
    }
}

impl TlsUpgrade for Tls {
    fn upgrade(&self, io: BoxIo) -> UpgradeFuture {
        Box::pin(handshake(self.current(), io))
    }
}

async fn handshake(acceptor: TlsAcceptor, io: BoxIo) -> std::io::Result<(BoxIo, TlsInfo)> {
    let stream = acceptor.accept(io).await?;
    let (_, conn) = stream.get_ref();
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => "TLS".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_else(|| "unknown".to_string());
    Ok((Box::new(stream), TlsInfo { version, cipher }))
}

/// Builds an acceptor and says, for the log, what it serves.
fn build(source: &Source) -> Result<(TlsAcceptor, String), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (certified, what) = match source {
        Source::Files { cert, key } => {
            let chain = load_certs(cert)?;
            let der = load_key(key)?;
            let certified = certified_key(&provider, chain, der, cert, key)?;
            let what = format!(
                "certificate {} ({} in chain), {:?} key {}",
                cert.display(),
                certified.cert.len(),
                certified.key.algorithm(),
                key.display()
            );
            (certified, what)
        }
        Source::SelfSigned(name) => {
            let (chain, der) = self_signed(name)?;
            let certified = provider
                .key_provider
                .load_private_key(der)
                .map(|k| CertifiedKey::new(chain, k))
                .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
            (certified, format!("self-signed certificate for {name}"))
        }
    };
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::SelfSigned(format!("TLS set-up: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    Ok((TlsAcceptor::from(Arc::new(config)), what))
}

/// The chain and key as rustls will use them, after checking that the key belongs to the
/// first certificate. rustls' `with_single_cert` lets an "unknown" consistency pass; we do
/// not: a key whose public half cannot be compared is refused too.
fn certified_key(
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    der: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::File {
            path: key_path.to_path_buf(),
            problem: format!("unsupported private key (RSA, ECDSA P-256/P-384 or Ed25519): {e}"),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    let pair = |problem: String| TlsError::Pair {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        problem,
    };
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(pair(
            "the private key does not match the public key of the first certificate \
             (the server's own certificate must come first in the chain)"
                .into(),
        )),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Err(pair(
            "cannot tell whether the private key matches the certificate".into(),
        )),
        Err(e) => Err(TlsError::File {
            path: cert_path.to_path_buf(),
            problem: format!("bad certificate: {e}"),
        }),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        problem: format!("cannot read the {what}: {e}"),
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, "certificate file")?;
    let problem = |problem: String| TlsError::File {
        path: path.to_path_buf(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(problem(
            "no certificate found (expected PEM '-----BEGIN CERTIFICATE-----')".into(),
        ));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, "private key file")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let problem = match e {
            pem::Error::NoItemsFound if contains(&bytes, b"ENCRYPTED") => {
                "the private key is encrypted; give an unencrypted one \
                 (openssl pkey -in KEY -out PLAIN)"
                    .to_string()
            }
            pem::Error::NoItemsFound => "no private key found (expected PEM \
                 'BEGIN PRIVATE KEY', 'BEGIN RSA PRIVATE KEY' or 'BEGIN EC PRIVATE KEY')"
                .to_string(),
            other => format!("not a PEM private key: {other}"),
        };
        TlsError::File {
            path: path.to_path_buf(),
            problem,
        }
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn self_signed(
    name: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_string()])
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    Ok((vec![certified.cert.der().clone()], key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn files(dir: &Path, cert: &str, key: &str) -> Source {
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert).expect("write cert");
        std::fs::write(&k, key).expect("write key");
        Source::Files { cert: c, key: k }
    }

    fn tmp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("samotop-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        dir
    }

    #[test]
    fn a_matching_pair_loads() {
        let dir = tmp("ok");
        let (c, k) = pair("mx.test");
        assert!(Tls::load(files(&dir, &c, &k)).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tmp("mismatch");
        let (c, _) = pair("mx.test");
        let (_, k) = pair("other.test");
        let err = Tls::load(files(&dir, &c, &k))
            .err()
            .expect("mismatch detected");
        assert!(matches!(err, TlsError::Pair { .. }), "{err}");
        assert!(err.to_string().contains("does not match"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn garbage_and_missing_files_name_the_file() {
        let dir = tmp("garbage");
        let (c, k) = pair("mx.test");
        let err = Tls::load(files(&dir, "garbage", &k))
            .err()
            .expect("garbage cert");
        assert!(err.to_string().contains("cert.pem"), "{err}");
        let err = Tls::load(files(&dir, &c, "garbage"))
            .err()
            .expect("garbage key");
        assert!(err.to_string().contains("key.pem"), "{err}");
        let missing = Source::Files {
            cert: dir.join("nope.pem"),
            key: dir.join("key.pem"),
        };
        let err = Tls::load(missing).err().expect("missing cert");
        assert!(err.to_string().contains("nope.pem"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn self_signed_loads() {
        assert!(Tls::load(Source::SelfSigned("mx.test".into())).is_ok());
    }
}

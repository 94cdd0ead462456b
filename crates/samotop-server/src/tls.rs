//! TLS on rustls: certificate loading, the STARTTLS upgrade, implicit TLS, and reload.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use samotop_core::{BoxIo, TlsInfo, TlsUpgrade, UpgradeFuture};
use tokio_rustls::TlsAcceptor;

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// PEM files, reloaded on SIGHUP.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// A self-signed certificate made at start-up for this name.
    SelfSigned(String),
}

/// Why TLS could not be set up. Each names the file and the problem.
#[derive(Debug, thiserror::Error)]
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
    #[error("{cert} / {key}: {problem}")]
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

/// The server's TLS set-up, shared by all listeners; swapped whole on reload.
#[derive(Clone)]
pub struct Tls {
    source: Source,
    acceptor: Arc<RwLock<TlsAcceptor>>,
}

impl Tls {
    /// Loads the certificate and key (or makes a self-signed pair).
    pub fn load(source: Source) -> Result<Tls, TlsError> {
        let acceptor = Arc::new(RwLock::new(build(&source)?));
        Ok(Tls { source, acceptor })
    }

    /// Reads the files again; new handshakes use the new certificate, sessions in flight
    /// keep theirs. On error the old certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = build(&self.source)?;
        match self.acceptor.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    fn current(&self) -> TlsAcceptor {
        match self.acceptor.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Implicit TLS: handshake first (for `--smtps`).
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

fn build(source: &Source) -> Result<TlsAcceptor, TlsError> {
    let (certs, key, cert_path, key_path) = match source {
        Source::Files { cert, key } => {
            (load_certs(cert)?, load_key(key)?, cert.clone(), key.clone())
        }
        Source::SelfSigned(name) => {
            let (c, k) = self_signed(name)?;
            (
                c,
                k,
                PathBuf::from("(self-signed)"),
                PathBuf::from("(self-signed)"),
            )
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pair_error = |problem: String| TlsError::Pair {
        cert: cert_path.clone(),
        key: key_path.clone(),
        problem,
    };
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| pair_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| pair_error(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |problem: String| TlsError::File {
        path: path.to_path_buf(),
        problem,
    };
    std::fs::metadata(path).map_err(|e| problem(e.to_string()))?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| problem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(problem(
            "no certificate found (expected PEM 'BEGIN CERTIFICATE')".into(),
        ));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    std::fs::metadata(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        problem: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })
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

//! `--encrypt-to`, `--encrypt-map`, `--encrypt-missing`, `--encrypt-headers`: encryption at
//! rest (samotop-smime) around whatever `--deliver` names, with the certificates reloaded
//! on SIGHUP.

use std::path::PathBuf;

use clap::Args;
use samotop_core::BoxDispatch;
use samotop_smime::{Encrypt, Headers, KeyFiles, KeyHandle, MapEntry, Missing};

/// The encryption flags.
#[derive(Debug, Clone, Args)]
pub struct EncryptArgs {
    /// Store every message S/MIME-encrypted to this certificate (PEM or DER; repeatable:
    /// the owner, an escrow key). Only the certificate: the private key stays with its owner.
    #[arg(
        long = "encrypt-to",
        env = "SAMOTOP_ENCRYPT_TO",
        value_name = "CERT",
        value_delimiter = ','
    )]
    pub encrypt_to: Vec<PathBuf>,

    /// Encrypt a recipient's copy to its own certificate: ADDRESS=CERT, or a directory of
    /// ADDRESS.pem files (repeatable). Reloaded on SIGHUP.
    #[arg(
        long = "encrypt-map",
        env = "SAMOTOP_ENCRYPT_MAP",
        value_name = "ADDRESS=CERT|DIR",
        value_delimiter = ','
    )]
    pub encrypt_map: Vec<String>,

    /// A recipient without a certificate in the map: refuse (550 5.7.1 at RCPT) or deliver
    /// (stored unencrypted).
    #[arg(
        long = "encrypt-missing",
        env = "SAMOTOP_ENCRYPT_MISSING",
        value_name = "POLICY",
        default_value = "refuse"
    )]
    pub encrypt_missing: String,

    /// Header fields left readable: default (From, To, Cc, Date, Subject, Message-ID, trace
    /// fields...) or all (hide all but From, To, Date; Subject "Encrypted message").
    #[arg(
        long = "encrypt-headers",
        env = "SAMOTOP_ENCRYPT_HEADERS",
        value_name = "WHICH",
        default_value = "default"
    )]
    pub encrypt_headers: String,
}

/// `--check-config`: the flags parse and every certificate loads.
pub fn check(args: &EncryptArgs) -> Result<(), String> {
    let (files, _, _) = parse(args)?;
    if !files.is_empty() {
        files.load().map_err(|e| format!("encryption: {e}"))?;
    }
    Ok(())
}

/// The key files and policies the flags name.
fn parse(args: &EncryptArgs) -> Result<(KeyFiles, Missing, Headers), String> {
    let missing: Missing = args
        .encrypt_missing
        .parse()
        .map_err(|e| format!("--encrypt-missing: {e}"))?;
    let headers: Headers = args
        .encrypt_headers
        .parse()
        .map_err(|e| format!("--encrypt-headers: {e}"))?;
    let map = args
        .encrypt_map
        .iter()
        .map(|m| m.parse::<MapEntry>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--encrypt-map: {e}"))?;
    let files = KeyFiles {
        to: args.encrypt_to.clone(),
        map,
    };
    Ok((files, missing, headers))
}

/// Wraps `inner` in [`Encrypt`] when an encryption flag is given. Checks every certificate
/// now (a bad one stops the start, naming the file) and reloads them on SIGHUP.
pub fn wrap(args: &EncryptArgs, inner: BoxDispatch) -> Result<BoxDispatch, String> {
    let (files, missing, headers) = parse(args)?;
    if files.is_empty() {
        return Ok(inner);
    }
    let keys = files.load().map_err(|e| format!("encryption: {e}"))?;
    for cert in keys.certificates() {
        log::info!(
            "encrypting at rest to {} ({}, {})",
            cert.subject(),
            cert.key_description(),
            cert.source()
        );
    }
    let encrypt = Encrypt::new(inner, keys).missing(missing).headers(headers);
    reload_on_hangup(files, encrypt.key_handle());
    Ok(BoxDispatch::new(encrypt))
}

/// Reads the certificates again on each SIGHUP; a failure keeps the ones in force.
fn reload_on_hangup(files: KeyFiles, handle: KeyHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        log::warn!("cannot listen for SIGHUP: encryption certificates will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match files.load() {
                Ok(keys) => {
                    let n = keys.certificates().len();
                    handle.replace(keys);
                    log::info!("SIGHUP: {n} encryption certificates reloaded");
                }
                Err(e) => {
                    log::error!(
                        "SIGHUP: encryption reload failed, keeping the old certificates: {e}"
                    )
                }
            }
        }
    });
}

//! [`Keys`]: whom each recipient's copy is encrypted to; [`KeyFiles`]: where they are read
//! from (the `--encrypt-to` and `--encrypt-map` flags), again on reload.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use samotop_core::Recipient;

use crate::{Certificate, Error};

/// The certificates to encrypt to: some for every message (`--encrypt-to`: the owner of
/// the whole store, an escrow key), and some per recipient (`--encrypt-map`).
///
/// A recipient's copy is encrypted to its own certificates (from the map) and to every
/// `encrypt_to` certificate. When a map is given, a recipient that is not in it has no
/// certificate of its own ("missing"): [`Missing`](crate::Missing) says what happens then,
/// even if there are `encrypt_to` certificates (a copy only the escrow could read would not
/// be the recipient's mail). Without a map, every recipient gets the `encrypt_to` ones.
///
/// Addresses are matched ignoring ASCII case, against the recipient's delivery address
/// (after recipient maps) and then its address as the client gave it.
///
/// ```
/// # let escrow = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rsa2048.pem"));
/// # let alice = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/p256.pem"));
/// # let now = std::time::SystemTime::now();
/// use samotop_smime::{Certificate, Keys};
/// let escrow = Certificate::from_bytes(escrow, "escrow.pem", now)?;
/// let alice = Certificate::from_bytes(alice, "alice.pem", now)?;
/// let keys = Keys::new().encrypt_to(escrow).map("alice@example.org", alice);
/// assert_eq!(keys.for_address("Alice@Example.org").map(|c| c.len()), Some(2));
/// assert!(keys.for_address("bob@example.org").is_none()); // not in the map: missing
/// # Ok::<(), samotop_smime::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Keys {
    to: Vec<Arc<Certificate>>,
    map: HashMap<String, Vec<Arc<Certificate>>>,
}

impl Keys {
    /// No certificates yet.
    pub fn new() -> Keys {
        Keys::default()
    }

    /// Every message is also encrypted to `cert`.
    pub fn encrypt_to(mut self, cert: Certificate) -> Keys {
        let cert = Arc::new(cert);
        if !self.to.contains(&cert) {
            self.to.push(cert);
        }
        self
    }

    /// `address`'s copy is encrypted to `cert` (call again to add more than one).
    pub fn map(mut self, address: impl AsRef<str>, cert: Certificate) -> Keys {
        let list = self
            .map
            .entry(address.as_ref().to_ascii_lowercase())
            .or_default();
        let cert = Arc::new(cert);
        if !list.contains(&cert) {
            list.push(cert);
        }
        self
    }

    /// True when there is no certificate at all.
    pub fn is_empty(&self) -> bool {
        self.to.is_empty() && self.map.is_empty()
    }

    /// How many addresses the map has.
    pub fn mapped_addresses(&self) -> usize {
        self.map.len()
    }

    /// Every distinct certificate, `encrypt_to` first.
    pub fn certificates(&self) -> Vec<Arc<Certificate>> {
        let mut all: Vec<Arc<Certificate>> = self.to.clone();
        let mut mapped: Vec<&Arc<Certificate>> = self.map.values().flatten().collect();
        mapped.sort_by_key(|c| c.source().to_string());
        for c in mapped {
            if !all.contains(c) {
                all.push(c.clone());
            }
        }
        all
    }

    /// The certificates for a delivery address, or `None` when it has none of its own
    /// (see the type's doc).
    pub fn for_address(&self, address: &str) -> Option<Vec<Arc<Certificate>>> {
        if self.map.is_empty() {
            return (!self.to.is_empty()).then(|| self.to.clone());
        }
        let own = self.map.get(&address.to_ascii_lowercase())?;
        let mut all = own.clone();
        for c in &self.to {
            if !all.contains(c) {
                all.push(c.clone());
            }
        }
        Some(all)
    }

    /// The certificates for a recipient: by its delivery address, then by the address the
    /// client gave.
    pub fn for_recipient(&self, recipient: &Recipient) -> Option<Vec<Arc<Certificate>>> {
        self.for_address(&recipient.address)
            .or_else(|| self.for_address(&recipient.path.to_string()))
    }
}

/// One `--encrypt-map` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapEntry {
    /// `ADDRESS=CERT.pem`: this address's copies are encrypted to that certificate.
    Address {
        /// The recipient address.
        address: String,
        /// The certificate file.
        path: PathBuf,
    },
    /// `DIR`: every `ADDRESS.pem` in the directory is that address's certificate
    /// (`alice@example.org.pem`). Other files are ignored.
    Dir(PathBuf),
}

impl FromStr for MapEntry {
    type Err = Error;
    /// `ADDRESS=FILE` (split at the first `=`), or a directory.
    fn from_str(s: &str) -> Result<MapEntry, Error> {
        let bad = |reason: &str| Error::BadMap {
            entry: s.to_string(),
            reason: reason.to_string(),
        };
        match s.split_once('=') {
            Some((address, path)) => {
                if address.is_empty() || address.chars().any(char::is_whitespace) {
                    return Err(bad("the address is empty or has spaces"));
                }
                if path.is_empty() {
                    return Err(bad("no certificate file after ="));
                }
                Ok(MapEntry::Address {
                    address: address.to_string(),
                    path: PathBuf::from(path),
                })
            }
            None if s.is_empty() => Err(bad("empty")),
            None => Ok(MapEntry::Dir(PathBuf::from(s))),
        }
    }
}

/// Where the certificates are: the files and directories the flags name. [`load`]
/// reads and checks them all (at start, and again on SIGHUP), so that one bad file stops
/// the start with an error naming it.
///
/// [`load`]: KeyFiles::load
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFiles {
    /// `--encrypt-to` files: every message is encrypted to these.
    pub to: Vec<PathBuf>,
    /// `--encrypt-map` entries.
    pub map: Vec<MapEntry>,
}

impl KeyFiles {
    /// True when no flag names a certificate (encryption is off).
    pub fn is_empty(&self) -> bool {
        self.to.is_empty() && self.map.is_empty()
    }

    /// Reads and checks every certificate now.
    ///
    /// # Errors
    ///
    /// The first file that cannot be read or used ([`Error`] names it), or
    /// [`Error::NoCertificates`] when nothing was found (an empty map directory and no
    /// `--encrypt-to`).
    pub fn load(&self) -> Result<Keys, Error> {
        let mut keys = Keys::new();
        for path in &self.to {
            keys = keys.encrypt_to(Certificate::load(path)?);
        }
        for entry in &self.map {
            match entry {
                MapEntry::Address { address, path } => {
                    keys = keys.map(address, Certificate::load(path)?);
                }
                MapEntry::Dir(dir) => {
                    let read = |source| Error::Read {
                        path: dir.clone(),
                        source,
                    };
                    let mut files = Vec::new();
                    for entry in std::fs::read_dir(dir).map_err(read)? {
                        let entry = entry.map_err(read)?;
                        let path = entry.path();
                        let is_pem = path
                            .extension()
                            .is_some_and(|e| e.eq_ignore_ascii_case("pem"));
                        let is_file = std::fs::metadata(&path).is_ok_and(|m| m.is_file());
                        if let (true, true, Some(stem)) =
                            (is_pem, is_file, path.file_stem().and_then(|s| s.to_str()))
                        {
                            files.push((stem.to_string(), path.clone()));
                        }
                    }
                    files.sort();
                    for (address, path) in files {
                        keys = keys.map(address, Certificate::load(&path)?);
                    }
                }
            }
        }
        if keys.is_empty() {
            return Err(Error::NoCertificates);
        }
        Ok(keys)
    }
}

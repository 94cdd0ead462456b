//! Unique file names for Maildir deliveries (cr.yp.to/proto/maildir.html, "The new
//! unique names").

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Deliveries started by this process: the `Q` part of the name.
static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// A name unique across processes and hosts: `SECONDS.M<usec>P<pid>Q<n>.HOST`, e.g.
/// `1700000000.M123456P789Q12.mx.example`.
///
/// The per-process counter makes names of one process distinct even within one
/// microsecond; seconds, microseconds and the PID separate processes on one host (a PID is
/// reused only after its process ended); the host name separates hosts sharing a directory.
pub(crate) fn unique() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    let host = host();
    let mut name = String::with_capacity(40 + host.len());
    let _ = write!(
        name,
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        n,
        host
    );
    name
}

/// This host's name, escaped once for use in file names.
fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| escape_host(&host_name()))
}

#[cfg(unix)]
fn host_name() -> String {
    let uname = rustix::system::uname();
    uname.nodename().to_string_lossy().into_owned()
}

#[cfg(not(unix))]
fn host_name() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_default()
}

/// The spec's escapes: `/` becomes `\057` and `:` becomes `\072`. Characters that have no
/// place in a file name (NUL, controls, `\` itself) are escaped the same way, and an empty
/// name becomes `localhost`.
pub(crate) fn escape_host(name: &str) -> String {
    if name.is_empty() {
        return "localhost".to_string();
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '/' | ':' | '\\' => {
                let _ = write!(out, "\\{:03o}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\{:03o}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn host_escapes() {
        assert_eq!(escape_host("mx.example"), "mx.example");
        assert_eq!(escape_host("a/b:c"), "a\\057b\\072c");
        assert_eq!(escape_host("a\\b"), "a\\134b");
        assert_eq!(escape_host("a\nb"), "a\\012b");
        assert_eq!(escape_host(""), "localhost");
    }

    #[test]
    fn name_shape() {
        let name = unique();
        let parts: Vec<&str> = name.splitn(3, '.').collect();
        assert!(parts[0].parse::<u64>().is_ok(), "{name}");
        assert!(parts[1].starts_with('M') && parts[1].contains('P') && parts[1].contains('Q'));
        assert!(!name.contains('/') && !name.contains(':'), "{name}");
    }

    #[test]
    fn ten_thousand_names_from_threads_never_collide() {
        let threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| (0..1250).map(|_| unique()).collect::<Vec<_>>()))
            .collect();
        let mut seen = HashSet::new();
        for t in threads {
            for name in t.join().expect("name thread") {
                assert!(seen.insert(name.clone()), "duplicate {name}");
            }
        }
        assert_eq!(seen.len(), 10_000);
    }
}

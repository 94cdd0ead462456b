//! Where a recipient's copy goes: [`Layout`], and the sanitizing of recipient names into
//! directory names.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::Error;

/// The longest directory name component we make, in bytes (`NAME_MAX` on Linux).
const MAX_COMPONENT: usize = 255;

/// How a [`Maildir`](super::Maildir) backend arranges mailboxes under its directory `DIR`.
///
/// Parsed from `single` and `per-recipient` (the server's `--maildir-layout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Every message goes once into the Maildir `DIR` itself (`DIR/tmp`, `DIR/new`,
    /// `DIR/cur`), whoever the recipients are. The default.
    #[default]
    Single,
    /// One Maildir per recipient, `DIR/<domain>/<local>/`, one durable copy in each, named
    /// after the recipient's delivery address (after any `--map`):
    ///
    /// * the address is split at its **last** `@`; the domain is lower-cased, the local part
    ///   keeps its case (unless [`Maildir::fold_case`](super::Maildir::fold_case) is on), and
    ///   a quoted local part (`"john doe"`) loses its quotes and escapes; both are normalised
    ///   to Unicode NFC, so that one name typed two ways is one mailbox;
    /// * an address without `@` (`Postmaster`, or a map's bare user name such as `john`)
    ///   goes to `DIR/<address>/`;
    /// * a name that could leave `DIR` or hide itself is refused at RCPT time with
    ///   `550 5.1.3` ([`Error::BadMailboxName`]): empty, starting with `.` (so also `.` and
    ///   `..`), containing `/`, `\`, NUL or another control character, or longer than 255
    ///   bytes. Other UTF-8 is kept as it is.
    ///
    /// Recipients whose names give the same directory share one copy.
    PerRecipient,
}

impl Layout {
    /// The name used on the command line: `single` or `per-recipient`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Layout::Single => "single",
            Layout::PerRecipient => "per-recipient",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Layout {
    type Err = Error;

    /// `single` or `per-recipient` (ASCII case-insensitive); anything else is
    /// [`Error::BadLayout`].
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.eq_ignore_ascii_case("single") {
            Ok(Layout::Single)
        } else if s.eq_ignore_ascii_case("per-recipient") {
            Ok(Layout::PerRecipient)
        } else {
            Err(Error::BadLayout {
                value: s.to_string(),
            })
        }
    }
}

/// The Maildir directory for a delivery address under `root`, per `layout`; the local part
/// lower-cased too when `fold_case`.
pub(crate) fn mailbox_dir(
    root: &Path,
    layout: Layout,
    fold_case: bool,
    address: &str,
) -> Result<PathBuf, Error> {
    use unicode_normalization::UnicodeNormalization;
    match layout {
        Layout::Single => Ok(root.to_path_buf()),
        Layout::PerRecipient => {
            let bad = |reason| Error::BadMailboxName {
                address: address.to_string(),
                reason,
            };
            let fold = |s: &str| -> String {
                let nfc: String = s.nfc().collect();
                if fold_case { nfc.to_lowercase() } else { nfc }
            };
            match address.rsplit_once('@') {
                Some((local, domain)) => {
                    let domain: String = domain.to_lowercase().nfc().collect();
                    let domain = component(&domain).map_err(bad)?;
                    let local = fold(&unquote(local));
                    let local = component(&local).map_err(bad)?;
                    Ok(root.join(domain).join(local))
                }
                None => {
                    let name = fold(address);
                    Ok(root.join(component(&name).map_err(bad)?))
                }
            }
        }
    }
}

/// A name that is safe as one directory name, or why not.
fn component(name: &str) -> Result<&str, &'static str> {
    if name.is_empty() {
        Err("empty name")
    } else if name.starts_with('.') {
        Err("name starts with a dot")
    } else if name.len() > MAX_COMPONENT {
        Err("name longer than 255 bytes")
    } else if name.contains(['/', '\\']) {
        Err("name contains a slash or backslash")
    } else if name.chars().any(char::is_control) {
        Err("name contains a control character")
    } else {
        Ok(name)
    }
}

/// A quoted local part without its quotes and backslash escapes (RFC 5321 4.1.2).
fn unquote(local: &str) -> std::borrow::Cow<'_, str> {
    match local
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out.into()
        }
        None => local.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per(address: &str) -> Result<PathBuf, Error> {
        mailbox_dir(Path::new("/srv/mail"), Layout::PerRecipient, false, address)
    }

    #[test]
    fn one_name_typed_two_ways_is_one_mailbox() {
        // "é" precomposed (U+00E9) and decomposed (e + U+0301).
        let a = per("jos\u{e9}@example.org").unwrap();
        let b = per("jose\u{301}@example.org").unwrap();
        assert_eq!(a, b);
        let folded = |address| {
            mailbox_dir(Path::new("/srv/mail"), Layout::PerRecipient, true, address).unwrap()
        };
        assert_eq!(folded("John@X"), folded("john@x"));
        assert_eq!(folded("JÖRG@X"), PathBuf::from("/srv/mail/x/jörg"));
        // Without folding, case stays (and two cases are two mailboxes).
        assert_ne!(per("John@x").unwrap(), per("john@x").unwrap());
    }

    fn refused(address: &str) -> &'static str {
        match per(address) {
            Err(Error::BadMailboxName { reason, .. }) => reason,
            other => panic!("{address:?} gave {other:?}"),
        }
    }

    #[test]
    fn plain_addresses() {
        let ok = [
            ("john@example.com", "/srv/mail/example.com/john"),
            ("John@EXAMPLE.Com", "/srv/mail/example.com/John"),
            ("\"john doe\"@example.com", "/srv/mail/example.com/john doe"),
            ("\"a@b\"@example.com", "/srv/mail/example.com/a@b"),
            ("\"a\\\"b\"@x", "/srv/mail/x/a\"b"),
            ("jöhn@bücher.DE", "/srv/mail/bücher.de/jöhn"),
            ("用户@例子.广告", "/srv/mail/例子.广告/用户"),
            ("a..b@x", "/srv/mail/x/a..b"),
            ("user@[192.0.2.1]", "/srv/mail/[192.0.2.1]/user"),
            (
                "user@[IPv6:2001:db8::1]",
                "/srv/mail/[ipv6:2001:db8::1]/user",
            ),
            ("Postmaster", "/srv/mail/Postmaster"),
            ("john", "/srv/mail/john"),
        ];
        for (address, dir) in ok {
            assert_eq!(
                per(address).expect(address),
                PathBuf::from(dir),
                "{address}"
            );
        }
    }

    #[test]
    fn hostile_addresses() {
        let bad = [
            "../../etc/passwd@x",
            "a/b@c",
            "a@../../etc",
            "a@x/y",
            "a\\b@c",
            "a@c\\d",
            "a\0b@c",
            "a@c\0",
            "a\nb@c",
            "a\u{7f}@c",
            "a\u{85}@c",
            ".@x",
            "..@x",
            "a@.",
            "a@..",
            ".hidden@x",
            "\"..\"@x",
            "\"a/b\"@x",
            "\"\"@x",
            "@x",
            "a@",
            "",
            ".",
            "..",
            "/etc/passwd",
            "..\\..\\x",
        ];
        for address in bad {
            let _ = refused(address);
        }
        assert_eq!(refused("a/b@c"), "name contains a slash or backslash");
        assert_eq!(refused("../../etc/passwd@x"), "name starts with a dot");
    }

    #[test]
    fn long_names() {
        let long = "a".repeat(255);
        assert!(per(&format!("{long}@x")).is_ok());
        assert!(per(&format!("x@{long}")).is_ok());
        let too_long = "a".repeat(256);
        assert_eq!(
            refused(&format!("{too_long}@x")),
            "name longer than 255 bytes"
        );
        assert_eq!(
            refused(&format!("x@{too_long}")),
            "name longer than 255 bytes"
        );
        // 128 two-byte characters: 256 bytes.
        assert_eq!(
            refused(&format!("{}@x", "é".repeat(128))),
            "name longer than 255 bytes"
        );
    }

    #[test]
    fn results_stay_under_the_root() {
        for address in ["a@b", "Postmaster", "x@[IPv6:::1]", "\"a b\"@c"] {
            let dir = per(address).expect(address);
            assert!(dir.starts_with("/srv/mail/"), "{address}");
            assert!(
                dir.components().all(|c| matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::RootDir
                )),
                "{address}"
            );
        }
    }

    #[test]
    fn single_layout_takes_anything() {
        let root = Path::new("/srv/mail");
        assert_eq!(
            mailbox_dir(root, Layout::Single, false, "../x").ok(),
            Some(root.to_path_buf())
        );
    }

    #[test]
    fn layout_names() {
        assert_eq!("single".parse::<Layout>().ok(), Some(Layout::Single));
        assert_eq!(
            "Per-Recipient".parse::<Layout>().ok(),
            Some(Layout::PerRecipient)
        );
        assert!("flat".parse::<Layout>().is_err());
        assert_eq!(Layout::PerRecipient.to_string(), "per-recipient");
        assert_eq!(Layout::default(), Layout::Single);
    }
}

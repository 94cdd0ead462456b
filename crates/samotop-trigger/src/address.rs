//! [`Address`]: a recipient's address taken apart, with the arguments carried in its
//! extension (`alerts+env=prod+region=eu@example.org`).

/// The most arguments read from one extension; the rest are ignored (the raw extension
/// keeps them).
pub const MAX_ARGS: usize = 16;
/// The longest argument name; a longer one is not an argument.
pub const MAX_ARG_NAME: usize = 32;
/// The longest argument value; a longer one is not an argument.
pub const MAX_ARG_VALUE: usize = 256;

/// A delivery address taken apart at its last `@` and its local part's first `+`.
///
/// `alerts+env=prod+region=eu@example.org` has the user `alerts`, the extension
/// `env=prod+region=eu`, the domain `example.org`, and the arguments `env=prod` and
/// `region=eu`. The extension is what follows the first `+` (Postfix's
/// `recipient_delimiter = +`, qmail's `EXT`); its arguments are its `+`-separated items of
/// the form `name=value` (a bare `name` has the empty value), where a name is 1 to
/// [`MAX_ARG_NAME`] characters of `A-Z a-z 0-9 _ - .` and a value at most
/// [`MAX_ARG_VALUE`] characters without control characters. Items that are not of that form
/// are skipped; at most [`MAX_ARGS`] are read. Nothing here fails: an address without `@`
/// has no domain, one without `+` no extension.
///
/// ```
/// use samotop_trigger::Address;
/// let a = Address::parse("alerts+env=prod+urgent@example.org");
/// assert_eq!((a.user, a.extension, a.domain), ("alerts", Some("env=prod+urgent"), Some("example.org")));
/// assert_eq!(a.args().collect::<Vec<_>>(), [("env", "prod"), ("urgent", "")]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address<'a> {
    /// The local part, as written (quotes kept).
    pub local: &'a str,
    /// The local part before the first `+`.
    pub user: &'a str,
    /// The local part after the first `+`, if there is one.
    pub extension: Option<&'a str>,
    /// After the last `@`, if there is one.
    pub domain: Option<&'a str>,
}

impl<'a> Address<'a> {
    /// Takes `address` apart (see the type's docs).
    pub fn parse(address: &'a str) -> Self {
        let (local, domain) = match address.rsplit_once('@') {
            Some((local, domain)) => (local, Some(domain)),
            None => (address, None),
        };
        let (user, extension) = match local.split_once('+') {
            Some((user, ext)) => (user, Some(ext)),
            None => (local, None),
        };
        Address {
            local,
            user,
            extension,
            domain,
        }
    }

    /// The arguments in the extension, in order (see the type's docs).
    pub fn args(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.extension
            .unwrap_or("")
            .split('+')
            .filter_map(arg)
            .take(MAX_ARGS)
    }
}

fn arg(item: &str) -> Option<(&str, &str)> {
    let (name, value) = item.split_once('=').unwrap_or((item, ""));
    let name_ok = !name.is_empty()
        && name.len() <= MAX_ARG_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    let value_ok = value.len() <= MAX_ARG_VALUE && !value.chars().any(char::is_control);
    (name_ok && value_ok).then_some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (address, user, extension, domain, arguments)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
    );

    #[test]
    fn table() {
        let cases: &[Case] = &[
            ("a@b", "a", None, Some("b"), &[]),
            ("a+@b", "a", Some(""), Some("b"), &[]),
            ("a+x=1@b", "a", Some("x=1"), Some("b"), &[("x", "1")]),
            (
                "a+x=1+y@b",
                "a",
                Some("x=1+y"),
                Some("b"),
                &[("x", "1"), ("y", "")],
            ),
            ("a+x=1=2@b", "a", Some("x=1=2"), Some("b"), &[("x", "1=2")]),
            (
                "a+=v+$(id)=1+ok=2@b",
                "a",
                Some("=v+$(id)=1+ok=2"),
                Some("b"),
                &[("ok", "2")],
            ),
            ("Postmaster", "Postmaster", None, None, &[]),
            ("\"a@b\"@c", "\"a@b\"", None, Some("c"), &[]),
            ("a+b@c@d", "a", Some("b@c"), Some("d"), &[]),
            ("", "", None, None, &[]),
        ];
        for &(input, user, ext, domain, args) in cases {
            let a = Address::parse(input);
            assert_eq!(
                (a.user, a.extension, a.domain),
                (user, ext, domain),
                "{input}"
            );
            assert_eq!(a.args().collect::<Vec<_>>(), args, "{input}");
        }
    }

    #[test]
    fn arguments_are_bounded() {
        let long = format!("a+{}@b", "k=v+".repeat(1000));
        assert_eq!(Address::parse(&long).args().count(), MAX_ARGS);
        let name = format!("a+{}=1@b", "n".repeat(MAX_ARG_NAME + 1));
        assert_eq!(Address::parse(&name).args().count(), 0);
        let value = format!("a+n={}@b", "v".repeat(MAX_ARG_VALUE + 1));
        assert_eq!(Address::parse(&value).args().count(), 0);
        assert_eq!(Address::parse("a+n=x\ny@b").args().count(), 0);
    }
}

//! What to do with an SPF result.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// What the [`SpfGuard`](crate::SpfGuard) does with the SPF result of a MAIL command.
///
/// Parses from `off`, `tag` or `reject` (case-insensitive), as the `--spf` flag gives it:
///
/// ```
/// use samotop_spf::Policy;
///
/// assert_eq!("reject".parse::<Policy>().unwrap(), Policy::Reject);
/// assert_eq!(Policy::default(), Policy::Tag);
/// assert!("strict".parse::<Policy>().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// No check, no DNS look-up: every sender is accepted as it is.
    Off,
    /// Check, accept every result, and record it in a `Received-SPF` header field
    /// (RFC 7208 9.1). The default.
    #[default]
    Tag,
    /// Check; refuse `fail` with [`SPF_FAIL`](crate::SPF_FAIL) (550 5.7.23), answer
    /// `temperror` with [`SPF_TEMPERROR`](crate::SPF_TEMPERROR) (451 4.7.24), and tag every
    /// other result (`pass`, `softfail`, `neutral`, `none`, `permerror`) like [`Policy::Tag`].
    /// RFC 7208 8.4 and 8.6.
    Reject,
}

impl Policy {
    /// The policy's name: `off`, `tag` or `reject`.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Off => "off",
            Policy::Tag => "tag",
            Policy::Reject => "reject",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = Error;

    /// `off`, `tag` or `reject`, in any case; anything else is [`Error::UnknownPolicy`].
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(Policy::Off),
            "tag" => Ok(Policy::Tag),
            "reject" => Ok(Policy::Reject),
            _ => Err(Error::UnknownPolicy(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let table: &[(&str, Option<Policy>)] = &[
            ("off", Some(Policy::Off)),
            ("tag", Some(Policy::Tag)),
            ("reject", Some(Policy::Reject)),
            ("REJECT", Some(Policy::Reject)),
            (" Tag ", Some(Policy::Tag)),
            ("", None),
            ("on", None),
            ("rejectx", None),
        ];
        for (input, expected) in table {
            assert_eq!(input.parse::<Policy>().ok(), *expected, "{input:?}");
        }
    }

    #[test]
    fn unknown_policy_error_names_the_choices() {
        let err = "strict".parse::<Policy>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown SPF policy \"strict\": expected off, tag or reject"
        );
    }

    #[test]
    fn display_round_trips() {
        for p in [Policy::Off, Policy::Tag, Policy::Reject] {
            assert_eq!(p.to_string().parse::<Policy>().unwrap(), p);
        }
    }
}

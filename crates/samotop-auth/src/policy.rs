//! What to do with the results: the operator's [`Policy`] (the binary's `--dkim` and
//! `--dmarc` flags), the domain owner's [`Disposition`], and the [`Action`] they give.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// What a DMARC record asks for a failing message (`p=`, `sp=`, `np=`; RFC 9989 4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Disposition {
    /// `none`: no preference; deliver.
    #[default]
    None,
    /// `quarantine`: suspicious; store, flagged.
    Quarantine,
    /// `reject`: refuse.
    Reject,
}

impl Disposition {
    /// The name as written in a record and in `policy.dmarc=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::None => "none",
            Disposition::Quarantine => "quarantine",
            Disposition::Reject => "reject",
        }
    }

    /// One level less strict (`t=y`, `pct` below 100: RFC 9989 4.7, RFC 7489 6.6.4).
    pub fn downgrade(self) -> Self {
        match self {
            Disposition::Reject => Disposition::Quarantine,
            _ => Disposition::None,
        }
    }

    pub(crate) fn parse(value: &[u8]) -> Option<Self> {
        match value.to_ascii_lowercase().as_slice() {
            b"none" => Some(Disposition::None),
            b"quarantine" => Some(Disposition::Quarantine),
            b"reject" => Some(Disposition::Reject),
            _ => None,
        }
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// DKIM handling (`--dkim off|tag`, default tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DkimMode {
    /// No `dkim=` results in the header field. Signatures are still verified when DMARC
    /// is on, because DMARC needs them.
    Off,
    /// Verify every signature (up to [`Limits::max_signatures`](crate::Limits)) and
    /// report each in `Authentication-Results`.
    #[default]
    Tag,
}

/// DMARC handling (`--dmarc off|tag|enforce`, default tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DmarcMode {
    /// No DMARC look-ups.
    Off,
    /// Evaluate and report `dmarc=` with the domain's policy; never refuse.
    #[default]
    Tag,
    /// Evaluate, report, and apply the policy: `reject` → [`DMARC_REJECT`] (550 5.7.1)
    /// at the end of data, `quarantine` → stored with the quarantine flag. A `temperror`
    /// never refuses.
    Enforce,
}

fn parse_mode<T>(value: &str, names: &[(&str, T)], what: &'static str) -> Result<T, Error>
where
    T: Copy,
{
    names
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map(|(_, mode)| *mode)
        .ok_or_else(|| Error::UnknownPolicy {
            what,
            value: value.to_owned(),
        })
}

impl FromStr for DkimMode {
    type Err = Error;
    /// `off` or `tag`, any case.
    fn from_str(s: &str) -> Result<Self, Error> {
        parse_mode(s, &[("off", DkimMode::Off), ("tag", DkimMode::Tag)], "dkim")
    }
}

impl FromStr for DmarcMode {
    type Err = Error;
    /// `off`, `tag` or `enforce`, any case.
    fn from_str(s: &str) -> Result<Self, Error> {
        parse_mode(
            s,
            &[
                ("off", DmarcMode::Off),
                ("tag", DmarcMode::Tag),
                ("enforce", DmarcMode::Enforce),
            ],
            "dmarc",
        )
    }
}

/// The operator's choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// DKIM: default [`DkimMode::Tag`].
    pub dkim: DkimMode,
    /// DMARC: default [`DmarcMode::Tag`].
    pub dmarc: DmarcMode,
    /// Validate and report ARC chains (`arc=`): default on.
    pub arc: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            dkim: DkimMode::Tag,
            dmarc: DmarcMode::Tag,
            arc: true,
        }
    }
}

impl Policy {
    /// Everything off: the scanner does no work and the report is empty.
    pub const OFF: Policy = Policy {
        dkim: DkimMode::Off,
        dmarc: DmarcMode::Off,
        arc: false,
    };

    /// Whether anything is checked at all.
    pub fn is_off(&self) -> bool {
        *self == Policy::OFF
    }

    /// Whether DKIM signatures must be verified (reported, or needed by DMARC).
    pub(crate) fn verifies_dkim(&self) -> bool {
        self.dkim == DkimMode::Tag || self.dmarc != DmarcMode::Off
    }
}

/// A refusal to send to the peer: a reply code, an enhanced status code (RFC 3463) and a
/// text. The session turns it into its reply type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The reply code.
    pub code: u16,
    /// The enhanced status code, as `[class, subject, detail]`.
    pub enhanced: [u16; 3],
    /// The human text.
    pub text: &'static str,
}

/// `550 5.7.1`: the author domain's DMARC policy is `reject` and the message failed DMARC
/// (RFC 9989 7.2; RFC 7372 has no DMARC-specific code, 5.7.1 is the common choice).
pub const DMARC_REJECT: Refusal = Refusal {
    code: 550,
    enhanced: [5, 7, 1],
    text: "Message rejected by the sender domain's DMARC policy",
};

/// What the session should do with the message, from [`Report::action`](crate::Report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing was checked (every check off): store as it is.
    Accept,
    /// Store with the `Authentication-Results` field on top; `quarantine` when DMARC is
    /// enforced and the domain asked for it.
    Tag {
        /// Store in quarantine (the backend's notion: a flag, a folder).
        quarantine: bool,
    },
    /// Refuse at the end of data.
    Reject(Refusal),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!("off".parse::<DkimMode>().unwrap(), DkimMode::Off);
        assert_eq!("TAG".parse::<DkimMode>().unwrap(), DkimMode::Tag);
        assert!("enforce".parse::<DkimMode>().is_err());
        assert_eq!("enforce".parse::<DmarcMode>().unwrap(), DmarcMode::Enforce);
        let e = "maybe".parse::<DmarcMode>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown dmarc policy \"maybe\" (off, tag or enforce)"
        );
    }

    #[test]
    fn downgrades() {
        assert_eq!(Disposition::Reject.downgrade(), Disposition::Quarantine);
        assert_eq!(Disposition::Quarantine.downgrade(), Disposition::None);
        assert_eq!(Disposition::None.downgrade(), Disposition::None);
        assert!(Disposition::Reject > Disposition::Quarantine);
    }
}

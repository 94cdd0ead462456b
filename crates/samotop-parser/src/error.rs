//! Errors of the command and reply grammars.

/// Why a line did not parse. Each variant names the command and what was expected, so that a
/// session can answer the client with a useful 5xx reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The verb is not a command this grammar knows (500 5.5.2 in a session).
    #[error("command not recognized")]
    UnknownCommand,
    /// The verb is known but the rest of the line does not match its syntax.
    #[error("syntax error, expected: {expected}")]
    Syntax {
        /// The command verb, upper case.
        verb: &'static str,
        /// The expected form, e.g. `"MAIL FROM:<reverse-path> [parameters]"`.
        expected: &'static str,
    },
    /// The path (address) of MAIL or RCPT is malformed (501 5.1.7 / 501 5.1.3 in a session).
    #[error("malformed address in {verb}, expected: {expected}")]
    BadPath {
        /// `"MAIL"` or `"RCPT"`.
        verb: &'static str,
        /// The expected form.
        expected: &'static str,
    },
    /// An ESMTP parameter has an invalid value or is given twice (501 5.5.4 in a session).
    #[error("invalid parameter {keyword} in {verb}")]
    BadParameter {
        /// `"MAIL"` or `"RCPT"`.
        verb: &'static str,
        /// The parameter keyword, upper case.
        keyword: String,
    },
    /// The line is not valid UTF-8 (RFC 6531 allows UTF-8 only, and only as UTF-8).
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
    /// A reply line does not have the form `NNN[ -]text` (client side).
    #[error("malformed reply line")]
    BadReply,
}

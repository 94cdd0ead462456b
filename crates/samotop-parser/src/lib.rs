//! The grammar of SMTP and LMTP: command lines for a server, reply lines for a client.
//!
//! # Brief overview
//!
//! This crate does no I/O and keeps no state. It turns one line of bytes into a typed value, or
//! into a [`ParseError`] that names what was expected, and never panics, whatever the bytes.
//!
//! * [`parse_command`] parses a command line (without its CR LF) into a [`Command`]: every
//!   command of RFC 5321 (EHLO, HELO, MAIL, RCPT, DATA, RSET, VRFY, EXPN, HELP, NOOP, QUIT),
//!   STARTTLS (RFC 3207), BDAT (RFC 3030) and LHLO (RFC 2033). Paths follow RFC 5321 4.1.2 with
//!   the UTF-8 of RFC 6531; MAIL and RCPT parameters are typed in [`MailParams`] and
//!   [`RcptParams`] (SIZE, BODY, SMTPUTF8, RET, ENVID, NOTIFY, ORCPT), the others kept for the
//!   session to refuse.
//! * [`parse_reply_line`] parses one reply line into a [`ReplyLine`], and [`parse_reply`]
//!   collects a possibly multi-line [`Reply`] from a buffer that may hold only part of it.
//!
//! The grammar is a PEG (the `peg` crate). It is strict where RFC 5321 is, and liberal where
//! deployed clients are not: a space after `MAIL FROM:` / `RCPT TO:`, spaces at the end of the
//! line, underscores in the HELO/EHLO/LHLO name. Every rule is linear in the length of the line.
//!
//! # Example
//!
//! ```
//! use samotop_parser::{parse_command, Command, Host, ReversePath};
//!
//! let command = parse_command(b"MAIL FROM:<a@b> SIZE=10")?;
//! let Command::Mail(ReversePath::Mailbox(sender), params) = command else {
//!     panic!("not a MAIL command: {command:?}");
//! };
//! assert_eq!(sender.local, "a");
//! assert_eq!(sender.domain, Host::Domain("b".into()));
//! assert_eq!(params.size, Some(10));
//! # Ok::<(), samotop_parser::ParseError>(())
//! ```
#![deny(missing_docs)]

mod command;
mod error;
mod grammar;
mod params;
mod parse;
mod reply;

pub use command::*;
pub use error::ParseError;
pub use reply::{Reply, ReplyLine, parse_reply, parse_reply_line};

/// Parses one command line, given without its line ending (no trailing CR LF).
///
/// The verb is matched in any case. Spaces at the end of the line are ignored.
///
/// ```
/// use samotop_parser::{parse_command, Command, ForwardPath, ParseError};
///
/// assert_eq!(parse_command(b"rcpt to:<Postmaster>")?, Command::Rcpt(ForwardPath::Postmaster, Default::default()));
/// assert_eq!(parse_command(b"BDAT 1000 LAST")?, Command::Bdat { size: 1000, last: true });
/// assert_eq!(parse_command(b"FOO"), Err(ParseError::UnknownCommand));
/// # Ok::<(), ParseError>(())
/// ```
///
/// # Errors
///
/// * [`ParseError::InvalidUtf8`]: the line is not UTF-8 (checked first).
/// * [`ParseError::UnknownCommand`]: the verb is not one of the commands above.
/// * [`ParseError::BadPath`]: the path of MAIL or RCPT is malformed (missing angle brackets, bad
///   local part or domain, a local part over 64 or a domain over 255 octets, `<>` in RCPT).
/// * [`ParseError::BadParameter`]: a known MAIL/RCPT parameter has a bad value or is repeated.
/// * [`ParseError::Syntax`]: anything else wrong with a known verb's line; it carries the usage,
///   e.g. `"MAIL FROM:<reverse-path> [parameters]"`.
pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    parse::command(line)
}

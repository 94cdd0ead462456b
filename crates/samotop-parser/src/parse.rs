//! One command line: the verb is split off and matched here, its argument goes to the grammar.

use crate::command::{Command, ForwardPath, Host, Mailbox, ReversePath};
use crate::error::ParseError;
use crate::grammar::smtp;
use crate::params::{mail_params, rcpt_params};

/// The verbs this parser knows, upper case, each with the usage string that a
/// [`ParseError::Syntax`] carries.
const VERBS: [(&str, &str); 14] = [
    ("HELO", "HELO <domain>"),
    ("EHLO", "EHLO <domain-or-address-literal>"),
    ("LHLO", "LHLO <domain-or-address-literal>"),
    ("MAIL", "MAIL FROM:<reverse-path> [parameters]"),
    ("RCPT", "RCPT TO:<forward-path> [parameters]"),
    ("DATA", "DATA"),
    ("BDAT", "BDAT <chunk-size> [LAST]"),
    ("RSET", "RSET"),
    ("VRFY", "VRFY <string>"),
    ("EXPN", "EXPN <string>"),
    ("HELP", "HELP [string]"),
    ("NOOP", "NOOP [string]"),
    ("QUIT", "QUIT"),
    ("STARTTLS", "STARTTLS"),
];

/// Longest local part, in octets (RFC 5321 4.5.3.1.1).
const MAX_LOCAL_PART: usize = 64;
/// Longest domain, in octets (RFC 5321 4.5.3.1.2).
const MAX_DOMAIN: usize = 255;

/// A known verb, with its usage string.
#[derive(Clone, Copy)]
struct Verb {
    name: &'static str,
    usage: &'static str,
}

impl Verb {
    /// The verb spelled `word` in any case.
    fn find(word: &str) -> Option<Verb> {
        VERBS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
            .map(|&(name, usage)| Verb { name, usage })
    }

    fn syntax(self) -> ParseError {
        ParseError::Syntax {
            verb: self.name,
            expected: self.usage,
        }
    }
}

/// Parses one command line given without its CR LF. See [`crate::parse_command`].
pub(crate) fn command(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::InvalidUtf8)?;
    let line = line.trim_end_matches(' ');
    let verb_end = line
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(line.len());
    let (word, rest) = line.split_at(verb_end);
    let verb = Verb::find(word).ok_or(ParseError::UnknownCommand)?;
    let arg = match rest.strip_prefix(' ') {
        Some(arg) => Some(arg),
        None if rest.is_empty() => None,
        None => return Err(verb.syntax()),
    };
    argument(verb, arg)
}

/// Parses the argument of `verb`: `None` when the line is the verb alone.
fn argument(verb: Verb, arg: Option<&str>) -> Result<Command, ParseError> {
    match (verb.name, arg) {
        ("HELO", Some(arg)) => hello(verb, arg).map(Command::Helo),
        ("EHLO", Some(arg)) => hello(verb, arg).map(Command::Ehlo),
        ("LHLO", Some(arg)) => hello(verb, arg).map(Command::Lhlo),
        ("MAIL", Some(arg)) => mail(verb, arg),
        ("RCPT", Some(arg)) => rcpt(verb, arg),
        ("BDAT", Some(arg)) => bdat(verb, arg),
        ("VRFY", Some(arg)) => text(verb, arg).map(Command::Vrfy),
        ("EXPN", Some(arg)) => text(verb, arg).map(Command::Expn),
        ("HELP", arg) => optional_text(verb, arg).map(Command::Help),
        ("NOOP", arg) => optional_text(verb, arg).map(Command::Noop),
        ("DATA", None) => Ok(Command::Data),
        ("RSET", None) => Ok(Command::Rset),
        ("QUIT", None) => Ok(Command::Quit),
        ("STARTTLS", None) => Ok(Command::StartTls),
        _ => Err(verb.syntax()),
    }
}

/// The argument of HELO, EHLO or LHLO: a domain or an address literal.
fn hello(verb: Verb, arg: &str) -> Result<Host, ParseError> {
    let host = smtp::helo_host(arg).map_err(|_| verb.syntax())?;
    if host_len(&host) > MAX_DOMAIN {
        return Err(verb.syntax());
    }
    Ok(host)
}

/// `MAIL FROM:<reverse-path> [parameters]`, with spaces tolerated after the colon.
fn mail(verb: Verb, arg: &str) -> Result<Command, ParseError> {
    let path = path_text(verb, arg, "FROM:")?;
    let bad_path = bad_path(verb, "<local-part@domain> or <>");
    let (path, rest) = smtp::reverse_path_prefix(path).map_err(|_| bad_path)?;
    if let ReversePath::Mailbox(mailbox) = &path {
        check_lengths(verb, mailbox)?;
    }
    Ok(Command::Mail(path, mail_params(rest, verb.usage)?))
}

/// `RCPT TO:<forward-path> [parameters]`, with spaces tolerated after the colon.
fn rcpt(verb: Verb, arg: &str) -> Result<Command, ParseError> {
    let path = path_text(verb, arg, "TO:")?;
    let bad_path = bad_path(verb, "<local-part@domain> or <Postmaster>");
    let (path, rest) = smtp::forward_path_prefix(path).map_err(|_| bad_path)?;
    if let ForwardPath::Mailbox(mailbox) = &path {
        check_lengths(verb, mailbox)?;
    }
    Ok(Command::Rcpt(path, rcpt_params(rest, verb.usage)?))
}

/// What follows `FROM:` or `TO:` (any case) and the spaces after it.
fn path_text<'a>(verb: Verb, arg: &'a str, keyword: &str) -> Result<&'a str, ParseError> {
    let head = arg.get(..keyword.len()).ok_or(verb.syntax())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return Err(verb.syntax());
    }
    Ok(arg[keyword.len()..].trim_start_matches(' '))
}

fn bad_path(verb: Verb, expected: &'static str) -> ParseError {
    ParseError::BadPath {
        verb: verb.name,
        expected,
    }
}

/// The length limits of RFC 5321 4.5.3.1: 64 octets of local part, 255 of domain.
fn check_lengths(verb: Verb, mailbox: &Mailbox) -> Result<(), ParseError> {
    if mailbox.local.len() > MAX_LOCAL_PART {
        return Err(bad_path(verb, "a local part of at most 64 octets"));
    }
    if host_len(&mailbox.domain) > MAX_DOMAIN {
        return Err(bad_path(verb, "a domain of at most 255 octets"));
    }
    Ok(())
}

/// The length of a domain, or of the inside of a general address literal. IP literals are
/// short by construction.
fn host_len(host: &Host) -> usize {
    match host {
        Host::Domain(domain) => domain.len(),
        Host::Other { tag, content } => tag.len() + 1 + content.len(),
        Host::Ipv4(_) | Host::Ipv6(_) => 0,
    }
}

/// `BDAT chunk-size [LAST]`.
fn bdat(verb: Verb, arg: &str) -> Result<Command, ParseError> {
    let (size, last) = smtp::bdat_args(arg).map_err(|_| verb.syntax())?;
    Ok(Command::Bdat { size, last })
}

/// The required argument of VRFY or EXPN, as written.
fn text(verb: Verb, arg: &str) -> Result<String, ParseError> {
    smtp::text_arg(arg).map_err(|_| verb.syntax())?;
    Ok(arg.to_string())
}

/// The optional argument of HELP or NOOP, as written; a lone trailing space gives `None`.
fn optional_text(verb: Verb, arg: Option<&str>) -> Result<Option<String>, ParseError> {
    match arg {
        None | Some("") => Ok(None),
        Some(arg) => text(verb, arg).map(Some),
    }
}

//! The PEG grammar (`peg` crate) for the arguments of SMTP/LMTP commands and for reply lines.
//!
//! The verb of a command line is split off by hand in [`crate::parse`]; this grammar covers what
//! follows it: paths (RFC 5321 4.1.2, extended for UTF-8 by RFC 6531 3.3), hosts and address
//! literals (RFC 5321 4.1.3), ESMTP parameter tokens (RFC 5321 4.1.2 `esmtp-param`), and the
//! parts of a reply line (RFC 5321 4.2, enhanced codes RFC 2034 / RFC 3463).
//!
//! Every rule is linear in its input: repetitions are greedy and never backtrack into
//! themselves, and each ordered choice starts on a different character or on a bounded span,
//! so a 4 KiB line of `a.a.a.` or `@a,@a,` costs a few passes at most.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::command::{ForwardPath, Host, Mailbox, ReversePath};

peg::parser! {
    /// Rules over `str`: the caller has already checked that the line is UTF-8.
    pub(crate) grammar smtp() for str {
        // ---------------------------------------------------------------- paths

        /// `Reverse-path` (`<>` or `Path`), followed by anything: returns the rest of the line.
        pub rule reverse_path_prefix() -> (ReversePath, &'input str)
            = p:reverse_path() rest:$([_]*) { (p, rest) }

        /// `Forward-path` (`<Postmaster>` or `Path`), followed by anything: returns the rest.
        pub rule forward_path_prefix() -> (ForwardPath, &'input str)
            = p:forward_path() rest:$([_]*) { (p, rest) }

        rule reverse_path() -> ReversePath
            = "<>" { ReversePath::Null }
            / m:path() { ReversePath::Mailbox(m) }

        rule forward_path() -> ForwardPath
            = "<" i("postmaster") ">" { ForwardPath::Postmaster }
            / m:path() { ForwardPath::Mailbox(m) }

        /// `Path = "<" [ A-d-l ":" ] Mailbox ">"`; the source route is dropped (RFC 5321 C).
        rule path() -> Mailbox
            = "<" (source_route() ":")? m:mailbox() ">" { m }

        /// `A-d-l = At-domain *( "," At-domain )`, `At-domain = "@" Domain`.
        rule source_route() = ("@" domain(false)) ++ ","

        rule mailbox() -> Mailbox
            = local:$(local_part()) "@" domain:host(false)
              { Mailbox { local: local.to_string(), domain } }

        /// `Local-part = Dot-string / Quoted-string`.
        rule local_part() = dot_string() / quoted_string()

        /// `Dot-string = Atom *("." Atom)`.
        rule dot_string() = atom() ++ "."

        rule atom() = atext()+

        /// RFC 5322 `atext`, plus `UTF8-non-ascii` (RFC 6531 3.3).
        rule atext()
            = ['a'..='z' | 'A'..='Z' | '0'..='9' | '!' | '#' | '$' | '%' | '&' | '\'' | '*'
               | '+' | '-' | '/' | '=' | '?' | '^' | '_' | '`' | '{' | '|' | '}' | '~']
            / non_ascii()

        /// `Quoted-string = DQUOTE *QcontentSMTP DQUOTE`.
        rule quoted_string() = "\"" (qtext() / quoted_pair())* "\""

        /// `qtextSMTP = %d32-33 / %d35-91 / %d93-126`, plus `UTF8-non-ascii` (RFC 6531 3.3).
        rule qtext() = [' ' | '!' | '#'..='[' | ']'..='~'] / non_ascii()

        /// `quoted-pairSMTP = %d92 %d32-126`.
        rule quoted_pair() = "\\" [' '..='~']

        /// `UTF8-non-ascii` (RFC 6531 3.3), without the C1 control characters.
        rule non_ascii() = [c if !c.is_ascii() && !c.is_control()]

        /// A non-ASCII character of a U-label: no control characters and no white space, which
        /// no IDNA label holds (RFC 5892).
        rule label_non_ascii() = [c if !c.is_ascii() && !c.is_control() && !c.is_whitespace()]

        // ---------------------------------------------------------------- hosts

        /// The argument of HELO, EHLO and LHLO: a domain (underscores tolerated in its labels,
        /// as Windows clients send them) or an address literal.
        pub rule helo_host() -> Host = host(true)

        /// `Domain / address-literal`. With `underscore`, labels may contain `_`.
        rule host(underscore: bool) -> Host
            = address_literal()
            / d:$(domain(underscore)) { Host::Domain(d.to_string()) }

        /// `Domain = sub-domain *("." sub-domain)`.
        rule domain(underscore: bool) = label(underscore) ++ "."

        /// `sub-domain = Let-dig [Ldh-str]`, or a U-label (RFC 6531 3.3): letters and digits,
        /// hyphens only inside.
        rule label(underscore: bool)
            = let_dig(underscore)+ ("-"+ let_dig(underscore)+)*

        rule let_dig(underscore: bool)
            = ['a'..='z' | 'A'..='Z' | '0'..='9']
            / label_non_ascii()
            / "_" {? if underscore { Ok(()) } else { Err("letter or digit") } }

        /// `address-literal = "[" ( IPv4 / IPv6 / General-address-literal ) "]"`.
        rule address_literal() -> Host = "[" h:literal_body() "]" { h }

        rule literal_body() -> Host
            = i("IPv6:") a:ipv6() { Host::Ipv6(a) }
            / a:ipv4() { Host::Ipv4(a) }
            / general_literal()

        /// `General-address-literal = Standardized-tag ":" 1*dcontent`. The tag `IPv6` is
        /// reserved: its content must be an IPv6 address.
        rule general_literal() -> Host
            = tag:$(standardized_tag()) ":" content:$(dcontent()+) {?
                if tag.eq_ignore_ascii_case("IPv6") {
                    Err("IPv6 address")
                } else {
                    Ok(Host::Other { tag: tag.to_string(), content: content.to_string() })
                }
            }

        /// `Standardized-tag = Ldh-str`: ends with a letter or digit.
        rule standardized_tag() = "-"* alnum()+ ("-"+ alnum()+)*

        rule alnum() = ['a'..='z' | 'A'..='Z' | '0'..='9']

        /// `dcontent = %d33-90 / %d94-126`.
        rule dcontent() = ['!'..='Z' | '^'..='~']

        /// `IPv4-address-literal = Snum 3("." Snum)`.
        pub rule ipv4() -> Ipv4Addr
            = a:snum() "." b:snum() "." c:snum() "." d:snum() { Ipv4Addr::new(a, b, c, d) }

        /// `Snum = 1*3DIGIT`, a value from 0 to 255.
        rule snum() -> u8
            = n:$(['0'..='9']*<1,3>) {? n.parse().or(Err("number from 0 to 255")) }

        /// `IPv6-addr`: the characters are collected here, the forms checked by [`parse_ipv6`].
        rule ipv6() -> Ipv6Addr
            = s:$(['0'..='9' | 'a'..='f' | 'A'..='F' | ':' | '.']+) {?
                parse_ipv6(s).ok_or("IPv6 address")
            }

        // ---------------------------------------------------------------- ESMTP parameters

        /// `esmtp-param = esmtp-keyword ["=" esmtp-value]`.
        pub rule esmtp_param() -> (&'input str, Option<&'input str>)
            = k:$(esmtp_keyword()) v:("=" v:$(esmtp_value()) { v })? { (k, v) }

        /// `esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")`.
        pub rule esmtp_keyword() = alnum() (alnum() / "-")*

        /// `esmtp-value = 1*(%d33-60 / %d62-126)`, plus `UTF8-non-ascii` (RFC 6531 3.3).
        rule esmtp_value() = (['!'..='<' | '>'..='~'] / non_ascii())+

        /// RFC 3461 4.2 `addr-type = atom`.
        pub rule addr_type() = atom()

        // ---------------------------------------------------------------- other arguments

        /// `BDAT` arguments (RFC 3030 2): `chunk-size [SP end-marker]`, `end-marker = "LAST"`.
        pub rule bdat_args() -> (u64, bool)
            = n:$(['0'..='9']+) last:(" " i("LAST"))?
              {? n.parse().map(|size| (size, last.is_some())).or(Err("chunk size")) }

        /// The free-form argument of VRFY, EXPN, HELP and NOOP: printable characters, spaces and
        /// UTF-8, no control characters. (RFC 5321 says `String = Atom / Quoted-string`; clients
        /// send mailboxes and phrases there, which cannot hurt.)
        pub rule text_arg() = ([' '..='~'] / non_ascii())+

        // ---------------------------------------------------------------- replies

        /// `Reply-code [ ( SP / "-" ) textstring ]`: code, whether it is the last line, text.
        pub rule reply_line() -> (u16, bool, &'input str)
            = code:reply_code() rest:(
                  " " t:$(reply_text()) { (true, t) }
                / "-" t:$(reply_text()) { (false, t) }
              )?
              { match rest { Some((last, text)) => (code, last, text), None => (code, true, "") } }

        /// `Reply-code`: a first digit 2 to 5, then two digits.
        rule reply_code() -> u16
            = c:$(['2'..='5'] ['0'..='9'] ['0'..='9']) {? c.parse().or(Err("reply code")) }

        /// `textstring`, widened to UTF-8 (RFC 6531 3.7.4): tab, printable, non-ASCII.
        rule reply_text() = (['\t' | ' '..='~'] / non_ascii())*

        /// An enhanced status code at the start of a reply text, `class.subject.detail` then a
        /// space or the end (RFC 2034 4, RFC 3463 2); returns it and the text after it.
        pub rule enhanced_code() -> ([u16; 3], &'input str)
            = class:digits(1) "." subject:digits(3) "." detail:digits(3)
              rest:(" " r:$([_]*) { r } / ![_] { "" })
              { ([class, subject, detail], rest) }

        rule digits(max: usize) -> u16
            = n:$(['0'..='9']*<1, {max}>) {? n.parse().or(Err("digits")) }

        // ---------------------------------------------------------------- helpers

        /// The ASCII literal `lit`, case-insensitively.
        rule i(lit: &'static str)
            = quiet!{ s:$([_]*<{lit.len()}>) {?
                if s.eq_ignore_ascii_case(lit) { Ok(()) } else { Err(lit) }
            } }
    }
}

/// Parses `IPv6-addr` exactly as RFC 5321 4.1.3 has it: `IPv6-full`, `IPv6-comp`, `IPv6v4-full`
/// or `IPv6v4-comp`. Groups are 1 to 4 hex digits; `::` appears at most once and stands for at
/// least two groups of zeros; an embedded IPv4 address takes the place of the last two groups.
pub(crate) fn parse_ipv6(s: &str) -> Option<Ipv6Addr> {
    let (hex, v4) = split_embedded_ipv4(s)?;
    let width = if v4.is_some() { 6 } else { 8 };
    let mut groups = [0u16; 8];
    expand_hex_groups(hex, &mut groups[..width])?;
    if let Some(v4) = v4 {
        let [a, b, c, d] = v4.octets();
        groups[6] = u16::from_be_bytes([a, b]);
        groups[7] = u16::from_be_bytes([c, d]);
    }
    Some(Ipv6Addr::from(groups))
}

/// Splits `s` into its hex part and, when it ends in a dotted quad, that IPv4 address. The hex
/// part keeps a `::` that precedes the IPv4 address and drops a single `:`.
fn split_embedded_ipv4(s: &str) -> Option<(&str, Option<Ipv4Addr>)> {
    if !s.contains('.') {
        return Some((s, None));
    }
    let colon = s.rfind(':')?;
    let v4 = smtp::ipv4(&s[colon + 1..]).ok()?;
    let head = &s[..=colon];
    let hex = if head.ends_with("::") {
        head
    } else {
        &head[..colon]
    };
    if hex.is_empty() {
        return None;
    }
    Some((hex, Some(v4)))
}

/// Fills `out` from colon-separated hex groups with at most one `::`. Without `::` there must be
/// exactly `out.len()` groups; with it, at most `out.len() - 2`.
fn expand_hex_groups(s: &str, out: &mut [u16]) -> Option<()> {
    match s.split_once("::") {
        None => {
            let n = read_hex_groups(s, out)?;
            (n == out.len()).then_some(())
        }
        Some((left, right)) => {
            let max = out.len().checked_sub(2)?;
            let mut left_groups = [0u16; 8];
            let mut right_groups = [0u16; 8];
            let l = read_hex_groups(left, &mut left_groups[..max])?;
            let r = read_hex_groups(right, &mut right_groups[..max])?;
            if l + r > max {
                return None;
            }
            out[..l].copy_from_slice(&left_groups[..l]);
            let start = out.len() - r;
            out[start..].copy_from_slice(&right_groups[..r]);
            Some(())
        }
    }
}

/// Reads `IPv6-hex *(":" IPv6-hex)` (or nothing) into `out`; returns the number of groups, or
/// `None` when a group is malformed or there are more groups than `out` holds.
fn read_hex_groups(s: &str, out: &mut [u16]) -> Option<usize> {
    if s.is_empty() {
        return Some(0);
    }
    let mut n = 0;
    for group in s.split(':') {
        let valid = (1..=4).contains(&group.len()) && group.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid || n == out.len() {
            return None;
        }
        out[n] = u16::from_str_radix(group, 16).ok()?;
        n += 1;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Option<Ipv6Addr> {
        parse_ipv6(s)
    }

    #[test]
    fn ipv6_forms_of_rfc5321() {
        let cases = [
            ("1:2:3:4:5:6:7:8", Some("1:2:3:4:5:6:7:8")),
            ("::1", Some("::1")),
            ("::", Some("::")),
            ("2001:db8::", Some("2001:db8::")),
            (
                "2001:DB8::8:800:200C:417A",
                Some("2001:db8::8:800:200c:417a"),
            ),
            ("1:2:3:4:5:6::", Some("1:2:3:4:5:6::")),
            ("::3:4:5:6:7:8", Some("::3:4:5:6:7:8")),
            ("1:2:3:4:5:6:1.2.3.4", Some("1:2:3:4:5:6:102:304")),
            ("::1.2.3.4", Some("::102:304")),
            ("::ffff:192.0.2.1", Some("::ffff:192.0.2.1")),
            ("1:2:3:4::1.2.3.4", Some("1:2:3:4::102:304")),
            ("1::2:3:4:1.2.3.4", Some("1::2:3:4:102:304")),
            // `::` must stand for at least two groups (RFC 5321 4.1.3 comment).
            ("1:2:3:4:5:6:7::", None),
            ("1:2:3:4:5::1.2.3.4", None),
            ("1:2:3:4:5:6:7", None),
            ("1:2:3:4:5:6:7:8:9", None),
            ("1::2::3", None),
            (":::", None),
            (":1::", None),
            ("1:", None),
            ("12345::", None),
            ("g::", None),
            ("1:2:3:4:5:1.2.3.4", None),
            ("::1.2.3", None),
            ("::1.2.3.256", None),
            ("1.2.3.4", None),
            ("", None),
        ];
        for (input, expected) in cases {
            let expected = expected.map(|e| e.parse::<Ipv6Addr>().expect("test data"));
            assert_eq!(v6(input), expected, "{input}");
        }
    }

    #[test]
    fn enhanced_code_needs_space_or_end() {
        assert_eq!(smtp::enhanced_code("2.1.0 Ok"), Ok(([2, 1, 0], "Ok")));
        assert_eq!(smtp::enhanced_code("5.7.1"), Ok(([5, 7, 1], "")));
        assert_eq!(smtp::enhanced_code("4.123.456 x"), Ok(([4, 123, 456], "x")));
        assert!(smtp::enhanced_code("2.1.0Ok").is_err());
        assert!(smtp::enhanced_code("2.1.1234 x").is_err());
        assert!(smtp::enhanced_code("22.1.0 x").is_err());
    }

    #[test]
    fn reply_line_forms() {
        assert_eq!(smtp::reply_line("250"), Ok((250, true, "")));
        assert_eq!(
            smtp::reply_line("250-PIPELINING"),
            Ok((250, false, "PIPELINING"))
        );
        assert_eq!(smtp::reply_line("220 x ESMTP"), Ok((220, true, "x ESMTP")));
        assert!(smtp::reply_line("199 x").is_err());
        assert!(smtp::reply_line("600 x").is_err());
        assert!(smtp::reply_line("250x").is_err());
        assert!(smtp::reply_line("25").is_err());
    }

    #[test]
    fn underscore_only_in_helo() {
        assert!(smtp::helo_host("my_pc.local").is_ok());
        assert!(smtp::reverse_path_prefix("<a@my_pc.local>").is_err());
    }
}

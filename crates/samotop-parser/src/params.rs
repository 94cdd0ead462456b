//! ESMTP parameters of MAIL and RCPT (RFC 5321 4.1.2 `Mail-parameters`, `Rcpt-parameters`):
//! split into `keyword[=value]` tokens by the grammar, then given meaning here.

use crate::command::{Body, MailParams, Notify, RcptParams, Ret};
use crate::error::ParseError;
use crate::grammar::smtp;

/// The parameters after `MAIL FROM:<...>`. `rest` is what follows the `>`.
pub(crate) fn mail_params(rest: &str, usage: &'static str) -> Result<MailParams, ParseError> {
    let mut params = MailParams::default();
    for token in tokens("MAIL", usage, rest)? {
        let (keyword, value) = param("MAIL", usage, token)?;
        apply_mail(&mut params, keyword, value)?;
    }
    Ok(params)
}

/// The parameters after `RCPT TO:<...>`. `rest` is what follows the `>`.
pub(crate) fn rcpt_params(rest: &str, usage: &'static str) -> Result<RcptParams, ParseError> {
    let mut params = RcptParams::default();
    for token in tokens("RCPT", usage, rest)? {
        let (keyword, value) = param("RCPT", usage, token)?;
        apply_rcpt(&mut params, keyword, value)?;
    }
    Ok(params)
}

/// Splits the text after a path into parameter tokens. RFC 5321 puts one space before each
/// parameter; more are tolerated. Anything glued to the `>` is a syntax error.
fn tokens<'a>(
    verb: &'static str,
    usage: &'static str,
    rest: &'a str,
) -> Result<impl Iterator<Item = &'a str>, ParseError> {
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(ParseError::Syntax {
            verb,
            expected: usage,
        });
    }
    Ok(rest.split(' ').filter(|token| !token.is_empty()))
}

/// One `esmtp-param`: the keyword upper-cased, and the value as written. A token whose keyword
/// is well formed but whose value is not is a [`ParseError::BadParameter`]; anything else that
/// does not match is a [`ParseError::Syntax`].
fn param<'a>(
    verb: &'static str,
    usage: &'static str,
    token: &'a str,
) -> Result<(String, Option<&'a str>), ParseError> {
    match smtp::esmtp_param(token) {
        Ok((keyword, value)) => Ok((keyword.to_ascii_uppercase(), value)),
        Err(_) => {
            let keyword = token.split('=').next().unwrap_or_default();
            if smtp::esmtp_keyword(keyword).is_ok() {
                Err(bad(verb, keyword.to_ascii_uppercase()))
            } else {
                Err(ParseError::Syntax {
                    verb,
                    expected: usage,
                })
            }
        }
    }
}

fn bad(verb: &'static str, keyword: String) -> ParseError {
    ParseError::BadParameter { verb, keyword }
}

fn apply_mail(p: &mut MailParams, keyword: String, value: Option<&str>) -> Result<(), ParseError> {
    let ok = match keyword.as_str() {
        "SIZE" => set_once(&mut p.size, value.and_then(size)),
        "BODY" => set_once(&mut p.body, value.and_then(body)),
        "RET" => set_once(&mut p.ret, value.and_then(ret)),
        "ENVID" => set_once(&mut p.envid, value.and_then(decode_xtext)),
        "SMTPUTF8" => {
            let fresh = !p.smtputf8 && value.is_none();
            p.smtputf8 = true;
            fresh
        }
        _ => {
            p.other.push((keyword, value.map(str::to_string)));
            return Ok(());
        }
    };
    if ok {
        Ok(())
    } else {
        Err(bad("MAIL", keyword))
    }
}

fn apply_rcpt(p: &mut RcptParams, keyword: String, value: Option<&str>) -> Result<(), ParseError> {
    let ok = match keyword.as_str() {
        "NOTIFY" => set_once(&mut p.notify, value.and_then(notify)),
        "ORCPT" => set_once(&mut p.orcpt, value.and_then(orcpt)),
        _ => {
            p.other.push((keyword, value.map(str::to_string)));
            return Ok(());
        }
    };
    if ok {
        Ok(())
    } else {
        Err(bad("RCPT", keyword))
    }
}

/// Stores `value` in an empty `slot`; false when the value is invalid or the slot was taken.
fn set_once<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    match (slot.is_some(), value) {
        (false, Some(value)) => {
            *slot = Some(value);
            true
        }
        _ => false,
    }
}

/// `SIZE=1*20DIGIT` (RFC 1870), within `u64`.
fn size(value: &str) -> Option<u64> {
    let digits = value.len() <= 20 && value.bytes().all(|b| b.is_ascii_digit());
    if digits { value.parse().ok() } else { None }
}

/// `BODY=7BIT / 8BITMIME / BINARYMIME` (RFC 6152 2, RFC 3030 3), any case.
fn body(value: &str) -> Option<Body> {
    [
        ("7BIT", Body::SevenBit),
        ("8BITMIME", Body::EightBitMime),
        ("BINARYMIME", Body::BinaryMime),
    ]
    .into_iter()
    .find_map(|(name, body)| value.eq_ignore_ascii_case(name).then_some(body))
}

/// `RET=FULL / HDRS` (RFC 3461 4.3), any case.
fn ret(value: &str) -> Option<Ret> {
    [("FULL", Ret::Full), ("HDRS", Ret::Hdrs)]
        .into_iter()
        .find_map(|(name, ret)| value.eq_ignore_ascii_case(name).then_some(ret))
}

/// `NOTIFY=NEVER / 1#(SUCCESS / FAILURE / DELAY)` (RFC 3461 4.1), any case, each at most once.
fn notify(value: &str) -> Option<Notify> {
    if value.eq_ignore_ascii_case("NEVER") {
        return Some(Notify {
            never: true,
            ..Notify::default()
        });
    }
    let mut n = Notify::default();
    for item in value.split(',') {
        let flag = if item.eq_ignore_ascii_case("SUCCESS") {
            &mut n.success
        } else if item.eq_ignore_ascii_case("FAILURE") {
            &mut n.failure
        } else if item.eq_ignore_ascii_case("DELAY") {
            &mut n.delay
        } else {
            return None;
        };
        if *flag {
            return None;
        }
        *flag = true;
    }
    Some(n)
}

/// `ORCPT=addr-type ";" xtext` (RFC 3461 4.2): the address type as written and the decoded,
/// non-empty address.
fn orcpt(value: &str) -> Option<(String, String)> {
    let (addr_type, xtext) = value.split_once(';')?;
    smtp::addr_type(addr_type).ok()?;
    let address = decode_xtext(xtext)?;
    (!address.is_empty()).then(|| (addr_type.to_string(), address))
}

/// Decodes `xtext` (RFC 3461 4): `+HH` is the octet with hex value HH, other characters from
/// `!` to `~` except `+` and `=` stand for themselves. Tolerated beyond the RFC: lower-case hex
/// digits, and UTF-8 characters as they are (RFC 6533 3). The result must be UTF-8.
pub(crate) fn decode_xtext(xtext: &str) -> Option<String> {
    let bytes = xtext.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(hex_octet(bytes.get(i + 1..i + 3)?)?);
                i += 3;
            }
            b'=' | 0..=b' ' | 0x7f => return None,
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex_octet(pair: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(pair).ok()?;
    if pair.iter().all(u8::is_ascii_hexdigit) {
        u8::from_str_radix(text, 16).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext() {
        assert_eq!(decode_xtext("a+2Bb+3Dc").as_deref(), Some("a+b=c"));
        assert_eq!(decode_xtext("").as_deref(), Some(""));
        assert_eq!(decode_xtext("+CE+B4").as_deref(), Some("δ"));
        assert_eq!(decode_xtext("δ").as_deref(), Some("δ"));
        assert_eq!(decode_xtext("+2b").as_deref(), Some("+"));
        assert_eq!(decode_xtext("+2"), None);
        assert_eq!(decode_xtext("+"), None);
        assert_eq!(decode_xtext("+G0"), None);
        assert_eq!(decode_xtext("+-1"), None);
        assert_eq!(decode_xtext("+FF"), None);
        assert_eq!(decode_xtext("a=b"), None);
        assert_eq!(decode_xtext("a b"), None);
    }

    #[test]
    fn notify_lists() {
        let all = Notify {
            success: true,
            failure: true,
            delay: true,
            never: false,
        };
        assert_eq!(notify("success,FAILURE,Delay"), Some(all));
        assert_eq!(
            notify("NEVER"),
            Some(Notify {
                never: true,
                ..Notify::default()
            })
        );
        assert_eq!(notify("NEVER,SUCCESS"), None);
        assert_eq!(notify("SUCCESS,SUCCESS"), None);
        assert_eq!(notify("SUCCESS,"), None);
        assert_eq!(notify(""), None);
    }

    #[test]
    fn size_bounds() {
        assert_eq!(size("0"), Some(0));
        assert_eq!(size("18446744073709551615"), Some(u64::MAX));
        assert_eq!(size("18446744073709551616"), None);
        assert_eq!(size("000000000000000000001"), None);
        assert_eq!(size("+1"), None);
        assert_eq!(size(""), None);
    }
}

//! Trace header fields (RFC 5321 4.4): `Received:` and `Return-Path:`, and RFC 5322 dates.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::envelope::{Envelope, SessionInfo};

/// The `Received:` field for a message, ending in CR LF, folded over several lines.
///
/// `for <recipient>` is given only when there is exactly one recipient: listing several would
/// disclose Bcc recipients to each other. Anything a peer supplied is sanitized, so no CR, LF
/// or control character can reach the header.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use samotop_core::{trace, Envelope, Peer, SessionInfo};
/// use samotop_parser::{MailParams, ReversePath};
///
/// let info = SessionInfo::new(Peer::Tcp("192.0.2.1:4000".parse().unwrap()), "mx.example");
/// let env = Envelope::new(ReversePath::Null, MailParams::default(), "ID1".into());
/// let h = trace::received(&info, &env, UNIX_EPOCH + Duration::from_secs(0));
/// assert!(h.starts_with("Received: from unknown ([192.0.2.1])\r\n\tby mx.example"));
/// assert!(h.ends_with(";\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n"));
/// ```
pub fn received(info: &SessionInfo, envelope: &Envelope, now: SystemTime) -> String {
    let helo = info
        .helo
        .as_ref()
        .map(|h| sanitize(&h.to_string()))
        .unwrap_or_else(|| "unknown".to_string());
    let peer = match info.peer.ip() {
        Some(ip) if ip.is_ipv6() => format!("[IPv6:{ip}]"),
        Some(ip) => format!("[{ip}]"),
        None => info.peer.to_string(),
    };
    let mut h = format!(
        "Received: from {helo} ({peer})\r\n\tby {} (Samotop) with {} id {}",
        sanitize(&info.server_name),
        info.with_protocol(),
        sanitize(&envelope.id)
    );
    if let Some(tls) = &info.tls {
        h.push_str(&format!(
            "\r\n\t(using {} with cipher {})",
            sanitize(&tls.version),
            sanitize(&tls.cipher)
        ));
    }
    if let [only] = envelope.recipients.as_slice() {
        h.push_str(&format!("\r\n\tfor <{}>", sanitize(&only.path.to_string())));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(now)));
    h
}

/// The `Return-Path:` field (RFC 5321 4.4), ending in CR LF; `<>` for the null sender.
///
/// ```
/// use samotop_core::{trace, Envelope};
/// use samotop_parser::{MailParams, ReversePath};
/// let env = Envelope::new(ReversePath::Null, MailParams::default(), "x".into());
/// assert_eq!(trace::return_path(&env), "Return-Path: <>\r\n");
/// ```
pub fn return_path(envelope: &Envelope) -> String {
    format!(
        "Return-Path: <{}>\r\n",
        sanitize(&envelope.sender.to_string())
    )
}

/// The header fields a session prepends to a message: `Received:`, then those the guards
/// added to the envelope, each sanitized (folding kept, nothing that could end the field).
///
/// ```
/// use std::time::UNIX_EPOCH;
/// use samotop_core::{trace, Envelope, Peer, SessionInfo};
/// use samotop_parser::{MailParams, ReversePath};
/// let info = SessionInfo::new(Peer::Stdio, "mx");
/// let mut env = Envelope::new(ReversePath::Null, MailParams::default(), "1".into());
/// env.headers.push("Received-SPF: none".into());
/// assert!(trace::trace_headers(&info, &env, UNIX_EPOCH).ends_with("\r\nReceived-SPF: none\r\n"));
/// ```
pub fn trace_headers(info: &SessionInfo, envelope: &Envelope, now: SystemTime) -> String {
    let mut h = received(info, envelope, now);
    for field in &envelope.headers {
        if !field.is_empty() {
            h.push_str(&sanitize_field(field));
            h.push_str("\r\n");
        }
    }
    h
}

/// Replaces CR, LF and other control characters by `?`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A guard-supplied field may be folded (CR LF followed by white space); anything else that
/// could end the field early is neutralised.
pub(crate) fn sanitize_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {
                chars.next();
                match chars.peek() {
                    Some(' ') | Some('\t') => out.push_str("\r\n"),
                    _ => out.push(' '),
                }
            }
            '\t' => out.push('\t'),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// An RFC 5322 date in UTC: `Mon, 23 Nov 2026 04:10:45 +0000`.
pub fn rfc5322_date(now: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An RFC 3339 timestamp in UTC with milliseconds: `2026-11-23T04:10:45.123Z` (for
/// transcripts and JSON logs).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_millis(1_795_407_045_123);
/// assert_eq!(samotop_core::trace::rfc3339(t), "2026-11-23T04:10:45.123Z");
/// ```
pub fn rfc3339(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        let at = |s| rfc5322_date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(at(1_795_407_045), "Mon, 23 Nov 2026 04:10:45 +0000");
    }

    #[test]
    fn guard_fields_stay_separate_fields() {
        use crate::envelope::Peer;
        let info = SessionInfo::new(Peer::Stdio, "mx");
        let mut env = Envelope::new(
            samotop_parser::ReversePath::Null,
            Default::default(),
            "i".into(),
        );
        env.headers.push("X-Mail: 1".into());
        env.headers.push("X-A: 2".into());
        env.headers.push("X-B: 3\r\nBcc: injected".into());
        let h = trace_headers(&info, &env, UNIX_EPOCH);
        assert!(
            h.ends_with("\r\nX-Mail: 1\r\nX-A: 2\r\nX-B: 3 Bcc: injected\r\n"),
            "{h}"
        );
    }

    #[test]
    fn guard_fields_cannot_inject() {
        assert_eq!(sanitize_field("X: a\r\nBcc: b"), "X: a Bcc: b");
        assert_eq!(sanitize_field("X: a\r\n\tb"), "X: a\r\n\tb");
        assert_eq!(sanitize_field("X: a\nb\0"), "X: a?b?");
    }
}

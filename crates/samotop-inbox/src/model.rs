//! What the store gives back: message summaries for lists, the envelope, pages, wait results.
//! Field names follow Mailpit's v1 API (`ID`, `From`, `To`, `Subject`...), so the types
//! serialize straight into its JSON.

use serde::{Deserialize, Serialize};

/// A mailbox in a header field: `Name <address>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// The display name, possibly empty.
    #[serde(rename = "Name")]
    pub name: String,
    /// The address, possibly empty (a group, or a field that did not parse).
    #[serde(rename = "Address")]
    pub address: String,
}

/// An attachment or inline part, as listed (not its content).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The part's id within its message, for `/api/v1/message/{ID}/part/{PartID}`.
    #[serde(rename = "PartID")]
    pub part_id: String,
    /// The file name the sender gave, or empty.
    #[serde(rename = "FileName")]
    pub file_name: String,
    /// `type/subtype`.
    #[serde(rename = "ContentType")]
    pub content_type: String,
    /// The `Content-ID` without angle brackets, or empty.
    #[serde(rename = "ContentID")]
    pub content_id: String,
    /// Decoded size in bytes.
    #[serde(rename = "Size")]
    pub size: u64,
}

/// One sender-authentication verdict (SPF, DKIM, DMARC, ARC) as the session recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthVerdict {
    /// `spf`, `dkim`, `dmarc`, `arc`.
    pub method: String,
    /// `pass`, `fail`, `none`...
    pub result: String,
    /// Why, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `(property, value)` pairs such as `("smtp.mailfrom", "example.org")`.
    #[serde(default)]
    pub properties: Vec<(String, String)>,
}

/// The SMTP envelope and the session facts of one stored message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeInfo {
    /// MAIL FROM, empty for the null sender.
    #[serde(rename = "MailFrom")]
    pub mail_from: String,
    /// Every RCPT, in order. In a per-address view only that address is listed: Bcc
    /// recipients are never shown to each other.
    #[serde(rename = "Recipients")]
    pub recipients: Vec<String>,
    /// The HELO/EHLO/LHLO name.
    #[serde(rename = "Helo")]
    pub helo: String,
    /// The client's IP address (the original client after PROXY), or `unix`/`stdio`.
    #[serde(rename = "Peer")]
    pub peer: String,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `LMTP`...
    #[serde(rename = "Protocol")]
    pub protocol: String,
    /// `TLS1.3` and the like, empty without TLS.
    #[serde(rename = "TlsVersion")]
    pub tls_version: String,
    /// The TLS cipher suite, empty without TLS.
    #[serde(rename = "TlsCipher")]
    pub tls_cipher: String,
    /// Our host name as it received the message.
    #[serde(rename = "Server")]
    pub server: String,
    /// The session's transaction id (the one in `Received:` and the 250 reply).
    #[serde(rename = "TransactionID")]
    pub transaction_id: String,
    /// SPF/DKIM/DMARC/ARC verdicts, when checks ran.
    #[serde(rename = "Auth")]
    pub auth: Vec<AuthVerdict>,
    /// A check asked for the message to be filed as junk (DMARC quarantine).
    #[serde(rename = "Quarantine")]
    pub quarantine: bool,
}

/// One message in a list (Mailpit's `MessageSummary`, plus our `Cursor` and `Recipients`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The message's id: opaque, unique, stable.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its position in arrival order (commit order): for [`Inbox::wait`](crate::Inbox::wait).
    #[serde(rename = "Cursor")]
    pub cursor: i64,
    /// The `Message-ID` without angle brackets.
    #[serde(rename = "MessageID")]
    pub message_id: String,
    /// Read by someone.
    #[serde(rename = "Read")]
    pub read: bool,
    /// `From:`.
    #[serde(rename = "From")]
    pub from: Address,
    /// `To:`.
    #[serde(rename = "To")]
    pub to: Vec<Address>,
    /// `Cc:`.
    #[serde(rename = "Cc")]
    pub cc: Vec<Address>,
    /// `Bcc:` as sent (envelope recipients are never added here).
    #[serde(rename = "Bcc")]
    pub bcc: Vec<Address>,
    /// `Reply-To:`.
    #[serde(rename = "ReplyTo")]
    pub reply_to: Vec<Address>,
    /// `Subject:`.
    #[serde(rename = "Subject")]
    pub subject: String,
    /// Received time, RFC 3339 UTC with milliseconds.
    #[serde(rename = "Created")]
    pub created: String,
    /// Received time, Unix milliseconds.
    #[serde(skip)]
    pub received_ms: i64,
    /// Mailpit's tags: always empty here.
    #[serde(rename = "Tags")]
    pub tags: Vec<String>,
    /// Size as received, bytes (our trace fields included).
    #[serde(rename = "Size")]
    pub size: u64,
    /// Number of attachments.
    #[serde(rename = "Attachments")]
    pub attachments: u64,
    /// The first words of the text.
    #[serde(rename = "Snippet")]
    pub snippet: String,
    /// False while the message waits for its (lazy) parse, or when it did not parse: then
    /// only the raw source and the envelope are known.
    #[serde(rename = "Parsed")]
    pub parsed: bool,
}

/// A page of a list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Messages in the store (or in the address's inbox).
    pub total: u64,
    /// Unread messages in the store (or the inbox).
    pub unread: u64,
    /// Messages that match the search.
    pub messages_count: u64,
    /// Unread messages that match the search.
    pub messages_unread: u64,
    /// True when a search matched more than [`MAX_COUNT`] messages: `messages_count` then
    /// stops at [`MAX_COUNT`] and `messages_unread` counts the unread among those. Lists
    /// without a search are always counted exactly.
    #[serde(default)]
    pub messages_count_capped: bool,
    /// The offset of this page.
    pub start: u64,
    /// Mailpit's tags: always empty.
    pub tags: Vec<String>,
    /// The page, newest first.
    pub messages: Vec<Summary>,
}

/// What [`Inbox::wait`](crate::Inbox::wait) found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waited {
    /// Matching messages that arrived after the cursor given, oldest first (at most the
    /// limit asked for).
    pub messages: Vec<Summary>,
    /// Give this to the next call: nothing is missed between two calls.
    pub cursor: i64,
    /// True when the wait ended by its timeout with nothing found.
    pub timed_out: bool,
}

/// Totals of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Messages stored.
    pub messages: u64,
    /// Of which unread.
    pub unread: u64,
    /// Their size as received, bytes.
    pub bytes: u64,
    /// The highest cursor.
    pub last_cursor: i64,
}

/// Where a list looks: everything, or one address's inbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only the messages with this envelope recipient (compared in lower case).
    pub mailbox: Option<String>,
    /// The search; empty: everything.
    pub query: crate::Query,
    /// Offset, newest first.
    pub start: u64,
    /// Page size (capped at [`MAX_PAGE`]).
    pub limit: u64,
}

/// The biggest page a list returns.
pub const MAX_PAGE: u64 = 1000;

/// The most matches a search counts ([`Page::messages_count`]): counting every message
/// that contains a common word costs as much as reading them all, so a page of a search
/// over a big store stays fast by stopping there
/// ([`Page::messages_count_capped`]).
pub const MAX_COUNT: u64 = 1_000;

/// Unix milliseconds as RFC 3339 UTC, `2024-01-02T03:04:05.678Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The date of a day number since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The mailbox key of an address: lower case, surrounding angle brackets and space removed.
///
/// ```
/// assert_eq!(samotop_inbox::mailbox_key(" <Bob@Example.ORG> "), "bob@example.org");
/// ```
pub fn mailbox_key(address: &str) -> String {
    address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_704_164_645_678), "2024-01-02T03:04:05.678Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        for days in [-800_000, -1, 0, 1, 11_017, 19_724, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(crate::query::days_from_civil(y, m, d), days);
        }
    }
}

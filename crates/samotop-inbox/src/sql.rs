//! SQL shared by the SQLite and PostgreSQL stores: the statement builder (numbered
//! placeholders, `?N` or `$N`), the search compiled into a `WHERE`, and rows into summaries.

use crate::model::{Address, Summary, rfc3339_ms};
use crate::query::{Field, Query, TermKind, words};

/// Which database the SQL is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    /// For the PostgreSQL store, whose queries are compiled and tested here; the store
    /// itself is not written yet (see `postgres.rs`).
    #[allow(dead_code)]
    Postgres,
}

/// A parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Int(i64),
    Text(String),
}

/// A statement under construction.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) params: Vec<Value>,
    dialect: Dialect,
}

impl Sql {
    pub(crate) fn new(dialect: Dialect, text: &str) -> Self {
        Sql {
            text: text.to_string(),
            params: Vec::new(),
            dialect,
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub(crate) fn param(&mut self, value: Value) -> &mut Self {
        self.params.push(value);
        let n = self.params.len();
        match self.dialect {
            Dialect::Sqlite => self.text.push_str(&format!("?{n}")),
            Dialect::Postgres => self.text.push_str(&format!("${n}")),
        }
        self
    }
}

/// The columns of a summary, in the order [`summary`] reads them.
pub(crate) const SUMMARY_COLUMNS: &str = "m.id, m.uid, m.received, m.size, m.seen, m.indexed, \
m.subject, m.from_json, m.to_json, m.cc_json, m.bcc_json, m.reply_to_json, m.message_id, \
m.snippet, m.attachments";

/// A row, whichever database it came from.
pub(crate) trait Row {
    fn int(&self, i: usize) -> i64;
    fn text(&self, i: usize) -> String;
}

impl Row for rusqlite::Row<'_> {
    fn int(&self, i: usize) -> i64 {
        self.get::<_, Option<i64>>(i).ok().flatten().unwrap_or(0)
    }
    fn text(&self, i: usize) -> String {
        self.get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .unwrap_or_default()
    }
}

impl Row for tokio_postgres::Row {
    fn int(&self, i: usize) -> i64 {
        self.try_get::<_, Option<i64>>(i)
            .ok()
            .flatten()
            .unwrap_or(0)
    }
    fn text(&self, i: usize) -> String {
        self.try_get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .unwrap_or_default()
    }
}

fn address_list(json: &str) -> Vec<Address> {
    serde_json::from_str(json).unwrap_or_default()
}

/// A summary from a row of [`SUMMARY_COLUMNS`].
pub(crate) fn summary(row: &dyn Row) -> Summary {
    let received_ms = row.int(2);
    Summary {
        cursor: row.int(0),
        id: row.text(1),
        received_ms,
        created: rfc3339_ms(received_ms),
        size: row.int(3).max(0) as u64,
        read: row.int(4) != 0,
        parsed: row.int(5) == 1,
        subject: row.text(6),
        from: serde_json::from_str(&row.text(7)).unwrap_or_default(),
        to: address_list(&row.text(8)),
        cc: address_list(&row.text(9)),
        bcc: address_list(&row.text(10)),
        reply_to: address_list(&row.text(11)),
        message_id: row.text(12),
        snippet: row.text(13),
        attachments: row.int(14).max(0) as u64,
        tags: Vec::new(),
    }
}

/// Escapes `%`, `_` and `\` for `LIKE ... ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The SQLite FTS5 columns a field searches.
fn fts_columns(field: Field) -> &'static str {
    match field {
        Field::From => "from_addr",
        Field::To => "to_addr",
        Field::Cc => "cc_addr",
        Field::Bcc => "bcc_addr",
        Field::ReplyTo => "reply_to",
        Field::Subject => "subject",
        Field::MessageId => "message_id",
        Field::Addressed => "{to_addr cc_addr bcc_addr}",
    }
}

/// The PostgreSQL column (text) a field searches.
fn pg_column(field: Field) -> &'static str {
    match field {
        Field::From => "m.from_json",
        Field::To => "m.to_json",
        Field::Cc => "m.cc_json",
        Field::Bcc => "m.bcc_json",
        Field::ReplyTo => "m.reply_to_json",
        Field::Subject => "m.subject",
        Field::MessageId => "m.message_id",
        Field::Addressed => "(m.to_json || m.cc_json || m.bcc_json)",
    }
}

/// An FTS5 phrase whose last word is a prefix: `"bob example com"*`. Words are letters and
/// digits only, so nothing in them can be FTS5 syntax.
fn fts_phrase(words: &[String]) -> String {
    format!("\"{}\"*", words.join(" "))
}

/// A PostgreSQL `tsquery` of words in order, the last a prefix: `bob <-> example <-> com:*`.
fn pg_tsquery(words: &[String]) -> String {
    let mut q = words.join(" <-> ");
    q.push_str(":*");
    q
}

/// Appends ` AND ...` for the mailbox and each term of the query.
pub(crate) fn filter(sql: &mut Sql, mailbox: Option<&str>, query: &Query) {
    if let Some(mailbox) = mailbox {
        sql.push(" AND EXISTS (SELECT 1 FROM recipient r WHERE r.message = m.id AND r.mailbox = ")
            .param(Value::Text(crate::model::mailbox_key(mailbox)))
            .push(")");
    }
    // SQLite: the positive full-text terms go into one MATCH.
    let mut matches: Vec<String> = Vec::new();
    for term in &query.terms {
        let not = if term.negated { "NOT " } else { "" };
        match &term.kind {
            TermKind::Text(value) | TermKind::Field(_, value) => {
                let w = words(value);
                if w.is_empty() {
                    continue;
                }
                let field = match &term.kind {
                    TermKind::Field(f, _) => Some(*f),
                    _ => None,
                };
                match sql.dialect {
                    Dialect::Sqlite => {
                        let expr = match field {
                            Some(f) => format!("{} : {}", fts_columns(f), fts_phrase(&w)),
                            None => fts_phrase(&w),
                        };
                        if term.negated {
                            sql.push(" AND m.id NOT IN (SELECT rowid FROM fts WHERE fts MATCH ")
                                .param(Value::Text(expr))
                                .push(")");
                        } else {
                            matches.push(expr);
                        }
                    }
                    Dialect::Postgres => match field {
                        None => {
                            sql.push(&format!(" AND {not}(m.tsv @@ to_tsquery('simple', "))
                                .param(Value::Text(pg_tsquery(&w)))
                                .push("))");
                        }
                        Some(f) => {
                            sql.push(&format!(" AND {not}(strpos(lower({}), ", pg_column(f)))
                                .param(Value::Text(value.to_lowercase()))
                                .push(") > 0)");
                        }
                    },
                }
            }
            TermKind::Rcpt(value) => {
                let value = value.trim_start_matches('<').trim_end_matches('>');
                sql.push(&format!(
                    " AND {not}EXISTS (SELECT 1 FROM recipient r WHERE r.message = m.id AND "
                ));
                match value.strip_prefix('@') {
                    None if value.contains('@') => {
                        sql.push("r.mailbox = ")
                            .param(Value::Text(value.to_string()));
                    }
                    other => {
                        let domain = other.unwrap_or(value);
                        sql.push("r.mailbox LIKE ")
                            .param(Value::Text(format!("%@{}", like_escape(domain))))
                            .push(" ESCAPE '\\'");
                    }
                }
                sql.push(")");
            }
            TermKind::HasAttachment => {
                sql.push(&format!(" AND {not}(m.attachments > 0)"));
            }
            TermKind::HasInline => {
                sql.push(&format!(" AND {not}(m.inline > 0)"));
            }
            TermKind::Read(read) => {
                sql.push(&format!(" AND {not}(m.seen = {})", i64::from(*read)));
            }
            TermKind::Before(ms) => {
                sql.push(&format!(" AND {not}(m.received < "))
                    .param(Value::Int(*ms))
                    .push(")");
            }
            TermKind::After(ms) => {
                sql.push(&format!(" AND {not}(m.received >= "))
                    .param(Value::Int(*ms))
                    .push(")");
            }
            TermKind::Larger(n) => {
                sql.push(&format!(" AND {not}(m.size > "))
                    .param(Value::Int((*n).min(i64::MAX as u64) as i64))
                    .push(")");
            }
            TermKind::Smaller(n) => {
                sql.push(&format!(" AND {not}(m.size < "))
                    .param(Value::Int((*n).min(i64::MAX as u64) as i64))
                    .push(")");
            }
        }
    }
    if !matches.is_empty() {
        sql.push(" AND m.id IN (SELECT rowid FROM fts WHERE fts MATCH ")
            .param(Value::Text(matches.join(" AND ")))
            .push(")");
    }
}

/// True when a query has terms that only the parse of a message can decide (everything but
/// `rcpt:`, sizes, dates and read state): a wait for such a query looks only at parsed
/// messages.
pub(crate) fn needs_parse(query: &Query) -> bool {
    query.terms.iter().any(|t| {
        matches!(
            t.kind,
            TermKind::Text(_) | TermKind::Field(..) | TermKind::HasAttachment | TermKind::HasInline
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(dialect: Dialect, q: &str, mailbox: Option<&str>) -> (String, Vec<Value>) {
        let mut sql = Sql::new(dialect, "WHERE 1=1");
        filter(&mut sql, mailbox, &Query::parse(q).expect("query"));
        (sql.text, sql.params)
    }

    #[test]
    fn sqlite_terms() {
        let (text, params) = compiled(
            Dialect::Sqlite,
            "from:bob@example.com hello -spam is:unread larger:1k rcpt:@Example.org",
            Some("X@Y"),
        );
        assert!(text.contains("r.mailbox = ?1"), "{text}");
        assert!(text.contains("m.id NOT IN (SELECT rowid FROM fts WHERE fts MATCH ?2)"));
        assert!(text.contains("(m.seen = 0)"));
        assert!(text.contains("m.size > ?3"));
        assert!(text.contains("r.mailbox LIKE ?4 ESCAPE"));
        assert!(text.ends_with("m.id IN (SELECT rowid FROM fts WHERE fts MATCH ?5)"));
        assert_eq!(params[0], Value::Text("x@y".into()));
        assert_eq!(params[1], Value::Text("\"spam\"*".into()));
        assert_eq!(params[3], Value::Text("%@example.org".into()));
        assert_eq!(
            params[4],
            Value::Text("from_addr : \"bob example com\"* AND \"hello\"*".into())
        );
    }

    #[test]
    fn postgres_terms() {
        let (text, params) = compiled(Dialect::Postgres, "subject:Hi -report 100%_", None);
        assert!(text.contains("strpos(lower(m.subject), $1) > 0"), "{text}");
        assert!(text.contains("NOT (m.tsv @@ to_tsquery('simple', $2))"));
        assert_eq!(params[1], Value::Text("report:*".into()));
        assert_eq!(params[2], Value::Text("100:*".into()));
    }

    #[test]
    fn like_is_escaped() {
        assert_eq!(like_escape("a%b_c\\"), "a\\%b\\_c\\\\");
    }
}

//! SQL shared by the SQLite and PostgreSQL stores: the statement builder (numbered
//! placeholders, `?N` or `$N`), the search compiled into a `WHERE`, and rows into summaries.

use std::collections::HashMap;

use crate::model::{Address, Summary, rfc3339_ms};
use crate::query::{Field, Query, TermKind, words};

/// Which database the SQL is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
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

/// What the last word of an SQLite full-text phrase stands for: the terms of the index that
/// start with it, looked up in the FTS5 vocabulary by the SQLite store.
///
/// FTS5 answers a prefix query (`"source"*`) by merging the doclists of every matching term in
/// memory before it returns a row: about 9 ms for a word in each of 100 000 messages, however
/// small the page, and growing with the store. The same phrase as an `OR` of exact phrases
/// (`("source" OR "sources")`) is read incrementally in rowid order and stops after the page.
/// A word missing here (not ASCII, or the start of too many terms) stays a prefix query.
#[derive(Debug, Default)]
pub(crate) struct Prefixes(HashMap<String, Vec<String>>);

impl Prefixes {
    /// `word` (lower case) stands for exactly these terms (none: the phrase matches nothing).
    pub(crate) fn insert(&mut self, word: String, terms: Vec<String>) {
        self.0.insert(word, terms);
    }
}

/// An FTS5 phrase whose last word is a prefix: `"bob example com"*`, or, when `prefixes` knows
/// the terms the last word starts, `("bob example com" OR "bob example commerce")`. Words are
/// letters and digits only, so nothing in them can be FTS5 syntax (a term's `"` would be
/// doubled all the same).
fn fts_phrase(words: &[String], prefixes: &Prefixes) -> String {
    let Some((last, head)) = words.split_last() else {
        return "\"\"".into();
    };
    let Some(terms) = prefixes.0.get(last) else {
        return format!("\"{}\"*", words.join(" "));
    };
    let phrase = |term: &str| {
        let mut p = String::from("\"");
        for w in head {
            p.push_str(w);
            p.push(' ');
        }
        p.push_str(&term.replace('"', "\"\""));
        p.push('"');
        p
    };
    match terms.as_slice() {
        // No term starts with it: the exact phrase, which matches nothing, at once.
        [] => phrase(last),
        [one] => phrase(one),
        many => {
            let alternatives: Vec<String> = many.iter().map(|t| phrase(t)).collect();
            format!("({})", alternatives.join(" OR "))
        }
    }
}

/// The last words of the full-text phrases of `query` that a [`Prefixes`] can expand: ASCII
/// ones (FTS5's `unicode61` folds an ASCII word to its lower case only, so the word and the
/// index's terms compare byte for byte).
pub(crate) fn prefix_words(query: &Query) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for term in &query.terms {
        if let TermKind::Text(value) | TermKind::Field(_, value) = &term.kind {
            if let Some(last) = words(value).pop() {
                if last.is_ascii() && !out.contains(&last) {
                    out.push(last);
                }
            }
        }
    }
    out
}

/// A PostgreSQL `tsquery` phrase of words in order, the last a prefix, each word with the
/// lexeme prefix of its field (see [`pg_tsvector`]): `'to:bob' <-> 'to:example' <-> 'to:com':*`.
fn pg_phrase(prefix: &str, words: &[String]) -> String {
    let mut q = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            q.push_str(" <-> ");
        }
        push_lexeme(&mut q, prefix, w);
    }
    q.push_str(":*");
    q
}

/// The `tsquery` of a text term (`None`: any field) or of a field's term.
fn pg_tsquery(field: Option<Field>, words: &[String]) -> String {
    match field {
        None => pg_phrase("", words),
        Some(Field::Addressed) => [Field::To, Field::Cc, Field::Bcc]
            .iter()
            .map(|f| format!("({})", pg_phrase(&lexeme_prefix(*f), words)))
            .collect::<Vec<_>>()
            .join(" | "),
        Some(f) => pg_phrase(&lexeme_prefix(f), words),
    }
}

/// The prefix of a field's lexemes in the PostgreSQL `tsvector`: `subject:`, `from:`...
/// Words are letters and digits only, so a prefixed lexeme never equals a plain one.
fn lexeme_prefix(field: Field) -> String {
    format!("{}:", field.keyword())
}

/// A quoted lexeme for `tsvector`/`tsquery` input: `'prefixword'` (quotes and backslashes
/// escaped, though words never contain them).
fn push_lexeme(out: &mut String, prefix: &str, word: &str) {
    out.push('\'');
    for c in prefix.chars().chain(word.chars()) {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// The highest position a `tsvector` keeps (PostgreSQL's `MAXENTRYPOS - 1`).
const TS_MAX_POS: u32 = 16_383;
/// Positions kept per lexeme (PostgreSQL keeps at most 256).
const TS_MAX_POSITIONS: usize = 255;
/// The longest lexeme PostgreSQL takes is 2047 bytes.
const TS_MAX_LEXEME: usize = 2046;
/// The data of a `tsvector` must stay under 1 MiB; we stop well before.
const TS_MAX_BYTES: usize = 768 * 1024;

/// The PostgreSQL `tsvector` of a parsed message, as `tsvector` input text. Built here
/// rather than by `to_tsvector`, so that words are what the query side and SQLite's FTS5
/// (`unicode61`) see: runs of letters and digits, lower case (PostgreSQL's own parser
/// would keep `bob@example.com` as one token). Each field's words come twice: plain, for
/// words anywhere, and with the field's prefix (`subject:report`) for `subject:` and the
/// like; then the header section's text and the body's. Positions run on, with a gap
/// between sections so that a phrase never spans two of them. Bounded: lexemes of at most
/// 2046 bytes, 255 positions each, positions up to 16383, and under 768 KiB in all.
pub(crate) fn pg_tsvector(f: &crate::parse::Fields) -> String {
    use crate::parse::Fields;
    let mut ts = TsVector::default();
    let fields: [(Field, String); 7] = [
        (Field::Subject, f.subject.clone()),
        (
            Field::From,
            Fields::addresses(std::slice::from_ref(&f.from)),
        ),
        (Field::To, Fields::addresses(&f.to)),
        (Field::Cc, Fields::addresses(&f.cc)),
        (Field::Bcc, Fields::addresses(&f.bcc)),
        (Field::ReplyTo, Fields::addresses(&f.reply_to)),
        (Field::MessageId, f.message_id.clone()),
    ];
    for (field, text) in &fields {
        ts.section(&lexeme_prefix(*field), text);
    }
    for (_, text) in &fields {
        ts.section("", text);
    }
    ts.section("", &f.header_text);
    ts.section("", &f.body_text);
    ts.finish()
}

#[derive(Default)]
struct TsVector {
    lexemes: std::collections::BTreeMap<String, Vec<u32>>,
    position: u32,
    bytes: usize,
}

impl TsVector {
    fn section(&mut self, prefix: &str, text: &str) {
        let start = self.position;
        for word in text.split(|c: char| !c.is_alphanumeric()) {
            if word.is_empty() {
                continue;
            }
            let lexeme = format!("{prefix}{}", word.to_lowercase());
            if lexeme.len() > TS_MAX_LEXEME {
                continue;
            }
            self.position = (self.position + 1).min(TS_MAX_POS);
            let position = self.position;
            let cost = match self.lexemes.get(&lexeme) {
                Some(_) => 2,
                None => lexeme.len() + 8,
            };
            if self.bytes + cost > TS_MAX_BYTES {
                return;
            }
            let positions = self.lexemes.entry(lexeme).or_default();
            if positions.len() < TS_MAX_POSITIONS && positions.last() != Some(&position) {
                positions.push(position);
                self.bytes += cost;
            }
        }
        if self.position != start {
            self.position = (self.position + 1).min(TS_MAX_POS);
        }
    }

    fn finish(self) -> String {
        let mut out = String::with_capacity(self.bytes * 2);
        for (lexeme, positions) in &self.lexemes {
            if !out.is_empty() {
                out.push(' ');
            }
            push_lexeme(&mut out, "", lexeme);
            for (i, p) in positions.iter().enumerate() {
                out.push(if i == 0 { ':' } else { ',' });
                out.push_str(&p.to_string());
            }
        }
        out
    }
}

/// True when a query has a full-text term that is not negated (and has words).
fn has_match(query: &Query) -> bool {
    query.terms.iter().any(|t| {
        !t.negated
            && matches!(&t.kind, TermKind::Text(v) | TermKind::Field(_, v) if !words(v).is_empty())
    })
}

/// `SELECT {columns} FROM ... WHERE 1=1 AND ...`: the messages of `mailbox` (every message
/// when `None`) that match `query`, and the column holding the message id in the table that
/// drives the scan: order by it (`ORDER BY {id} DESC LIMIT n`) and a page is read in index
/// order and stops after n rows, instead of finding every match and sorting them.
///
/// * SQLite with a full-text term: the FTS5 table drives (`fts.rowid`, walked in rowid order
///   by FTS5 itself); the mailbox is then an `EXISTS` on its primary key.
/// * With a mailbox: the recipient table's primary key `(mailbox, message)` drives
///   (`r.message`), so a small inbox in a big store is read from its own rows.
/// * Else the message table (`m.id`).
///
/// More terms can be appended with ` AND ...`; the summary columns are `m.` columns.
pub(crate) fn select(
    dialect: Dialect,
    columns: &str,
    mailbox: Option<&str>,
    query: &Query,
) -> (Sql, &'static str) {
    select_expanded(dialect, columns, mailbox, query, &Prefixes::default())
}

/// [`select`], with the last words of the SQLite full-text phrases expanded by `prefixes`.
pub(crate) fn select_expanded(
    dialect: Dialect,
    columns: &str,
    mailbox: Option<&str>,
    query: &Query,
    prefixes: &Prefixes,
) -> (Sql, &'static str) {
    let fts = dialect == Dialect::Sqlite && has_match(query);
    let mut sql = Sql::new(dialect, &format!("SELECT {columns} FROM "));
    let id = if fts {
        sql.push("fts JOIN message m ON m.id = fts.rowid WHERE 1=1");
        "fts.rowid"
    } else if let Some(mailbox) = mailbox {
        sql.push("recipient r JOIN message m ON m.id = r.message WHERE r.mailbox = ")
            .param(Value::Text(crate::model::mailbox_key(mailbox)));
        "r.message"
    } else {
        sql.push("message m WHERE 1=1");
        "m.id"
    };
    if fts {
        if let Some(mailbox) = mailbox {
            sql.push(
                " AND EXISTS (SELECT 1 FROM recipient r WHERE r.message = m.id AND r.mailbox = ",
            )
            .param(Value::Text(crate::model::mailbox_key(mailbox)))
            .push(")");
        }
    }
    terms(&mut sql, query, fts, prefixes);
    (sql, id)
}

/// `SELECT count(*), sum(seen = 0) FROM (SELECT m.seen ... LIMIT cap)`: how many messages
/// of `mailbox` match, and how many of those are unread, reading at most `cap` matches (one
/// pass for both).
pub(crate) fn capped_count(
    dialect: Dialect,
    mailbox: Option<&str>,
    query: &Query,
    prefixes: &Prefixes,
    cap: u64,
) -> Sql {
    let (mut sql, _) = select_expanded(dialect, "m.seen AS seen", mailbox, query, prefixes);
    sql.push(" LIMIT ")
        .param(Value::Int(cap.min(i64::MAX as u64) as i64));
    let unread = match dialect {
        Dialect::Sqlite => "coalesce(sum(c.seen = 0), 0)",
        Dialect::Postgres => "count(*) FILTER (WHERE c.seen = 0)",
    };
    sql.text = format!("SELECT count(*), {unread} FROM ({}) c", sql.text);
    sql
}

/// The SQLite FTS5 expression of a text term (`None`: any column) or of a field's term.
fn fts_expr(field: Option<Field>, words: &[String], prefixes: &Prefixes) -> String {
    match field {
        Some(f) => format!("{} : {}", fts_columns(f), fts_phrase(words, prefixes)),
        None => fts_phrase(words, prefixes),
    }
}

/// FTS5 expressions joined into one that matches any of them: `(a) OR (b)`.
fn any_of(exprs: &[String]) -> String {
    let parts: Vec<String> = exprs.iter().map(|e| format!("({e})")).collect();
    parts.join(" OR ")
}

/// For a query whose full-text terms are all negated: the negated terms as full-text
/// expressions (FTS5 or `tsquery`), and the query's other terms (`is:unread`, `before:`...);
/// `None` when a full-text term is positive or none is negated.
fn split_negations(
    dialect: Dialect,
    query: &Query,
    prefixes: &Prefixes,
) -> Option<(Vec<String>, Query)> {
    if has_match(query) {
        return None;
    }
    let mut negations = Vec::new();
    let mut rest = Query::default();
    for term in &query.terms {
        match &term.kind {
            TermKind::Text(value) | TermKind::Field(_, value) if term.negated => {
                let w = words(value);
                if w.is_empty() {
                    continue;
                }
                let field = match &term.kind {
                    TermKind::Field(f, _) => Some(*f),
                    _ => None,
                };
                negations.push(match dialect {
                    Dialect::Sqlite => fts_expr(field, &w, prefixes),
                    Dialect::Postgres => pg_tsquery(field, &w),
                });
            }
            _ => rest.terms.push(term.clone()),
        }
    }
    if negations.is_empty() {
        None
    } else {
        Some((negations, rest))
    }
}

/// For a query of negated full-text terms and nothing else (`-draft -subject:x`), in
/// SQLite: the FTS5 expression of the messages it excludes, `(N1) OR (N2)`. Every indexed
/// message is a stored one, so the store's total less the count of this match is how many
/// messages the query matches, counted from the index alone.
pub(crate) fn only_negations_sqlite(query: &Query, prefixes: &Prefixes) -> Option<String> {
    match split_negations(Dialect::Sqlite, query, prefixes)? {
        (negations, rest) if rest.terms.is_empty() => Some(any_of(&negations)),
        _ => None,
    }
}

/// For a query whose full-text terms are all negated (`-word`, `-subject:x`): the ids of
/// the messages of `mailbox` (every message when `None`) that match, newest first, at most
/// `limit` of them, in one pass that gives the page and the count; `None` for any other
/// query.
///
/// Where the words are in (nearly) every message, the answer is found only by reading the
/// whole scope:
/// * SQLite merges two lists read in id order, a narrow index of the scope and the words'
///   lists in FTS5: `SELECT id ... EXCEPT SELECT rowid FROM fts WHERE fts MATCH '(N1) OR
///   (N2)' ORDER BY 1 DESC`, about 0.1 µs a message (`m.id NOT IN (...)` read every wide
///   message row against a table built from the lists: 4 to 8 times slower).
/// * PostgreSQL reads the scope's ids backwards on the primary key against a hash of the
///   words' matches (`NOT IN (SELECT id ... WHERE tsv @@ ...)`), instead of testing each
///   message's `tsvector`.
pub(crate) fn negated_ids(
    dialect: Dialect,
    mailbox: Option<&str>,
    query: &Query,
    prefixes: &Prefixes,
    limit: u64,
) -> Option<Sql> {
    let (negations, rest) = split_negations(dialect, query, prefixes)?;
    let id = if mailbox.is_some() {
        "r.message"
    } else {
        "m.id"
    };
    let mut sql = match (mailbox, rest.terms.is_empty()) {
        // The scope alone is read from its narrow index (the recipient table's primary key;
        // the message ids), not from the wide message rows.
        (Some(mailbox), true) => {
            let mut sql = Sql::new(
                dialect,
                "SELECT r.message FROM recipient r WHERE r.mailbox = ",
            );
            sql.param(Value::Text(crate::model::mailbox_key(mailbox)));
            sql
        }
        (None, true) => Sql::new(dialect, "SELECT m.id FROM message m WHERE 1=1"),
        (mailbox, false) => select_expanded(dialect, id, mailbox, &rest, prefixes).0,
    };
    match dialect {
        Dialect::Sqlite => {
            sql.push(" EXCEPT SELECT rowid FROM fts WHERE fts MATCH ")
                .param(Value::Text(any_of(&negations)));
        }
        Dialect::Postgres => {
            let any: Vec<String> = negations.iter().map(|q| format!("({q})")).collect();
            sql.push(&format!(
                " AND {id} NOT IN (SELECT id FROM message WHERE tsv @@ CAST("
            ))
            .param(Value::Text(any.join(" | ")))
            .push("::text AS tsquery))");
        }
    }
    sql.push(" ORDER BY 1 DESC LIMIT ")
        .param(Value::Int(limit.min(i64::MAX as u64) as i64));
    Some(sql)
}

/// What [`negated_ids`] found, cut into the page and the ids its count covers.
pub(crate) struct NegatedIds {
    /// The ids of the page, newest first.
    pub(crate) page: Vec<i64>,
    /// The first `cap` ids: how many match, up to the cap.
    pub(crate) counted: Vec<i64>,
}

impl NegatedIds {
    pub(crate) fn new(ids: Vec<i64>, start: u64, limit: u64, cap: u64) -> Self {
        let at = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).min(ids.len());
        NegatedIds {
            page: ids[at(start)..at(start.saturating_add(limit))].to_vec(),
            counted: ids[..at(cap)].to_vec(),
        }
    }

    /// `ids` as an array literal for `IN (SELECT value FROM json_each(?))` (SQLite: `[1,2]`)
    /// or `= ANY(CAST(? AS bigint[]))` (PostgreSQL: `{1,2}`).
    pub(crate) fn literal(dialect: Dialect, ids: &[i64]) -> String {
        let (open, close) = match dialect {
            Dialect::Sqlite => ('[', ']'),
            Dialect::Postgres => ('{', '}'),
        };
        let mut out = String::with_capacity(ids.len() * 8 + 2);
        out.push(open);
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&id.to_string());
        }
        out.push(close);
        out
    }
}

/// Appends ` AND ...` for each term of the query; `fts_driven`: the FTS5 table is in the
/// `FROM` (see [`select`]) and the positive full-text terms become its `MATCH`.
fn terms(sql: &mut Sql, query: &Query, fts_driven: bool, prefixes: &Prefixes) {
    // The positive full-text terms go into one MATCH (SQLite) or one tsquery (PostgreSQL);
    // in SQLite, when they drive, the negated ones follow them in it: `(P) NOT (N1 OR N2)`.
    let mut matches: Vec<String> = Vec::new();
    let mut negations: Vec<String> = Vec::new();
    let positive = has_match(query);
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
                        let expr = fts_expr(field, &w, prefixes);
                        if !term.negated {
                            matches.push(expr);
                        } else if fts_driven {
                            // Into the MATCH: FTS5 skips the negated word's list along.
                            negations.push(expr);
                        } else {
                            sql.push(" AND m.id NOT IN (SELECT rowid FROM fts WHERE fts MATCH ")
                                .param(Value::Text(expr))
                                .push(")");
                        }
                    }
                    Dialect::Postgres => {
                        let q = pg_tsquery(field, &w);
                        if term.negated && positive {
                            // Into the tsquery: the GIN index answers `P & !N` at once.
                            negations.push(format!("({q})"));
                        } else if term.negated {
                            sql.push(" AND NOT coalesce(m.tsv @@ CAST(")
                                .param(Value::Text(q))
                                .push("::text AS tsquery), false)");
                        } else {
                            matches.push(format!("({q})"));
                        }
                    }
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
        match sql.dialect {
            Dialect::Sqlite if fts_driven => {
                let mut expr = matches.join(" AND ");
                if !negations.is_empty() {
                    expr = format!("({expr}) NOT ({})", any_of(&negations));
                }
                sql.push(" AND fts MATCH ").param(Value::Text(expr));
            }
            Dialect::Sqlite => {
                sql.push(" AND m.id IN (SELECT rowid FROM fts WHERE fts MATCH ")
                    .param(Value::Text(matches.join(" AND ")))
                    .push(")");
            }
            Dialect::Postgres => {
                let mut q = matches.join(" & ");
                if !negations.is_empty() {
                    q = format!("({q}) & !({})", negations.join(" | "));
                }
                sql.push(" AND m.tsv @@ CAST(")
                    .param(Value::Text(q))
                    .push("::text AS tsquery)");
            }
        }
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
        let (sql, _) = select(dialect, "m.id", mailbox, &Query::parse(q).expect("query"));
        (sql.text, sql.params)
    }

    #[test]
    fn the_driving_table() {
        let q = |s: &str| Query::parse(s).expect("query");
        let (sql, id) = select(Dialect::Sqlite, "m.id", Some("A@x"), &q("hello -spam"));
        assert_eq!(id, "fts.rowid");
        assert!(
            sql.text.starts_with(
                "SELECT m.id FROM fts JOIN message m ON m.id = fts.rowid WHERE 1=1 AND EXISTS"
            ),
            "{}",
            sql.text
        );
        assert!(sql.text.ends_with(" AND fts MATCH ?2"), "{}", sql.text);
        assert_eq!(
            sql.params[1],
            Value::Text("(\"hello\"*) NOT ((\"spam\"*))".into())
        );
        let (sql, id) = select(Dialect::Sqlite, "m.id", Some("A@x"), &q("-spam is:unread"));
        assert_eq!(id, "r.message");
        assert!(sql.text.starts_with("SELECT m.id FROM recipient r JOIN message m ON m.id = r.message WHERE r.mailbox = ?1"), "{}", sql.text);
        assert_eq!(sql.params[0], Value::Text("a@x".into()));
        let (_, id) = select(Dialect::Postgres, "m.id", Some("a@x"), &q("hello"));
        assert_eq!(id, "r.message");
        let (sql, id) = select(Dialect::Postgres, "m.id", None, &q("hello"));
        assert_eq!(id, "m.id");
        assert!(
            sql.text
                .starts_with("SELECT m.id FROM message m WHERE 1=1 AND m.tsv @@"),
            "{}",
            sql.text
        );
        let count = capped_count(
            Dialect::Sqlite,
            None,
            &q("hello"),
            &Prefixes::default(),
            100,
        );
        assert_eq!(
            count.text,
            "SELECT count(*), coalesce(sum(c.seen = 0), 0) FROM (SELECT m.seen AS seen FROM fts \
             JOIN message m ON m.id = fts.rowid WHERE 1=1 AND fts MATCH ?1 LIMIT ?2) c"
        );
        assert_eq!(count.params[1], Value::Int(100));
    }

    #[test]
    fn sqlite_terms() {
        let (text, params) = compiled(
            Dialect::Sqlite,
            "from:bob@example.com hello -spam is:unread larger:1k rcpt:@Example.org",
            Some("X@Y"),
        );
        assert!(text.contains("r.mailbox = ?1"), "{text}");
        assert!(
            !text.contains("NOT IN"),
            "the negation is in the MATCH: {text}"
        );
        assert!(text.contains("(m.seen = 0)"));
        assert!(text.contains("m.size > ?2"));
        assert!(text.contains("r.mailbox LIKE ?3 ESCAPE"));
        assert!(text.ends_with(" AND fts MATCH ?4"), "{text}");
        assert_eq!(params[0], Value::Text("x@y".into()));
        assert_eq!(params[2], Value::Text("%@example.org".into()));
        assert_eq!(
            params[3],
            Value::Text(
                "(from_addr : \"bob example com\"* AND \"hello\"*) NOT ((\"spam\"*))".into()
            )
        );
    }

    #[test]
    fn a_search_of_negations_only_merges_ids() {
        let q = |s: &str| Query::parse(s).expect("query");
        let p = Prefixes::default();
        assert!(negated_ids(Dialect::Sqlite, None, &q("hello -spam"), &p, 10).is_none());
        assert!(negated_ids(Dialect::Sqlite, None, &q("is:unread"), &p, 10).is_none());
        let sql = negated_ids(Dialect::Sqlite, None, &q("-spam -subject:ads"), &p, 1001)
            .expect("negations");
        assert_eq!(
            sql.text,
            "SELECT m.id FROM message m WHERE 1=1 EXCEPT SELECT rowid FROM fts \
             WHERE fts MATCH ?1 ORDER BY 1 DESC LIMIT ?2"
        );
        assert_eq!(
            sql.params,
            vec![
                Value::Text("(\"spam\"*) OR (subject : \"ads\"*)".into()),
                Value::Int(1001)
            ]
        );
        let sql = negated_ids(Dialect::Sqlite, Some("A@x"), &q("-spam"), &p, 5).expect("negations");
        assert!(sql.text.starts_with(
            "SELECT r.message FROM recipient r WHERE r.mailbox = ?1 EXCEPT SELECT rowid"
        ));
        let sql = negated_ids(Dialect::Sqlite, Some("A@x"), &q("-spam is:unread"), &p, 5)
            .expect("negations");
        assert!(
            sql.text.starts_with(
                "SELECT r.message FROM recipient r JOIN message m ON m.id = r.message \
                 WHERE r.mailbox = ?1 AND (m.seen = 0) EXCEPT"
            ),
            "{}",
            sql.text
        );
    }

    #[test]
    fn postgres_terms() {
        let (text, params) = compiled(
            Dialect::Postgres,
            "subject:Hi -report 100%_ addressed:bob@x.org",
            None,
        );
        assert_eq!(
            text, "SELECT m.id FROM message m WHERE 1=1 AND m.tsv @@ CAST($1::text AS tsquery)",
            "the negation is in the one tsquery"
        );
        assert_eq!(
            params[0],
            Value::Text(
                "(('subject:hi':*) & ('100':*) & (('to:bob' <-> 'to:x' <-> 'to:org':*) | \
                 ('cc:bob' <-> 'cc:x' <-> 'cc:org':*) | ('bcc:bob' <-> 'bcc:x' <-> 'bcc:org':*))) \
                 & !(('report':*))"
                    .into()
            )
        );
        let (text, params) = compiled(Dialect::Postgres, "-report is:unread", None);
        assert!(
            text.contains("AND NOT coalesce(m.tsv @@ CAST($1::text AS tsquery), false)"),
            "{text}"
        );
        assert_eq!(params[0], Value::Text("'report':*".into()));
        let q = Query::parse("-report -subject:hi").expect("query");
        let sql = negated_ids(
            Dialect::Postgres,
            Some("A@x"),
            &q,
            &Prefixes::default(),
            1001,
        )
        .expect("negations");
        assert_eq!(
            sql.text,
            "SELECT r.message FROM recipient r WHERE r.mailbox = $1 AND r.message NOT IN \
             (SELECT id FROM message WHERE tsv @@ CAST($2::text AS tsquery)) ORDER BY 1 DESC \
             LIMIT $3"
        );
        assert_eq!(
            sql.params[1],
            Value::Text("('report':*) | ('subject:hi':*)".into())
        );
    }

    #[test]
    fn negated_ids_cut_the_page_and_the_count() {
        let found = NegatedIds::new((1..=10).rev().collect(), 2, 3, 5);
        assert_eq!(found.page, [8, 7, 6]);
        assert_eq!(found.counted, [10, 9, 8, 7, 6]);
        let found = NegatedIds::new(vec![3, 2], 5, 3, u64::MAX);
        assert!(found.page.is_empty());
        assert_eq!(found.counted, [3, 2]);
        let found = NegatedIds::new(vec![3, 2], u64::MAX, u64::MAX, 1);
        assert!(found.page.is_empty());
        assert_eq!(NegatedIds::literal(Dialect::Sqlite, &[3, 2]), "[3,2]");
        assert_eq!(NegatedIds::literal(Dialect::Postgres, &[3]), "{3}");
        assert_eq!(NegatedIds::literal(Dialect::Postgres, &[]), "{}");
    }

    #[test]
    fn postgres_tsvector() {
        let f = crate::parse::Fields {
            subject: "Quarterly report".into(),
            from: crate::model::Address {
                name: "Al".into(),
                address: "al@x.org".into(),
            },
            body_text: "it's the REPORT, Grüße".into(),
            ..Default::default()
        };
        let ts = pg_tsvector(&f);
        assert!(
            ts.contains("'subject:quarterly':1 'subject:report':2"),
            "{ts}"
        );
        assert!(ts.contains("'from:al':4,5"), "{ts}");
        assert!(ts.contains("'from:x':6"), "{ts}");
        assert!(
            ts.contains("'quarterly':9") && ts.contains("'report':10,20"),
            "{ts}"
        );
        assert!(ts.contains("'grüße':"), "{ts}");
        assert!(ts.contains("'it':") && ts.contains("'s':"), "{ts}");
        // Bounded: a huge body stays under the limit and positions stop at 16383.
        let big = crate::parse::Fields {
            body_text: (0..200_000).map(|i| format!("w{i} ")).collect(),
            ..Default::default()
        };
        let ts = pg_tsvector(&big);
        assert!(ts.len() < 4 * TS_MAX_BYTES, "{}", ts.len());
        assert!(!ts.contains(":16384"));
        let hostile = crate::parse::Fields {
            subject: "a'b\\c \u{0} d".into(),
            ..Default::default()
        };
        assert_eq!(
            pg_tsvector(&hostile),
            "'a':6 'b':7 'c':8 'd':9 'subject:a':1 'subject:b':2 'subject:c':3 'subject:d':4"
        );
    }

    #[test]
    fn like_is_escaped() {
        assert_eq!(like_escape("a%b_c\\"), "a\\%b\\_c\\\\");
    }
}

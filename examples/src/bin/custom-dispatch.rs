//! Run with: cargo run -p examples --bin custom-dispatch
//!
//! A `MailDispatch` of your own: every message becomes one JSON line appended to a file, the
//! kind of thing a webhook, a queue or a database insert would start from.
//!
//! Arguments: `[ADDR] [FILE]` (default `127.0.0.1:2525` and `./mail.jsonl`):
//!
//! ```text
//! cargo run -p examples --bin custom-dispatch -- 127.0.0.1:2525 /tmp/mail.jsonl
//! swaks --server 127.0.0.1:2525 --from a@example.com --to b@example.org
//! tail -n1 /tmp/mail.jsonl
//! {"id":"...","peer":"127.0.0.1","from":"a@example.com","to":["b@example.org"],"size":312,"message":"Received: ..."}
//! ```
//!
//! The two traits: [`MailDispatch::open`] starts a [`Transaction`] at MAIL FROM; the
//! transaction takes the recipients, then the data chunk by chunk (the first chunk is the
//! `Received:` header the driver adds), then `commit`, which answers per recipient and must
//! not say `Ok` before the message is durable: the client gets its `250` from that answer.

use std::sync::Arc;

use samotop_core::{
    Driver, Envelope, MailDispatch, Outcomes, Peer, Recipient, Refusal, SessionConfig, SessionInfo,
    Transaction, reply,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// Appends each message to one file as a JSON line. Shared by every session.
struct JsonLines {
    file: Arc<Mutex<tokio::fs::File>>,
}

/// One message on its way into the file.
struct JsonMessage {
    file: Arc<Mutex<tokio::fs::File>>,
    id: String,
    peer: String,
    from: String,
    to: Vec<String>,
    /// Gathered in memory: the session stops at `Limits::max_message_size` (25 MiB by
    /// default), so this is bounded. A backend for big messages would stream to a file.
    data: Vec<u8>,
}

impl MailDispatch for JsonLines {
    type Transaction = JsonMessage;

    async fn open(&self, info: &SessionInfo, envelope: &Envelope) -> Result<JsonMessage, Refusal> {
        Ok(JsonMessage {
            file: self.file.clone(),
            id: envelope.id.clone(),
            peer: info.peer.to_string(),
            from: envelope.sender.to_string(),
            to: Vec::new(),
            data: Vec::new(),
        })
    }
}

impl Transaction for JsonMessage {
    async fn add_recipient(&mut self, recipient: &Recipient) -> Result<(), Refusal> {
        // Refusing here (an `Err`) is the reply to RCPT TO.
        self.to.push(recipient.address.clone());
        Ok(())
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        self.data.extend_from_slice(chunk);
        Ok(())
    }

    async fn commit(&mut self) -> Outcomes {
        let to: Vec<String> = self.to.iter().map(|a| json(a)).collect();
        let line = format!(
            "{{\"id\":{},\"peer\":{},\"from\":{},\"to\":[{}],\"size\":{},\"message\":{}}}\n",
            json(&self.id),
            json(&self.peer),
            json(&self.from),
            to.join(","),
            self.data.len(),
            // Message data is bytes; a JSON string must be text.
            json(&String::from_utf8_lossy(&self.data)),
        );
        // One writer at a time, so that lines never interleave; fsync before saying yes.
        let mut file = self.file.lock().await;
        let stored = async {
            file.write_all(line.as_bytes()).await?;
            file.flush().await?;
            file.sync_data().await
        };
        match stored.await {
            Ok(()) => vec![Ok(()); self.to.len()],
            Err(e) => {
                log::warn!("{}: cannot append to the file: {e}", self.id);
                vec![Err(reply::DELIVERY_FAILED); self.to.len()]
            }
        }
    }
}

/// A JSON string literal.
fn json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or("127.0.0.1:2525".into());
    let path = args.next().unwrap_or("./mail.jsonl".into());

    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await?;
    let dispatch = JsonLines {
        file: Arc::new(Mutex::new(file)),
    };
    let driver = Arc::new(Driver::new(dispatch, (), SessionConfig::default()));

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    log::info!("listening on {addr}, appending mail to {path}");
    loop {
        let (stream, peer) = listener.accept().await?;
        let driver = driver.clone();
        tokio::spawn(async move {
            let info = SessionInfo::new(Peer::Tcp(peer), "localhost");
            driver.run(stream, info).await
        });
    }
}

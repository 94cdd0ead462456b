//! [`Stdout`]: prints each message to standard output, one whole frame at its commit.

use samotop_core::{
    Envelope, MailDispatch, Outcomes, Recipient, Refusal, SessionInfo, Spool, Transaction, reply,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::Error;

/// One frame at a time on standard output.
static STDOUT: Mutex<()> = Mutex::const_new(());

/// Message data kept in memory per transaction before the spool moves to a temporary file.
const MEMORY: usize = 1024 * 1024;

/// Prints each message to standard output (`--deliver stdout`), for trying things out and
/// for pipes. Each message is one frame, written whole when it commits:
///
/// ```text
/// MAIL FROM:<sender@example.org> RCPT TO:<a@example.com>,<b@example.com> LENGTH=1234
/// Received: from ...
/// Subject: ...
/// ```
///
/// The envelope line ends in CR LF; its recipients are the delivery addresses (after any
/// `--map`), with control characters shown as `?`. `LENGTH=` is the number of octets that
/// follow it: the message as stored elsewhere (trace header fields, then the data, byte for
/// byte), after which the next frame begins. A reader takes the line, then exactly that many
/// octets: any content, binary too, is framed exactly.
///
/// Until its commit a message is held in a [`Spool`] (memory, then an encrypted temporary
/// file), so a refused or aborted message leaves nothing on standard output, and the lock
/// on standard output is held only while one frame is written. The commit answers `Ok` once
/// the frame is flushed; a write error (a closed pipe) answers `451 4.3.0`. Do not combine
/// with `--stdio`, whose session speaks on standard output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stdout;

impl Stdout {
    /// The standard output backend; all instances share standard output, one frame at a
    /// time.
    pub fn new() -> Self {
        Stdout
    }
}

impl MailDispatch for Stdout {
    type Transaction = StdoutTransaction;

    async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<StdoutTransaction, Refusal> {
        Ok(StdoutTransaction {
            recipients: 0,
            line: String::new(),
            spool: Spool::new(MEMORY),
            failed: None,
        })
    }
}

/// The transaction of [`Stdout`].
#[derive(Debug)]
pub struct StdoutTransaction {
    recipients: usize,
    /// The envelope line, without `LENGTH=`.
    line: String,
    spool: Spool,
    /// Sticky: every later call answers it.
    failed: Option<Refusal>,
}

impl StdoutTransaction {
    fn fail(&mut self, error: Error) -> Refusal {
        let refusal = error.reply();
        log::warn!("stdout: {error}; replying {refusal}");
        self.failed = Some(refusal.clone());
        refusal
    }

    /// Writes the frame under the lock.
    async fn print(&mut self) -> Result<(), Error> {
        let _guard = STDOUT.lock().await;
        let mut out = tokio::io::stdout();
        let line = format!("{} LENGTH={}\r\n", self.line, self.spool.len());
        let stdout = |source| Error::Stdout { source };
        out.write_all(line.as_bytes()).await.map_err(stdout)?;
        let mut reader = self.spool.reader();
        // Bounded: each turn takes at least one byte of a spool of known length.
        while let Some(chunk) = reader.next_chunk(64 * 1024).await.map_err(stdout)? {
            out.write_all(&chunk).await.map_err(stdout)?;
        }
        out.flush().await.map_err(stdout)
    }
}

impl Transaction for StdoutTransaction {
    async fn add_recipient(&mut self, _: &Recipient) -> Result<(), Refusal> {
        self.recipients += 1;
        Ok(())
    }

    async fn begin(&mut self, _: &SessionInfo, envelope: &Envelope) -> Result<(), Refusal> {
        self.line = envelope_line(envelope);
        Ok(())
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        if let Some(refusal) = &self.failed {
            return Err(refusal.clone());
        }
        match self.spool.write(chunk).await {
            Ok(()) => Ok(()),
            Err(e) => {
                log::warn!("stdout: cannot hold the message: {e}");
                let refusal = reply::for_io_error(&e);
                self.failed = Some(refusal.clone());
                Err(refusal)
            }
        }
    }

    /// Prints the frame; `Ok` for every recipient once it is flushed.
    async fn commit(&mut self) -> Outcomes {
        let result = match self.failed.clone() {
            Some(refusal) => Err(refusal),
            None => match self.print().await {
                Ok(()) => Ok(()),
                Err(e) => Err(self.fail(e)),
            },
        };
        self.spool = Spool::new(0);
        vec![result; self.recipients]
    }

    async fn abort(&mut self) {
        self.spool = Spool::new(0);
    }
}

/// `MAIL FROM:<sender> RCPT TO:<a>,<b>`.
fn envelope_line(envelope: &Envelope) -> String {
    let clean = |s: String| -> String {
        s.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    };
    let recipients: Vec<String> = envelope
        .recipients
        .iter()
        .map(|r| format!("<{}>", clean(r.address.clone())))
        .collect();
    format!(
        "MAIL FROM:<{}> RCPT TO:{}",
        clean(envelope.sender.to_string()),
        recipients.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use samotop_parser::{ForwardPath, MailParams, RcptParams, ReversePath};

    #[test]
    fn envelope_line_lists_recipients() {
        let mut env = Envelope::new(ReversePath::Null, MailParams::default(), "id".into());
        let mut r = Recipient::new(ForwardPath::Postmaster, RcptParams::default());
        env.recipients.push(r.clone());
        r.address = "a\r\nb".into();
        env.recipients.push(r);
        assert_eq!(
            envelope_line(&env),
            "MAIL FROM:<> RCPT TO:<Postmaster>,<a??b>"
        );
    }
}

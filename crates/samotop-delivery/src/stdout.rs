//! [`Stdout`]: prints each message to standard output.

use samotop_core::{Envelope, MailDispatch, Outcomes, Recipient, Reply, SessionInfo, Transaction};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, MutexGuard};

use crate::Error;

/// One message at a time on standard output.
static STDOUT: Mutex<()> = Mutex::const_new(());

/// Prints each message to standard output (`--deliver stdout`), for trying things out and
/// for pipes: an envelope line, then the message as stored elsewhere (trace header fields,
/// then the data), streamed chunk by chunk, never gathered:
///
/// ```text
/// MAIL FROM:<sender@example.org> RCPT TO:<a@example.com>,<b@example.com>
/// Received: from ...
/// Subject: ...
/// ```
///
/// The envelope line ends in CR LF like the message; its recipients are the delivery
/// addresses (after any `--map`), with control characters shown as `?`.
///
/// Messages do not interleave: a transaction holds standard output from the start of its
/// data to its commit or abort, so a slow client delays the others (up to the data
/// timeout). An aborted message may appear in part. The commit answers `Ok` once the data
/// is flushed; a write error (a closed pipe) answers `451 4.3.0`. Do not combine with
/// `--stdio`, whose session speaks on standard output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stdout;

impl Stdout {
    /// The standard output backend; all instances share standard output, one message at a
    /// time.
    pub fn new() -> Self {
        Stdout
    }
}

impl MailDispatch for Stdout {
    type Transaction = StdoutTransaction;

    async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<StdoutTransaction, Reply> {
        Ok(StdoutTransaction {
            recipients: 0,
            out: None,
            failed: None,
        })
    }
}

/// The transaction of [`Stdout`].
#[derive(Debug)]
pub struct StdoutTransaction {
    recipients: usize,
    /// Held from `begin` to the end.
    out: Option<(MutexGuard<'static, ()>, tokio::io::Stdout)>,
    /// Sticky: every later call answers it.
    failed: Option<Reply>,
}

impl StdoutTransaction {
    async fn put(&mut self, bytes: &[u8]) -> Result<(), Reply> {
        if let Some(reply) = &self.failed {
            return Err(reply.clone());
        }
        let Some((_, out)) = self.out.as_mut() else {
            return Err(samotop_core::reply::DELIVERY_FAILED);
        };
        match out.write_all(bytes).await {
            Ok(()) => Ok(()),
            Err(source) => Err(self.fail(Error::Stdout { source })),
        }
    }

    fn fail(&mut self, error: Error) -> Reply {
        let reply = error.reply();
        log::warn!("stdout: {error}; replying {reply}");
        self.failed = Some(reply.clone());
        self.out = None;
        reply
    }
}

impl Transaction for StdoutTransaction {
    async fn add_recipient(&mut self, _: &Recipient) -> Result<(), Reply> {
        self.recipients += 1;
        Ok(())
    }

    /// Waits for standard output, then prints the envelope line.
    async fn begin(&mut self, _: &SessionInfo, envelope: &Envelope) -> Result<(), Reply> {
        let guard = STDOUT.lock().await;
        self.out = Some((guard, tokio::io::stdout()));
        let line = envelope_line(envelope);
        self.put(line.as_bytes()).await
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Reply> {
        self.put(chunk).await
    }

    /// Flushes; `Ok` for every recipient when that worked.
    async fn commit(&mut self) -> Outcomes {
        let result = match self.out.as_mut() {
            Some((_, out)) => match out.flush().await {
                Ok(()) => Ok(()),
                Err(source) => Err(self.fail(Error::Stdout { source })),
            },
            None => Err(self
                .failed
                .clone()
                .unwrap_or(samotop_core::reply::DELIVERY_FAILED)),
        };
        self.out = None;
        vec![result; self.recipients]
    }

    async fn abort(&mut self) {
        if let Some((_, out)) = self.out.as_mut() {
            let _ = out.flush().await;
        }
        self.out = None;
    }
}

/// `MAIL FROM:<sender> RCPT TO:<a>,<b>` and CR LF.
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
        "MAIL FROM:<{}> RCPT TO:{}\r\n",
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
            "MAIL FROM:<> RCPT TO:<Postmaster>,<a??b>\r\n"
        );
    }
}

//! [`Null`]: accepts every message and keeps nothing.

use samotop_core::{
    Envelope, MailDispatch, Outcomes, Recipient, Refusal, SessionInfo, Transaction,
};

/// Accepts every recipient and every message, and throws the data away
/// (`--deliver null`). For benchmarks and tests: it costs next to nothing.
///
/// **WARNING**: every message is acknowledged with `250` and lost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Null;

impl MailDispatch for Null {
    type Transaction = NullTransaction;

    async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<NullTransaction, Refusal> {
        Ok(NullTransaction { recipients: 0 })
    }
}

/// The transaction of [`Null`]: counts recipients, discards data.
#[derive(Debug)]
pub struct NullTransaction {
    recipients: usize,
}

impl Transaction for NullTransaction {
    async fn add_recipient(&mut self, _: &Recipient) -> Result<(), Refusal> {
        self.recipients += 1;
        Ok(())
    }

    async fn write(&mut self, _: &[u8]) -> Result<(), Refusal> {
        Ok(())
    }

    /// `Ok` for every recipient.
    async fn commit(&mut self) -> Outcomes {
        vec![Ok(()); self.recipients]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use samotop_core::Peer;
    use samotop_parser::{ForwardPath, MailParams, RcptParams, ReversePath};

    #[tokio::test]
    async fn accepts_and_forgets() {
        let info = SessionInfo::new(Peer::Stdio, "mx.test");
        let env = Envelope::new(ReversePath::Null, MailParams::default(), "id".into());
        let mut tx = Null.open(&info, &env).await.expect("open");
        let r = Recipient::new(ForwardPath::Postmaster, RcptParams::default());
        tx.add_recipient(&r).await.expect("rcpt");
        tx.add_recipient(&r).await.expect("rcpt");
        tx.begin(&info, &env).await.expect("begin");
        tx.write(b"data").await.expect("write");
        assert_eq!(tx.commit().await, vec![Ok(()), Ok(())]);
    }
}

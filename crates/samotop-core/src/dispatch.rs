//! Delivery: [`MailDispatch`] opens a [`Transaction`] per mail, which takes recipients, streams
//! the data and commits it durably.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::envelope::{Envelope, Recipient, SessionInfo};
use crate::reply::Refusal;

/// The outcome of a commit: one entry per accepted recipient, in RCPT order.
/// `Ok(())` means that recipient's copy is durable (stored, or accepted downstream).
pub type Outcomes = Vec<Result<(), Refusal>>;

/// What a backend can carry; EHLO offers only that (DESIGN.md: each extension advertised
/// works through the configured backend).
///
/// The default is a store of bytes that takes anything: every flag on, no size limit of
/// its own. A backend that passes mail on (LMTP, SMTP) says what its next hop takes.
///
/// ```
/// use samotop_core::Capabilities;
/// let next_hop = Capabilities { binary_mime: false, ..Capabilities::default() };
/// let both = Capabilities::default().and(next_hop);
/// assert!(both.eight_bit_mime && !both.binary_mime);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// 8-bit message data (RFC 6152 `8BITMIME`).
    pub eight_bit_mime: bool,
    /// Binary message data, any byte anywhere, carried by BDAT (RFC 3030 `BINARYMIME`).
    /// Offered only together with `chunking`.
    pub binary_mime: bool,
    /// UTF-8 addresses and headers (RFC 6531 `SMTPUTF8`).
    pub smtputf8: bool,
    /// BDAT (RFC 3030 `CHUNKING`). The session turns chunks into one stream, so any byte
    /// store takes it; off only for a backend that wants DATA's semantics.
    pub chunking: bool,
    /// The largest message the backend takes, if it has a limit of its own: `SIZE` offers
    /// the smaller of this and [`Limits::max_message_size`](crate::Limits::max_message_size).
    pub max_message_size: Option<u64>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            eight_bit_mime: true,
            binary_mime: true,
            smtputf8: true,
            chunking: true,
            max_message_size: None,
        }
    }
}

impl Capabilities {
    /// What both can carry (for a message that goes through both, or to either).
    pub fn and(self, other: Capabilities) -> Capabilities {
        Capabilities {
            eight_bit_mime: self.eight_bit_mime && other.eight_bit_mime,
            binary_mime: self.binary_mime && other.binary_mime,
            smtputf8: self.smtputf8 && other.smtputf8,
            chunking: self.chunking && other.chunking,
            max_message_size: match (self.max_message_size, other.max_message_size) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// Where accepted mail goes: a Maildir, an LMTP server, another SMTP server, a database...
///
/// The session asks [`open`](MailDispatch::open) at MAIL FROM (after the guards accept),
/// then drives the returned [`Transaction`]. A dispatch is shared by all sessions. Every call
/// is bounded by [`Limits::backend_timeout`](crate::Limits::backend_timeout): one that takes
/// longer is dropped, the transaction aborted, and the client told `451 4.4.1`.
///
/// ```
/// use samotop_core::{Envelope, MailDispatch, Outcomes, Recipient, Refusal, SessionInfo, Transaction};
///
/// /// Counts message bytes and throws them away.
/// struct Counter;
/// struct Count { bytes: usize, rcpts: usize }
///
/// impl MailDispatch for Counter {
///     type Transaction = Count;
///     async fn open(&self, _: &SessionInfo, _: &Envelope) -> Result<Count, Refusal> {
///         Ok(Count { bytes: 0, rcpts: 0 })
///     }
/// }
///
/// impl Transaction for Count {
///     async fn add_recipient(&mut self, _: &Recipient) -> Result<(), Refusal> {
///         self.rcpts += 1;
///         Ok(())
///     }
///     async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
///         self.bytes += chunk.len();
///         Ok(())
///     }
///     async fn commit(&mut self) -> Outcomes {
///         vec![Ok(()); self.rcpts]
///     }
/// }
/// ```
pub trait MailDispatch: Send + Sync + 'static {
    /// One mail transaction.
    type Transaction: Transaction;

    /// What this backend can carry. Asked when a driver is made; default: anything.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Opens a transaction for a sender (`envelope.sender`; no recipients yet). An `Err` is
    /// the reply to MAIL FROM.
    fn open(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<Self::Transaction, Refusal>> + Send;
}

/// One mail transaction: recipients, then data, then commit (or abort at any point).
///
/// Call order: [`add_recipient`](Transaction::add_recipient)*, [`begin`](Transaction::begin),
/// [`write`](Transaction::write)*, then [`commit`](Transaction::commit) or
/// [`abort`](Transaction::abort). `abort` may come at any time, also before `begin`; a
/// transaction dropped without `commit` must leave nothing delivered.
pub trait Transaction: Send + 'static {
    /// Accepts or refuses a recipient (the `Err` reply goes to the client at RCPT time).
    fn add_recipient(
        &mut self,
        recipient: &Recipient,
    ) -> impl Future<Output = Result<(), Refusal>> + Send;

    /// The message data starts; the envelope holds every accepted recipient, and its
    /// [`digest`](Envelope::digest) when the header section came whole. The first
    /// [`write`](Transaction::write) that follows carries the trace header fields.
    fn begin(
        &mut self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<(), Refusal>> + Send {
        let _ = (info, envelope);
        async { Ok(()) }
    }

    /// A chunk of message data, in order, dot-unstuffed. An `Err` fails the message: the
    /// session reads the rest of the data, then answers the error.
    fn write(&mut self, chunk: &[u8]) -> impl Future<Output = Result<(), Refusal>> + Send;

    /// The data is complete: make it durable, then say per recipient how it went.
    /// Never answer `Ok` for a copy that is not durable.
    fn commit(&mut self) -> impl Future<Output = Outcomes> + Send;

    /// The transaction is abandoned (RSET, error, disconnect): undo what was written.
    fn abort(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe twin of [`Transaction`].
pub trait DynTransaction: Send {
    /// See [`Transaction::add_recipient`].
    fn dyn_add_recipient<'a>(&'a mut self, r: &'a Recipient) -> BoxFuture<'a, Result<(), Refusal>>;
    /// See [`Transaction::begin`].
    fn dyn_begin<'a>(
        &'a mut self,
        info: &'a SessionInfo,
        env: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), Refusal>>;
    /// See [`Transaction::write`].
    fn dyn_write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, Result<(), Refusal>>;
    /// See [`Transaction::commit`].
    fn dyn_commit(&mut self) -> BoxFuture<'_, Outcomes>;
    /// See [`Transaction::abort`].
    fn dyn_abort(&mut self) -> BoxFuture<'_, ()>;
}

impl<T: Transaction> DynTransaction for T {
    fn dyn_add_recipient<'a>(&'a mut self, r: &'a Recipient) -> BoxFuture<'a, Result<(), Refusal>> {
        Box::pin(self.add_recipient(r))
    }
    fn dyn_begin<'a>(
        &'a mut self,
        info: &'a SessionInfo,
        env: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), Refusal>> {
        Box::pin(self.begin(info, env))
    }
    fn dyn_write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, Result<(), Refusal>> {
        Box::pin(self.write(chunk))
    }
    fn dyn_commit(&mut self) -> BoxFuture<'_, Outcomes> {
        Box::pin(self.commit())
    }
    fn dyn_abort(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.abort())
    }
}

impl Transaction for Box<dyn DynTransaction> {
    async fn add_recipient(&mut self, r: &Recipient) -> Result<(), Refusal> {
        self.as_mut().dyn_add_recipient(r).await
    }
    async fn begin(&mut self, info: &SessionInfo, env: &Envelope) -> Result<(), Refusal> {
        self.as_mut().dyn_begin(info, env).await
    }
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        self.as_mut().dyn_write(chunk).await
    }
    fn commit(&mut self) -> impl Future<Output = Outcomes> + Send {
        self.as_mut().dyn_commit()
    }
    fn abort(&mut self) -> impl Future<Output = ()> + Send {
        self.as_mut().dyn_abort()
    }
}

/// The object-safe twin of [`MailDispatch`].
trait DynDispatch: Send + Sync {
    fn dyn_capabilities(&self) -> Capabilities;
    fn dyn_open<'a>(
        &'a self,
        info: &'a SessionInfo,
        env: &'a Envelope,
    ) -> BoxFuture<'a, Result<Box<dyn DynTransaction>, Refusal>>;
}

impl<D: MailDispatch> DynDispatch for D {
    fn dyn_capabilities(&self) -> Capabilities {
        self.capabilities()
    }
    fn dyn_open<'a>(
        &'a self,
        info: &'a SessionInfo,
        env: &'a Envelope,
    ) -> BoxFuture<'a, Result<Box<dyn DynTransaction>, Refusal>> {
        Box::pin(async move {
            let tx = self.open(info, env).await?;
            Ok(Box::new(tx) as Box<dyn DynTransaction>)
        })
    }
}

/// A dispatch chosen at run time (the server binary picks one from `--deliver`).
///
/// ```
/// use samotop_core::BoxDispatch;
/// # struct Null;
/// # impl samotop_core::MailDispatch for Null {
/// #     type Transaction = Box<dyn samotop_core::DynTransaction>;
/// #     async fn open(&self, _: &samotop_core::SessionInfo, _: &samotop_core::Envelope)
/// #         -> Result<Self::Transaction, samotop_core::Refusal> { Err(samotop_core::reply::DELIVERY_FAILED) }
/// # }
/// let dispatch = BoxDispatch::new(Null);
/// let shared = dispatch.clone();
/// ```
#[derive(Clone)]
pub struct BoxDispatch(Arc<dyn DynDispatch>);

impl BoxDispatch {
    /// Boxes a dispatch.
    pub fn new(dispatch: impl MailDispatch) -> Self {
        BoxDispatch(Arc::new(dispatch))
    }
}

impl std::fmt::Debug for BoxDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoxDispatch")
    }
}

impl MailDispatch for BoxDispatch {
    type Transaction = Box<dyn DynTransaction>;
    fn capabilities(&self) -> Capabilities {
        self.0.dyn_capabilities()
    }
    async fn open(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> Result<Self::Transaction, Refusal> {
        self.0.dyn_open(info, envelope).await
    }
}

impl<D: MailDispatch> MailDispatch for Arc<D> {
    type Transaction = D::Transaction;
    fn capabilities(&self) -> Capabilities {
        self.as_ref().capabilities()
    }
    fn open(
        &self,
        info: &SessionInfo,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<Self::Transaction, Refusal>> + Send {
        self.as_ref().open(info, envelope)
    }
}

//! Limits and timeouts of a session. Every one is on by default; none is unlimited.

use std::time::Duration;

/// The bounds a session and its driver enforce. Each field documents its default, its RFC and
/// the reply a client gets when it crosses it; after every one of those replies the server
/// keeps serving.
///
/// Worst-case memory of one session is about `max_line_length` + `read_size_data` +
/// `chunk_size` + `output_high_water` + (with end-of-data checks) `spool_memory`: under
/// 512 KiB with the defaults, whatever the client sends. A session waiting for its peer
/// holds none of these buffers (the driver gives them back while the read is pending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line in octets, CR LF included. RFC 5321 4.5.3.1.4 says at least 512;
    /// extensions make lines longer. Default 4096.
    /// Over it: [`crate::reply::LINE_TOO_LONG`], the line is discarded, the session goes on.
    pub max_line_length: usize,
    /// Largest message in octets (after dot-unstuffing, before our trace headers). RFC 1870.
    /// Default 25 MiB. Over it: [`crate::reply::MESSAGE_TOO_BIG`] at MAIL (declared SIZE) or at
    /// the end of the data (actual size).
    pub max_message_size: u64,
    /// Recipients per transaction. RFC 5321 4.5.3.1.8: at least 100. Default 100.
    /// Over it: [`crate::reply::TOO_MANY_RECIPIENTS`], and the session goes on.
    pub max_recipients: usize,
    /// Bad commands in one session. Default 10.
    /// Over it: [`crate::reply::TOO_MANY_ERRORS`] and the connection is closed.
    pub max_errors: usize,
    /// Recipients refused by a guard or the backend in one session (unknown users, relaying
    /// refused), as Postfix's `smtpd_hard_error_limit` counts them: a dictionary attack gets
    /// this many answers and no more. (Recipients over `max_recipients` are not counted: the
    /// client sends them in another transaction.) Default 20. Over it: [`crate::reply::TOO_MANY_REJECTED_RECIPIENTS`] and the
    /// connection is closed; a client that reconnects goes on.
    pub max_rejected_recipients: usize,
    /// Wait for a whole command line (however it trickles in), and for the peer to read our
    /// replies. RFC 5321 4.5.3.2.7: 5 minutes. Over it: [`crate::reply::TIMEOUT`].
    pub command_timeout: Duration,
    /// Wait for the next block of message data. RFC 5321 4.5.3.2.6: 3 minutes (the server's
    /// own wait is not given; the client's data block timeout is used). Over it:
    /// [`crate::reply::TIMEOUT`].
    pub data_timeout: Duration,
    /// The whole TLS handshake after STARTTLS (RFC 3207) or on an implicit-TLS listener
    /// (RFC 8314). Default 30 s. Over it: the connection is closed without a reply (there
    /// is no way to send one in the middle of a handshake).
    pub handshake_timeout: Duration,
    /// Each call to a guard, an end-of-data check or the backend (`open`, `add_recipient`,
    /// `begin`, `write`, `commit`): a hung disk, a slow DNS, a webhook that never answers.
    /// Default 120 s (RFC 5321 4.5.3.2.6 gives the client 10 minutes for the reply after the
    /// data). Over it: [`crate::reply::BACKEND_TIMEOUT`], `451 4.4.1`, the transaction is
    /// aborted, the session goes on.
    pub backend_timeout: Duration,
    /// A pause of the client inside the message data after which what has gathered is handed
    /// to the backend anyway (a downstream server waiting for it must not hit its own idle
    /// timeout). Default 1 s.
    pub flush_after_idle: Duration,
    /// Octets of message data handed to the sink at once. Bounds memory per session.
    /// Default 64 KiB.
    pub chunk_size: usize,
    /// Message data an end-of-data check may hold in memory; beyond it the spool is an
    /// unlinked temporary file (encrypted). Default 256 KiB.
    pub spool_memory: usize,
    /// Transactions in one session. Default 1000. Over it, MAIL gets
    /// [`crate::reply::TOO_MANY_TRANSACTIONS`] and the connection is closed (a client that
    /// reconnects goes on; a session cannot run forever).
    pub max_transactions: usize,
    /// Replies waiting to be written before they are flushed mid-batch: a client that
    /// pipelines thousands of commands gets its replies in pieces of this size. Default
    /// 16 KiB.
    pub output_high_water: usize,
    /// Read size for a session waiting for a new command. Such a read goes through a buffer
    /// of the worker thread and only what arrives is kept, so a silent peer's connection
    /// holds no read buffer at all. Default 1 KiB.
    pub read_size_idle: usize,
    /// Read size once a peer fills what it is given (pipelining). Default 16 KiB.
    pub read_size_busy: usize,
    /// Read size inside message data. Default 64 KiB.
    pub read_size_data: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_length: 4096,
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            max_rejected_recipients: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            handshake_timeout: Duration::from_secs(30),
            backend_timeout: Duration::from_secs(120),
            flush_after_idle: Duration::from_secs(1),
            chunk_size: 64 * 1024,
            spool_memory: 256 * 1024,
            max_transactions: 1000,
            output_high_water: 16 * 1024,
            read_size_idle: 1024,
            read_size_busy: 16 * 1024,
            read_size_data: 64 * 1024,
        }
    }
}

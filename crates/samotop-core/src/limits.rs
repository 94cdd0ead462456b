//! Limits and timeouts of a session. Every one is on by default; none is unlimited.

use std::time::Duration;

/// The bounds a session enforces. Each field documents its default, its RFC and the reply a
/// client gets when it crosses it; after every one of those replies the server keeps serving.
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
    /// Wait for a whole command line (however it trickles in), and for the peer to read our
    /// replies. RFC 5321 4.5.3.2.7: 5 minutes. Over it: [`crate::reply::TIMEOUT`].
    pub command_timeout: Duration,
    /// Wait for the next block of message data. RFC 5321 4.5.3.2.6: 3 minutes (the server's
    /// own wait is not given; the client's data block timeout is used). Over it:
    /// [`crate::reply::TIMEOUT`].
    pub data_timeout: Duration,
    /// Octets of message data handed to the sink at once. Bounds memory per session.
    /// Default 64 KiB.
    pub chunk_size: usize,
    /// Transactions in one session. Default 1000. Over it, MAIL gets
    /// [`crate::reply::TOO_MANY_TRANSACTIONS`] and the connection is closed (a client that
    /// reconnects goes on; a session cannot run forever).
    pub max_transactions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_length: 4096,
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            chunk_size: 64 * 1024,
            max_transactions: 1000,
        }
    }
}

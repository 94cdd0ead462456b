//! An async LMTP/SMTP client: the downstream half of [`Proxy`](crate::Proxy).
//!
//! One [`Client`] is one connection to one server, spoken in one [`Dialect`]: LMTP (RFC 2033,
//! `LHLO`, one reply per recipient after the data) or SMTP (RFC 5321, `EHLO`, one reply).
//! It reads the greeting, greets, records the extensions the server advertises, and then
//! offers the commands of a mail transaction one method each. Every step has a timeout
//! ([`Timeouts`]); replies are parsed with [`samotop_parser::parse_reply`] and handed back as
//! [`samotop_core::Reply`]. A refusal is a `Reply`; only a failure of the connection or of the
//! protocol is an [`Error`].
//!
//! Message data is streamed, one of two ways. With `DATA` ([`Client::data`]),
//! [`Client::send_data`] turns bare CR and bare LF into CR LF (as Postfix's smtp client does,
//! so a lax next hop can never see an end of data inside the message) and dot-stuffs each
//! chunk as it comes; [`Client::end_data`] ends the data with `CR LF . CR LF`. When the server
//! offers CHUNKING, [`Client::bdat`] starts RFC 3030 chunking instead: each chunk goes as
//! `BDAT n` (line ends normalised the same way, except for `BODY=BINARYMIME` content, which
//! goes byte for byte), and [`Client::end_data`] sends `BDAT 0 LAST`. Either way no more than
//! the chunk in hand is kept.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use samotop_core::Reply;
use samotop_parser::{Body, MailParams, ReversePath};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::Error;

/// The longest reply we read (all lines together); a longer one is a protocol error.
const MAX_REPLY: usize = 64 * 1024;

/// Where the downstream server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A Unix socket, e.g. Dovecot's `/var/run/dovecot/lmtp`.
    Unix(PathBuf),
    /// A TCP address, `host:port` (e.g. `127.0.0.1:24`, `[::1]:24`, `mail.example:25`).
    Tcp(String),
}

impl fmt::Display for Endpoint {
    /// `unix:PATH` or `host:port`, as in `--deliver lmtp:...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(addr) => f.write_str(addr),
        }
    }
}

/// Which protocol the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// LMTP (RFC 2033): `LHLO`, and after the data one reply per accepted recipient.
    Lmtp,
    /// SMTP (RFC 5321): `EHLO` (falling back to `HELO`), and one reply after the data.
    Smtp,
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Lmtp => "LMTP",
            Dialect::Smtp => "SMTP",
        })
    }
}

/// How long each step of a [`Client`] may take. A step that takes longer fails with
/// [`Error::DownstreamTimeout`] and leaves the connection unusable.
///
/// The defaults are shorter than RFC 5321 4.5.3.2 asks of a client, on purpose: the
/// downstream server is usually local, and the upstream client (who waits up to the RFC's
/// times for our reply) must get our `451` before it gives up on us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting, reading the greeting, and the reply to `LHLO`/`EHLO`, each. Default 30 s.
    pub connect: Duration,
    /// The reply to `MAIL`, `RCPT`, `DATA`, `RSET`, `QUIT`. Default 60 s (RFC: 5 min).
    pub command: Duration,
    /// Writing one chunk of message data. Default 3 min (RFC 5321 4.5.3.2.5).
    pub data: Duration,
    /// The reply (LMTP: each reply) after the final `.`. Default 5 min (RFC: 10 min).
    pub final_reply: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            command: Duration::from_secs(60),
            data: Duration::from_secs(180),
            final_reply: Duration::from_secs(300),
        }
    }
}

/// What the client needs of a byte stream.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<S: AsyncRead + AsyncWrite + Send + Unpin> Stream for S {}

/// One connection to an LMTP or SMTP server, greeted and ready for a mail transaction.
///
/// Call order for one message: [`mail`](Client::mail), [`rcpt`](Client::rcpt) per recipient,
/// [`data`](Client::data) (go on only after `354`), [`send_data`](Client::send_data) per
/// chunk, [`end_data`](Client::end_data), then [`final_reply`](Client::final_reply) once per
/// accepted recipient (LMTP) or once (SMTP). [`rset`](Client::rset) or
/// [`reset_and_mail`](Client::reset_and_mail) start over on the same connection.
///
/// After an [`Error`] (other than a refused address) the connection is
/// [broken](Client::is_broken): its state is unknown, and every later call fails at once.
///
/// ```no_run
/// # async fn run() -> Result<(), samotop_delivery::Error> {
/// use samotop_delivery::{Client, Dialect, Endpoint};
/// use samotop_parser::{MailParams, ReversePath};
///
/// let endpoint = Endpoint::Unix("/var/run/dovecot/lmtp".into());
/// let mut client = Client::connect(endpoint, Dialect::Lmtp, "mx.example", Default::default()).await?;
/// assert!(client.mail(&ReversePath::Null, &MailParams::default()).await?.is_positive());
/// let accepted = client.rcpt("user@example.org").await?.is_positive() as usize;
/// if accepted > 0 && client.data().await?.code() == 354 {
///     client.send_data(b"Subject: hi\r\n\r\nHello\r\n").await?;
///     client.end_data().await?;
///     for _ in 0..accepted {
///         println!("{}", client.final_reply().await?);
///     }
/// }
/// client.quit().await
/// # }
/// ```
pub struct Client {
    io: Box<dyn Stream>,
    endpoint: Endpoint,
    dialect: Dialect,
    timeouts: Timeouts,
    greeting: Reply,
    /// `(KEYWORD, parameters)` per advertised extension, keyword upper-cased.
    extensions: Vec<(String, String)>,
    /// Bytes read but not yet parsed; at most [`MAX_REPLY`] plus one read.
    input: Vec<u8>,
    /// The encoded form of the chunk being written; as big as the biggest chunk, twice.
    output: Vec<u8>,
    stuffer: DotStuffer,
    in_data: bool,
    /// BDAT chunking (not DATA) for the data in progress; `binary`: send it unchanged.
    chunking: Option<Chunking>,
    /// Replies still to read for BDAT chunks already sent (pipelined).
    outstanding: usize,
    broken: bool,
}

/// The state of a BDAT transfer.
#[derive(Debug, Clone, Copy)]
struct Chunking {
    binary: bool,
}

/// BDAT chunks sent ahead of their replies, at most (with PIPELINING; without, one).
const MAX_OUTSTANDING: usize = 4;

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("dialect", &self.dialect)
            .field("extensions", &self.extensions)
            .field("in_data", &self.in_data)
            .field("chunking", &self.chunking.is_some())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `endpoint`, reads the greeting and greets with `LHLO helo` (LMTP) or
    /// `EHLO helo` (SMTP; `HELO` when `EHLO` is refused).
    ///
    /// # Errors
    ///
    /// [`Error::DownstreamConnect`] when nothing answers at the endpoint,
    /// [`Error::DownstreamRefused`] when the greeting is not `220` or the greeting command is
    /// refused, and the errors of any step ([`Error::DownstreamTimeout`],
    /// [`Error::DownstreamIo`], [`Error::DownstreamProtocol`]).
    pub async fn connect(
        endpoint: Endpoint,
        dialect: Dialect,
        helo: &str,
        timeouts: Timeouts,
    ) -> Result<Client, Error> {
        let io = tokio::time::timeout(timeouts.connect, open_stream(&endpoint))
            .await
            .map_err(|_| Error::DownstreamTimeout {
                endpoint: endpoint.to_string(),
                step: "connect",
                after: timeouts.connect,
            })?
            .map_err(|source| Error::DownstreamConnect {
                endpoint: endpoint.to_string(),
                source,
            })?;
        Client::with_stream(io, endpoint, dialect, helo, timeouts).await
    }

    /// Like [`connect`](Client::connect), over a stream the caller opened (a TLS stream, an
    /// in-memory pipe in tests). `endpoint` only names the server in errors and logs.
    ///
    /// # Errors
    ///
    /// As [`connect`](Client::connect), except [`Error::DownstreamConnect`].
    pub async fn with_stream(
        io: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
        endpoint: Endpoint,
        dialect: Dialect,
        helo: &str,
        timeouts: Timeouts,
    ) -> Result<Client, Error> {
        let mut client = Client {
            io: Box::new(io),
            endpoint,
            dialect,
            timeouts,
            greeting: Reply::plain(220, ""),
            extensions: Vec::new(),
            input: Vec::new(),
            output: Vec::new(),
            stuffer: DotStuffer::new(),
            in_data: false,
            chunking: None,
            outstanding: 0,
            broken: false,
        };
        client.greeting = client.expect("greeting", 220, timeouts.connect).await?;
        client.greet(helo).await?;
        Ok(client)
    }

    /// Sends `LHLO` or `EHLO` (then `HELO` if `EHLO` is refused) and records the extensions.
    async fn greet(&mut self, helo: &str) -> Result<(), Error> {
        let helo = checked(helo)?;
        let verb = match self.dialect {
            Dialect::Lmtp => "LHLO",
            Dialect::Smtp => "EHLO",
        };
        let reply = self
            .command(&format!("{verb} {helo}"), verb, self.timeouts.connect)
            .await?;
        if reply.is_positive() {
            self.extensions = parse_extensions(reply.message());
            return Ok(());
        }
        if self.dialect == Dialect::Smtp && reply.is_permanent() {
            let reply = self
                .command(&format!("HELO {helo}"), "HELO", self.timeouts.connect)
                .await?;
            if reply.is_positive() {
                return Ok(());
            }
            return Err(self.refused("HELO", reply));
        }
        Err(self.refused(verb, reply))
    }

    /// The endpoint this client is connected to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The dialect this client speaks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The server's greeting (`220 ...`).
    pub fn greeting(&self) -> &Reply {
        &self.greeting
    }

    /// The extensions the server advertised, as `(KEYWORD, parameters)` with the keyword
    /// upper-cased: `("PIPELINING", "")`, `("SIZE", "10240000")`. Empty after `HELO`.
    pub fn extensions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extensions
            .iter()
            .map(|(k, p)| (k.as_str(), p.as_str()))
    }

    /// True when the server advertised `keyword` (in any case), e.g. `"PIPELINING"`.
    pub fn supports(&self, keyword: &str) -> bool {
        self.extension(keyword).is_some()
    }

    /// The parameters of an advertised extension: `Some("10240000")` for `SIZE 10240000`,
    /// `Some("")` for `PIPELINING`, `None` when not advertised.
    pub fn extension(&self, keyword: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(keyword))
            .map(|(_, p)| p.as_str())
    }

    /// True when an earlier error left the connection in an unknown state (or the server
    /// said `421`): it must be dropped, never reused.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// True between a `354` to [`data`](Client::data) (or [`bdat`](Client::bdat)) and
    /// [`end_data`](Client::end_data).
    pub fn in_data(&self) -> bool {
        self.in_data
    }

    /// True when the connection can be used again for another transaction: not broken, not
    /// in data, no reply owed, nothing unread from the server, and the server has not closed
    /// it (checked without waiting). A connection that is not clean must not be pooled.
    pub fn is_clean(&mut self) -> bool {
        if self.broken || self.in_data || self.outstanding > 0 || !self.input.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut byte);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(&mut self.io).poll_read(&mut cx, &mut buf) {
            // Nothing to read: the server is quiet, as it must be between transactions.
            std::task::Poll::Pending => true,
            // Closed (0 bytes), unsolicited bytes, or an error: not reusable.
            std::task::Poll::Ready(_) => {
                self.broken = true;
                false
            }
        }
    }

    /// Sends `MAIL FROM:<sender>` with the parameters the server can take: `SIZE` (when it
    /// advertises SIZE), `BODY=BINARYMIME` (BINARYMIME; the data must then go with
    /// [`bdat`](Client::bdat)), `BODY=8BITMIME`/`BODY=7BIT` (8BITMIME) and `SMTPUTF8`
    /// (SMTPUTF8). DSN's parameters are never received, so never forwarded.
    ///
    /// Returns the server's reply, positive or not.
    ///
    /// # Errors
    ///
    /// [`Error::BadMailboxName`] when the sender holds a control character (nothing is sent),
    /// else the errors of a failed step.
    pub async fn mail(
        &mut self,
        sender: &ReversePath,
        params: &MailParams,
    ) -> Result<Reply, Error> {
        let line = self.mail_line(sender, params)?;
        self.command(&line, "MAIL", self.timeouts.command).await
    }

    /// `RSET` then `MAIL`, pipelined in one write when the server offers PIPELINING (RFC 2920):
    /// the way to start a new transaction on a connection that was used before, and to find
    /// out in one round trip whether it is still alive.
    ///
    /// Returns the reply to `MAIL`.
    ///
    /// # Errors
    ///
    /// [`Error::DownstreamRefused`] when `RSET` is not answered `250`, and those of
    /// [`mail`](Client::mail).
    pub async fn reset_and_mail(
        &mut self,
        sender: &ReversePath,
        params: &MailParams,
    ) -> Result<Reply, Error> {
        let mail = self.mail_line(sender, params)?;
        if !self.supports("PIPELINING") {
            let reply = self.rset().await?;
            if reply.code() != 250 {
                return Err(self.refused("RSET", reply));
            }
            return self.mail(sender, params).await;
        }
        self.send(&format!("RSET\r\n{mail}\r\n"), "RSET").await?;
        let rset = self.reply("RSET", self.timeouts.command).await?;
        let reply = self.reply("MAIL", self.timeouts.command).await?;
        if rset.code() != 250 {
            return Err(self.refused("RSET", rset));
        }
        Ok(reply)
    }

    /// Sends `RCPT TO:<address>`. The address goes as it is: `user@example.org`, or any name
    /// a recipient map made of it, such as a bare Dovecot user name.
    ///
    /// Returns the server's reply, positive or not.
    ///
    /// # Errors
    ///
    /// [`Error::BadMailboxName`] when the address holds a control character (nothing is
    /// sent), else the errors of a failed step.
    pub async fn rcpt(&mut self, address: &str) -> Result<Reply, Error> {
        let address = checked(address)?;
        self.command(
            &format!("RCPT TO:<{address}>"),
            "RCPT",
            self.timeouts.command,
        )
        .await
    }

    /// Sends `DATA`. On `354` the client is [in data](Client::in_data) and takes
    /// [`send_data`](Client::send_data); any other reply is returned as it is.
    ///
    /// # Errors
    ///
    /// The errors of a failed step.
    pub async fn data(&mut self) -> Result<Reply, Error> {
        let reply = self.command("DATA", "DATA", self.timeouts.command).await?;
        if reply.code() == 354 {
            self.in_data = true;
            self.stuffer = DotStuffer::new();
        }
        Ok(reply)
    }

    /// Starts the data with RFC 3030 chunking instead of `DATA` (nothing is sent yet): needs
    /// CHUNKING from the server. `binary` content (`BODY=BINARYMIME`) goes byte for byte;
    /// anything else has its bare CR and LF turned into CR LF, as with `DATA`.
    ///
    /// # Errors
    ///
    /// [`Error::DownstreamProtocol`] when the server did not offer CHUNKING.
    pub fn bdat(&mut self, binary: bool) -> Result<(), Error> {
        self.check_usable()?;
        if !self.supports("CHUNKING") {
            return Err(self.protocol("BDAT without CHUNKING".into()));
        }
        self.in_data = true;
        self.chunking = Some(Chunking { binary });
        self.stuffer = DotStuffer::new();
        Ok(())
    }

    /// Writes a chunk of message data. After `DATA`: line ends normalised and dot-stuffed (a
    /// `.` that starts a line is doubled). After [`bdat`](Client::bdat): one `BDAT n` chunk,
    /// its reply read later (up to a few chunks ahead with PIPELINING). The chunk is written
    /// out before this returns; nothing else is kept.
    ///
    /// # Errors
    ///
    /// [`Error::DownstreamIo`] when the connection fails, or when not
    /// [in data](Client::in_data); [`Error::DownstreamTimeout`] when the server does not take
    /// the chunk within `Timeouts::data`; [`Error::DownstreamRefused`] when the server refuses
    /// a BDAT chunk (the message cannot go on).
    pub async fn send_data(&mut self, chunk: &[u8]) -> Result<(), Error> {
        self.check_in_data()?;
        if chunk.is_empty() {
            return Ok(());
        }
        let mut output = std::mem::take(&mut self.output);
        output.clear();
        let result = match self.chunking {
            None => {
                self.stuffer.stuff(chunk, &mut output);
                self.write_timed(&output, "data", self.timeouts.data).await
            }
            Some(Chunking { binary }) => {
                let body = if binary {
                    chunk
                } else {
                    self.stuffer.normalize(chunk, &mut output);
                    &output[..]
                };
                self.send_chunk(body, false).await
            }
        };
        self.output = output;
        result
    }

    /// One `BDAT` chunk (or the last, empty or not), then the replies owed beyond the window.
    async fn send_chunk(&mut self, body: &[u8], last: bool) -> Result<(), Error> {
        if body.is_empty() && !last {
            return Ok(());
        }
        let head = if last {
            format!("BDAT {} LAST\r\n", body.len())
        } else {
            format!("BDAT {}\r\n", body.len())
        };
        log::trace!("{}: C: {}", self.endpoint, head.trim_end());
        self.write_timed(head.as_bytes(), "data", self.timeouts.data)
            .await?;
        self.write_timed(body, "data", self.timeouts.data).await?;
        if last {
            return Ok(());
        }
        self.outstanding += 1;
        let window = if self.supports("PIPELINING") {
            MAX_OUTSTANDING
        } else {
            0
        };
        while self.outstanding > window {
            self.chunk_reply().await?;
        }
        Ok(())
    }

    /// Reads the reply to one BDAT chunk sent before: a refusal ends the message.
    async fn chunk_reply(&mut self) -> Result<(), Error> {
        let reply = self.reply("BDAT", self.timeouts.command).await?;
        self.outstanding -= 1;
        if reply.is_positive() {
            Ok(())
        } else {
            Err(self.refused("BDAT", reply))
        }
    }

    /// Ends the data: after `DATA`, CR LF if the data did not end in one, then `.` CR LF;
    /// after [`bdat`](Client::bdat), `BDAT 0 LAST` (after reading every chunk's reply). Read
    /// the outcome with [`final_reply`](Client::final_reply).
    ///
    /// # Errors
    ///
    /// As [`send_data`](Client::send_data).
    pub async fn end_data(&mut self) -> Result<(), Error> {
        self.check_in_data()?;
        match self.chunking {
            None => {
                let mut end = Vec::with_capacity(5);
                self.stuffer.finish(&mut end);
                self.write_timed(&end, "end of data", self.timeouts.data)
                    .await?;
            }
            Some(Chunking { binary }) => {
                let mut tail = Vec::with_capacity(2);
                if !binary {
                    self.stuffer.finish_normalized(&mut tail);
                }
                while self.outstanding > 0 {
                    self.chunk_reply().await?;
                }
                self.send_chunk(&tail, true).await?;
            }
        }
        self.in_data = false;
        self.chunking = None;
        Ok(())
    }

    /// Reads one reply after [`end_data`](Client::end_data): over LMTP one per recipient that
    /// was accepted at `RCPT`, in the same order (RFC 2033 4.2); over SMTP one.
    ///
    /// # Errors
    ///
    /// [`Error::DownstreamTimeout`] after `limit`, and the other errors of a failed step.
    pub async fn final_reply_within(&mut self, limit: Duration) -> Result<Reply, Error> {
        self.reply("end of data", limit).await
    }

    /// [`final_reply_within`](Client::final_reply_within) the whole `Timeouts::final_reply`.
    ///
    /// # Errors
    ///
    /// As [`final_reply_within`](Client::final_reply_within).
    pub async fn final_reply(&mut self) -> Result<Reply, Error> {
        self.reply("end of data", self.timeouts.final_reply).await
    }

    /// Sends `RSET`, returns the reply.
    ///
    /// # Errors
    ///
    /// The errors of a failed step.
    pub async fn rset(&mut self) -> Result<Reply, Error> {
        self.command("RSET", "RSET", self.timeouts.command).await
    }

    /// Sends `QUIT`, reads the reply and closes the connection.
    ///
    /// # Errors
    ///
    /// The errors of a failed step; the connection is closed in any case.
    pub async fn quit(mut self) -> Result<(), Error> {
        self.command("QUIT", "QUIT", self.timeouts.command).await?;
        let _ = self.io.shutdown().await;
        Ok(())
    }

    /// The `MAIL FROM` line for a sender, with the parameters the server advertised.
    fn mail_line(&self, sender: &ReversePath, params: &MailParams) -> Result<String, Error> {
        let mut line = format!("MAIL FROM:<{}>", checked(&sender.to_string())?);
        if let (Some(size), true) = (params.size, self.supports("SIZE")) {
            line.push_str(&format!(" SIZE={size}"));
        }
        match params.body {
            Some(Body::BinaryMime) if self.supports("BINARYMIME") => {
                line.push_str(" BODY=BINARYMIME")
            }
            Some(Body::SevenBit) if self.supports("8BITMIME") => line.push_str(" BODY=7BIT"),
            Some(Body::EightBitMime | Body::BinaryMime) if self.supports("8BITMIME") => {
                line.push_str(" BODY=8BITMIME")
            }
            _ => {}
        }
        if params.smtputf8 && self.supports("SMTPUTF8") {
            line.push_str(" SMTPUTF8");
        }
        Ok(line)
    }

    /// Sends one command line and reads its reply.
    async fn command(
        &mut self,
        line: &str,
        step: &'static str,
        limit: Duration,
    ) -> Result<Reply, Error> {
        log::debug!("{}: C: {line}", self.endpoint);
        self.send(&format!("{line}\r\n"), step).await?;
        self.reply(step, limit).await
    }

    /// Writes command bytes (with the command timeout).
    async fn send(&mut self, bytes: &str, step: &'static str) -> Result<(), Error> {
        if self.in_data {
            self.broken = true;
            return Err(self.io_error(std::io::ErrorKind::InvalidInput, "command sent during DATA"));
        }
        self.write_timed(bytes.as_bytes(), step, self.timeouts.command)
            .await
    }

    /// Writes and flushes, within `limit`; any failure breaks the connection.
    async fn write_timed(
        &mut self,
        bytes: &[u8],
        step: &'static str,
        limit: Duration,
    ) -> Result<(), Error> {
        self.check_usable()?;
        let io = &mut self.io;
        let write = async {
            io.write_all(bytes).await?;
            io.flush().await
        };
        let result = tokio::time::timeout(limit, write).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(self.fail_io(source)),
            Err(_) => Err(self.timed_out(step, limit)),
        }
    }

    /// Reads one reply within `limit`.
    async fn reply(&mut self, step: &'static str, limit: Duration) -> Result<Reply, Error> {
        self.check_usable()?;
        let reply = match tokio::time::timeout(limit, self.read_reply()).await {
            Ok(result) => result?,
            Err(_) => return Err(self.timed_out(step, limit)),
        };
        log::debug!("{}: S: {reply}", self.endpoint);
        if reply.code() == 421 {
            // The server is closing the connection (RFC 5321 3.8).
            self.broken = true;
        }
        Ok(reply)
    }

    /// Reads until `input` holds a complete reply. Bounded: every turn reads at least one
    /// byte, and more than [`MAX_REPLY`] bytes without a complete reply is an error.
    async fn read_reply(&mut self) -> Result<Reply, Error> {
        let mut buf = [0u8; 4096];
        loop {
            match samotop_parser::parse_reply(&self.input) {
                Ok(Some((reply, used))) => {
                    self.input.drain(..used);
                    return Ok(to_core(reply));
                }
                Ok(None) if self.input.len() <= MAX_REPLY => {}
                Ok(None) => {
                    return Err(self.protocol(format!("reply longer than {MAX_REPLY} bytes")));
                }
                Err(e) => return Err(self.protocol(format!("malformed reply: {e}"))),
            }
            match self.io.read(&mut buf).await {
                Ok(0) => {
                    return Err(self.fail_io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )));
                }
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(source) => return Err(self.fail_io(source)),
            }
        }
    }

    /// Expects a reply with `code` (the greeting).
    async fn expect(
        &mut self,
        step: &'static str,
        code: u16,
        limit: Duration,
    ) -> Result<Reply, Error> {
        let reply = self.reply(step, limit).await?;
        if reply.code() == code {
            Ok(reply)
        } else {
            Err(self.refused(step, reply))
        }
    }

    fn check_usable(&self) -> Result<(), Error> {
        if self.broken {
            return Err(self.io_error(
                std::io::ErrorKind::NotConnected,
                "connection unusable after an earlier failure",
            ));
        }
        Ok(())
    }

    fn check_in_data(&self) -> Result<(), Error> {
        if !self.in_data {
            return Err(self.io_error(std::io::ErrorKind::InvalidInput, "not in DATA"));
        }
        Ok(())
    }

    fn io_error(&self, kind: std::io::ErrorKind, what: &'static str) -> Error {
        Error::DownstreamIo {
            endpoint: self.endpoint.to_string(),
            source: std::io::Error::new(kind, what),
        }
    }

    fn fail_io(&mut self, source: std::io::Error) -> Error {
        self.broken = true;
        Error::DownstreamIo {
            endpoint: self.endpoint.to_string(),
            source,
        }
    }

    fn timed_out(&mut self, step: &'static str, after: Duration) -> Error {
        self.broken = true;
        Error::DownstreamTimeout {
            endpoint: self.endpoint.to_string(),
            step,
            after,
        }
    }

    fn protocol(&mut self, detail: String) -> Error {
        self.broken = true;
        Error::DownstreamProtocol {
            endpoint: self.endpoint.to_string(),
            detail,
        }
    }

    fn refused(&mut self, step: &'static str, reply: Reply) -> Error {
        self.broken = true;
        Error::DownstreamRefused {
            endpoint: self.endpoint.to_string(),
            step,
            reply,
        }
    }
}

async fn open_stream(endpoint: &Endpoint) -> std::io::Result<Box<dyn Stream>> {
    Ok(match endpoint {
        Endpoint::Unix(path) => Box::new(UnixStream::connect(path).await?),
        Endpoint::Tcp(addr) => {
            let stream = TcpStream::connect(addr.as_str()).await?;
            stream.set_nodelay(true)?;
            Box::new(stream)
        }
    })
}

/// A command argument must not end the line early: no CR, LF or other control character.
fn checked(arg: &str) -> Result<&str, Error> {
    if arg.chars().any(char::is_control) {
        return Err(Error::BadMailboxName {
            address: arg.to_string(),
            reason: "a control character cannot be sent in a command",
        });
    }
    Ok(arg)
}

/// The parser's reply as the core's: code, enhanced code, lines joined by `\n`.
fn to_core(reply: samotop_parser::Reply) -> Reply {
    Reply::with_text(reply.code, reply.enhanced, reply.lines.join("\n"))
}

/// The extensions of an `EHLO`/`LHLO` reply: every line but the first (the greeting).
fn parse_extensions(text: &str) -> Vec<(String, String)> {
    text.split('\n')
        .skip(1)
        .filter_map(|line| {
            let line = line.trim();
            let (keyword, params) = line.split_once(' ').unwrap_or((line, ""));
            (!keyword.is_empty()).then(|| (keyword.to_ascii_uppercase(), params.trim().to_string()))
        })
        .collect()
}

/// Line ends and dot-stuffing of message data that arrives in chunks (RFC 5321 2.3.8 and
/// 4.5.2): a bare CR or a bare LF becomes CR LF, and (for `DATA`) a `.` that starts a line
/// is doubled.
///
/// Remembers across chunks whether the last byte was a CR (its LF may come next) and whether
/// the next byte starts a line, so that the end can be made `CR LF . CR LF` exactly once.
#[derive(Debug, Clone)]
struct DotStuffer {
    line_start: bool,
    /// A CR ended the last chunk: CR LF, or a bare CR, depending on the next byte.
    cr: bool,
}

impl DotStuffer {
    fn new() -> Self {
        // An empty message is just the final ".": as if a line had just ended.
        DotStuffer {
            line_start: true,
            cr: false,
        }
    }

    /// Appends `chunk` to `out` with CR LF line ends, doubling every `.` that starts a line.
    fn stuff(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.encode(chunk, out, true);
    }

    /// Appends `chunk` to `out` with CR LF line ends (BDAT: no dot-stuffing).
    fn normalize(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.encode(chunk, out, false);
    }

    fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>, dots: bool) {
        if chunk.is_empty() {
            return;
        }
        out.reserve(chunk.len() + chunk.len() / 64 + 3);
        let mut rest = chunk;
        if self.cr {
            self.cr = false;
            out.extend_from_slice(b"\r\n");
            self.line_start = true;
            if rest.first() == Some(&b'\n') {
                rest = &rest[1..];
            }
        }
        while !rest.is_empty() {
            if dots && self.line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            match memchr::memchr2(b'\r', b'\n', rest) {
                None => {
                    out.extend_from_slice(rest);
                    self.line_start = false;
                    return;
                }
                Some(i) => {
                    out.extend_from_slice(&rest[..i]);
                    if rest[i] == b'\r' && i + 1 == rest.len() {
                        // Its LF, if any, is in the next chunk.
                        self.cr = true;
                        self.line_start = false;
                        return;
                    }
                    let crlf = rest[i] == b'\r' && rest[i + 1] == b'\n';
                    out.extend_from_slice(b"\r\n");
                    self.line_start = true;
                    rest = &rest[i + if crlf { 2 } else { 1 }..];
                }
            }
        }
    }

    /// Appends the end of data: CR LF unless the data ended in one, then `.` CR LF.
    fn finish(&mut self, out: &mut Vec<u8>) {
        self.finish_normalized(out);
        out.extend_from_slice(b".\r\n");
    }

    /// Appends what ends the data's last line: a held CR as CR LF; and CR LF after a last
    /// line without one (a message always ends in CR LF on the way out).
    fn finish_normalized(&mut self, out: &mut Vec<u8>) {
        if self.cr || !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        self.cr = false;
        self.line_start = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuff_whole(data: &[u8]) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        s.stuff(data, &mut out);
        s.finish(&mut out);
        out
    }

    #[test]
    fn dot_stuffing() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"..x\r\n", b"...x\r\n.\r\n"),
            (b"a.b\r\n.c", b"a.b\r\n..c\r\n.\r\n"),
            // Bare LF and bare CR become CR LF: a lax server can never see an end there.
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r.b\r", b"a\r\n..b\r\n.\r\n"),
            (b"a\n", b"a\r\n.\r\n"),
            (b"\r\n", b"\r\n.\r\n"),
            (b"\r", b"\r\n.\r\n"),
            (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
            (b"\n.\r\n", b"\r\n..\r\n.\r\n"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                stuff_whole(input),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn dot_stuffing_split_at_every_offset() {
        let data: &[u8] = b".start\r\nmid.dle\r\n.\r\n..two\r\nx\n.y\r\n\r\n.end\r\n";
        let whole = stuff_whole(data);
        for i in 0..=data.len() {
            for j in i..=data.len() {
                let mut s = DotStuffer::new();
                let mut out = Vec::new();
                for part in [&data[..i], &data[i..j], &data[j..]] {
                    s.stuff(part, &mut out);
                }
                s.finish(&mut out);
                assert_eq!(out, whole, "split at {i} and {j}");
            }
        }
        // Byte by byte, and without a final CR LF.
        let data = &data[..data.len() - 2];
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        for b in data {
            s.stuff(std::slice::from_ref(b), &mut out);
        }
        s.finish(&mut out);
        assert_eq!(out, stuff_whole(data));
        assert!(out.ends_with(b".end\r\n.\r\n"));
    }

    #[test]
    fn extensions() {
        let ext = parse_extensions("mx greets\nPIPELINING\nsize 1000\n8BITMIME\n");
        assert_eq!(
            ext,
            [
                ("PIPELINING".to_string(), String::new()),
                ("SIZE".to_string(), "1000".to_string()),
                ("8BITMIME".to_string(), String::new()),
            ]
        );
    }

    /// A scripted server on an in-memory pipe: answers each line it reads with the next reply.
    async fn scripted(
        script: &'static [(&'static str, &'static str)],
    ) -> (Client, tokio::task::JoinHandle<Vec<u8>>) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let (mut rd, mut wr) = tokio::io::split(theirs);
            let mut seen = Vec::new();
            wr.write_all(b"220 test ready\r\n").await.ok();
            for (expect, answer) in script {
                let mut line = Vec::new();
                while !line.ends_with(expect.as_bytes()) {
                    let mut b = [0u8; 1];
                    if rd.read(&mut b).await.unwrap_or(0) == 0 {
                        return seen;
                    }
                    line.push(b[0]);
                    seen.push(b[0]);
                }
                wr.write_all(answer.as_bytes()).await.ok();
            }
            seen
        });
        let client = Client::with_stream(
            ours,
            Endpoint::Tcp("test:24".into()),
            Dialect::Lmtp,
            "me",
            Timeouts::default(),
        )
        .await
        .expect("greeted");
        (client, server)
    }

    #[tokio::test]
    async fn a_transaction_with_pipelined_reset() {
        let (mut client, server) = scripted(&[
            (
                "LHLO me\r\n",
                "250-test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100\r\n",
            ),
            (
                "MAIL FROM:<a@b> SIZE=5 BODY=8BITMIME\r\n",
                "250 2.1.0 OK\r\n",
            ),
            ("RCPT TO:<x>\r\n", "250 2.1.5 OK\r\n"),
            ("RCPT TO:<y>\r\n", "550 5.1.1 <y> no\r\n"),
            ("DATA\r\n", "354 go\r\n"),
            ("\r\n.\r\n", "250 2.0.0 <x> saved\r\n"),
            (
                "RSET\r\nMAIL FROM:<>\r\n",
                "250 2.0.0 OK\r\n250 2.1.0 OK\r\n",
            ),
        ])
        .await;
        assert!(client.supports("pipelining"));
        assert_eq!(client.extension("SIZE"), Some("100"));
        let params = MailParams {
            size: Some(5),
            body: Some(Body::EightBitMime),
            smtputf8: true,
            ..MailParams::default()
        };
        let sender: ReversePath = match samotop_parser::parse_command(b"MAIL FROM:<a@b>") {
            Ok(samotop_parser::Command::Mail(path, _)) => path,
            other => panic!("{other:?}"),
        };
        assert_eq!(client.mail(&sender, &params).await.unwrap().code(), 250);
        assert_eq!(client.rcpt("x").await.unwrap().code(), 250);
        let refused = client.rcpt("y").await.unwrap();
        assert_eq!((refused.code(), refused.enhanced()), (550, Some([5, 1, 1])));
        assert_eq!(refused.message(), "<y> no");
        assert_eq!(client.data().await.unwrap().code(), 354);
        client.send_data(b"Subject: x\r\n\r\n.").await.unwrap();
        client.send_data(b"hi").await.unwrap();
        client.end_data().await.unwrap();
        assert_eq!(client.final_reply().await.unwrap().code(), 250);
        let reply = client
            .reset_and_mail(&ReversePath::Null, &MailParams::default())
            .await
            .unwrap();
        assert_eq!(reply.code(), 250);
        assert!(client.rcpt("a\r\nDATA").await.is_err());
        assert!(!client.is_broken());
        drop(client);
        let seen = server.await.unwrap();
        let seen = String::from_utf8(seen).unwrap();
        assert!(seen.contains("\r\n\r\n..hi\r\n.\r\n"), "{seen:?}");
    }

    #[tokio::test]
    async fn a_dead_server_breaks_the_client() {
        let (mut client, server) = scripted(&[("LHLO me\r\n", "250 test\r\n")]).await;
        server.await.unwrap();
        assert!(matches!(
            client.rset().await,
            Err(Error::DownstreamIo { .. })
        ));
        assert!(client.is_broken());
        assert!(client.rset().await.is_err());
    }

    #[tokio::test]
    async fn garbage_is_a_protocol_error() {
        let (mut client, _server) = scripted(&[
            ("LHLO me\r\n", "250 test\r\n"),
            ("RSET\r\n", "HTTP/1.1 400\r\n"),
        ])
        .await;
        assert!(matches!(
            client.rset().await,
            Err(Error::DownstreamProtocol { .. })
        ));
        assert!(client.is_broken());
    }
}

//! Run with: `cargo run --release -p tls-load -- --mode starttls --sessions 32 --messages 10000 127.0.0.1:2525`
//!
//! An SMTP load generator that speaks TLS, for `scripts/bench` (Postfix's `smtp-source`
//! cannot do STARTTLS). N parallel sessions send M messages in all, of a given size, each
//! over plain SMTP, after STARTTLS (RFC 3207), or inside implicit TLS (RFC 8314); either
//! many messages per connection or one message per connection (a full TLS handshake each,
//! or an abbreviated one with session resumption on). Prints one line of JSON with the
//! rate, and exits 1 when a session failed.
//!
//! TLS is rustls with the ring provider, like the server. The server's certificate is not
//! checked against any root (bench servers use throw-away certificates), but the handshake
//! signature is: the server does all the work a real handshake costs it.
//!
//! Each session sends one command and waits for its reply, as `smtp-source` does (no
//! pipelining). Every wait is bounded by `--timeout`.

#![deny(missing_docs)]

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How the client talks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Plain SMTP, no TLS (the same client's baseline).
    Plain,
    /// EHLO, STARTTLS, handshake, EHLO again.
    StartTls,
    /// A TLS handshake first, then SMTP inside it (port 465 style).
    Smtps,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::StartTls => "starttls",
            Mode::Smtps => "smtps",
        }
    }
}

/// What to do, from the command line.
#[derive(Debug, Clone)]
struct Options {
    addr: String,
    mode: Mode,
    sessions: usize,
    messages: usize,
    size: usize,
    per_connection: bool,
    resume: bool,
    from: String,
    to: String,
    helo: String,
    server_name: String,
    timeout: Duration,
}

const USAGE: &str = "usage: tls-load [--mode plain|starttls|smtps] [--sessions N] [--messages M] \
[--size BYTES] [--per-connection] [--resume] [--from ADDR] [--to ADDR] [--helo NAME] \
[--server-name NAME] [--timeout SECONDS] HOST:PORT";

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        addr: String::new(),
        mode: Mode::StartTls,
        sessions: 1,
        messages: 100,
        size: 1024,
        per_connection: false,
        resume: false,
        from: "bench@source.test".into(),
        to: "rcpt@sink.test".into(),
        helo: "source.test".into(),
        server_name: "localhost".into(),
        timeout: Duration::from_secs(30),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number =
            |name: &str, v: String| v.parse::<usize>().map_err(|e| format!("{name} {v}: {e}"));
        match arg.as_str() {
            "--mode" => {
                o.mode = match value("--mode")?.as_str() {
                    "plain" => Mode::Plain,
                    "starttls" => Mode::StartTls,
                    "smtps" => Mode::Smtps,
                    other => return Err(format!("--mode {other}: plain, starttls or smtps")),
                }
            }
            "--sessions" => o.sessions = number("--sessions", value("--sessions")?)?.max(1),
            "--messages" => o.messages = number("--messages", value("--messages")?)?,
            "--size" => o.size = number("--size", value("--size")?)?,
            "--per-connection" => o.per_connection = true,
            "--resume" => o.resume = true,
            "--from" => o.from = value("--from")?,
            "--to" => o.to = value("--to")?,
            "--helo" => o.helo = value("--helo")?,
            "--server-name" => o.server_name = value("--server-name")?,
            "--timeout" => {
                o.timeout = Duration::from_secs(number("--timeout", value("--timeout")?)? as u64)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            a if a.starts_with('-') => return Err(format!("unknown option {a}\n{USAGE}")),
            a => o.addr = a.to_string(),
        }
    }
    if o.addr.is_empty() {
        return Err(USAGE.to_string());
    }
    Ok(o)
}

/// Accepts any server certificate, but checks the handshake signature with the provider's
/// algorithms, so that the server proves it holds the key (and pays for signing).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn tls_config(resume: bool) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(algorithms)))
        .with_no_client_auth();
    config.resumption = if resume {
        Resumption::in_memory_sessions(1024)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// Counters shared by the sessions.
#[derive(Default)]
struct Counts {
    messages: AtomicU64,
    connections: AtomicU64,
    full: AtomicU64,
    resumed: AtomicU64,
}

/// What every session needs.
struct Shared {
    options: Options,
    tls: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    /// The DATA content, dot-stuffed, ending with CR LF . CR LF.
    body: Vec<u8>,
    counts: Counts,
}

/// A message of about `size` octets: a few header fields, then 78-octet lines.
fn message(size: usize, from: &str, to: &str) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: tls-load\r\nMessage-ID: <tls-load@source.test>\r\n\r\n"
    )
    .into_bytes();
    let line =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnop\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    if m.len() + 3 <= size {
        m.extend(std::iter::repeat_n(b'x', size - m.len() - 2));
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b".\r\n");
    m
}

fn err(what: impl Into<String>) -> io::Error {
    io::Error::other(what.into())
}

/// Reads one whole reply (bounded: at most 100 lines of at most 4 KiB each) and checks its
/// first digit.
async fn expect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    want: u8,
    after: &str,
    timeout: Duration,
) -> io::Result<()> {
    let mut line = Vec::with_capacity(128);
    for _ in 0..100 {
        line.clear();
        let read = tokio::time::timeout(timeout, async {
            let mut n = 0;
            loop {
                let buf = io.fill_buf().await?;
                if buf.is_empty() {
                    return Ok::<_, io::Error>(n);
                }
                let (take, done) = match memchr_nl(buf) {
                    Some(i) => (i + 1, true),
                    None => (buf.len(), false),
                };
                line.extend_from_slice(&buf[..take]);
                io.consume(take);
                n += take;
                if done || line.len() > 4096 {
                    return Ok(n);
                }
            }
        });
        let n = read
            .await
            .map_err(|_| err(format!("no reply to {after} within {timeout:?}")))??;
        if n == 0 {
            return Err(err(format!(
                "connection closed waiting for the reply to {after}"
            )));
        }
        if line.len() < 4 || !line.ends_with(b"\n") {
            return Err(err(format!(
                "bad reply to {after}: {}",
                String::from_utf8_lossy(&line).trim_end()
            )));
        }
        if line[3] == b'-' {
            continue;
        }
        if line[0] != want {
            return Err(err(format!(
                "{after}: {}",
                String::from_utf8_lossy(&line).trim_end()
            )));
        }
        return Ok(());
    }
    Err(err(format!("more than 100 lines in the reply to {after}")))
}

fn memchr_nl(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    bytes: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    let write = async {
        io.get_mut().write_all(bytes).await?;
        io.get_mut().flush().await
    };
    tokio::time::timeout(timeout, write)
        .await
        .map_err(|_| err(format!("could not write within {timeout:?}")))?
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    line: &str,
    want: u8,
    timeout: Duration,
) -> io::Result<()> {
    send(io, line.as_bytes(), timeout).await?;
    expect(io, want, line.trim_end(), timeout).await
}

/// Sends `count` messages over an established (plain or TLS) session, then QUIT.
async fn mail<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    shared: &Shared,
    count: usize,
) -> io::Result<()> {
    let o = &shared.options;
    let t = o.timeout;
    let mail = format!("MAIL FROM:<{}>\r\n", o.from);
    let rcpt = format!("RCPT TO:<{}>\r\n", o.to);
    for _ in 0..count {
        command(io, &mail, b'2', t).await?;
        command(io, &rcpt, b'2', t).await?;
        command(io, "DATA\r\n", b'3', t).await?;
        send(io, &shared.body, t).await?;
        expect(io, b'2', "the end of data", t).await?;
        shared.counts.messages.fetch_add(1, Ordering::Relaxed);
    }
    command(io, "QUIT\r\n", b'2', t).await?;
    // Close our side: a TLS close_notify, then FIN (bounded).
    let _ = tokio::time::timeout(t, io.get_mut().shutdown()).await;
    Ok(())
}

/// One connection carrying `count` messages.
async fn connection(shared: &Shared, count: usize) -> io::Result<()> {
    let o = &shared.options;
    let t = o.timeout;
    let tcp = tokio::time::timeout(t, TcpStream::connect(&o.addr))
        .await
        .map_err(|_| err(format!("no connection to {} within {t:?}", o.addr)))??;
    tcp.set_nodelay(true)?;
    shared.counts.connections.fetch_add(1, Ordering::Relaxed);
    let ehlo = format!("EHLO {}\r\n", o.helo);
    let connector = TlsConnector::from(shared.tls.clone());
    match o.mode {
        Mode::Plain => {
            let mut io = BufReader::new(tcp);
            expect(&mut io, b'2', "connecting", t).await?;
            command(&mut io, &ehlo, b'2', t).await?;
            mail(&mut io, shared, count).await
        }
        Mode::StartTls => {
            let mut io = BufReader::new(tcp);
            expect(&mut io, b'2', "connecting", t).await?;
            command(&mut io, &ehlo, b'2', t).await?;
            command(&mut io, "STARTTLS\r\n", b'2', t).await?;
            if !io.buffer().is_empty() {
                return Err(err("the server sent more than its reply to STARTTLS"));
            }
            let tcp = io.into_inner();
            let tls = tokio::time::timeout(t, connector.connect(shared.server_name.clone(), tcp))
                .await
                .map_err(|_| err(format!("no TLS handshake within {t:?}")))??;
            count_handshake(shared, tls.get_ref().1.handshake_kind());
            let mut io = BufReader::new(tls);
            command(&mut io, &ehlo, b'2', t).await?;
            mail(&mut io, shared, count).await
        }
        Mode::Smtps => {
            let tls = tokio::time::timeout(t, connector.connect(shared.server_name.clone(), tcp))
                .await
                .map_err(|_| err(format!("no TLS handshake within {t:?}")))??;
            count_handshake(shared, tls.get_ref().1.handshake_kind());
            let mut io = BufReader::new(tls);
            expect(&mut io, b'2', "connecting", t).await?;
            command(&mut io, &ehlo, b'2', t).await?;
            mail(&mut io, shared, count).await
        }
    }
}

fn count_handshake(shared: &Shared, kind: Option<HandshakeKind>) {
    let counter = match kind {
        Some(HandshakeKind::Resumed) => &shared.counts.resumed,
        _ => &shared.counts.full,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One of the parallel sessions: its share of the messages.
async fn worker(shared: Arc<Shared>, count: usize) -> io::Result<()> {
    if shared.options.per_connection {
        for _ in 0..count {
            connection(&shared, 1).await?;
        }
        Ok(())
    } else if count > 0 {
        connection(&shared, count).await
    } else {
        Ok(())
    }
}

#[tokio::main]
async fn main() {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tls-load: {e}");
            std::process::exit(2);
        }
    };
    let tls = match tls_config(options.resume) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tls-load: TLS set-up: {e}");
            std::process::exit(2);
        }
    };
    let server_name = match ServerName::try_from(options.server_name.clone()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("tls-load: --server-name {}: {e}", options.server_name);
            std::process::exit(2);
        }
    };
    let body = message(options.size, &options.from, &options.to);
    let shared = Arc::new(Shared {
        options: options.clone(),
        tls,
        server_name,
        body,
        counts: Counts::default(),
    });
    let (n, m) = (options.sessions, options.messages);
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let count = m / n + usize::from(i < m % n);
            tokio::spawn(worker(shared.clone(), count))
        })
        .collect();
    let mut errors = 0u64;
    let mut first_error = None;
    for task in tasks {
        let result = match task.await {
            Ok(r) => r,
            Err(e) => Err(err(format!("session task: {e}"))),
        };
        if let Err(e) = result {
            errors += 1;
            first_error.get_or_insert(e.to_string());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let c = &shared.counts;
    let messages = c.messages.load(Ordering::Relaxed);
    println!(
        "{{\"mode\":\"{}\",\"sessions\":{n},\"per_connection\":{},\"resume\":{},\"size\":{},\
\"messages\":{messages},\"seconds\":{seconds:.6},\"rate\":{:.1},\"connections\":{},\
\"handshakes_full\":{},\"handshakes_resumed\":{},\"errors\":{errors}}}",
        options.mode.as_str(),
        options.per_connection,
        options.resume,
        options.size,
        messages as f64 / seconds.max(1e-9),
        c.connections.load(Ordering::Relaxed),
        c.full.load(Ordering::Relaxed),
        c.resumed.load(Ordering::Relaxed),
    );
    if let Some(e) = first_error {
        eprintln!("tls-load: {errors} session(s) failed; first: {e}");
        std::process::exit(1);
    }
}

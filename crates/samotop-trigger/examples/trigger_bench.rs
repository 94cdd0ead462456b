//! Run with: cargo run --release -p samotop-trigger --example trigger_bench -- sink PORT
//!
//! The helpers of `bench/trigger.py`:
//!
//! * `sink PORT`: an HTTP/1.1 endpoint on 127.0.0.1:PORT that reads each request (with its
//!   `Content-Length` body) and answers `200` at once, keeping connections alive; small
//!   enough that it is not what limits a webhook benchmark.
//! * `spawn COUNT PARALLEL BYTES PROGRAM [ARG...]`: the plain loop that `exec:` is compared
//!   with: spawns PROGRAM COUNT times, PARALLEL at once, each fed the same BYTES on stdin,
//!   with the settings `exec:` uses (own process group, cleared environment); prints the
//!   messages per second.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("sink") => {
            let port: u16 = args.get(1).ok_or("sink PORT")?.parse()?;
            runtime.block_on(sink(port))
        }
        Some("spawn") => {
            let count: usize = args.get(1).ok_or("COUNT")?.parse()?;
            let parallel: usize = args.get(2).ok_or("PARALLEL")?.parse()?;
            let bytes: usize = args.get(3).ok_or("BYTES")?.parse()?;
            let program = args.get(4).ok_or("PROGRAM")?.clone();
            let rest = args[5..].to_vec();
            runtime.block_on(spawn(count, parallel, bytes, program, rest))
        }
        _ => Err(
            "usage: trigger_bench sink PORT | spawn COUNT PARALLEL BYTES PROGRAM [ARG...]".into(),
        ),
    }
}

async fn sink(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (mut conn, _) = listener.accept().await?;
        let _ = conn.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                // Headers, then the body by Content-Length; bounded to 1 MiB of headers.
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    if buf.len() > 1 << 20 {
                        return;
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.drain(..head_end + len);
                if conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

async fn spawn(
    count: usize,
    parallel: usize,
    bytes: usize,
    program: String,
    args: Vec<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let input: Arc<Vec<u8>> = Arc::new(vec![b'x'; bytes]);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..parallel.max(1) {
        let (input, next, program, args) =
            (input.clone(), next.clone(), program.clone(), args.clone());
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let mut child = tokio::process::Command::new(&program)
                    .args(&args)
                    .env_clear()
                    .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .process_group(0)
                    .spawn()?;
                if let Some(mut stdin) = child.stdin.take() {
                    let _ = stdin.write_all(&input).await;
                }
                let mut err = Vec::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_end(&mut err).await;
                }
                child.wait().await?;
            }
            Ok::<_, std::io::Error>(())
        }));
    }
    for w in workers {
        w.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{:.1}", count as f64 / secs);
    Ok(())
}

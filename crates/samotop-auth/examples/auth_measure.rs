//! Run with: `cargo run --profile bench -p samotop-auth --example auth_measure -- DNS FILE...`
//!
//! Streams each message file through a [`Scanner`] in 64 KiB chunks (read from disk
//! into one reused buffer, as a spool would give them), checks it against the name
//! server at `DNS` (`127.0.0.1:5353`), and prints the time taken and the growth of the
//! process's anonymous memory (`RssAnon`, sampled every millisecond) with the DKIM
//! results. The numbers in docs/ARCHITECTURE.md come from here.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use samotop_auth::{Config, Context, Resolver, Verifier};

fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dns = args.next().ok_or("usage: measure DNS FILE...")?.parse()?;
    let verifier = Verifier::new(Resolver::new(Some(dns))?, Config::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let peak = Arc::new(AtomicU64::new(0));
    {
        let peak = peak.clone();
        std::thread::spawn(move || {
            loop {
                peak.fetch_max(rss_anon_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
    }
    let mut buf = vec![0u8; 64 * 1024];
    for path in args {
        std::thread::sleep(Duration::from_millis(20));
        let base = rss_anon_kib();
        peak.store(base, Ordering::Relaxed);
        let started = Instant::now();
        let mut file = std::fs::File::open(&path)?;
        let mut scanner = verifier.scanner();
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            scanner.update(&buf[..n]);
        }
        let streamed = started.elapsed();
        let report = runtime.block_on(scanner.finish(&verifier, &Context::new()));
        let total = started.elapsed();
        std::thread::sleep(Duration::from_millis(5));
        let results: Vec<String> = report
            .dkim
            .iter()
            .map(|r| {
                format!(
                    "{}{}",
                    r.outcome,
                    r.reason
                        .as_ref()
                        .map(|w| format!(" ({w})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        println!(
            "{path}: {} bytes, stream+hash {streamed:?}, total {total:?}, RssAnon growth {} KiB, dkim {results:?}",
            report_bytes(&path),
            peak.load(Ordering::Relaxed).saturating_sub(base),
        );
    }
    Ok(())
}

fn report_bytes(path: &str) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

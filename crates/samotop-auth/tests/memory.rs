//! Memory stays bounded by construction: 100 MB of body streamed in 64 KiB chunks through
//! a scanner hashing it for two signatures (relaxed and simple) and an ARC-Message-
//! Signature must not grow the process's anonymous memory (`RssAnon` in
//! /proc/self/status) by more than a few MiB. One test in its own binary, so nothing else
//! allocates meanwhile.

use samotop_auth::{Config, Context, Outcome, Verifier, Zone};

fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

const HEADER: &str = "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=a;\r\n \
    h=from:to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=YWJj\r\n\
    DKIM-Signature: v=1; a=ed25519-sha256; c=simple/simple; d=example.com; s=b;\r\n \
    h=from:to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=YWJj\r\n\
    From: Amy <amy@example.com>\r\nTo: bob@example.org\r\nSubject: big\r\n\r\n";

/// RFC 6376 Appendix C's 1024-bit key and RFC 8463 Appendix A's ed25519 key.
const RSA_KEY: &str = "v=DKIM1; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB";
const ED25519_KEY: &str = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

#[test]
fn a_100_mb_body_streams_in_bounded_memory() {
    const TOTAL: usize = 100_000_000;
    const CHUNK: usize = 64 * 1024;
    // Text with runs of spaces and tabs, and some whitespace-only lines: real work for
    // the relaxed canonicalizer.
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut n = 0u32;
    while chunk.len() < CHUNK {
        let line = match n % 5 {
            0 => "Lorem ipsum  dolor\tsit amet, consectetur adipiscing elit   \r\n",
            1 => "   \t \r\n",
            2 => "sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.\r\n",
            3 => "\r\n",
            _ => "Ut enim ad minim veniam,\t\tquis nostrud exercitation ullamco\r\n",
        };
        chunk.extend_from_slice(line.as_bytes());
        n += 1;
    }
    chunk.truncate(CHUNK);

    let zone = Zone::new()
        .with_txt("a._domainkey.example.com", RSA_KEY)
        .with_txt("b._domainkey.example.com", ED25519_KEY);
    let verifier = Verifier::new(zone, Config::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut scanner = verifier.scanner();
    let before = rss_anon_kib();
    let mut peak = before;
    scanner.update(HEADER.as_bytes());
    let mut sent = 0;
    let mut i = 0u64;
    while sent < TOTAL {
        let n = CHUNK.min(TOTAL - sent);
        scanner.update(&chunk[..n]);
        sent += n;
        i += 1;
        if i % 32 == 0 {
            peak = peak.max(rss_anon_kib());
        }
    }
    assert!(scanner.header_complete());
    let report = runtime.block_on(scanner.finish(&verifier, &Context::new()));
    peak = peak.max(rss_anon_kib());
    let growth = peak.saturating_sub(before);
    eprintln!(
        "RssAnon before {before} KiB, peak {peak} KiB, growth {growth} KiB over {sent} body bytes"
    );
    // The bh= given is that of an empty body: each body hash was computed and compared.
    assert_eq!(report.dkim.len(), 2);
    for r in &report.dkim {
        assert_eq!(
            (r.outcome, r.reason.as_deref()),
            (Outcome::Fail, Some("body hash mismatch"))
        );
    }
    assert!(growth < 4 * 1024, "RssAnon grew by {growth} KiB");
}

//! DKIM body hashing speed: the scanner canonicalizing and hashing a 4 MiB body in 64 KiB
//! chunks, as it does while a message streams.
//!
//! Run with: `cargo bench -p samotop-auth --bench body_hash` (add `-- --quick` for a short
//! run). Reports bytes/s of body. Cases: one rsa-sha256 signature with a simple body, one
//! with a relaxed body, both at once (two canonicalizers, two hashes), two relaxed
//! signatures sharing one body hash, and plain SHA-256 over the same bytes as the floor.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use samotop_auth::{Config, Scanner};
use sha2::Digest as _;

const BODY: usize = 4 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn body() -> Vec<u8> {
    let lines = [
        "Lorem ipsum  dolor\tsit amet, consectetur adipiscing elit   \r\n",
        "sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.\r\n",
        "\r\n",
        "Ut enim ad minim veniam,\t\tquis nostrud exercitation ullamco laboris\r\n",
        "   \t \r\n",
    ];
    let mut out = Vec::with_capacity(BODY + 128);
    let mut i = 0;
    while out.len() < BODY {
        out.extend_from_slice(lines[i % lines.len()].as_bytes());
        i += 1;
    }
    out.truncate(BODY);
    out
}

fn signature(c: &str, s: &str) -> String {
    format!(
        "DKIM-Signature: v=1; a=rsa-sha256; c={c}; d=example.com; s={s};\r\n \
         h=from:to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=YWJj\r\n"
    )
}

fn header(signatures: &[(&str, &str)]) -> Vec<u8> {
    let mut h: String = signatures.iter().map(|(c, s)| signature(c, s)).collect();
    h.push_str("From: a@example.com\r\nTo: b@example.org\r\nSubject: bench\r\n\r\n");
    h.into_bytes()
}

fn scan(config: &Config, header: &[u8], body: &[u8]) -> Scanner {
    let mut scanner = Scanner::new(config);
    scanner.update(header);
    for chunk in body.chunks(CHUNK) {
        scanner.update(chunk);
    }
    scanner
}

fn bench(c: &mut Criterion) {
    let body = body();
    let config = Config::default();
    let mut group = c.benchmark_group("dkim_body_hash");
    group.throughput(Throughput::Bytes(BODY as u64));
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        ("simple", vec![("simple/simple", "a")]),
        ("relaxed", vec![("relaxed/relaxed", "a")]),
        (
            "simple+relaxed",
            vec![("simple/simple", "a"), ("relaxed/relaxed", "b")],
        ),
        (
            "relaxed x2 shared",
            vec![("relaxed/relaxed", "a"), ("relaxed/relaxed", "b")],
        ),
    ];
    for (name, signatures) in cases {
        let header = header(&signatures);
        group.bench_function(name, |b| {
            b.iter(|| black_box(scan(&config, black_box(&header), black_box(&body))))
        });
    }
    group.bench_function("sha256 only", |b| {
        b.iter(|| {
            let mut h = sha2::Sha256::new();
            for chunk in body.chunks(CHUNK) {
                h.update(chunk);
            }
            black_box(h.finalize())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

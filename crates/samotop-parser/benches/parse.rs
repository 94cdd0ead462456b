//! Command-line parsing over a realistic mix of lines.
//!
//! Run with: `cargo bench -p samotop-parser --bench parse` (add `-- --quick` for a short run).
//! Reports bytes/s and, separately, lines (commands)/s. The mix is what a session of a few
//! transactions sends: EHLO, MAIL with parameters, several RCPTs, DATA, RSET, NOOP, QUIT,
//! plus some bad lines, as they come.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use samotop_parser::parse_command;

/// Lines without CR LF, as the session hands them to the parser.
const MIX: &[&[u8]] = &[
    b"EHLO mail-wr1-f54.google.example.com",
    b"MAIL FROM:<bounces+1234567-abcd-user=example.org@em1234.mailer.example.net> SIZE=48213 BODY=8BITMIME",
    b"RCPT TO:<alice@example.org>",
    b"RCPT TO:<bob.smith+tag@example.org>",
    b"RCPT TO:<carol@sub.example.org> NOTIFY=NEVER",
    b"DATA",
    b"MAIL FROM:<> SIZE=1200",
    b"RCPT TO:<postmaster@example.org>",
    b"DATA",
    b"RSET",
    b"MAIL FROM: <spaced@example.com>",
    b"RCPT TO:<\"quoted local\"@example.org>",
    b"RCPT TO:<user@[192.0.2.1]>",
    b"BDAT 65536",
    b"BDAT 1200 LAST",
    b"MAIL FROM:<j\xc3\xb6rg@exampl\xc3\xa9.org> SMTPUTF8",
    b"NOOP",
    b"HELO [198.51.100.7]",
    b"VRFY root",
    b"XFOO bar",
    b"RCPT TO:bad-no-brackets@example.org",
    b"QUIT",
];

fn bench(c: &mut Criterion) {
    let bytes: usize = MIX.iter().map(|l| l.len() + 2).sum();
    let mut group = c.benchmark_group("parse_command");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("mix-bytes", |b| {
        b.iter(|| {
            let mut ok = 0;
            for line in MIX {
                ok += parse_command(black_box(line)).is_ok() as usize;
            }
            ok
        })
    });
    group.throughput(Throughput::Elements(MIX.len() as u64));
    group.bench_function("mix-lines", |b| {
        b.iter(|| {
            let mut ok = 0;
            for line in MIX {
                ok += parse_command(black_box(line)).is_ok() as usize;
            }
            ok
        })
    });
    for (name, line) in [
        ("mail", &b"MAIL FROM:<sender@example.com> SIZE=1200"[..]),
        ("rcpt", &b"RCPT TO:<rcpt@example.org>"[..]),
        ("data", &b"DATA"[..]),
    ] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| b.iter(|| parse_command(black_box(line))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

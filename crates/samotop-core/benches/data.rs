//! The end-of-data scanner, [`DataDecoder`], over 1 MiB message bodies.
//!
//! Run with: `cargo bench -p samotop-core --bench data` (add `-- --quick` for a short run).
//! Reports bytes/s of input. Bodies: 78-octet text lines; the same with every line
//! starting with a dot (stuffed, so each dot is removed); one long line with no line
//! ending (the fast path); 8-bit bytes.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use samotop_core::DataDecoder;

const MIB: usize = 1024 * 1024;

/// `lines` of `len` octets each (CR LF included), each starting with `prefix`, then the end
/// of data.
fn body(prefix: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(MIB + 128);
    let mut n = 0u32;
    while out.len() + len <= MIB {
        let start = out.len();
        out.extend_from_slice(prefix);
        out.extend_from_slice(format!("{n:06} ").as_bytes());
        while out.len() < start + len - 2 {
            out.push(b'a' + (out.len() % 26) as u8);
        }
        out.extend_from_slice(b"\r\n");
        n += 1;
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn decode_all(input: &[u8], out: &mut BytesMut, chunk: usize) -> usize {
    let mut decoder = DataDecoder::new();
    let mut pos = 0;
    out.clear();
    // Bounded: every call consumes or produces at least one octet.
    for _ in 0..input.len() + 1 {
        let (used, end) = decoder.decode(&input[pos..], out, chunk);
        pos += used;
        if end {
            return pos;
        }
        if out.len() >= chunk {
            out.clear();
        }
    }
    panic!("no end of data");
}

fn bench(c: &mut Criterion) {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text-78", body(b"", 78)),
        ("dots-78", body(b".", 78)),
        ("text-998", body(b"", 998)),
        ("8bit-78", {
            let mut b = body(b"", 78);
            for (i, x) in b.iter_mut().enumerate() {
                if *x >= b'a' && i % 3 == 0 {
                    *x = 0x80 | (*x & 0x3f);
                }
            }
            b
        }),
        ("one-line", {
            let mut b = vec![b'x'; MIB];
            b.extend_from_slice(b"\r\n.\r\n");
            b
        }),
    ];
    let mut group = c.benchmark_group("data_decoder");
    for (name, input) in &cases {
        group.throughput(Throughput::Bytes(input.len() as u64));
        // The session hands 64 KiB chunks to the sink (Limits::chunk_size).
        let mut out = BytesMut::with_capacity(64 * 1024 + 16);
        group.bench_function(*name, |b| {
            b.iter(|| decode_all(black_box(input), &mut out, 64 * 1024))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The S/MIME wrapper's header splitter (samotop-smime `header`): for any bytes and any
//! split, the same header section; the fields split it losslessly; and the outer header
//! written from it is well formed (CR LF lines, no early empty line, every line a field or
//! a continuation, 7-bit when asked), whatever the sender wrote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samotop_smime::header::{HeadBuffer, Headers, SMIME_FIELDS, fields, outer_header};

fn check_outer(out: &[u8], eight_bit: bool) {
    let tail = [SMIME_FIELDS.as_bytes(), b"\r\n"].concat();
    assert!(out.ends_with(&tail), "ends with the S/MIME fields");
    let kept = &out[..out.len() - tail.len()];
    for (i, &b) in kept.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && kept[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(kept.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    if !kept.is_empty() {
        assert!(kept.ends_with(b"\r\n"));
    }
    for line in kept.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(!line.is_empty(), "an empty line before the end");
        if !matches!(line[0], b' ' | b'\t') {
            assert!(line.contains(&b':'), "a line that is no field");
        } else {
            assert!(line.iter().any(|b| !matches!(b, b' ' | b'\t')), "a blank continuation");
        }
    }
    if !eight_bit {
        assert!(kept.is_ascii());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let mut whole = HeadBuffer::new(1 << 20);
    whole.push(input);
    let mut chunked = HeadBuffer::new(1 << 20);
    for part in input.chunks(split as usize % 64 + 1) {
        chunked.push(part);
    }
    assert_eq!(whole.head(), chunked.head());
    assert_eq!(whole.is_decided(), chunked.is_decided());
    whole.end();
    let head = whole.head().expect("within the limit, end() completes the header");
    let rejoined: Vec<u8> = fields(head).flat_map(|f| f.raw.to_vec()).collect();
    assert_eq!(rejoined, head);

    let mut small = HeadBuffer::new(split as usize);
    for part in input.chunks(7) {
        small.push(part);
    }
    small.end();
    for h in [Some(head), small.head(), None] {
        for policy in [Headers::Listable, Headers::All] {
            for eight_bit in [true, false] {
                let mut out = Vec::new();
                outer_header(h, policy, eight_bit, &mut out);
                check_outer(&out, eight_bit);
            }
        }
    }
});

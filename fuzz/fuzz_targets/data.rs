//! The end-of-data scanner against a simple reference model: for any bytes and any split,
//! the same message and the same end position.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use samotop_core::DataDecoder;

/// Finds the first CRLF.CRLF (or .CRLF at the very start) and undoes dot-stuffing.
fn reference(input: &[u8]) -> Option<(Vec<u8>, usize, bool)> {
    let mut data = b"\r\n".to_vec();
    data.extend_from_slice(input);
    let pos = data.windows(5).position(|w| w == b"\r\n.\r\n")?;
    let body = &data[2..pos + 2];
    let mut out = Vec::new();
    let mut line_start = true;
    for (i, &b) in body.iter().enumerate() {
        if line_start && b == b'.' {
            line_start = false;
            continue;
        }
        out.push(b);
        line_start = b == b'\n' && i > 0 && body[i - 1] == b'\r';
    }
    let bare = body.iter().enumerate().any(|(i, &b)| {
        (b == b'\n' && (i == 0 || body[i - 1] != b'\r'))
            || (b == b'\r' && body.get(i + 1) != Some(&b'\n'))
    });
    Some((out, pos + 3, bare))
}

// Input: one byte of split size, one of output room, then the data.
fuzz_target!(|input: &[u8]| {
    let [split, room, data @ ..] = input else {
        return;
    };
    let (split, room, data) = (*split, *room, data.to_vec());
    let split = usize::from(split).max(1);
    let room = usize::from(room).max(1);
    let mut decoder = DataDecoder::new();
    let mut out = BytesMut::new();
    let mut pos = 0;
    let mut got = None;
    let mut pending = Vec::new();
    let mut fed = 0;
    for _ in 0..data.len() * 4 + 8 {
        if pending.is_empty() && fed < data.len() {
            let end = (fed + split).min(data.len());
            pending.extend_from_slice(&data[fed..end]);
            fed = end;
        }
        if pending.is_empty() {
            break;
        }
        let (used, end) = decoder.decode(&pending, &mut out, room);
        pending.drain(..used);
        pos += used;
        if end {
            got = Some((out.to_vec(), pos, decoder.saw_bare_newline()));
            break;
        }
    }
    assert_eq!(got, reference(&data));
});

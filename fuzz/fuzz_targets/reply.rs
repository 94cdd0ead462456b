//! The reply grammar on arbitrary bytes: never a panic, and a complete reply never claims
//! more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let _ = samotop_parser::parse_reply_line(input);
    if let Ok(Some((reply, used))) = samotop_parser::parse_reply(input) {
        assert!(used <= input.len());
        assert!((200..=599).contains(&reply.code));
    }
});

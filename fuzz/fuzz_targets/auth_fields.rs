//! Authentication-Results / ARC-Authentication-Results authserv-ids (RFC 8601 2.2) and
//! From author domains (RFC 5322 3.4) on arbitrary bytes: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &[u8]| {
    samotop_auth::fuzzing::fields(value);
});

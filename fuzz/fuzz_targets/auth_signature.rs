//! DKIM-Signature, ARC-Message-Signature and ARC-Seal values (RFC 6376 3.2 tag lists) on
//! arbitrary bytes: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &[u8]| {
    samotop_auth::fuzzing::signature(value);
});

//! The message scanner: the same header section and canonical body whatever the chunk
//! split (the first bytes choose it), and a whole check against an in-memory zone whose
//! Authentication-Results field stays one well-formed field.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    samotop_auth::fuzzing::scanner(input);
    samotop_auth::fuzzing::verify(input.get(4..).unwrap_or_default());
});

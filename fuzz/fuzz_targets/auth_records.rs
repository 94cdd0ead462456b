//! DKIM key records and DMARC records, as a DNS zone could serve them: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|record: &[u8]| {
    samotop_auth::fuzzing::records(record);
});

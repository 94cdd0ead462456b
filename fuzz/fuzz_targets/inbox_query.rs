//! The inbox search syntax on arbitrary input: never a panic; a parsed query, displayed and
//! parsed again, is the same query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samotop_inbox::Query;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(query) = Query::parse(&text) {
        let shown = query.to_string();
        let again = Query::parse(&shown).expect("a displayed query parses");
        assert_eq!(again, query, "{shown}");
    }
});

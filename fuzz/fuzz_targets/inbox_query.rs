//! The inbox search syntax on arbitrary input: never a panic; a parsed query, displayed and
//! parsed again, is the same query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samotop_inbox::{MAX_QUERY_LEN, Query};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(query) = Query::parse(&text) {
        let shown = query.to_string();
        // The limit bounds what a client sends; the display of a query near it can pass it by
        // the quotes it adds, and is then refused as too long, as any such input is.
        if shown.len() > MAX_QUERY_LEN {
            return;
        }
        let again = Query::parse(&shown).expect("a displayed query parses");
        assert_eq!(again, query, "{shown}");
    }
});

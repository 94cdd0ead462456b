//! The bounded parse of a stored raw message for the list, the index and the message page
//! (what the indexer and the web face run on whatever a peer sent): never a panic; past the
//! limit only the header section is parsed and the page shows the message raw.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samotop_inbox::{Fields, Part, View};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limit: the whole parse, or the header-only path.
    let Some((&pick, raw)) = data.split_first() else {
        return;
    };
    let limit = if pick & 1 == 0 {
        usize::MAX / 2
    } else {
        raw.len() / 2
    };
    let fields = Fields::parse(raw, limit);
    assert!(fields.snippet.chars().count() <= 250);
    assert!(fields.body_text.len() <= 256 * 1024 + 1);
    let view = View::parse(raw, limit);
    if raw.len() > limit {
        assert!(!view.parsed, "a message over the limit is shown raw");
        assert!(fields.body_text.is_empty() && fields.attachments.is_empty());
    }
    for a in fields.attachments.iter().chain(&fields.inline).take(8) {
        let _ = Part::find(raw, &a.part_id, limit);
    }
    let _ = Part::find(raw, &(pick >> 1).to_string(), limit);
});

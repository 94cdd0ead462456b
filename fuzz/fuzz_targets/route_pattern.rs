//! `--route` patterns on arbitrary input: parsing never panics (globs, `re:` regexes, the
//! guess between them), and a pattern that parses matches addresses without panicking; a
//! glob matches the text it was made of when that text has no `*`, `?` or regex look.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samotop_delivery::Pattern;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, address) = text.split_once('\n').unwrap_or((&text, "a+b@example.org"));
    if let Ok(p) = Pattern::parse(pattern) {
        let _ = p.matches(address);
        let _ = p.matches(pattern);
    }
    if let Ok(p) = Pattern::parse(&format!("glob:{pattern}")) {
        if !pattern.contains(['*', '?']) && !pattern.is_empty() {
            assert!(p.matches(pattern), "a literal glob matches itself");
        }
    }
});

//! Address extensions (`local+k=v@domain`), command lines for `exec:`, and the sanitisers
//! of peer- and endpoint-controlled text, on arbitrary input: no panic, and every bound
//! holds (argument count and sizes, environment values, reply text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use samotop_trigger::{Address, MAX_ARG_NAME, MAX_ARG_VALUE, MAX_ARGS, exec, text};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let a = Address::parse(&s);
    assert!(a.user.len() <= a.local.len());
    let args: Vec<_> = a.args().collect();
    assert!(args.len() <= MAX_ARGS);
    for (name, value) in args {
        assert!(!name.is_empty() && name.len() <= MAX_ARG_NAME && value.len() <= MAX_ARG_VALUE);
        assert!(!value.chars().any(char::is_control));
    }
    let v = text::field_value(&s, 1024);
    assert!(v.len() <= 1024 && !v.contains(['\r', '\n', '\0']));
    if let Some(r) = text::reply_text(data) {
        assert!(r.len() <= text::MAX_REPLY_TEXT);
        assert!(r.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
    if let Ok(words) = exec::split_words(&s) {
        assert!(!words.is_empty());
    }
});

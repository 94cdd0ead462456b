//! The webhook's JSON document (the streaming MIME walker) on arbitrary messages: never a
//! panic, and always valid JSON with the fields the format promises.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|message: &[u8]| {
    let doc = samotop_trigger::fuzzing::json_document(message).expect("in memory, no I/O error");
    let value: serde_json::Value = match serde_json::from_slice(&doc) {
        Ok(v) => v,
        Err(e) => panic!("not JSON ({e}): {}", String::from_utf8_lossy(&doc)),
    };
    assert!(value["headers"].is_array());
    assert!(value["attachments"].is_array());
    assert!(value["envelope"].is_object());
});

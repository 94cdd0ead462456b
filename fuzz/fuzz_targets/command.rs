//! The command grammar on arbitrary bytes: never a panic; a parsed command's verb is one the
//! line starts with.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    if let Ok(command) = samotop_parser::parse_command(line) {
        let verb = command.verb().as_bytes();
        assert!(line.len() >= verb.len() && line[..verb.len()].eq_ignore_ascii_case(verb));
    }
});

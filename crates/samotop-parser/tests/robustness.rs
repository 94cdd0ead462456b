//! No input panics the parsers, and no input makes them slow: property tests over arbitrary
//! bytes and SMTP-like strings, and pathological 4 KiB lines.

use proptest::prelude::*;
use samotop_parser::{Command, ReversePath, parse_command, parse_reply, parse_reply_line};

/// Beginnings that take the parser deep into one grammar before the random part.
const PREFIXES: &[&str] = &[
    "",
    "MAIL FROM:<",
    "MAIL FROM: <",
    "RCPT TO:<",
    "RCPT TO:<@",
    "MAIL FROM:<a@b> ",
    "RCPT TO:<a@b> ",
    "MAIL FROM:<a@[",
    "MAIL FROM:<a@[IPv6:",
    "MAIL FROM:<\"",
    "EHLO ",
    "HELO [",
    "LHLO ",
    "BDAT ",
    "VRFY ",
    "NOOP ",
    "250-",
    "250 ",
];

/// Characters that mean something to the grammars, and a few that do not belong.
const ALPHABET: &str = "[a-zA-Z0-9@.:<>\\[\\]\"\\\\ ,=+;_\\-!#~δ用\u{a0}\t\r\n\0]{0,120}";

fn smtp_like() -> impl Strategy<Value = String> {
    (proptest::sample::select(PREFIXES), ALPHABET)
        .prop_map(|(prefix, rest)| format!("{prefix}{rest}"))
}

fn check_all(input: &[u8]) {
    let _ = parse_command(input);
    let _ = parse_reply_line(input);
    if let Ok(Some((_, used))) = parse_reply(input) {
        assert!(used <= input.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_do_not_panic(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_all(&input);
    }

    #[test]
    fn smtp_like_strings_do_not_panic(input in smtp_like()) {
        check_all(input.as_bytes());
    }

    #[test]
    fn every_prefix_is_safe(input in smtp_like()) {
        let bytes = input.as_bytes();
        for end in 0..=bytes.len() {
            check_all(&bytes[..end]);
        }
    }

    #[test]
    fn dot_atoms_parse_as_written(
        local in "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\\.[a-zA-Z0-9_-]{1,10}){0,3}",
        domain in "[a-z0-9]{1,10}(-[a-z0-9]{1,5})?(\\.[a-z]{2,8}){0,3}",
    ) {
        let line = format!("MAIL FROM:<{local}@{domain}>");
        match parse_command(line.as_bytes()) {
            Ok(Command::Mail(ReversePath::Mailbox(m), _)) => {
                prop_assert_eq!(m.local, local);
                prop_assert_eq!(m.domain.to_string(), domain);
            }
            other => prop_assert!(false, "{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn quoted_local_parts_round_trip(text in "[ -~]{0,30}") {
        let quoted: String = text.chars().flat_map(|c| {
            let escape = (c == '"' || c == '\\').then_some('\\');
            escape.into_iter().chain(std::iter::once(c))
        }).collect();
        let line = format!("RCPT TO:<\"{quoted}\"@example.org>");
        let parsed = parse_command(line.as_bytes());
        let Ok(Command::Rcpt(samotop_parser::ForwardPath::Mailbox(m), _)) = parsed else {
            return Err(TestCaseError::fail(format!("{line:?} gave {parsed:?}")));
        };
        prop_assert_eq!(m.local_unquoted(), text);
    }
}

/// Lines of about 4 KiB built to make a backtracking parser slow. None has a timing assertion
/// (DESIGN.md: no timed tests); a quadratic or exponential grammar would hang the test run.
fn pathological() -> Vec<String> {
    let n = 2000;
    vec![
        format!("MAIL FROM:<{}", "a.".repeat(n)),
        format!("MAIL FROM:<{}>", "a.".repeat(n)),
        format!("MAIL FROM:<{}@b>", "a.".repeat(n)),
        format!("MAIL FROM:<{}a@b", "a.".repeat(n)),
        format!("MAIL FROM:<{}", "@a,".repeat(n * 2 / 3)),
        format!("MAIL FROM:<{}@a:b@c", "@a,".repeat(n * 2 / 3)),
        format!("RCPT TO:<{}", "@a.a-a.".repeat(n / 4)),
        format!("MAIL FROM:<{}", "\"".repeat(2 * n)),
        format!("MAIL FROM:<{}", "\\".repeat(2 * n)),
        format!("MAIL FROM:<\"{}", "\\\"".repeat(n)),
        format!("MAIL FROM:<\"{}\"@x>", "\\\"".repeat(n)),
        format!("RCPT TO:<a@{}", "a-".repeat(n)),
        format!("RCPT TO:<a@{}>", "a.".repeat(n)),
        format!("RCPT TO:<a@[IPv6:{}]>", "1:".repeat(n)),
        format!("RCPT TO:<a@[IPv6:{}]>", "1.".repeat(n)),
        format!("RCPT TO:<a@[{}]>", "1.".repeat(n)),
        format!("RCPT TO:<a@[x{}]>", "-a".repeat(n)),
        format!("RCPT TO:<{}", "postmaster".repeat(n / 5)),
        format!("MAIL FROM:<a@b>{}", " SIZE=1".repeat(n / 4)),
        format!("MAIL FROM:<a@b>{}", " X-Y=z".repeat(n / 4)),
        format!("MAIL FROM:<a@b> ENVID={}", "+41".repeat(n)),
        format!("RCPT TO:<a@b> NOTIFY={}", "SUCCESS,".repeat(n / 4)),
        format!("EHLO {}", "a.".repeat(n)),
        format!("EHLO {}", "a-_".repeat(n)),
        format!("NOOP {}", "x ".repeat(n)),
        format!("BDAT {}", "9".repeat(2 * n)),
        format!("MAIL FROM:<{}", "δ.".repeat(n)),
        " ".repeat(4 * n),
        format!("MAIL FROM:<a@b>{}", " ".repeat(4 * n)),
        format!("250-{}", "2.0.0 ".repeat(n / 3)),
        "250-x\r\n".repeat(n / 3),
    ]
}

#[test]
fn pathological_lines_return() {
    for line in pathological() {
        check_all(line.as_bytes());
    }
}

#[test]
fn long_lines_stay_linear() {
    // 16 times the usual limit; a quadratic parser would take minutes here.
    for line in pathological() {
        let long = line.repeat(16);
        check_all(long.as_bytes());
    }
}

//! Replies as a client reads them (RFC 5321 4.2): single and multi-line, cut anywhere.

use samotop_parser::{ParseError, Reply, parse_reply, parse_reply_line};

const EHLO_REPLY: &[u8] = b"250-mx.example.org Hello client.example.com\r\n\
250-PIPELINING\r\n\
250-SIZE 26214400\r\n\
250-8BITMIME\r\n\
250-SMTPUTF8\r\n\
250-ENHANCEDSTATUSCODES\r\n\
250-CHUNKING\r\n\
250 STARTTLS\r\n";

fn reply(code: u16, enhanced: Option<[u16; 3]>, lines: &[&str]) -> Reply {
    Reply {
        code,
        enhanced,
        lines: lines.iter().map(|l| l.to_string()).collect(),
    }
}

#[test]
fn multi_line_ehlo_reply() {
    let (got, used) = parse_reply(EHLO_REPLY).unwrap().unwrap();
    let want = reply(
        250,
        None,
        &[
            "mx.example.org Hello client.example.com",
            "PIPELINING",
            "SIZE 26214400",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "STARTTLS",
        ],
    );
    assert_eq!(got, want);
    assert_eq!(used, EHLO_REPLY.len());
}

#[test]
fn every_prefix_of_a_reply_needs_more() {
    for end in 0..EHLO_REPLY.len() {
        assert_eq!(
            parse_reply(&EHLO_REPLY[..end]),
            Ok(None),
            "prefix of {end} bytes"
        );
    }
}

#[test]
fn single_line_replies() {
    let cases: &[(&[u8], Reply)] = &[
        (
            b"220 mx.example.org ESMTP\r\n",
            reply(220, None, &["mx.example.org ESMTP"]),
        ),
        (b"250 2.1.0 Ok\r\n", reply(250, Some([2, 1, 0]), &["Ok"])),
        (b"250\r\n", reply(250, None, &[""])),
        (
            b"354 End data with <CR><LF>.<CR><LF>\r\n",
            reply(354, None, &["End data with <CR><LF>.<CR><LF>"]),
        ),
        (
            b"550 5.1.1 <x@y>: Recipient address rejected\r\n",
            reply(550, Some([5, 1, 1]), &["<x@y>: Recipient address rejected"]),
        ),
        (
            b"421 4.4.2 Timeout\n",
            reply(421, Some([4, 4, 2]), &["Timeout"]),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            parse_reply(input),
            Ok(Some((want.clone(), input.len()))),
            "{input:?}"
        );
    }
}

#[test]
fn bare_lf_and_what_follows_is_left() {
    let input = b"250-a\n250 b\n354 go\r\n";
    let (first, used) = parse_reply(input).unwrap().unwrap();
    assert_eq!(first, reply(250, None, &["a", "b"]));
    assert_eq!(used, 12);
    let (second, used2) = parse_reply(&input[used..]).unwrap().unwrap();
    assert_eq!(second, reply(354, None, &["go"]));
    assert_eq!(used + used2, input.len());
}

#[test]
fn enhanced_code_is_taken_from_the_lines() {
    let input = b"550-5.7.1 Message rejected\r\n550 5.7.1 See https://example.org\r\n";
    let (got, _) = parse_reply(input).unwrap().unwrap();
    assert_eq!(
        got,
        reply(
            550,
            Some([5, 7, 1]),
            &["Message rejected", "See https://example.org"]
        )
    );
    // An enhanced code of the wrong class is text.
    let (got, _) = parse_reply(b"250 5.0.0 odd\r\n").unwrap().unwrap();
    assert_eq!(got, reply(250, None, &["5.0.0 odd"]));
}

#[test]
fn mismatched_codes_are_an_error() {
    assert_eq!(
        parse_reply(b"250-a\r\n251 b\r\n"),
        Err(ParseError::BadReply)
    );
    assert_eq!(
        parse_reply(b"250-a\r\n550 b\r\n"),
        Err(ParseError::BadReply)
    );
    // Noticed before the line is complete.
    assert_eq!(parse_reply(b"250-a\r\n550"), Err(ParseError::BadReply));
}

#[test]
fn malformed_replies_are_an_error() {
    let cases: &[&[u8]] = &[
        b"hello\r\n",
        b"\r\n",
        b"25\r\n",
        b"2500 x\r\n",
        b"250x\r\n",
        b"600 x\r\n",
        b"199 x\r\n",
        b"250 a\0b\r\n",
        b"250-a\r\nx",
        b"SSH-2.0-OpenSSH",
    ];
    for input in cases {
        assert_eq!(parse_reply(input), Err(ParseError::BadReply), "{input:?}");
    }
    assert_eq!(
        parse_reply(b"250 \xff\xfe\r\n"),
        Err(ParseError::InvalidUtf8)
    );
}

#[test]
fn reply_line_fields() {
    let line = parse_reply_line(b"250-PIPELINING").unwrap();
    assert_eq!(
        (line.code, line.last, line.enhanced, line.text),
        (250, false, None, "PIPELINING")
    );
    let line = parse_reply_line(b"250 2.1.0 Ok").unwrap();
    assert_eq!(
        (line.code, line.last, line.enhanced, line.text),
        (250, true, Some([2, 1, 0]), "Ok")
    );
    let line = parse_reply_line(b"220 host ESMTP").unwrap();
    assert_eq!(
        (line.code, line.last, line.enhanced, line.text),
        (220, true, None, "host ESMTP")
    );
    let line = parse_reply_line(b"250").unwrap();
    assert_eq!(
        (line.code, line.last, line.enhanced, line.text),
        (250, true, None, "")
    );
    assert_eq!(parse_reply_line(b"250\r"), Err(ParseError::BadReply));
}

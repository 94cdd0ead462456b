//! Command lines from the grammars of RFC 5321, 6531, 3030, 2033, 3207 and 3461, and hostile
//! ones: `(line, expected)` tables, each valid line also cut at every byte.

use std::net::{Ipv4Addr, Ipv6Addr};

use samotop_parser::{
    Body, Command, ForwardPath, Host, MailParams, Mailbox, Notify, ParseError, RcptParams, Ret,
    ReversePath, parse_command,
};

/// What a line should give: a command, or the kind of error (the part a session acts on).
type Expected = Result<Command, Kind>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Unknown,
    Syntax(&'static str),
    BadPath(&'static str),
    BadParameter(&'static str, &'static str),
    Utf8,
}

fn kind(error: &ParseError) -> Kind {
    match error {
        ParseError::UnknownCommand => Kind::Unknown,
        ParseError::Syntax { verb, .. } => Kind::Syntax(verb),
        ParseError::BadPath { verb, .. } => Kind::BadPath(verb),
        ParseError::BadParameter { verb, keyword } => {
            Kind::BadParameter(verb, leak(keyword.clone()))
        }
        ParseError::InvalidUtf8 => Kind::Utf8,
        other => panic!("unexpected error kind for a command: {other:?}"),
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn parse(line: &[u8]) -> Expected {
    parse_command(line).map_err(|e| kind(&e))
}

// ------------------------------------------------------------------ builders

fn domain(d: &str) -> Host {
    Host::Domain(d.to_string())
}

fn mbox(local: &str, host: Host) -> Mailbox {
    Mailbox {
        local: local.to_string(),
        domain: host,
    }
}

fn from(local: &str, d: &str) -> Expected {
    from_host(local, domain(d))
}

fn from_host(local: &str, host: Host) -> Expected {
    Ok(Command::Mail(
        ReversePath::Mailbox(mbox(local, host)),
        MailParams::default(),
    ))
}

fn from_with(local: &str, d: &str, params: MailParams) -> Expected {
    Ok(Command::Mail(
        ReversePath::Mailbox(mbox(local, domain(d))),
        params,
    ))
}

fn to(local: &str, d: &str) -> Expected {
    to_with(local, d, RcptParams::default())
}

fn to_with(local: &str, d: &str, params: RcptParams) -> Expected {
    Ok(Command::Rcpt(
        ForwardPath::Mailbox(mbox(local, domain(d))),
        params,
    ))
}

fn ehlo(d: &str) -> Expected {
    Ok(Command::Ehlo(domain(d)))
}

fn other(keyword: &str, value: Option<&str>) -> Vec<(String, Option<String>)> {
    vec![(keyword.to_string(), value.map(str::to_string))]
}

fn v6(s: &str) -> Host {
    Host::Ipv6(s.parse::<Ipv6Addr>().expect("test address"))
}

fn syntax(verb: &'static str) -> Expected {
    Err(Kind::Syntax(verb))
}

fn bad_path(verb: &'static str) -> Expected {
    Err(Kind::BadPath(verb))
}

fn bad_param(verb: &'static str, keyword: &'static str) -> Expected {
    Err(Kind::BadParameter(verb, keyword))
}

// ------------------------------------------------------------------ the table

fn cases() -> Vec<(String, Expected)> {
    let local64 = "a".repeat(64);
    let local65 = "a".repeat(65);
    let quoted64 = format!("\"{}\"", "b".repeat(62));
    let domain255 = vec!["c".repeat(63); 4].join(".");
    let domain256 = format!("d{domain255}");
    let general_long = format!("[x:{}]", "e".repeat(254));
    let all = Notify {
        never: false,
        success: true,
        failure: true,
        delay: true,
    };

    let mut cases: Vec<(String, Expected)> = vec![
        // HELO, EHLO, LHLO (RFC 5321 4.1.1.1, RFC 2033 4.1)
        ("EHLO example.com".into(), ehlo("example.com")),
        ("ehlo example.com".into(), ehlo("example.com")),
        ("EhLo mail.Example.ORG".into(), ehlo("mail.Example.ORG")),
        (
            "HELO localhost".into(),
            Ok(Command::Helo(domain("localhost"))),
        ),
        (
            "helo relay.example.org".into(),
            Ok(Command::Helo(domain("relay.example.org"))),
        ),
        (
            "HELO [192.0.2.1]".into(),
            Ok(Command::Helo(Host::Ipv4(Ipv4Addr::new(192, 0, 2, 1)))),
        ),
        (
            "EHLO [IPv6:2001:db8::1]".into(),
            Ok(Command::Ehlo(v6("2001:db8::1"))),
        ),
        ("EHLO [ipv6:::1]".into(), Ok(Command::Ehlo(v6("::1")))),
        (
            "EHLO [IPv6:::ffff:192.0.2.1]".into(),
            Ok(Command::Ehlo(v6("::ffff:192.0.2.1"))),
        ),
        (
            "EHLO [x-future:abc.def]".into(),
            Ok(Command::Ehlo(Host::Other {
                tag: "x-future".into(),
                content: "abc.def".into(),
            })),
        ),
        ("EHLO my_pc".into(), ehlo("my_pc")),
        (
            "EHLO DESKTOP-AB_12.local".into(),
            ehlo("DESKTOP-AB_12.local"),
        ),
        ("EHLO 1.2.3.4".into(), ehlo("1.2.3.4")),
        (
            "EHLO xn--bcher-kva.example".into(),
            ehlo("xn--bcher-kva.example"),
        ),
        ("EHLO παράδειγμα.δοκιμή".into(), ehlo("παράδειγμα.δοκιμή")),
        ("EHLO example.com ".into(), ehlo("example.com")),
        ("EHLO example.com   ".into(), ehlo("example.com")),
        (
            "LHLO lmtp.example.com".into(),
            Ok(Command::Lhlo(domain("lmtp.example.com"))),
        ),
        (
            "lhlo [127.0.0.1]".into(),
            Ok(Command::Lhlo(Host::Ipv4(Ipv4Addr::LOCALHOST))),
        ),
        (format!("EHLO {domain255}"), ehlo(&domain255)),
        (format!("EHLO {domain256}"), syntax("EHLO")),
        ("EHLO".into(), syntax("EHLO")),
        ("EHLO ".into(), syntax("EHLO")),
        ("EHLO  example.com".into(), syntax("EHLO")),
        ("EHLO exa mple.com".into(), syntax("EHLO")),
        ("EHLO -example.com".into(), syntax("EHLO")),
        ("EHLO example-.com".into(), syntax("EHLO")),
        ("EHLO example..com".into(), syntax("EHLO")),
        ("EHLO example.com.".into(), syntax("EHLO")),
        ("EHLO .example.com".into(), syntax("EHLO")),
        ("EHLO [1.2.3.256]".into(), syntax("EHLO")),
        ("EHLO [IPv6:1::2::3]".into(), syntax("EHLO")),
        ("EHLO [IPv6:1.2.3.4]".into(), syntax("EHLO")),
        ("EHLO [192.0.2.1".into(), syntax("EHLO")),
        ("EHLO a@b".into(), syntax("EHLO")),
        ("EHLO example.com\0".into(), syntax("EHLO")),
        ("EHLO\texample.com".into(), syntax("EHLO")),
        ("HELO".into(), syntax("HELO")),
        ("LHLO".into(), syntax("LHLO")),
        // MAIL (RFC 5321 4.1.1.2, 4.1.2)
        ("MAIL FROM:<a@b>".into(), from("a", "b")),
        ("mail from:<a@b>".into(), from("a", "b")),
        ("Mail From:<a@b>".into(), from("a", "b")),
        (
            "MAIL FROM:<>".into(),
            Ok(Command::Mail(ReversePath::Null, MailParams::default())),
        ),
        ("MAIL FROM: <a@b>".into(), from("a", "b")),
        ("MAIL FROM:  <a@b>".into(), from("a", "b")),
        (
            "MAIL FROM: <>".into(),
            Ok(Command::Mail(ReversePath::Null, MailParams::default())),
        ),
        ("MAIL FROM:<a@b> ".into(), from("a", "b")),
        ("MAIL FROM:<a.b.c@x.y.z>".into(), from("a.b.c", "x.y.z")),
        (
            "MAIL FROM:<!#$%&'*+-/=?^_`{|}~@x>".into(),
            from("!#$%&'*+-/=?^_`{|}~", "x"),
        ),
        (
            "MAIL FROM:<User.Name+tag@Sub.Example-Domain.com>".into(),
            from("User.Name+tag", "Sub.Example-Domain.com"),
        ),
        (
            "MAIL FROM:<a@xn--bcher-kva.example>".into(),
            from("a", "xn--bcher-kva.example"),
        ),
        ("MAIL FROM:<a@b--c.d>".into(), from("a", "b--c.d")),
        ("MAIL FROM:<\"a b\"@x>".into(), from("\"a b\"", "x")),
        ("MAIL FROM:<\"a\\\"b\"@x>".into(), from("\"a\\\"b\"", "x")),
        ("MAIL FROM:<\"a\\\\b\"@x>".into(), from("\"a\\\\b\"", "x")),
        ("MAIL FROM:<\"\"@x>".into(), from("\"\"", "x")),
        ("MAIL FROM:<\"a@b\"@x>".into(), from("\"a@b\"", "x")),
        ("MAIL FROM:<\"a>b\"@x>".into(), from("\"a>b\"", "x")),
        ("MAIL FROM:<\"a..b.\"@x>".into(), from("\"a..b.\"", "x")),
        (
            "MAIL FROM:<a@[192.0.2.1]>".into(),
            from_host("a", Host::Ipv4(Ipv4Addr::new(192, 0, 2, 1))),
        ),
        (
            "MAIL FROM:<a@[001.02.3.255]>".into(),
            from_host("a", Host::Ipv4(Ipv4Addr::new(1, 2, 3, 255))),
        ),
        (
            "MAIL FROM:<a@[IPv6:2001:db8::1]>".into(),
            from_host("a", v6("2001:db8::1")),
        ),
        (
            "MAIL FROM:<a@[IPv6:1:2:3:4:5:6:7:8]>".into(),
            from_host("a", v6("1:2:3:4:5:6:7:8")),
        ),
        ("MAIL FROM:<a@[IPv6:::]>".into(), from_host("a", v6("::"))),
        (
            "MAIL FROM:<a@[IPv6:::1.2.3.4]>".into(),
            from_host("a", v6("::1.2.3.4")),
        ),
        (
            "MAIL FROM:<a@[IPv6:1:2:3:4:5:6:1.2.3.4]>".into(),
            from_host("a", v6("1:2:3:4:5:6:1.2.3.4")),
        ),
        (
            "MAIL FROM:<a@[IPv6:1:2::3:1.2.3.4]>".into(),
            from_host("a", v6("1:2::3:1.2.3.4")),
        ),
        (
            "MAIL FROM:<a@[x-tag:some-content]>".into(),
            from_host(
                "a",
                Host::Other {
                    tag: "x-tag".into(),
                    content: "some-content".into(),
                },
            ),
        ),
        (
            "MAIL FROM:<a@[X:!~Z^]>".into(),
            from_host(
                "a",
                Host::Other {
                    tag: "X".into(),
                    content: "!~Z^".into(),
                },
            ),
        ),
        ("MAIL FROM:<@a,@b:user@c>".into(), from("user", "c")),
        ("MAIL FROM:<@a.example:user@c>".into(), from("user", "c")),
        ("MAIL FROM: <@a,@b.c,@d-e.f:x@y>".into(), from("x", "y")),
        // RFC 6531 3.3: UTF-8 in atext, qtext and sub-domain
        (
            "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8".into(),
            from_with(
                "δοκιμή",
                "παράδειγμα.δοκιμή",
                MailParams {
                    smtputf8: true,
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<用户@例子.广告>".into(),
            from("用户", "例子.广告"),
        ),
        ("MAIL FROM:<अजय@डाटा.भारत>".into(), from("अजय", "डाटा.भारत")),
        ("MAIL FROM:<\"δ x\"@b>".into(), from("\"δ x\"", "b")),
        (
            "MAIL FROM:<Pelé.Ödön@bücher.example>".into(),
            from("Pelé.Ödön", "bücher.example"),
        ),
        // Length limits (RFC 5321 4.5.3.1)
        (format!("MAIL FROM:<{local64}@b>"), from(&local64, "b")),
        (format!("MAIL FROM:<{quoted64}@b>"), from(&quoted64, "b")),
        (format!("MAIL FROM:<{local65}@b>"), bad_path("MAIL")),
        (format!("MAIL FROM:<\"{local64}\"@b>"), bad_path("MAIL")),
        (format!("MAIL FROM:<a@{domain255}>"), from("a", &domain255)),
        (format!("MAIL FROM:<a@{domain256}>"), bad_path("MAIL")),
        (format!("MAIL FROM:<a@{general_long}>"), bad_path("MAIL")),
        (format!("RCPT TO:<{local65}@b>"), bad_path("RCPT")),
        (format!("RCPT TO:<a@{domain256}>"), bad_path("RCPT")),
        // MAIL parameters (RFC 1870, 6152, 3030, 6531, 3461)
        (
            "MAIL FROM:<user@example.com> SIZE=12345".into(),
            from_with(
                "user",
                "example.com",
                MailParams {
                    size: Some(12345),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> size=0".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    size: Some(0),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> SIZE=18446744073709551615".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    size: Some(u64::MAX),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> BODY=8BITMIME".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    body: Some(Body::EightBitMime),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> BODY=7bit".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    body: Some(Body::SevenBit),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> body=BinaryMIME".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    body: Some(Body::BinaryMime),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> SMTPUTF8".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    smtputf8: true,
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> smtputf8".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    smtputf8: true,
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> RET=FULL".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    ret: Some(Ret::Full),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> ret=hdrs".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    ret: Some(Ret::Hdrs),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> ENVID=QQ314159".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    envid: Some("QQ314159".into()),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> ENVID=a+2Bb+3Dc".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    envid: Some("a+b=c".into()),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> SIZE=1 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x+20y".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    size: Some(1),
                    body: Some(Body::EightBitMime),
                    smtputf8: true,
                    ret: Some(Ret::Hdrs),
                    envid: Some("x y".into()),
                    other: vec![],
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> SIZE=10  BODY=7BIT".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    size: Some(10),
                    body: Some(Body::SevenBit),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> AUTH=<>".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    other: other("AUTH", Some("<>")),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> x-foo=bar".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    other: other("X-FOO", Some("bar")),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> FOO".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    other: other("FOO", None),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> NOTIFY=NEVER".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    other: other("NOTIFY", Some("NEVER")),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> X=δ".into(),
            from_with(
                "a",
                "b",
                MailParams {
                    other: other("X", Some("δ")),
                    ..Default::default()
                },
            ),
        ),
        // MAIL, malformed path
        ("MAIL FROM:a@b".into(), bad_path("MAIL")),
        ("MAIL FROM: a@b".into(), bad_path("MAIL")),
        ("MAIL FROM:".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@b".into(), bad_path("MAIL")),
        ("MAIL FROM:a@b>".into(), bad_path("MAIL")),
        ("MAIL FROM:<@b>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a..b@x>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a.@x>".into(), bad_path("MAIL")),
        ("MAIL FROM:<.a@x>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@b@c>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a b@c>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@b c>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@b_c>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@b.>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@-b>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@[1.2.3.256]>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@[1.2.3]>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@[1.2.3.4.5]>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@[1234.2.3.4]>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@[IPv6:1::2::3]>".into(), bad_path("MAIL")),
        (
            "MAIL FROM:<a@[IPv6:1:2:3:4:5:6:7]>".into(),
            bad_path("MAIL"),
        ),
        (
            "MAIL FROM:<a@[IPv6:1:2:3:4:5:6:7::]>".into(),
            bad_path("MAIL"),
        ),
        ("MAIL FROM:<a@[IPv6:zz]>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@[IPv6:]>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@[]>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@[x-tag:]>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@[x-tag:a[b]>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@[tag-:x]>".into(), bad_path("MAIL")),
        ("MAIL FROM:<\"a\"b@x>".into(), bad_path("MAIL")),
        ("MAIL FROM:<\"a@x>".into(), bad_path("MAIL")),
        ("MAIL FROM:<\"a\\δ\"@x>".into(), bad_path("MAIL")),
        ("MAIL FROM:<\"a\tb\"@x>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a\0b@x>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a\"b@x>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a(b)@x>".into(), bad_path("MAIL")),
        ("MAIL FROM:<Postmaster>".into(), bad_path("MAIL")),
        ("MAIL FROM:<@a,@b>".into(), bad_path("MAIL")),
        ("MAIL FROM:<@a,b:c@d>".into(), bad_path("MAIL")),
        ("MAIL FROM:<@a:>".into(), bad_path("MAIL")),
        ("MAIL FROM:<@[1.2.3.4]:a@b>".into(), bad_path("MAIL")),
        ("MAIL FROM:<<a@b>>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@b\u{a0}c>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a@b\u{3000}c>".into(), bad_path("MAIL")),
        ("MAIL FROM:<a\u{85}b@c>".into(), bad_path("MAIL")),
        // MAIL, trailing garbage and bad parameters
        ("MAIL FROM:<a@b>x".into(), syntax("MAIL")),
        ("MAIL FROM:<a@b>\0".into(), syntax("MAIL")),
        ("MAIL FROM:<a@b> \0".into(), syntax("MAIL")),
        ("MAIL FROM:<a@b> <c@d>".into(), syntax("MAIL")),
        ("MAIL FROM:<a@b>SIZE=1".into(), syntax("MAIL")),
        ("MAIL FROM:<a@b> -X=1".into(), syntax("MAIL")),
        ("MAIL FROM:<a@b> =1".into(), syntax("MAIL")),
        ("MAIL FROM:<a@b>\tSIZE=1".into(), syntax("MAIL")),
        ("MAIL FROM:<a@b> SIZE=abc".into(), bad_param("MAIL", "SIZE")),
        ("MAIL FROM:<a@b> SIZE=".into(), bad_param("MAIL", "SIZE")),
        ("MAIL FROM:<a@b> SIZE".into(), bad_param("MAIL", "SIZE")),
        ("MAIL FROM:<a@b> SIZE=-1".into(), bad_param("MAIL", "SIZE")),
        ("MAIL FROM:<a@b> SIZE=1.5".into(), bad_param("MAIL", "SIZE")),
        ("MAIL FROM:<a@b> SIZE==1".into(), bad_param("MAIL", "SIZE")),
        (
            "MAIL FROM:<a@b> SIZE=18446744073709551616".into(),
            bad_param("MAIL", "SIZE"),
        ),
        (
            "MAIL FROM:<a@b> SIZE=1 SIZE=2".into(),
            bad_param("MAIL", "SIZE"),
        ),
        (
            "MAIL FROM:<a@b> size=1 SIZE=1".into(),
            bad_param("MAIL", "SIZE"),
        ),
        ("MAIL FROM:<a@b> SIZE=1\0".into(), bad_param("MAIL", "SIZE")),
        (
            "MAIL FROM:<a@b> BODY=9BIT".into(),
            bad_param("MAIL", "BODY"),
        ),
        ("MAIL FROM:<a@b> BODY".into(), bad_param("MAIL", "BODY")),
        (
            "MAIL FROM:<a@b> BODY=7BIT BODY=8BITMIME".into(),
            bad_param("MAIL", "BODY"),
        ),
        (
            "MAIL FROM:<a@b> SMTPUTF8=yes".into(),
            bad_param("MAIL", "SMTPUTF8"),
        ),
        (
            "MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8".into(),
            bad_param("MAIL", "SMTPUTF8"),
        ),
        ("MAIL FROM:<a@b> RET=SOME".into(), bad_param("MAIL", "RET")),
        (
            "MAIL FROM:<a@b> RET=FULL RET=HDRS".into(),
            bad_param("MAIL", "RET"),
        ),
        (
            "MAIL FROM:<a@b> ENVID=a+zz".into(),
            bad_param("MAIL", "ENVID"),
        ),
        (
            "MAIL FROM:<a@b> ENVID=a+F".into(),
            bad_param("MAIL", "ENVID"),
        ),
        ("MAIL FROM:<a@b> ENVID=".into(), bad_param("MAIL", "ENVID")),
        (
            "MAIL FROM:<a@b> ENVID=+FF".into(),
            bad_param("MAIL", "ENVID"),
        ),
        (
            "MAIL FROM:<a@b> envid=x ENVID=y".into(),
            bad_param("MAIL", "ENVID"),
        ),
        // MAIL, bad form
        ("MAIL TO:<a@b>".into(), syntax("MAIL")),
        ("MAIL FROM <a@b>".into(), syntax("MAIL")),
        ("MAIL FROM".into(), syntax("MAIL")),
        ("MAIL FRO".into(), syntax("MAIL")),
        ("MAIL".into(), syntax("MAIL")),
        ("MAIL  FROM:<a@b>".into(), syntax("MAIL")),
        ("MAIL:FROM:<a@b>".into(), syntax("MAIL")),
        ("MAIL FRÖM:<a@b>".into(), syntax("MAIL")),
        ("MAILFROM:<a@b>".into(), Err(Kind::Unknown)),
        // RCPT (RFC 5321 4.1.1.3)
        ("RCPT TO:<a@b>".into(), to("a", "b")),
        ("rcpt to:<a@b>".into(), to("a", "b")),
        ("RCPT TO: <a@b>".into(), to("a", "b")),
        ("RCPT TO:<a@b>  ".into(), to("a", "b")),
        (
            "RCPT TO:<Postmaster>".into(),
            Ok(Command::Rcpt(
                ForwardPath::Postmaster,
                RcptParams::default(),
            )),
        ),
        (
            "RCPT TO:<postmaster>".into(),
            Ok(Command::Rcpt(
                ForwardPath::Postmaster,
                RcptParams::default(),
            )),
        ),
        (
            "rcpt to: <POSTMASTER>".into(),
            Ok(Command::Rcpt(
                ForwardPath::Postmaster,
                RcptParams::default(),
            )),
        ),
        (
            "RCPT TO:<postmaster@example.com>".into(),
            to("postmaster", "example.com"),
        ),
        (
            "RCPT TO:<\"Postmaster\"@x>".into(),
            to("\"Postmaster\"", "x"),
        ),
        (
            "RCPT TO:<@hosta.int,@jkl.org:userc@d.bar.org>".into(),
            to("userc", "d.bar.org"),
        ),
        ("RCPT TO:<用户@例子.广告>".into(), to("用户", "例子.广告")),
        (
            "RCPT TO:<\"john smith\"@example.com>".into(),
            to("\"john smith\"", "example.com"),
        ),
        (
            "RCPT TO:<a@b> NOTIFY=NEVER".into(),
            to_with(
                "a",
                "b",
                RcptParams {
                    notify: Some(Notify {
                        never: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
        ),
        (
            "RCPT TO:<a@b> NOTIFY=SUCCESS,FAILURE,DELAY".into(),
            to_with(
                "a",
                "b",
                RcptParams {
                    notify: Some(all),
                    ..Default::default()
                },
            ),
        ),
        (
            "RCPT TO:<a@b> notify=delay,Success,FAILURE".into(),
            to_with(
                "a",
                "b",
                RcptParams {
                    notify: Some(all),
                    ..Default::default()
                },
            ),
        ),
        (
            "RCPT TO:<a@b> NOTIFY=failure".into(),
            to_with(
                "a",
                "b",
                RcptParams {
                    notify: Some(Notify {
                        failure: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
        ),
        (
            "RCPT TO:<a@b> ORCPT=rfc822;a+40b.example".into(),
            to_with(
                "a",
                "b",
                RcptParams {
                    orcpt: Some(("rfc822".into(), "a@b.example".into())),
                    ..Default::default()
                },
            ),
        ),
        (
            "RCPT TO:<a@b> NOTIFY=FAILURE ORCPT=rfc822;x+2By@z".into(),
            to_with(
                "a",
                "b",
                RcptParams {
                    notify: Some(Notify {
                        failure: true,
                        ..Default::default()
                    }),
                    orcpt: Some(("rfc822".into(), "x+y@z".into())),
                    other: vec![],
                },
            ),
        ),
        (
            "RCPT TO:<δ@b> ORCPT=utf-8;δ@b".into(),
            to_with(
                "δ",
                "b",
                RcptParams {
                    orcpt: Some(("utf-8".into(), "δ@b".into())),
                    ..Default::default()
                },
            ),
        ),
        (
            "RCPT TO:<a@b> FOO=bar".into(),
            to_with(
                "a",
                "b",
                RcptParams {
                    other: other("FOO", Some("bar")),
                    ..Default::default()
                },
            ),
        ),
        (
            "RCPT TO:<a@b> SIZE=10".into(),
            to_with(
                "a",
                "b",
                RcptParams {
                    other: other("SIZE", Some("10")),
                    ..Default::default()
                },
            ),
        ),
        ("RCPT TO:<>".into(), bad_path("RCPT")),
        ("RCPT TO:a@b".into(), bad_path("RCPT")),
        ("RCPT TO:".into(), bad_path("RCPT")),
        ("RCPT TO:<Postmaster".into(), bad_path("RCPT")),
        ("RCPT TO:<Postmasters>".into(), bad_path("RCPT")),
        ("RCPT TO:<@a:Postmaster>".into(), bad_path("RCPT")),
        ("RCPT TO:<a@@b>".into(), bad_path("RCPT")),
        (
            "RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS".into(),
            bad_param("RCPT", "NOTIFY"),
        ),
        (
            "RCPT TO:<a@b> NOTIFY=SUCCESS,NEVER".into(),
            bad_param("RCPT", "NOTIFY"),
        ),
        (
            "RCPT TO:<a@b> NOTIFY=SOMETIMES".into(),
            bad_param("RCPT", "NOTIFY"),
        ),
        (
            "RCPT TO:<a@b> NOTIFY=SUCCESS,,DELAY".into(),
            bad_param("RCPT", "NOTIFY"),
        ),
        (
            "RCPT TO:<a@b> NOTIFY=SUCCESS NOTIFY=FAILURE".into(),
            bad_param("RCPT", "NOTIFY"),
        ),
        ("RCPT TO:<a@b> NOTIFY".into(), bad_param("RCPT", "NOTIFY")),
        (
            "RCPT TO:<a@b> ORCPT=rfc822".into(),
            bad_param("RCPT", "ORCPT"),
        ),
        (
            "RCPT TO:<a@b> ORCPT=rfc822;".into(),
            bad_param("RCPT", "ORCPT"),
        ),
        (
            "RCPT TO:<a@b> ORCPT=;a@b".into(),
            bad_param("RCPT", "ORCPT"),
        ),
        (
            "RCPT TO:<a@b> ORCPT=rfc822;a+4".into(),
            bad_param("RCPT", "ORCPT"),
        ),
        (
            "RCPT TO:<a@b> ORCPT=rfc822;a ORCPT=rfc822;b".into(),
            bad_param("RCPT", "ORCPT"),
        ),
        ("RCPT FROM:<a@b>".into(), syntax("RCPT")),
        ("RCPT TO <a@b>".into(), syntax("RCPT")),
        ("RCPT".into(), syntax("RCPT")),
        ("RCPT TO:<a@b>>".into(), syntax("RCPT")),
        // DATA, RSET, QUIT, STARTTLS: no argument
        ("DATA".into(), Ok(Command::Data)),
        ("data".into(), Ok(Command::Data)),
        ("DATA ".into(), Ok(Command::Data)),
        ("DATA x".into(), syntax("DATA")),
        ("DATA\0".into(), syntax("DATA")),
        ("DATA:".into(), syntax("DATA")),
        ("RSET".into(), Ok(Command::Rset)),
        ("rset".into(), Ok(Command::Rset)),
        ("RSET x".into(), syntax("RSET")),
        ("QUIT".into(), Ok(Command::Quit)),
        ("Quit".into(), Ok(Command::Quit)),
        ("QUIT now".into(), syntax("QUIT")),
        ("STARTTLS".into(), Ok(Command::StartTls)),
        ("starttls".into(), Ok(Command::StartTls)),
        ("STARTTLS ".into(), Ok(Command::StartTls)),
        ("STARTTLS x".into(), syntax("STARTTLS")),
        ("STARTTLS\tx".into(), syntax("STARTTLS")),
        // BDAT (RFC 3030 2)
        (
            "BDAT 1000".into(),
            Ok(Command::Bdat {
                size: 1000,
                last: false,
            }),
        ),
        (
            "BDAT 0 LAST".into(),
            Ok(Command::Bdat {
                size: 0,
                last: true,
            }),
        ),
        (
            "bdat 10 last".into(),
            Ok(Command::Bdat {
                size: 10,
                last: true,
            }),
        ),
        (
            "BDAT 10 LAST ".into(),
            Ok(Command::Bdat {
                size: 10,
                last: true,
            }),
        ),
        (
            "BDAT 007".into(),
            Ok(Command::Bdat {
                size: 7,
                last: false,
            }),
        ),
        (
            "BDAT 18446744073709551615".into(),
            Ok(Command::Bdat {
                size: u64::MAX,
                last: false,
            }),
        ),
        ("BDAT 18446744073709551616".into(), syntax("BDAT")),
        ("BDAT".into(), syntax("BDAT")),
        ("BDAT x".into(), syntax("BDAT")),
        ("BDAT -1".into(), syntax("BDAT")),
        ("BDAT +1".into(), syntax("BDAT")),
        ("BDAT 10 NOTLAST".into(), syntax("BDAT")),
        ("BDAT 10 LASTX".into(), syntax("BDAT")),
        ("BDAT 10 LAS".into(), syntax("BDAT")),
        ("BDAT 10  LAST".into(), syntax("BDAT")),
        ("BDAT 10 LAST x".into(), syntax("BDAT")),
        ("BDAT LAST".into(), syntax("BDAT")),
        // VRFY, EXPN (RFC 5321 4.1.1.6-7): an argument is required
        ("VRFY Smith".into(), Ok(Command::Vrfy("Smith".into()))),
        ("vrfy <a@b>".into(), Ok(Command::Vrfy("<a@b>".into()))),
        (
            "VRFY \"John Smith\"".into(),
            Ok(Command::Vrfy("\"John Smith\"".into())),
        ),
        ("VRFY δοκιμή".into(), Ok(Command::Vrfy("δοκιμή".into()))),
        ("VRFY".into(), syntax("VRFY")),
        ("VRFY ".into(), syntax("VRFY")),
        ("VRFY a\0b".into(), syntax("VRFY")),
        ("VRFY a\rb".into(), syntax("VRFY")),
        (
            "EXPN Example-People".into(),
            Ok(Command::Expn("Example-People".into())),
        ),
        ("expn list".into(), Ok(Command::Expn("list".into()))),
        ("EXPN".into(), syntax("EXPN")),
        // HELP, NOOP (RFC 5321 4.1.1.8-9): an optional argument
        ("HELP".into(), Ok(Command::Help(None))),
        ("help".into(), Ok(Command::Help(None))),
        ("HELP ".into(), Ok(Command::Help(None))),
        ("HELP MAIL".into(), Ok(Command::Help(Some("MAIL".into())))),
        ("HELP\tMAIL".into(), syntax("HELP")),
        ("NOOP".into(), Ok(Command::Noop(None))),
        ("noop".into(), Ok(Command::Noop(None))),
        (
            "NOOP anything at all".into(),
            Ok(Command::Noop(Some("anything at all".into()))),
        ),
        ("NOOP \u{1}".into(), syntax("NOOP")),
        // Unknown verbs
        ("".into(), Err(Kind::Unknown)),
        (" ".into(), Err(Kind::Unknown)),
        ("FOO".into(), Err(Kind::Unknown)),
        ("XYZZY arg".into(), Err(Kind::Unknown)),
        (" MAIL FROM:<a@b>".into(), Err(Kind::Unknown)),
        ("AUTH PLAIN AGFAYg==".into(), Err(Kind::Unknown)),
        ("HELLO x".into(), Err(Kind::Unknown)),
        ("EHLOexample.com".into(), Err(Kind::Unknown)),
        ("ΕHLO x".into(), Err(Kind::Unknown)),
        ("DATAX".into(), Err(Kind::Unknown)),
        ("\0".into(), Err(Kind::Unknown)),
        ("TURN".into(), Err(Kind::Unknown)),
        ("START TLS".into(), Err(Kind::Unknown)),
    ];
    cases.push((
        "RCPT TO:<a@b> SIZE=1 SIZE=1".into(),
        to_with(
            "a",
            "b",
            RcptParams {
                other: vec![
                    ("SIZE".into(), Some("1".into())),
                    ("SIZE".into(), Some("1".into())),
                ],
                ..Default::default()
            },
        ),
    ));
    cases
}

#[test]
fn table() {
    let cases = cases();
    assert!(cases.len() >= 120, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for (input, expected) in &cases {
        let got = parse(input.as_bytes());
        if &got != expected {
            failures.push(format!("{input:?}\n   got {got:?}\n  want {expected:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn bytes_that_are_not_utf8() {
    let cases: &[&[u8]] = &[
        b"\xff",
        b"MAIL FROM:<a@b\xff>",
        b"EHLO \xc3",
        b"FOO \xff",
        b"RCPT TO:<\xce\xb4@b> \x80",
        b"DATA\xed\xa0\x80",
    ];
    for input in cases {
        assert_eq!(parse(input), Err(Kind::Utf8), "{input:?}");
    }
}

#[test]
fn every_prefix_of_a_valid_line_parses_without_panic() {
    for (input, expected) in cases() {
        if expected.is_err() {
            continue;
        }
        let bytes = input.as_bytes();
        for end in 0..=bytes.len() {
            let _ = parse_command(&bytes[..end]);
        }
    }
}

#[test]
fn valid_paths_print_back_to_themselves() {
    for (input, expected) in cases() {
        let (verb, path) = match &expected {
            Ok(Command::Mail(path, _)) => ("MAIL FROM:", path.to_string()),
            Ok(Command::Rcpt(path, _)) => ("RCPT TO:", path.to_string()),
            _ => continue,
        };
        let line = format!("{verb}<{path}>");
        let reparsed = parse_command(line.as_bytes()).map(|c| match c {
            Command::Mail(path, _) => path.to_string(),
            Command::Rcpt(path, _) => path.to_string(),
            other => panic!("{other:?}"),
        });
        assert_eq!(reparsed, Ok(path), "{input:?} printed as {line:?}");
    }
}

#[test]
fn errors_carry_the_usage() {
    let mail = parse_command(b"MAIL TO:<a@b>").unwrap_err();
    assert_eq!(
        mail,
        ParseError::Syntax {
            verb: "MAIL",
            expected: "MAIL FROM:<reverse-path> [parameters]"
        }
    );
    assert_eq!(
        mail.to_string(),
        "syntax error, expected: MAIL FROM:<reverse-path> [parameters]"
    );
    let rcpt = parse_command(b"RCPT").unwrap_err();
    assert_eq!(
        rcpt,
        ParseError::Syntax {
            verb: "RCPT",
            expected: "RCPT TO:<forward-path> [parameters]"
        }
    );
    let bdat = parse_command(b"BDAT").unwrap_err();
    assert_eq!(
        bdat,
        ParseError::Syntax {
            verb: "BDAT",
            expected: "BDAT <chunk-size> [LAST]"
        }
    );
    let starttls = parse_command(b"STARTTLS foo").unwrap_err();
    assert_eq!(
        starttls,
        ParseError::Syntax {
            verb: "STARTTLS",
            expected: "STARTTLS"
        }
    );
    let long = format!("MAIL FROM:<{}@b>", "a".repeat(65));
    let long = parse_command(long.as_bytes()).unwrap_err();
    assert_eq!(
        long,
        ParseError::BadPath {
            verb: "MAIL",
            expected: "a local part of at most 64 octets"
        }
    );
    let size = parse_command(b"MAIL FROM:<a@b> size=x").unwrap_err();
    assert_eq!(
        size,
        ParseError::BadParameter {
            verb: "MAIL",
            keyword: "SIZE".into()
        }
    );
}

#[test]
fn mailbox_helpers() {
    let Ok(Command::Mail(ReversePath::Mailbox(m), _)) =
        parse_command(b"MAIL FROM:<\"a\\\"b c\"@x>")
    else {
        panic!("quoted local part");
    };
    assert_eq!(m.local, "\"a\\\"b c\"");
    assert_eq!(m.local_unquoted(), "a\"b c");
    assert!(!m.is_utf8());
    let Ok(Command::Rcpt(ForwardPath::Mailbox(m), _)) =
        parse_command("RCPT TO:<用户@例子.广告>".as_bytes())
    else {
        panic!("UTF-8 mailbox");
    };
    assert!(m.is_utf8());
    assert_eq!(m.to_string(), "用户@例子.广告");
}

#[test]
fn verb_is_reported_upper_case() {
    for (input, verb) in [
        ("ehlo x", "EHLO"),
        ("MaIl FROM:<>", "MAIL"),
        ("bdat 1", "BDAT"),
        ("StartTLS", "STARTTLS"),
    ] {
        assert_eq!(
            parse_command(input.as_bytes()).map(|c| c.verb()),
            Ok(verb),
            "{input}"
        );
    }
}

//! The webhook against a real HTTP server on loopback (a small one here, speaking
//! HTTP/1.1 over tokio): signatures, the reply for each answer, keep-alive, and bounds on
//! hostile endpoints. `tests/integration/test_trigger_webhook.py` checks the signature with
//! the independent `standardwebhooks` package.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Code, code, deliver};
use samotop_trigger::{Format, JsonOptions, Secret, Webhook};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Debug, Clone)]
struct Request {
    headers: HashMap<String, Vec<String>>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map_or("", String::as_str)
    }
}

#[derive(Debug, Clone)]
enum Answer {
    Status(u16, &'static str),
    Slow(Duration),
    Silent,
    Endless,
    /// 200, then a body that never comes.
    Hang200,
}

#[derive(Clone)]
struct Endpoint {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    connections: Arc<Mutex<usize>>,
}

async fn endpoint(answer: Answer) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let ep = Endpoint {
        url,
        requests: Arc::default(),
        connections: Arc::default(),
    };
    let served = ep.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            *served.connections.lock().expect("lock") += 1;
            tokio::spawn(serve(conn, answer.clone(), served.requests.clone()));
        }
    });
    ep
}

async fn serve(mut conn: TcpStream, answer: Answer, log: Arc<Mutex<Vec<Request>>>) {
    let mut buf = Vec::new();
    loop {
        // Read one request: headers, then Content-Length bytes.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 65536];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut headers: HashMap<String, Vec<String>> = HashMap::new();
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                headers
                    .entry(k.trim().to_ascii_lowercase())
                    .or_default()
                    .push(v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v[0].parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 65536];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        log.lock().expect("lock").push(Request { headers, body });
        match &answer {
            Answer::Status(code, extra) => {
                let text = format!("HTTP/1.1 {code} X\r\ncontent-length: 2\r\n{extra}\r\nok");
                if conn.write_all(text.as_bytes()).await.is_err() {
                    return;
                }
            }
            Answer::Slow(d) => {
                tokio::time::sleep(*d).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
            Answer::Silent => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Answer::Hang200 => {
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc")
                    .await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Answer::Endless => {
                // A 500 whose body is a gigabyte, sent as fast as it is read.
                let head = b"HTTP/1.1 500 X\r\ncontent-length: 1000000000\r\n\r\n";
                if conn.write_all(head).await.is_err() {
                    return;
                }
                let zeros = vec![b'0'; 65536];
                while conn.write_all(&zeros).await.is_ok() {}
                return;
            }
        }
    }
}

const MESSAGE: &[u8] = b"Received: from client.test\r\nSubject: hi\r\n\r\nHello\r\n";

#[tokio::test]
async fn a_2xx_is_250_and_the_request_is_signed() {
    let ep = endpoint(Answer::Status(200, "")).await;
    let secret = Secret::parse(SECRET).expect("secret");
    let hook = Webhook::new(&ep.url).expect("url").secret(secret.clone());
    let out = deliver(
        &hook,
        &["a@example.org", "b@example.org"],
        MESSAGE,
        Some([7; 32]),
    )
    .await;
    assert_eq!(out, vec![Ok(()), Ok(())]);
    let req = ep.requests.lock().expect("lock")[0].clone();
    assert_eq!(req.body, MESSAGE);
    assert_eq!(req.header("content-type"), "message/rfc822");
    assert_eq!(
        req.headers["samotop-recipient"],
        ["a@example.org", "b@example.org"]
    );
    assert_eq!(req.header("samotop-sender"), "sender@example.com");
    let id = req.header("webhook-id");
    let ts: u64 = req.header("webhook-timestamp").parse().expect("timestamp");
    assert!(id.starts_with("msg_"));
    assert_eq!(
        req.header("webhook-signature"),
        secret.sign(id, ts, &req.body)
    );
    // The same message again (a retry) has the same id; another recipient set another.
    deliver(
        &hook,
        &["a@example.org", "b@example.org"],
        MESSAGE,
        Some([7; 32]),
    )
    .await;
    deliver(&hook, &["a@example.org"], MESSAGE, Some([7; 32])).await;
    let reqs = ep.requests.lock().expect("lock").clone();
    assert_eq!(reqs[1].header("webhook-id"), id);
    assert_ne!(reqs[2].header("webhook-id"), id);
    // One connection for all three: keep-alive.
    assert_eq!(*ep.connections.lock().expect("lock"), 1);
}

#[tokio::test]
async fn each_answer_maps_to_its_reply() {
    let table: &[(u16, &str, Code)] = &[
        (200, "", (250, None)),
        (404, "", (550, Some([5, 1, 1]))),
        (410, "", (550, Some([5, 1, 1]))),
        (413, "", (552, Some([5, 3, 4]))),
        (400, "", (554, Some([5, 6, 0]))),
        (403, "", (554, Some([5, 6, 0]))),
        (429, "", (451, Some([4, 4, 5]))),
        (500, "", (451, Some([4, 4, 0]))),
        (503, "", (451, Some([4, 4, 0]))),
        (
            302,
            "location: http://127.0.0.1:1/\r\n",
            (451, Some([4, 3, 5])),
        ),
    ];
    for &(status, extra, expected) in table {
        let ep = endpoint(Answer::Status(status, extra)).await;
        let hook = Webhook::new(&ep.url).expect("url");
        let out = deliver(&hook, &["a@example.org"], MESSAGE, None).await;
        assert_eq!(code(&out[0]), expected, "HTTP {status}");
    }
}

#[tokio::test]
async fn the_endpoints_reply_text_reaches_the_client_sanitised() {
    let ep = endpoint(Answer::Status(
        404,
        "samotop-reply: no such  list\t(\u{e9})\r\n",
    ))
    .await;
    let hook = Webhook::new(&ep.url).expect("url");
    let out = deliver(&hook, &["a@example.org"], MESSAGE, None).await;
    let refusal = out[0].clone().expect_err("refused");
    assert_eq!(refusal.message(), "no such list ( )");
    assert_eq!(refusal.code(), 550);
    let ep = endpoint(Answer::Status(500, "")).await;
    let out = deliver(
        &Webhook::new(&ep.url).expect("url"),
        &["a@b"],
        MESSAGE,
        None,
    )
    .await;
    assert!(
        out[0]
            .clone()
            .expect_err("refused")
            .message()
            .contains("HTTP 500")
    );
}

#[tokio::test]
async fn no_answer_and_no_server_are_451() {
    let ep = endpoint(Answer::Silent).await;
    let hook = Webhook::new(&ep.url)
        .expect("url")
        .timeout(Duration::from_millis(500));
    let out = deliver(&hook, &["a@example.org"], MESSAGE, None).await;
    assert_eq!(code(&out[0]), (451, Some([4, 4, 1])));
    let slow = endpoint(Answer::Slow(Duration::from_millis(1500))).await;
    let hook = Webhook::new(&slow.url)
        .expect("url")
        .timeout(Duration::from_millis(300));
    assert_eq!(
        code(&deliver(&hook, &["a@b"], MESSAGE, None).await[0]).0,
        451
    );
    let hook = Webhook::new(&slow.url)
        .expect("url")
        .timeout(Duration::from_secs(10));
    assert_eq!(
        code(&deliver(&hook, &["a@b"], MESSAGE, None).await[0]).0,
        250
    );
    // Nothing listens on the port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let hook = Webhook::new(&format!("http://127.0.0.1:{port}/")).expect("url");
    let out = deliver(&hook, &["a@example.org"], MESSAGE, None).await;
    assert_eq!(code(&out[0]), (451, Some([4, 4, 1])));
}

#[tokio::test]
async fn a_gigabyte_response_is_cut() {
    let ep = endpoint(Answer::Endless).await;
    let hook = Webhook::new(&ep.url).expect("url");
    let started = Instant::now();
    let out = deliver(&hook, &["a@example.org"], MESSAGE, None).await;
    assert_eq!(code(&out[0]), (451, Some([4, 4, 0])));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_status_whose_body_never_ends_decides_within_bounds() {
    let ep = endpoint(Answer::Hang200).await;
    let hook = Webhook::new(&ep.url).expect("url");
    let started = Instant::now();
    let out = deliver(&hook, &["a@example.org"], MESSAGE, None).await;
    assert_eq!(out, vec![Ok(())], "the 200 is the endpoint's verdict");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn a_big_message_streams_from_the_spool_with_its_length() {
    let ep = endpoint(Answer::Status(200, "")).await;
    let secret = Secret::parse(SECRET).expect("secret");
    let hook = Webhook::new(&ep.url)
        .expect("url")
        .secret(secret.clone())
        .spool_memory(4096);
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..100_000u32 {
        big.extend_from_slice(format!("line {i}\r\n").as_bytes());
    }
    let out = deliver(&hook, &["a@example.org"], &big, None).await;
    assert_eq!(out, vec![Ok(())]);
    let req = ep.requests.lock().expect("lock")[0].clone();
    assert_eq!(req.body, big);
    let ts: u64 = req.header("webhook-timestamp").parse().expect("ts");
    assert_eq!(
        req.header("webhook-signature"),
        secret.sign(req.header("webhook-id"), ts, &big)
    );
}

#[tokio::test]
async fn the_json_format_is_signed_json() {
    let ep = endpoint(Answer::Status(200, "")).await;
    let secret = Secret::parse(SECRET).expect("secret");
    let hook = Webhook::new(&ep.url)
        .expect("url")
        .secret(secret.clone())
        .format(Format::Json(JsonOptions::default()));
    let msg = b"Subject: hi\r\nContent-Type: text/html\r\n\r\n<b>hi</b>\r\n";
    let out = deliver(&hook, &["alerts+env=prod@example.org"], msg, Some([1; 32])).await;
    assert_eq!(out, vec![Ok(())]);
    let req = ep.requests.lock().expect("lock")[0].clone();
    assert_eq!(req.header("content-type"), "application/json");
    let ts: u64 = req.header("webhook-timestamp").parse().expect("ts");
    assert_eq!(
        req.header("webhook-signature"),
        secret.sign(req.header("webhook-id"), ts, &req.body)
    );
    let body = String::from_utf8(req.body).expect("utf-8");
    assert!(body.contains(r#""html":"<b>hi</b>""#), "{body}");
    assert!(body.contains(r#""args":{"env":"prod"}"#), "{body}");
    assert!(body.contains(r#""client_address":"192.0.2.7""#), "{body}");
    assert!(body.contains(r#""helo":"client.test""#), "{body}");
}

#[test]
fn only_http_urls() {
    for bad in ["ftp://x/", "not a url", "http://", "file:///etc/passwd"] {
        assert!(Webhook::new(bad).is_err(), "{bad}");
    }
    assert!(Secret::parse("whsec_c2hvcnQ=").is_err());
}

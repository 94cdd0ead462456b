"""`--deliver http://...`: the real binary POSTs each message to a real HTTP server on
loopback (Python's http.server, run by the test), which verifies the Standard Webhooks
signature with the independent `standardwebhooks` package from PyPI, and answers 200, 404,
413, 429, 500, slowly, not at all, or with a body that does not end. Each answer maps to its
reply; a retry after a 451 delivers exactly once more.
"""

import base64
import http.server
import json
import smtplib
import socket
import threading
import time

import pytest

from conftest import free_port, wait_until

standardwebhooks = pytest.importorskip("standardwebhooks")

SECRET = "whsec_" + base64.b64encode(b"samotop-trigger-test-secret-0123").decode()
MESSAGE = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hook\r\nMessage-ID: <h1@example.com>\r\n\r\nHello hook\r\n"


class Hooks:
    """A loopback HTTP server. Each path answers its way; every request is verified and kept.

    /ok 200 | /gone 404 | /410 410 | /big 413 | /bad 400 | /busy 429 | /fail 500 |
    /408 408 | /421 421 | /425 425 |
    /flaky 500 the first time, then 200 | /slow 200 after 3 s | /silent never answers |
    /endless 500 with a 1 GB body | /reply 404 with a Samotop-Reply header |
    /jsonreply 404 with a JSON {"reply": ...} body
    """

    def __init__(self, secret=SECRET):
        self.requests = []  # (path, headers dict, body, verified payload or None)
        self.lock = threading.Lock()
        self.flaky_seen = set()
        self.stop_event = threading.Event()
        self.verifier = standardwebhooks.Webhook(secret)
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    hooks.verifier.verify(body, headers, json_parse=False)
                    verified = True
                except Exception as e:  # noqa: BLE001 - any failure is a failed verification
                    verified = repr(e)
                with hooks.lock:
                    hooks.requests.append((self.path, headers, body, verified,
                                           self.headers.get_all("samotop-recipient") or []))
                hooks.answer(self, headers)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, h, headers):
        path = h.path

        def send(code, body=b"", extra=()):
            h.send_response(code)
            for k, v in extra:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        if path == "/ok":
            send(200, b"thanks")
        elif path == "/gone":
            send(404)
        elif path == "/410":
            send(410)
        elif path == "/big":
            send(413)
        elif path == "/bad":
            send(400)
        elif path == "/busy":
            send(429)
        elif path in ("/408", "/421", "/425"):
            send(int(path[1:]))
        elif path == "/fail":
            send(500)
        elif path == "/flaky":
            key = headers.get("webhook-id")
            with self.lock:
                first = key not in self.flaky_seen
                self.flaky_seen.add(key)
            send(500 if first else 200)
        elif path == "/slow":
            time.sleep(3)
            send(200)
        elif path == "/silent":
            self.stop_event.wait(60)
        elif path == "/endless":
            h.send_response(500)
            h.send_header("Content-Length", str(10**9))
            h.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(10**9 // 65536):
                    if self.stop_event.is_set():
                        break
                    h.wfile.write(chunk)
            except OSError:
                pass
        elif path == "/reply":
            send(404, extra=[("Samotop-Reply", "list closed\t\t, see https://x.test/why")])
        elif path == "/jsonreply":
            send(404, json.dumps({"reply": "unknown alert\r\n250 fake"}).encode(),
                 extra=[("Content-Type", "application/json")])
        else:
            send(404)

    def to(self, path):
        with self.lock:
            return [r for r in self.requests if r[0] == path]

    def close(self):
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks():
    h = Hooks()
    yield h
    h.close()


def send(port, rcpts=("b@example.org",), body=MESSAGE, sender="a@example.com"):
    """Sends one message; returns (code, text) of the final reply (or of a refused RCPT)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        c.ehlo("client.test")
        c.mail(sender)
        for r in rcpts:
            code, msg = c.rcpt(r)
            if code != 250:
                return code, msg.decode()
        code, msg = c.data(body)
        return code, msg.decode()


def hook_server(samotop, hooks, path, *extra):
    return samotop("--deliver", hooks.url(path), "--webhook-secret", SECRET, "--spf", "off",
                   "--webhook-timeout", "1.5", *extra)


@pytest.mark.parametrize(
    "path,code,ecode",
    [
        ("/ok", 250, "2.0.0"),
        ("/gone", 550, "5.1.1"),
        ("/410", 550, "5.1.1"),
        ("/big", 552, "5.3.4"),
        ("/bad", 554, "5.6.0"),
        ("/busy", 451, "4.4.5"),
        # HTTP's "try again" 4xx are no bounce: 408 (its own timeout), 421, 425.
        ("/408", 451, "4.4.1"),
        ("/421", 451, "4.4.5"),
        ("/425", 451, "4.4.5"),
        ("/fail", 451, "4.4.0"),
        ("/slow", 451, "4.4.1"),
        ("/silent", 451, "4.4.1"),
    ],
)
def test_each_answer_maps_to_its_reply(samotop, hooks, path, code, ecode):
    s = hook_server(samotop, hooks, path)
    got, text = send(s.port)
    assert (got, text.split()[0]) == (code, ecode), text
    reqs = wait_until(lambda: hooks.to(path), what="the request")
    _, headers, body, verified, rcpts = reqs[0]
    assert verified is True, verified
    assert headers["content-type"] == "message/rfc822"
    assert body.startswith(b"Received: from client.test")
    assert body.endswith(MESSAGE)
    assert rcpts == ["b@example.org"]


def test_connection_refused_is_451(samotop):
    s = samotop("--deliver", f"http://127.0.0.1:{free_port()}/", "--spf", "off")
    code, text = send(s.port)
    assert (code, text.split()[0]) == (451, "4.4.1"), text


def test_a_retry_after_451_delivers_exactly_once_more(samotop, hooks):
    s = hook_server(samotop, hooks, "/flaky")
    assert send(s.port)[0] == 451
    assert send(s.port)[0] == 250
    reqs = hooks.to("/flaky")
    assert len(reqs) == 2
    assert all(r[3] is True for r in reqs)
    # The same webhook-id both times: the endpoint can tell the retry.
    assert reqs[0][1]["webhook-id"] == reqs[1][1]["webhook-id"]
    # A third, different message: a new id, delivered once.
    assert send(s.port, body=MESSAGE.replace(b"h1@", b"h2@"))[0] == 451
    assert len(hooks.to("/flaky")) == 3


def test_the_endpoints_reply_text_is_passed_on_sanitised(samotop, hooks):
    s = hook_server(samotop, hooks, "/reply")
    code, text = send(s.port)
    assert code == 550 and text == "5.1.1 list closed , see https://x.test/why", text
    s = hook_server(samotop, hooks, "/jsonreply")
    code, text = send(s.port)
    assert code == 550 and text == "5.1.1 unknown alert 250 fake", text


def test_a_gigabyte_answer_is_cut_and_the_server_goes_on(samotop, hooks):
    s = hook_server(samotop, hooks, "/endless")
    t0 = time.monotonic()
    code, text = send(s.port)
    assert (code, text.split()[0]) == (451, "4.4.0"), text
    assert time.monotonic() - t0 < 30
    assert s.rss_kib() < 200_000, "the response was not read whole"
    assert s.alive()


def test_keep_alive_one_connection_for_many_messages(samotop, hooks):
    s = hook_server(samotop, hooks, "/ok")
    seen = set()
    orig = hooks.server.RequestHandlerClass.handle

    def handle(h):
        seen.add(h.client_address)
        return orig(h)

    hooks.server.RequestHandlerClass.handle = handle
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        for i in range(10):
            c.sendmail("a@example.com", ["b@example.org"],
                       MESSAGE.replace(b"h1@", f"k{i}@".encode()))
    assert len(hooks.to("/ok")) == 10
    # Reused: one connection (a second when a request starts before the pool has the first
    # back, under load), never one per message.
    assert len(seen) <= 2, seen


def test_the_json_format(samotop, hooks):
    s = hook_server(samotop, hooks, "/ok", "--webhook-format", "json",
                    "--webhook-max-attachment", "100")
    boundary = "b0"
    big = base64.b64encode(b"\x00" * 300).decode()
    body = (
        "From: =?utf-8?B?xb1vZmll?= <a@example.com>\r\nSubject: alert\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ndisk full on db1\r\n"
        f"--{boundary}\r\nContent-Type: text/html\r\n\r\n<p>disk <b>full</b></p>\r\n"
        f"--{boundary}\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=df.csv\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"fs,use\n/,99%\n").decode() + "\r\n"
        f"--{boundary}\r\nContent-Type: application/octet-stream; name=big.bin\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{big}\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    code, text = send(s.port, rcpts=["alerts+env=prod+team=db@example.org", "ops@example.org"],
                      body=body)
    assert code == 250, text
    _, headers, raw, verified, _ = hooks.to("/ok")[0]
    assert verified is True, verified
    assert headers["content-type"] == "application/json"
    doc = json.loads(raw)
    env = doc["envelope"]
    assert env["sender"] == "a@example.com"
    assert [r["address"] for r in env["recipients"]] == ["alerts+env=prod+team=db@example.org",
                                                          "ops@example.org"]
    assert env["recipients"][0]["args"] == {"env": "prod", "team": "db"}
    assert env["recipients"][0]["user"] == "alerts"
    assert env["helo"] == "client.test"
    assert env["client_address"] == "127.0.0.1"
    assert env["tls"] is None and env["protocol"] == "ESMTP"
    assert env["auth"] == []
    names = [h["name"] for h in doc["headers"]]
    assert names[0] == "Received" and "Subject" in names
    assert {h["name"]: h["value"] for h in doc["headers"]}["From"] == "Žofie <a@example.com>"
    assert doc["text"] == "disk full on db1"
    assert doc["html"] == "<p>disk <b>full</b></p>"
    att = doc["attachments"]
    assert att[0]["filename"] == "df.csv"
    assert base64.b64decode(att[0]["content"]) == b"fs,use\n/,99%\n"
    assert att[1]["filename"] == "big.bin" and att[1]["omitted"] is True
    assert att[1]["size"] == 300 and att[1]["content"] is None
    assert doc["id"] == headers["webhook-id"]


def test_https_with_a_private_ca(samotop, hooks, tmp_path):
    """TLS: the endpoint's certificate is checked against the built-in roots plus --webhook-ca."""
    import ssl
    import subprocess

    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.pem", "k.pem", "c.csr", "c.pem"))
    ext = tmp_path / "ext.cnf"
    ext.write_text("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n")
    for argv in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "1",
         "-subj", "/CN=samotop test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "1", "-extfile", ext],
    ):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    hooks.server.socket = ctx.wrap_socket(hooks.server.socket, server_side=True)
    url = f"https://127.0.0.1:{hooks.port}/ok"
    s = samotop("--deliver", url, "--webhook-secret", SECRET, "--spf", "off",
                "--webhook-ca", str(ca))
    assert send(s.port)[0] == 250
    assert hooks.to("/ok")[0][3] is True
    # Without the CA: not trusted, a 451 (the sender retries; nothing lost).
    s2 = samotop("--deliver", url, "--spf", "off")
    code, text = send(s2.port)
    assert code == 451, text


def test_bad_configuration_stops_at_start(samotop, tmp_path):
    import subprocess
    from conftest import BIN

    for args in (["--deliver", "ftp://x/"], ["--deliver", "http://127.0.0.1:1/", "--webhook-secret", "whsec_???"],
                 ["--route", "re:(=null"], ["--deliver", "exec:/no/such/program"]):
        r = subprocess.run([BIN, "--smtp", f"127.0.0.1:{free_port()}", *args], capture_output=True,
                           timeout=30, text=True)
        assert r.returncode != 0, args

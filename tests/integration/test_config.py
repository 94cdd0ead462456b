"""`--config FILE` and `--check-config` through the real binary.

The file sets what flags set; `SAMOTOP_*` variables override it and flags override both;
a bad file stops the server before it listens, naming the line; `--check-config` prints
the effective configuration (re-readable, each value's origin) and exits. The three sample
files in examples/config/ are run for real, each with its paths and ports pointed into a
temporary directory: Maildir on port 25 (with STARTTLS), the Dovecot front (a real Dovecot
behind it) and the inbox with a webhook route (a real HTTP server that verifies the
Standard Webhooks signature with PyPI's `standardwebhooks`).
"""

import base64
import http.server
import json
import os
import pathlib
import smtplib
import ssl
import subprocess
import threading
import urllib.request

import pytest

from conftest import BIN, ROOT, free_port, send_one, wait_port, wait_until
from dovecot import dovecot  # noqa: F401  (`dovecot` is a fixture)

standardwebhooks = pytest.importorskip("standardwebhooks")

SAMPLES = ROOT / "examples" / "config"
SECRET = "whsec_" + base64.b64encode(b"samotop-config-test-secret-0123").decode()


def check(*args, env=None):
    """`samotop ARGS --check-config`: (exit code, stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SAMOTOP_")}
    full_env.update(env or {})
    run = subprocess.run(
        [BIN, *args, "--check-config"], capture_output=True, text=True, timeout=60, env=full_env
    )
    return run.returncode, run.stdout, run.stderr


def setting(rendered, key):
    """The line of `--check-config` output that sets `key`."""
    lines = [l for l in rendered.splitlines() if l.startswith(f"{key} = ")]
    assert len(lines) == 1, (key, rendered)
    return lines[0]


def rewrite(name, tmp_path, subs):
    """examples/config/NAME with each (old, new) replaced; each old must be in the file."""
    text = (SAMPLES / name).read_text()
    for old, new in subs:
        assert old in text, f"{name} no longer has {old!r}: update this test with the sample"
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def certificate(tmp_path, name):
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


class Run:
    """samotop --config FILE, stopped by PID at the end of the test."""

    def __init__(self, tmp_path, config, port, *args, env=None):
        self.log_path = tmp_path / f"samotop-{port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SAMOTOP_")}
        full_env.setdefault("RUST_LOG", "info")
        full_env.update(env or {})
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [BIN, "--config", str(config), *args], stdout=subprocess.DEVNULL, stderr=self._log,
            stdin=subprocess.DEVNULL, env=full_env,
        )
        self.port = port
        wait_port(port, self.proc)

    @property
    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def run(tmp_path):
    runs = []

    def start(config, port, *args, **kwargs):
        r = Run(tmp_path, config, port, *args, **kwargs)
        runs.append(r)
        return r

    yield start
    for r in runs:
        r.stop()


# -- precedence, errors, the effective configuration ------------------------------------------


def test_flags_override_variables_override_the_file(tmp_path, run):
    port = free_port()
    conf = tmp_path / "s.toml"
    conf.write_text(
        f'# a comment\nsmtp = ["127.0.0.1:{port}"]\nmax-recipients = 2\n'
        f'deliver = "maildir:{tmp_path / "md"}"\nspf = "off"\n'
    )
    code, out, err = check("--config", str(conf))
    assert code == 0, err
    assert setting(out, "max-recipients") == f"max-recipients = 2  # {conf}:3"
    assert setting(out, "max-errors").endswith("# default")

    code, out, err = check("--config", str(conf), env={"SAMOTOP_MAX_RECIPIENTS": "3"})
    assert code == 0, err
    assert setting(out, "max-recipients") == "max-recipients = 3  # SAMOTOP_MAX_RECIPIENTS"

    code, out, err = check("--config", str(conf), "--max-recipients", "4", env={"SAMOTOP_MAX_RECIPIENTS": "3"})
    assert code == 0, err
    assert setting(out, "max-recipients") == "max-recipients = 4  # flag"

    # SAMOTOP_CONFIG names the file as --config does.
    code, out, err = check(env={"SAMOTOP_CONFIG": str(conf)})
    assert code == 0, err
    assert setting(out, "max-recipients") == f"max-recipients = 2  # {conf}:3"

    # The output is itself a config file that gives the same configuration.
    again = tmp_path / "again.toml"
    again.write_text(out)
    code, out2, err = check("--config", str(again))
    assert code == 0, err
    strip = lambda text: [l.split("  # ")[0] for l in text.splitlines()[1:]]  # noqa: E731
    assert strip(out2) == strip(out)

    # And the server runs what the file says: its port, its recipient limit (env: 3).
    s = run(conf, port, env={"SAMOTOP_MAX_RECIPIENTS": "3"})
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        c.mail("a@example.com")
        for n in range(3):
            assert c.rcpt(f"r{n}@example.org")[0] == 250
        code, text = c.rcpt("r3@example.org")
        assert code == 452 and text.startswith(b"4.5.3"), text
        c.rset()
    assert send_one(port)[0] == 250, "still serving"
    s.stop()


def test_a_bad_file_stops_the_start_naming_the_line(tmp_path):
    port = free_port()
    cases = [
        (f'smtp = ["127.0.0.1:{port}"]\n\nmax-conections = 5\n',
         ":3: unknown setting `max-conections` (did you mean `max-connections`?)"),
        ('max-message-size = "big"\n', ":1: `max-message-size`: invalid value 'big'"),
        ('[tls]\ncert = ["a.pem", "b.pem"]\n', ":2: `tls-cert` takes one value, not a list"),
        ('[routes]\n"alerts+*@x.org" = "nowhere:/x"\n', ':2: [routes] "alerts+*@x.org": '),
        ('[routes]\n"re:(" = "null"\n', ':2: [routes] "re:(": '),
        ("smtp = [\n", ":1: "),
    ]
    for text, want in cases:
        conf = tmp_path / "bad.toml"
        conf.write_text(text)
        proc = subprocess.run([BIN, "--config", str(conf)], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 2, (text, proc.stderr)
        assert "listening" not in proc.stderr
        assert f"{conf}{want}" in proc.stderr, (text, proc.stderr)
        assert proc.stderr.count(want) == 1, "said once"
    # A mistake found at start, not in the file's syntax, still points at its line.
    conf = tmp_path / "late.toml"
    conf.write_text(f'smtp = ["127.0.0.1:{port}"]\nmaildir-layout = "per-recipient"\n')
    proc = subprocess.run([BIN, "--config", str(conf)], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert f"(`maildir-layout` at {conf}:2)" in proc.stderr, proc.stderr
    # A missing file is an error, not an empty configuration.
    proc = subprocess.run([BIN, "--config", str(tmp_path / "none.toml"), "--check-config"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "none.toml" in proc.stderr, proc.stderr


def test_check_config_masks_secrets_and_checks_files(tmp_path):
    conf = tmp_path / "s.toml"
    conf.write_text(f'deliver = "https://hooks.example/in"\nwebhook-secret = "{SECRET}"\n'
                    f'http-token = "hunter2-token"\n')
    code, out, err = check("--config", str(conf))
    assert code == 0, err
    assert SECRET not in out and "hunter2-token" not in out, out
    # --check-config opens what the server would: a missing certificate is the error it would be.
    conf.write_text('[tls]\ncert = "/nonexistent/c.pem"\nkey = "/nonexistent/k.pem"\n')
    code, out, err = check("--config", str(conf))
    assert code == 2 and "/nonexistent/c.pem" in err, err
    assert f"`tls-cert` at {conf}:2" in err, err


# -- the three sample files, run --------------------------------------------------------------


def test_sample_maildir_on_port_25(tmp_path, run):
    port = free_port()
    cert, key = certificate(tmp_path, "mx.example.org")
    conf = rewrite("maildir-port25.toml", tmp_path, [
        ('smtp = ["0.0.0.0:25", "[::]:25"]', f'smtp = ["127.0.0.1:{port}"]'),
        ("maildir:/var/mail", f"maildir:{tmp_path / 'mail'}"),
        ("/etc/samotop/fullchain.pem", str(cert)),
        ("/etc/samotop/privkey.pem", str(key)),
    ])
    code, out, err = check("--config", str(conf))
    assert code == 0, err
    assert setting(out, "maildir-layout").startswith('maildir-layout = "per-recipient"')
    run(conf, port)
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False  # smtplib names the peer 127.0.0.1; the chain is still verified
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        assert b"SIZE 52428800" in c.ehlo_resp
        c.starttls(context=ctx)
        c.ehlo("client.test")
        assert c.sendmail("a@sender.test", ["Alice@Example.ORG"], b"Subject: to port 25\r\n\r\nhi\r\n") == {}
        assert c.mail("a@sender.test")[0] == 250
        code, text = c.rcpt("x@not-ours.test")
        assert code == 550 and text.startswith(b"5.7.1"), text
    box = tmp_path / "mail" / "example.org" / "alice" / "new"
    wait_until(lambda: box.is_dir() and len(list(box.iterdir())) == 1, what="the message in alice's Maildir")
    (stored,) = box.iterdir()
    assert stored.read_bytes().endswith(b"Subject: to port 25\r\n\r\nhi\r\n")


def test_sample_dovecot_front(tmp_path, run, dovecot):  # noqa: F811
    dc = dovecot(users=["alice@example.org"])
    port, metrics = free_port(), free_port()
    cert, key = certificate(tmp_path, "mail.example.org")
    conf = rewrite("dovecot-front.toml", tmp_path, [
        ('smtp = ["0.0.0.0:25"]', f'smtp = ["127.0.0.1:{port}"]'),
        ("/run/dovecot/lmtp", str(dc.socket)),
        ("/etc/samotop/fullchain.pem", str(cert)),
        ("/etc/samotop/privkey.pem", str(key)),
        ("127.0.0.1:9425", f"127.0.0.1:{metrics}"),
    ])
    code, out, err = check("--config", str(conf))
    assert code == 0, err
    run(conf, port)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        c.mail("a@sender.test")
        assert c.rcpt("alice@example.org")[0] == 250
        code, _ = c.rcpt("nobody@example.org")
        assert code == 550, "Dovecot's answer at RCPT time"
        assert c.data(b"Subject: via dovecot\r\n\r\nhello dovecot\r\n")[0] == 250
    wait_until(lambda: len(dc.messages("alice@example.org")) == 1, what="Dovecot stored it")
    assert dc.messages("alice@example.org")[0].endswith(b"hello dovecot\r\n")
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=30) as r:
        assert b"samotop_" in r.read()


class Hook:
    """A loopback webhook endpoint: verifies each POST's signature, answers 200, keeps them."""

    def __init__(self):
        self.posts = []
        verifier = standardwebhooks.Webhook(SECRET)
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verifier.verify(body, headers, json_parse=False)  # raises: no 200
                hook.posts.append((self.path, headers, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_sample_inbox_with_a_webhook_route(tmp_path, run):
    hook = Hook()
    try:
        port, http_port = free_port(), free_port()
        secret = tmp_path / "webhook.secret"
        secret.write_text(SECRET + "\n")
        (tmp_path / "admin").mkdir()
        conf = rewrite("inbox-webhook.toml", tmp_path, [
            ('smtp = ["0.0.0.0:25"]', f'smtp = ["127.0.0.1:{port}"]'),
            ("/var/lib/samotop/inbox.sqlite", str(tmp_path / "inbox.sqlite")),
            ("127.0.0.1:8025", f"127.0.0.1:{http_port}"),
            ("https://hooks.example.org/mail", f"http://127.0.0.1:{hook.port}/mail"),
            ("/var/mail/admin", str(tmp_path / "admin")),
            ("/etc/samotop/webhook.secret", str(secret)),
        ])
        code, out, err = check("--config", str(conf))
        assert code == 0, err
        assert setting(out, "route").startswith('route = ["alerts+*@catch.example.org=sqlite:'), out
        run(conf, port)
        for rcpt, subject in [("alerts+env=prod@catch.example.org", "alert"),
                              ("bob@catch.example.org", "for bob"),
                              ("postmaster@catch.example.org", "for the admin")]:
            code, text = send_one(port, rcpts=(rcpt,), body=f"Subject: {subject}\r\n\r\nbody\r\n".encode())
            assert code == 250, (rcpt, text)
        # The alert went to the webhook, JSON, signed, with the address's extension.
        assert len(hook.posts) == 1, hook.posts
        path, headers, body = hook.posts[0]
        doc = json.loads(body)
        assert path == "/mail" and headers["content-type"].startswith("application/json")
        assert "alerts+env=prod@catch.example.org" in json.dumps(doc)
        # ... and, with bob's, into the inbox; the postmaster's only into the Maildir.

        def inbox():
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/v1/messages", timeout=30) as r:
                return json.loads(r.read())

        page = inbox()
        assert sorted(m["Subject"] for m in page["messages"]) == ["alert", "for bob"], page
        admin = tmp_path / "admin" / "new"
        assert len(list(admin.iterdir())) == 1
    finally:
        hook.close()


def test_a_trigger_must_time_out_before_the_backend_timeout():
    """A webhook or command still running when the session's backend timeout answers 451
    could take the message after all, and the client sends it again: the server refuses to
    start with such timeouts, in a route too, and names both flags."""
    hook = ["--deliver", "http://127.0.0.1:9/in"]
    code, _, err = check(*hook, "--backend-timeout", "20", "--webhook-timeout", "20")
    assert code == 2, err
    assert "--webhook-timeout 20 must be shorter than --backend-timeout 20" in err, err
    code, _, err = check("--deliver", "null", "--route", "a@x.test=exec:/bin/true",
                         "--backend-timeout", "30", "--exec-timeout", "45")
    assert code == 2, err
    assert "--exec-timeout 45 must be shorter than --backend-timeout 30" in err, err
    # Shorter is fine, and so are the defaults (30 s and 60 s against 120 s); a trigger's
    # timeout does not matter where no trigger is configured.
    for args in (["--backend-timeout", "20", "--webhook-timeout", "19.5"], []):
        code, _, err = check(*hook, *args)
        assert code == 0, err
    code, _, err = check("--deliver", "null", "--backend-timeout", "5")
    assert code == 0, err

"""The programs in `examples/` do what their doc comments say (issue 8).

Each is built once (`cargo build -p examples`), started on a free port (or socket) of its own,
sent a message by a real client (smtplib, smtplib.LMTP, a pipe), and its output checked:
`console` prints the message, `maildir` stores it in `new/` before the 250, `custom-dispatch`
appends a JSON line, `custom-guard` refuses peers and domains, `stdio` serves one session on a
pipe, `unix-socket` speaks LMTP with per-recipient Maildirs, `lmtp-dovecot` passes mail to a
real Dovecot.
"""

import json
import os
import pathlib
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time

import pytest

from conftest import ROOT, Raw, free_port, send_one, stdout_messages, wait_path, wait_port, wait_until
import dovecot as dovecot_mod
from dovecot import dovecot  # noqa: F401  (`dovecot` is a fixture)

TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
BUILD_TIMEOUT = 900


@pytest.fixture(scope="module")
def bins():
    """Builds the examples crate once; returns the directory of its binaries."""
    proc = subprocess.run(
        ["cargo", "build", "-p", "examples"],
        cwd=ROOT,
        capture_output=True,
        timeout=BUILD_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    return TARGET / "debug"


class Example:
    """A running example program; stopped (SIGTERM, then SIGKILL) by the fixture."""

    def __init__(self, path, args, tmp):
        self.name = path.name
        self.out_path = tmp / f"{self.name}-{time.monotonic_ns()}.out"
        self.err_path = self.out_path.with_suffix(".err")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        env = dict(os.environ, RUST_LOG="info")
        self.proc = subprocess.Popen(
            [str(path)] + [str(a) for a in args],
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    @property
    def stdout(self):
        self._out.flush()
        return self.out_path.read_bytes()

    @property
    def log(self):
        return self.err_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()
        self._err.close()


@pytest.fixture
def example(bins, tmp_path):
    """Factory: example("console", "127.0.0.1:PORT") -> a running Example."""
    running = []

    def start(name, *args):
        ex = Example(bins / name, args, tmp_path)
        running.append(ex)
        return ex

    yield start
    for ex in running:
        ex.stop()


def listening(example, name, *args):
    """Starts `name` on a free port (its first argument) and waits until it answers."""
    port = free_port()
    ex = example(name, f"127.0.0.1:{port}", *args)
    try:
        wait_port(port, ex.proc)
    except Exception:
        raise AssertionError(f"{name} did not start:\n{ex.log}")
    return ex, port


BODY = b"From: <a@example.com>\r\nSubject: from the examples test\r\n\r\nhello, examples\r\n"


def test_console_prints_the_message_on_stdout(example):
    ex, port = listening(example, "console")
    code, _ = send_one(port, rcpts=("b@example.org", "c@example.org"), body=BODY)
    assert code == 250
    # Stdout answers 250 once the message is flushed: it is there now.
    messages = stdout_messages(ex.stdout)
    assert len(messages) == 1, ex.stdout
    m = messages[0]
    assert m["sender"] == "a@example.com"
    assert m["rcpts"] == ["b@example.org", "c@example.org"]
    assert m["data"] == BODY
    # One log line per session, on standard error, once the session has ended.
    wait_until(lambda: "mails=1 rcpts=2" in ex.log and "end=quit" in ex.log, what=f"a session line in {ex.log!r}")


def test_maildir_stores_the_message_in_new_before_the_250(example, tmp_path):
    mail = tmp_path / "mail"
    ex, port = listening(example, "maildir", mail)
    for sub in ("tmp", "new", "cur"):
        assert (mail / sub).is_dir(), sub
    code, _ = send_one(port, body=BODY)
    assert code == 250
    stored = list((mail / "new").iterdir())  # no waiting: 250 means durable in new/
    assert len(stored) == 1, stored
    data = stored[0].read_bytes()
    assert data.startswith(b"Return-Path: <a@example.com>\r\nReceived: from client.test")
    assert data.endswith(BODY)
    assert list((mail / "tmp").iterdir()) == []


def test_custom_dispatch_appends_one_json_line_per_message(example, tmp_path):
    out = tmp_path / "mail.jsonl"
    ex, port = listening(example, "custom-dispatch", out)
    assert send_one(port, body=BODY)[0] == 250
    eight_bit = b"Subject: second\r\n\r\ncaf\xc3\xa9 and a quote \" and a tab\t\r\n"
    assert send_one(port, sender="", rcpts=("x@example.org", "y@example.net"), body=eight_bit)[0] == 250
    # 250 came after the fsync of the line: both are there now.
    lines = out.read_bytes().splitlines()
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert first["from"] == "a@example.com"
    assert first["to"] == ["b@example.org"]
    assert first["peer"] == "127.0.0.1"
    assert first["message"].startswith("Received: from client.test")
    assert first["message"].endswith(BODY.decode())
    assert first["size"] == len(first["message"].encode())
    assert second["from"] == ""
    assert second["to"] == ["x@example.org", "y@example.net"]
    assert second["message"].endswith(eight_bit.decode("utf-8"))
    assert first["id"] != second["id"]


def test_custom_guard_refuses_peers_off_the_allow_list(example):
    ex, port = listening(example, "custom-guard", "10.0.0.0/8")
    c = Raw(port)
    assert c.greeting[0] == 554, c.greeting
    assert c.closed()
    c.close()
    assert "not on the allow list" in wait_until(lambda: ex.log if "allow list" in ex.log else None)


def test_custom_guard_accepts_its_domain_and_refuses_relaying(example):
    ex, port = listening(example, "custom-guard", "127.0.0.0/8,::1/128", "example.org")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail("a@example.com")[0] == 250
        code, text = c.rcpt("b@example.com")
        assert (code, text[:5]) == (550, b"5.7.1"), (code, text)
        assert c.rcpt("b@EXAMPLE.org")[0] == 250
        assert c.rcpt("Postmaster")[0] == 250
        assert c.data(BODY)[0] == 250
    messages = stdout_messages(ex.stdout)
    assert [m["rcpts"] for m in messages] == [["b@EXAMPLE.org", "Postmaster"]]


def test_stdio_serves_one_session_on_a_pipe(bins, tmp_path):
    mail = tmp_path / "mail"
    script = (
        b"EHLO pipe.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
        + BODY
        + b".\r\nQUIT\r\n"
    )
    proc = subprocess.run(
        [str(bins / "stdio"), str(mail)], input=script, capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    codes = [line[:3] for line in proc.stdout.split(b"\r\n") if line[3:4] == b" "]
    assert codes == [b"220", b"250", b"250", b"250", b"354", b"250", b"221"], proc.stdout
    stored = list((mail / "new").iterdir())
    assert len(stored) == 1
    assert stored[0].read_bytes().endswith(BODY)
    assert b"peer=stdio" in proc.stderr


def short_dir():
    """Unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="ex-", dir="/tmp"))
    return d


def test_unix_socket_speaks_lmtp_into_per_recipient_maildirs(example, tmp_path):
    d = short_dir()
    try:
        sock = d / "lmtp.sock"
        mail = tmp_path / "mail"
        ex = example("unix-socket", sock, mail)
        wait_path(sock, ex.proc)
        with smtplib.LMTP(str(sock), timeout=30) as c:
            assert c.ehlo("client.test")[0] == 250  # smtplib.LMTP sends LHLO
            assert c.mail("a@example.com")[0] == 250
            assert c.rcpt("alice@example.org")[0] == 250
            assert c.rcpt("bob@example.net")[0] == 250
            # One reply per recipient after the data (smtplib reads only the first itself).
            first = c.data(BODY)
            second = c.getreply()
        assert first == (250, b"2.0.0 <alice@example.org> delivered"), first
        assert second == (250, b"2.0.0 <bob@example.net> delivered"), second
        for domain, local in (("example.org", "alice"), ("example.net", "bob")):
            stored = list((mail / domain / local / "new").iterdir())
            assert len(stored) == 1, (domain, local)
            assert stored[0].read_bytes().endswith(BODY)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_lmtp_dovecot_passes_mail_to_a_real_dovecot(example, dovecot):  # noqa: F811
    reason = dovecot_mod.available()
    if reason:
        pytest.skip(f"needs a real Dovecot: {reason}")
    dc = dovecot(users=["alice@example.org"])
    ex, port = listening(example, "lmtp-dovecot", dc.socket)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail("a@example.com")[0] == 250
        code, text = c.rcpt("nobody@example.org")
        assert code == 550, (code, text)  # Dovecot's own refusal, at RCPT time
        assert c.rcpt("alice@example.org")[0] == 250
        assert c.data(BODY)[0] == 250
    stored = dc.messages("alice@example.org")
    assert len(stored) == 1
    assert stored[0].endswith(BODY)


def test_server_is_a_whole_server_in_twenty_lines(example):
    """The `server` example: its dispatch logs sizes, its guard takes example.org only, and it
    offers STARTTLS (swaks --tls) with the library's limits on."""
    ex, port = listening(example, "server")
    swaks = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{port}", "--tls", "--from", "a@example.com",
         "--to", "b@example.org", "--body", "twenty lines", "--timeout", "20"],
        capture_output=True, timeout=60,
    )
    out = swaks.stdout.decode(errors="replace")
    assert swaks.returncode == 0, out
    assert "STARTTLS" in out and "TLS started" in out, out
    assert "250 2.0.0 Message accepted" in out, out
    wait_until(lambda: "bytes for 1 recipients" in ex.log, what=f"the size line in {ex.log!r}")
    refused = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{port}", "--tls", "--from", "a@example.com",
         "--to", "b@other.net", "--timeout", "20"],
        capture_output=True, timeout=60,
    )
    assert "550 5.7.1" in refused.stdout.decode(errors="replace"), refused.stdout
    # SIGTERM: a graceful stop.
    ex.proc.send_signal(signal.SIGTERM)
    assert ex.proc.wait(timeout=20) == 0
    assert "stopped" in ex.log

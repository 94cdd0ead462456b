"""The `samotop` binary as a process: --stdio, Unix socket listeners, graceful shutdown on
SIGTERM, the session log line, SAMOTOP_* variables and bad flag values.

Issue 3 (Foundation).
"""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import BIN, Raw, enhanced, free_port, send_one, stdout_messages, wait_path, wait_until


def start(samotop, *args, **kwargs):
    return samotop("--spf", "off", *args, **kwargs)


def run_bin(args, tmp_path, input=None, env=None, timeout=30):
    """Runs samotop to its exit (bounded); returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.setdefault("RUST_LOG", "info")
    full_env.update(env or {})
    return subprocess.run(
        [BIN] + list(args),
        input=input,
        capture_output=True,
        cwd=tmp_path,
        env=full_env,
        timeout=timeout,
    )


def replies(data):
    """(code, enhanced code) of each whole reply in a byte stream of SMTP replies."""
    out = []
    for line in data.split(b"\r\n"):
        if len(line) >= 4 and line[3:4] == b" ":
            text = line[4:].decode("utf-8", "replace")
            out.append((int(line[:3]), enhanced([text])))
        elif len(line) == 3:
            out.append((int(line), None))
    return out


def unix_raw(path, timeout=10.0):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return Raw(None, sock=sock, timeout=timeout)


def session(r, body, sender="a@x.org", rcpt="b@y.org"):
    """A whole well-behaved session over a Raw client; returns the reply to the data."""
    assert r.cmd("EHLO client.test")[0] == 250
    assert r.cmd(f"MAIL FROM:<{sender}>")[0] == 250
    assert r.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(body + b".\r\n")
    code, texts = r.reply()
    assert r.cmd("QUIT")[0] == 221
    return code, texts


# ---- --stdio --------------------------------------------------------------------------------


def test_stdio_session_into_maildir(tmp_path):
    md = tmp_path / "md"
    body = b"Subject: stdio\r\n\r\n..dot\r\n8-bit \xe9\r\n"
    script = (
        b"EHLO client.test\r\n"
        b"MAIL FROM:<a@x.org>\r\n"
        b"RCPT TO:<b@y.org>\r\n"
        b"DATA\r\n" + body + b".\r\n"
        b"QUIT\r\n"
    )
    args = ["--stdio", "--deliver", f"maildir:{md}", "--spf", "off", "--name", "mx.test"]
    run = run_bin(args, tmp_path, input=script)
    assert run.returncode == 0, run.stderr
    assert replies(run.stdout) == [
        (220, None),
        (250, None),
        (250, "2.1.0"),
        (250, "2.1.5"),
        (354, None),
        (250, "2.0.0"),
        (221, "2.0.0"),
    ], run.stdout
    assert run.stdout.startswith(b"220 mx.test ")
    files = list((md / "new").iterdir())
    assert len(files) == 1, files
    stored = files[0].read_bytes()
    assert stored.endswith(b"Subject: stdio\r\n\r\n.dot\r\n8-bit \xe9\r\n"), stored
    assert b"Received: from client.test" in stored
    assert list((md / "tmp").iterdir()) == []
    # Standard output is the SMTP channel: nothing but replies on it.
    assert all(re.match(rb"^[2-5]\d\d[ -]", l) for l in run.stdout.split(b"\r\n") if l), run.stdout


def test_stdio_ends_at_end_of_input(tmp_path):
    """No QUIT: standard input closes, the session ends, the process exits 0, nothing stored."""
    md = tmp_path / "md"
    script = b"EHLO client.test\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\nhalf a mess"
    run = run_bin(["--stdio", "--deliver", f"maildir:{md}", "--spf", "off"], tmp_path, input=script)
    assert run.returncode == 0, run.stderr
    assert [c for c, _ in replies(run.stdout)] == [220, 250, 250, 250, 354]
    assert list((md / "new").iterdir()) == []


def test_stdio_with_stdout_delivery_is_refused(tmp_path):
    run = run_bin(["--stdio", "--deliver", "stdout"], tmp_path, input=b"QUIT\r\n")
    assert run.returncode == 2, (run.returncode, run.stderr)
    err = run.stderr.decode(errors="replace")
    assert "--stdio" in err and "stdout" in err, err
    assert run.stdout == b""


# ---- Unix socket listener -------------------------------------------------------------------


def test_unix_socket_session_and_cleanup(samotop, tmp_path):
    path = tmp_path / "s.sock"
    s = start(samotop, "--smtp", f"unix:{path}", "--deliver", "stdout")
    wait_path(path, s.proc)
    r = unix_raw(path)
    assert r.greeting[0] == 220
    body = b"Subject: unix\r\n\r\nover AF_UNIX\r\n"
    code, texts = session(r, body)
    assert (code, enhanced(texts)) == (250, "2.0.0"), texts
    msgs = stdout_messages(s.stdout)
    assert len(msgs) == 1 and msgs[0]["data"] == body
    assert msgs[0]["received"].startswith(b"Received: from client.test ")
    assert s.stop() == 0
    assert not path.exists()


def test_unix_socket_in_use_is_refused(samotop, tmp_path):
    path = tmp_path / "s.sock"
    first = start(samotop, "--smtp", f"unix:{path}", "--deliver", "null")
    wait_path(path, first.proc)
    wait_until(lambda: unix_raw(path).greeting[0] == 220, what="first server answers")
    second = start(samotop, "--smtp", f"unix:{path}", "--deliver", "null")
    assert second.proc.wait(timeout=30) == 2
    assert str(path) in second.log, second.log
    # The first server still serves on its socket.
    assert first.alive() and path.exists()
    code, texts = session(unix_raw(path), b"still here\r\n")
    assert code == 250, texts


def test_unix_socket_stale_file_is_replaced(samotop, tmp_path):
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert path.exists()
    s = start(samotop, "--smtp", f"unix:{path}", "--deliver", "null")

    def answers():
        try:
            return unix_raw(path, timeout=2).greeting[0] == 220
        except OSError:
            if not s.alive():
                raise AssertionError(f"samotop exited: {s.log}")
            return False

    wait_until(answers, what="server answers on the replaced socket")
    code, texts = session(unix_raw(path), b"hello\r\n")
    assert code == 250, texts
    assert s.stop() == 0
    assert not path.exists()


def test_unix_socket_path_that_is_not_a_socket_is_refused(samotop, tmp_path):
    path = tmp_path / "s.sock"
    path.write_bytes(b"precious")
    s = start(samotop, "--smtp", f"unix:{path}", "--deliver", "null")
    assert s.proc.wait(timeout=30) == 2
    assert str(path) in s.log, s.log
    assert path.read_bytes() == b"precious"


# ---- graceful shutdown ----------------------------------------------------------------------


def refused_after_stop(port, attempts=100):
    """True once a new TCP connection is refused (bounded)."""
    for _ in range(attempts):
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=2)
        except ConnectionRefusedError:
            return True
        # Accepted in the moment the listener closes: it must not get a session going.
        c.settimeout(2)
        try:
            data = c.recv(4096)
        except (socket.timeout, ConnectionResetError):
            data = b""
        finally:
            c.close()
        assert not data.startswith(b"250"), data
        time.sleep(0.05)
    return False


def test_sigterm_lets_data_in_flight_finish(samotop):
    s = start(samotop, "--deliver", "stdout", "--shutdown-grace", "20")
    r = Raw(s.port, timeout=20)
    assert r.cmd("EHLO client.test")[0] == 250
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
    assert r.cmd("RCPT TO:<b@y.org>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    first, second = b"Subject: shutdown\r\n\r\nfirst half\r\n", b"second half\r\n"
    r.send(first)
    s.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "shutting down" in s.log, what="shutdown logged")
    assert refused_after_stop(s.port), "new connections still accepted after SIGTERM"
    assert s.alive()  # the session in flight holds the process
    r.send(second + b".\r\n")
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (250, "2.0.0"), texts
    # Back to commands: the idle session is closed.
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (421, "4.3.2"), texts
    assert r.closed()
    assert s.proc.wait(timeout=25) == 0
    msgs = stdout_messages(s.stdout)
    assert len(msgs) == 1 and msgs[0]["data"] == first + second


def test_sigterm_closes_idle_sessions_with_421(samotop):
    s = start(samotop, "--deliver", "stdout", "--shutdown-grace", "20")
    idle = Raw(s.port, timeout=20)
    assert idle.cmd("EHLO idle.test")[0] == 250
    mid = Raw(s.port, timeout=20)  # inside a transaction, before DATA
    assert mid.cmd("EHLO mid.test")[0] == 250
    assert mid.cmd("MAIL FROM:<a@x.org>")[0] == 250
    assert mid.cmd("RCPT TO:<b@y.org>")[0] == 250
    fresh = Raw(s.port, timeout=20)  # greeted, nothing said
    s.proc.send_signal(signal.SIGTERM)
    for r in (idle, mid, fresh):
        code, texts = r.reply()
        assert (code, enhanced(texts)) == (421, "4.3.2"), texts
        assert r.closed()
    assert s.proc.wait(timeout=25) == 0
    assert s.stdout == b""
    assert "stopped" in s.log


def test_sigint_also_stops(samotop):
    s = start(samotop, "--deliver", "null")
    assert send_one(s.port)[0] == 250
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(timeout=25) == 0


# ---- logging --------------------------------------------------------------------------------


def test_one_log_line_per_session(samotop):
    s = start(samotop, "--deliver", "null")
    code, _ = send_one(s.port, rcpts=("b@y.org", "c@y.org"))
    assert code == 250
    pattern = re.compile(r"session \S.*peer=127\.0\.0\.1 .*end=quit")
    lines = wait_until(lambda: pattern.findall(s.log), what="session log line")
    assert len(lines) == 1, s.log
    line = lines[0]
    assert "helo=client.test" in line and "tls=no" in line, line
    assert "mails=1" in line and "rcpts=2" in line, line
    # Message data never reaches the log.
    assert "Subject" not in s.log


# ---- configuration --------------------------------------------------------------------------


def test_flags_read_from_samotop_env(samotop):
    s = samotop(
        env={
            "SAMOTOP_DELIVER": "null",
            "SAMOTOP_MAX_RECIPIENTS": "1",
            "SAMOTOP_NAME": "env.samotop.test",
            "SAMOTOP_MAX_MESSAGE_SIZE": "5000",
            "SAMOTOP_SPF": "off",
            "SAMOTOP_ACCEPT_BARE_NEWLINES": "true",
        }
    )
    r = Raw(s.port)
    assert r.greeting[1][0].startswith("env.samotop.test "), r.greeting
    texts = r.cmd("EHLO client.test")[1]
    assert "SIZE 5000" in texts, texts
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
    assert r.cmd("RCPT TO:<b@y.org>")[0] == 250
    code, texts = r.cmd("RCPT TO:<c@y.org>")
    assert (code, enhanced(texts)) == (452, "4.5.3"), texts
    assert r.cmd("DATA")[0] == 354
    code, texts = r.cmd("bare\nLF\r\n.")  # accepted: SAMOTOP_ACCEPT_BARE_NEWLINES
    assert (code, enhanced(texts)) == (250, "2.0.0"), texts
    assert r.cmd("QUIT")[0] == 221
    # Delivered to null (not the default maildir): nothing on stdout, and the log says so.
    assert s.stdout == b""
    assert "delivering to Null" in s.log, s.log


@pytest.mark.parametrize(
    "args, word",
    [
        (["--deliver", "mbox:/x"], "mbox:/x"),
        (["--smtp", "nonsense"], "nonsense"),
        (["--smtp", "unix:"], "unix"),
        (["--max-recipients", "many"], "many"),
        (["--maildir-layout", "sideways"], "sideways"),
        (["--spf", "maybe"], "maybe"),
        (["--command-timeout", "nan"], "command-timeout"),
        (["--no-such-flag"], "--no-such-flag"),
    ],
)
def test_bad_flag_values_exit_2(tmp_path, args, word):
    listen = [] if "--smtp" in args else ["--smtp", f"127.0.0.1:{free_port()}"]
    run = run_bin(listen + ["--deliver", "null"] * ("--deliver" not in args) + args, tmp_path)
    err = run.stderr.decode(errors="replace")
    assert run.returncode == 2, (run.returncode, err)
    assert word in err, err
    assert run.stdout == b""


def test_listen_address_in_use_exits_2(samotop, tmp_path):
    s = start(samotop, "--deliver", "null")
    run = run_bin(["--smtp", f"127.0.0.1:{s.port}", "--deliver", "null"], tmp_path)
    err = run.stderr.decode(errors="replace")
    assert run.returncode == 2, err
    assert f"127.0.0.1:{s.port}" in err, err
    assert send_one(s.port)[0] == 250

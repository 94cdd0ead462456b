"""Integration-test harness: starts the real `samotop` binary on loopback and talks to it.

Fixtures:
  samotop   -- factory: samotop("--deliver", "null") -> Server (listening on a free port)
  tmp_path  -- pytest's own temporary directory

Helpers:
  Raw(port)   -- a raw socket client that reads whole SMTP replies, with timeouts
  free_port() -- a free TCP port on 127.0.0.1

DKIM and DMARC (on by default in the binary, `tag`) are off in every Server this harness starts,
through SAMOTOP_DKIM=off and SAMOTOP_DMARC=off: most tests compare stored bytes and have no DNS
server to ask. A flag (`--dkim tag`) or the test's own `env` turns them on again;
`Server(..., binary_defaults=True)` starts with the binary's own defaults.
"""

import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("SAMOTOP_BIN") or str(ROOT / "target" / "debug" / "samotop")
LISTEN_FLAGS = ("--smtp", "--smtps", "--lmtp", "--stdio")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=15.0, host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"samotop exited early with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def wait_path(path, proc=None, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        if os.path.exists(path):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear after {timeout}s")


class Server:
    """A running samotop. `port` is its SMTP port (when it listens on TCP)."""

    def __init__(self, args, tmp, env=None, wait=True, port=None, binary_defaults=False):
        self.tmp = pathlib.Path(tmp)
        self.port = port or free_port()
        args = list(args)
        if not any(a in LISTEN_FLAGS for a in args):
            args = ["--smtp", f"127.0.0.1:{self.port}"] + args
        self.args = args
        self.log_path = self.tmp / f"samotop-{self.port}-{time.monotonic_ns()}.log"
        self.stdout_path = self.log_path.with_suffix(".out")
        full_env = dict(os.environ)
        full_env.setdefault("RUST_LOG", "info")
        if not binary_defaults:
            full_env.setdefault("SAMOTOP_DKIM", "off")
            full_env.setdefault("SAMOTOP_DMARC", "off")
        full_env.update(env or {})
        self._log = open(self.log_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(
            [BIN] + args, stdout=self._out, stderr=self._log, stdin=subprocess.DEVNULL, env=full_env
        )
        if wait and "--smtp" in args and args[args.index("--smtp") + 1].startswith("127.0.0.1:"):
            wait_port(int(args[args.index("--smtp") + 1].rsplit(":", 1)[1]), self.proc)

    @property
    def log(self):
        return self.log_path.read_text(errors="replace")

    @property
    def stdout(self):
        self._out.flush()
        return self.stdout_path.read_bytes()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        self._out.close()
        return self.proc.returncode

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


@pytest.fixture
def samotop(tmp_path):
    servers = []

    def start(*args, **kwargs):
        s = Server(args, tmp_path, **kwargs)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


class Raw:
    """A raw SMTP client: send bytes, read whole replies (multi-line aware)."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0, greet=True, sock=None):
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.greeting = self.reply() if greet else None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        """The next whole reply as (code, [texts])."""
        lines = []
        for _ in range(1000):
            line = self._line()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), [l[4:] for l in lines]
        raise AssertionError("reply longer than 1000 lines")

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=5.0):
        """True when the server closed the connection (EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def send_one(port, sender="a@example.com", rcpts=("b@example.org",), body=b"Subject: t\r\n\r\nhi\r\n"):
    """Sends one message with smtplib; returns the final (code, text)."""
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        code, msg = c.mail(sender)
        assert code == 250, (code, msg)
        for r in rcpts:
            code, msg = c.rcpt(r)
            assert code == 250, (code, msg)
        return c.data(body)


def wait_until(predicate, timeout=15.0, step=0.05, what="condition"):
    """Polls `predicate` (bounded) until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met after {timeout}s")
        time.sleep(step)


def enhanced(texts):
    """The enhanced status code at the start of a Raw reply's first text, e.g. "5.5.2" (or None)."""
    import re

    m = re.match(r"([245]\.\d{1,3}\.\d{1,3})(?: |$)", texts[0] if texts else "")
    return m.group(1) if m else None


def stdout_messages(out):
    """Splits what `--deliver stdout` printed into messages.

    Each message is a frame: an envelope line `MAIL FROM:<s> RCPT TO:<a>,<b> LENGTH=n` CR LF,
    then exactly n octets: the trace header (`Received:` and its folded lines, which start
    with TAB), then the data exactly as received. Returns a list of dicts: sender, rcpts
    (list), received (bytes, the whole field), data (bytes). Fields a guard adds after
    Received (Received-SPF) are part of `data`: start the server with `--spf off` to compare
    data exactly. A frame cut short (the server killed while printing) is not returned.
    """
    import re

    line = re.compile(rb"MAIL FROM:<([^\r\n>]*)> RCPT TO:([^\r\n]*) LENGTH=(\d+)\r\n")
    received = re.compile(rb"Received: [^\r\n]*\r\n(?:\t[^\r\n]*\r\n)*")
    messages = []
    pos = 0
    for _ in range(1_000_000):
        m = line.match(out, pos)
        if not m:
            break
        start = m.end()
        end = start + int(m.group(3))
        if end > len(out):
            break
        frame = out[start:end]
        r = received.match(frame)
        rcpts = [x.strip(b"<>").decode("utf-8", "replace") for x in m.group(2).split(b",") if x]
        messages.append(
            {
                "sender": m.group(1).decode("utf-8", "replace"),
                "rcpts": rcpts,
                "received": r.group(0) if r else b"",
                "data": frame[r.end():] if r else frame,
            }
        )
        pos = end
    return messages

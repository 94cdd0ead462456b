"""Hostile clients against the real binary (issue 10).

Port 25 of the open internet talks to anyone: scanners, fuzzers, HTTP and TLS clients on the
wrong port, smugglers, slowloris, clients that never read, clients that lie about sizes, and
header injectors. Every test checks the server's reply (or its close), then that a well-behaved
client on a fresh connection still gets 250 (`still_serving`).

Loads are bounded and modest (the CI machine has two cores): every loop has a count or a
deadline, and the RSS bounds are generous; the numbers are printed (`pytest -s`).
"""

import errno
import pathlib
import random
import re
import resource
import selectors
import socket
import ssl
import threading
import time

import pytest

from conftest import Raw, enhanced, send_one, wait_until

BODY = b"Subject: t\r\n\r\nhi\r\n"


class Client(Raw):
    """A Raw client whose `cmd` also takes bytes (hostile lines are not always UTF-8)."""

    def cmd(self, line):
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()


def start(samotop, *args, **kwargs):
    """A server with SPF off (no DNS look-ups from loopback)."""
    return samotop("--spf", "off", *args, **kwargs)


def still_serving(server):
    """A fresh, well-behaved client gets 250 for its message; the process is still there."""
    code, text = send_one(server.port)
    assert code == 250, text
    assert server.alive()


def files(maildir, sub="new"):
    d = pathlib.Path(maildir) / sub
    return sorted(d.iterdir()) if d.is_dir() else []


def ehlo(r, name="client.test"):
    code, texts = r.cmd(f"EHLO {name}")
    assert code == 250, texts


def open_transaction(r, rcpts=("b@y.org",)):
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
    for rcpt in rcpts:
        assert r.cmd(f"RCPT TO:<{rcpt}>")[0] == 250


REPLY_LINE = re.compile(rb"\A[2-5]\d\d(?:[ -][^\r\n]*)?\Z")


def reply_lines(data):
    """The complete reply lines in `data`; each must look like an SMTP reply."""
    lines = data.split(b"\r\n")[:-1]
    bad = [l for l in lines if not REPLY_LINE.match(l)]
    assert bad == [], f"not SMTP reply lines: {bad[:5]!r}"
    return lines


class Reader(threading.Thread):
    """Reads everything the server sends on `sock` until EOF, a reset or `timeout` seconds of
    silence; `data` holds it, `eof` tells whether the server closed."""

    def __init__(self, sock, timeout=10.0):
        super().__init__(daemon=True)
        self.sock = sock
        self.timeout = timeout
        self.data = b""
        self.eof = False

    def run(self):
        self.sock.settimeout(self.timeout)
        for _ in range(1_000_000):  # bounded: each round reads at least a byte or ends
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                self.eof = True
                return
            except (socket.timeout, OSError):
                return
            if not chunk:
                self.eof = True
                return
            self.data += chunk


def blast(port, data, piece=1024, greet=True, prefix=b""):
    """Connects, optionally reads the greeting, sends `prefix` + `data` in pieces while another
    thread reads, then half-closes. Returns (bytes received after the greeting, server closed).
    A reset while sending is the server closing on us: fine. So is ENOTCONN from the half-close:
    once the server's reset has arrived, the socket is no longer connected."""
    r = Client(port, greet=greet, timeout=10)
    reader = Reader(r.sock)
    reader.start()
    payload = prefix + data
    try:
        for i in range(0, len(payload), piece):
            r.sock.sendall(payload[i : i + piece])
        r.sock.shutdown(socket.SHUT_WR)
    except (ConnectionResetError, BrokenPipeError):
        pass
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise
    reader.join(timeout=30)
    assert not reader.is_alive()
    r.close()
    return r.buf + reader.data, reader.eof


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    """Samples a process's RSS every `step` seconds until stopped; keeps the peak."""

    def __init__(self, pid, step=0.1):
        super().__init__(daemon=True)
        self.pid = pid
        self.step = step
        self.peak = rss_kib(pid)
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(self.step):
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return

    def stop(self):
        self.stopped.set()
        self.join(timeout=5)
        return self.peak


# ---- garbage on the wire --------------------------------------------------------------------


def test_random_bytes_get_smtp_replies_or_a_close(samotop):
    s = start(samotop, "--deliver", "null")
    rng = random.Random(10)
    closed = 0
    for seed in range(12):
        size = rng.choice([17, 600, 5000, 64 * 1024])
        data = random.Random(seed).randbytes(size)
        prefix = b"EHLO fuzz.test\r\n" if seed % 3 == 1 else b""
        if seed % 3 == 2:
            data = data.replace(b"\n", b"x")  # one endless line: the line bound
        got, eof = blast(s.port, data, prefix=prefix)
        lines = reply_lines(got)
        closed += eof
        # Whatever the garbage, the answers are 5xx or the 421 of the error budget, except the
        # 250 of our own EHLO.
        assert all(l[:1] in (b"5", b"4") or l.startswith(b"250") for l in lines), lines[:5]
    # Every connection ended (half-close = EOF, or the server gave up on the peer first).
    assert closed == 12
    still_serving(s)


NUL_LINES = [
    b"\x00",
    b"\x00\x00\x00\x00",
    b"EHLO a\x00b",
    b"HELO \x00",
    b"NOOP\x00",
    b"MAIL FROM:<a\x00@b.org>",
    b"MAIL FROM:<a@b.org>\x00SIZE=10",
    b"RCPT TO:<\x00>",
    b"\x00EHLO client.test",
    b"QUIT\x00",
]

BAD_UTF8_LINES = [
    b"\xff\xfe\xfd",
    b"EHLO \xff",
    b"EHLO caf\xe9.test",
    b"HELO \xc3\x28",
    b"NOOP \xed\xa0\x80",  # a UTF-16 surrogate, encoded
    b"MAIL FROM:<\xff@b.org>",
    b"MAIL FROM:<\xc3\x28@b.org> SMTPUTF8",
    b"MAIL FROM:<\xf0\x28\x8c\xbc@b.org> SMTPUTF8",
    b"MAIL FROM:<a@b.org> \xff=1",
    b"\xef\xbb\xbfEHLO client.test",  # a byte order mark
    b"MAIL\xa0FROM:<a@b.org>",
]


@pytest.mark.parametrize("lines", [NUL_LINES, BAD_UTF8_LINES], ids=["nul", "invalid-utf8"])
def test_nul_and_invalid_utf8_in_commands_are_refused_one_by_one(samotop, lines):
    s = start(samotop, "--deliver", "null", "--max-errors", "100")
    r = Client(s.port)
    ehlo(r)
    for line in lines:
        code, texts = r.cmd(line)
        assert code in (500, 501, 553, 555), (line, code, texts)
        assert enhanced(texts) in ("5.5.2", "5.5.4", "5.1.7", "5.1.3", "5.6.7", "5.5.1"), (line, texts)
        # The session goes on, in step: the next reply answers the next command.
        assert r.cmd("NOOP") == (250, ["2.0.0 OK"]), line
    # Still a working session: a transaction goes through.
    open_transaction(r)
    assert r.cmd("DATA")[0] == 354
    assert r.cmd("Subject: t\r\n\r\nafter the garbage\r\n.")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    r.close()
    still_serving(s)


def test_nul_and_invalid_utf8_pipelined_in_one_write(samotop):
    s = start(samotop, "--deliver", "null", "--max-errors", "100")
    lines = NUL_LINES + BAD_UTF8_LINES
    got, eof = blast(s.port, b"".join(l + b"\r\nNOOP\r\n" for l in lines) + b"QUIT\r\n")
    replies = reply_lines(got)
    assert len(replies) == 2 * len(lines) + 1, replies
    assert replies[1::2][: len(lines)] == [b"250 2.0.0 OK"] * len(lines)
    assert all(r[:1] == b"5" for r in replies[0:-1:2]), replies
    assert replies[-1].startswith(b"221")
    assert eof
    still_serving(s)


def client_hello():
    """The first flight of a real TLS client (Python's ssl), as bytes."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="mx.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16", hello[:8]
    return hello


@pytest.mark.parametrize("greet", [True, False], ids=["after-greeting", "before-greeting"])
def test_tls_client_hello_on_the_plaintext_port_is_closed(samotop, greet):
    s = start(samotop, "--deliver", "null")
    r = Client(s.port, greet=greet)
    r.send(client_hello())
    assert r.closed(timeout=5), "the server kept a TLS client waiting"
    # At most one reply, and if any it is the 500 of non-SMTP talk (plus the greeting when we
    # did not wait for it).
    lines = reply_lines(r.buf)
    lines = [l for l in lines if not l.startswith(b"220")]
    assert lines in ([], [b"500 5.5.2 This is an SMTP server, closing connection"]), lines
    r.close()
    # And the real TLS client library gives up cleanly instead of hanging.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        with pytest.raises((ssl.SSLError, OSError)):
            ctx.wrap_socket(sock, server_hostname="mx.test")
    still_serving(s)


@pytest.mark.parametrize(
    "request_",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"POST /login HTTP/1.0\r\nContent-Length: 4\r\n\r\nuser",
        b"CONNECT mx.example.org:25 HTTP/1.1\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["GET", "POST", "CONNECT", "OPTIONS"],
)
def test_http_request_gets_500_and_close(samotop, request_):
    s = start(samotop, "--deliver", "null")
    r = Client(s.port)
    r.send(request_)
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (500, "5.5.2"), texts
    assert r.closed(timeout=5)
    assert r.buf == b"", r.buf  # one reply, not one per header line
    r.close()
    still_serving(s)


def test_ten_megabyte_line_without_crlf_gets_500_and_memory_stays_bounded(samotop):
    s = start(samotop, "--deliver", "null")
    sampler = RssSampler(s.proc.pid)
    sampler.start()
    r = Client(s.port, timeout=60)
    ehlo(r)
    before = rss_kib(s.proc.pid)
    block = b"A" * (1024 * 1024)
    for _ in range(10):  # 10 MB, no CR LF
        r.send(block)
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (500, "5.5.2"), texts
    # The rest of the line is skipped without more replies; then commands work again.
    r.send(b"\r\n")
    assert r.cmd("NOOP") == (250, ["2.0.0 OK"])
    open_transaction(r)
    assert r.cmd("QUIT")[0] == 221
    r.close()
    peak = sampler.stop()
    print(f"\n10 MB line: server RSS {before} KiB before, peak {peak} KiB")
    assert peak - before < 8 * 1024, f"a 10 MB line grew the server by {peak - before} KiB"
    still_serving(s)


def test_100000_pipelined_noops_are_answered_in_order(samotop):
    n = 100_000
    s = start(samotop, "--deliver", "null")
    sampler = RssSampler(s.proc.pid)
    sampler.start()
    r = Client(s.port, timeout=60)
    ehlo(r)
    start_rss = rss_kib(s.proc.pid)
    reader = Reader(r.sock, timeout=60)
    reader.start()  # replies are read while we write: neither side's buffer fills up
    batch = b"NOOP\r\n" * 1000
    t0 = time.monotonic()
    for _ in range(n // 1000):
        r.sock.sendall(batch)
    r.sock.sendall(b"QUIT\r\n")
    reader.join(timeout=120)
    assert not reader.is_alive()
    elapsed = time.monotonic() - t0
    peak = sampler.stop()
    lines = (r.buf + reader.data).split(b"\r\n")
    assert lines[-1] == b"", lines[-3:]
    assert lines[:n] == [b"250 2.0.0 OK"] * n, [i for i, l in enumerate(lines) if l != b"250 2.0.0 OK"][:3]
    assert lines[n].startswith(b"221 "), lines[n]
    assert len(lines) == n + 2
    assert reader.eof
    print(f"\n{n} pipelined NOOPs answered in {elapsed:.1f}s; server RSS {start_rss} KiB, peak {peak} KiB")
    assert peak < 128 * 1024, f"server RSS peaked at {peak} KiB"
    still_serving(s)


# ---- SMTP smuggling -------------------------------------------------------------------------

# Every wrong end of data (RFC 5321 2.3.8: lines end in CR LF only).
FAKE_ENDS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "CRLF.LF": b"\r\n.\n",
}
PREFIX = b"From: <a@x.org>\r\nSubject: smuggle\r\n\r\nhello"
SMUGGLED = b"MAIL FROM:<evil@x.org>\r\nRCPT TO:<victim@y.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n"
INNOCENT = b"tail\r\n"


def smuggle_payload(fake_end, smuggle):
    """The data after DATA: a fake end, maybe a whole second transaction, the real end."""
    return PREFIX + fake_end + (SMUGGLED if smuggle else INNOCENT) + b".\r\n"


def split_plans(payload, fake_end):
    """Ways to cut the payload into TCP segments: at every offset around the fake end (one cut
    each), every byte of that region alone, and cuts inside the real end."""
    n, k = len(PREFIX), len(fake_end)
    region = range(n - 1, n + k + 2)
    plans = [[o] for o in region]
    plans.append(list(region))
    plans += [[len(payload) - d] for d in (5, 4, 3, 2, 1)]
    plans.append([])  # one write
    return plans


def send_segments(r, payload, offsets):
    cuts = [0] + sorted(set(o for o in offsets if 0 < o < len(payload))) + [len(payload)]
    for a, b in zip(cuts, cuts[1:]):
        r.sock.sendall(payload[a:b])
        time.sleep(0.005)


@pytest.mark.parametrize("accept_bare", [False, True], ids=["default", "accept-bare-newlines"])
@pytest.mark.parametrize("fake_end", list(FAKE_ENDS.values()), ids=list(FAKE_ENDS))
def test_smuggling_never_makes_two_messages(samotop, tmp_path, fake_end, accept_bare):
    md = tmp_path / "Maildir"
    extra = ["--accept-bare-newlines"] if accept_bare else []
    s = start(samotop, "--deliver", f"maildir:{md}", *extra)
    attempts = 0
    for smuggle in (True, False):
        payload = smuggle_payload(fake_end, smuggle)
        r = Client(s.port)
        r.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ehlo(r)
        for offsets in split_plans(payload, fake_end):
            open_transaction(r)
            assert r.cmd("DATA")[0] == 354
            send_segments(r, payload, offsets)
            code, texts = r.reply()
            attempts += 1
            if accept_bare:
                assert (code, enhanced(texts)) == (250, "2.0.0"), (offsets, texts)
            else:
                assert (code, enhanced(texts)) == (550, "5.6.0"), (offsets, texts)
            # In step: nothing smuggled was executed, the next reply answers our NOOP.
            assert r.cmd("NOOP") == (250, ["2.0.0 OK"]), (smuggle, offsets)
        assert r.cmd("QUIT")[0] == 221
        r.close()
    stored = files(md)
    if accept_bare:
        # Exactly one message per attempt, each holding the would-be commands as content.
        assert len(stored) == attempts, (len(stored), attempts)
        with_smuggled = 0
        for p in stored:
            data = p.read_bytes()
            assert data.startswith(b"Return-Path: <a@x.org>\r\n"), data[:80]
            assert data.count(b"Return-Path:") == 1
            assert b"hello" in data and data.endswith(b"\r\n")
            with_smuggled += b"RCPT TO:<victim@y.org>" in data and b"smuggled body" in data
        assert with_smuggled == attempts // 2
    else:
        assert stored == [], [p.read_bytes()[:200] for p in stored]
    assert files(md, "tmp") == []
    still_serving(s)
    assert len(files(md)) == (attempts if accept_bare else 0) + 1
    assert all(b"evil@x.org>\r\n" not in p.read_bytes()[:40] for p in files(md))


# ---- slowloris ------------------------------------------------------------------------------


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, soft), max(need, hard)))
    except (ValueError, OSError):
        if hard < need:
            pytest.skip(f"needs {need} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def test_slowloris_2000_connections_do_not_starve_a_normal_client(samotop, tmp_path):
    """2000 clients trickle `NOOP\\r\\n` a byte every 2.5 s: a command must arrive whole
    within the command timeout (10 s here), so they are dropped with 421 4.4.2, while a
    normal client's 50 messages all get 250 and memory stays bounded."""
    conns, interval, duration = 2000, 2.5, 18.0
    raise_nofile(2 * conns + 1000)  # inherited by the server started next
    md = tmp_path / "Maildir"
    s = start(samotop, "--deliver", f"maildir:{md}", "--max-connections", "3000", "--command-timeout", "10")
    base = rss_kib(s.proc.pid)
    sel = selectors.DefaultSelector()
    socks = []
    next_at = []  # when each connection sends its next byte
    try:
        t_connect = time.monotonic()
        for i in range(conns):  # bounded
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            # Wait for the greeting before the next connect: the listen queue is short, and
            # overflowing it costs SYN retransmissions (seconds), not what we test here.
            greeting = sock.recv(512)
            assert greeting.startswith(b"220 "), (i, greeting)
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, i)
            socks.append(sock)
            next_at.append(time.monotonic())  # the first byte at once, then every interval
        t_connect = time.monotonic() - t_connect
        connected_rss = rss_kib(s.proc.pid)
        received = [b""] * conns

        results = []

        def normal_client():
            for i in range(50):
                try:
                    results.append(send_one(s.port, body=f"Subject: normal {i}\r\n\r\nhi\r\n".encode())[0])
                except Exception as e:  # noqa: BLE001 - recorded, asserted below
                    results.append(repr(e))
                time.sleep(0.1)

        sender = threading.Thread(target=normal_client, daemon=True)
        trickle = b"NOOP\r\n"
        sent = [0] * conns
        t0 = time.monotonic()
        sender.start()
        sampler = RssSampler(s.proc.pid, step=0.25)
        sampler.start()
        # Each connection sends one byte every `interval` seconds, counted from its connect;
        # the loop also drains what the server says. Bounded by `duration`.
        for _ in range(100_000):
            now = time.monotonic()
            if now - t0 >= duration:
                break
            for i, sock in enumerate(socks):
                if now >= next_at[i]:
                    k = sent[i] % len(trickle)
                    try:
                        sock.send(trickle[k : k + 1])
                    except OSError:
                        pass
                    sent[i] += 1
                    next_at[i] = now + interval
            for key, _ in sel.select(timeout=0.05):
                try:
                    data = key.fileobj.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                received[key.data] += data
        sender.join(timeout=120)
        assert not sender.is_alive()
        peak = sampler.stop()
        end_rss = rss_kib(s.proc.pid)
        answered = sum(1 for i in range(conns) if received[i].startswith(b"250 2.0.0 OK\r\n"))
        closed_early = sum(1 for i in range(conns) if b"421" in received[i])
        print(
            f"\nslowloris: {conns} connections in {t_connect:.1f}s, {sum(sent)} bytes trickled, {answered} NOOPs answered, "
            f"{closed_early} closed by the server; normal client: {results.count(250)}/50 got 250; "
            f"server RSS {base} KiB idle, {connected_rss} KiB connected, peak {peak} KiB, {end_rss} KiB at the end"
        )
        assert results == [250] * 50, results
        assert answered == 0  # 6 bytes at one per 2.5 s never make a command in 10 s
        assert closed_early > conns // 2  # dropped with 421 at their deadline
        assert peak < 512 * 1024, f"server RSS peaked at {peak} KiB"
        assert len(files(md)) == 50
    finally:
        for sock in socks:
            sock.close()
        sel.close()
    still_serving(s)


# ---- a peer that never reads ----------------------------------------------------------------


def stuff_until_blocked(sock, limit=50 * 1024 * 1024, stall=2.0):
    """Writes pipelined NOOPs without reading any reply, until a write stalls for `stall`
    seconds (both socket buffers full) or `limit` bytes were written. Returns bytes written."""
    sock.settimeout(stall)
    chunk = b"NOOP\r\n" * 10_000
    sent = 0
    try:
        while sent < limit:
            sent += sock.send(chunk)
    except socket.timeout:
        pass
    return sent


def test_a_client_that_stops_reading_does_not_block_others(samotop):
    s = start(samotop, "--deliver", "null")
    stuck = Client(s.port)
    ehlo(stuck, "stuck.test")
    sent = stuff_until_blocked(stuck.sock)
    rss = rss_kib(s.proc.pid)
    print(f"\nnon-reading client: {sent} bytes of NOOPs written before the stall; server RSS {rss} KiB")
    assert sent < 50 * 1024 * 1024, "the server buffered 50 MB of replies for a client that reads nothing"
    for _ in range(3):
        still_serving(s)
    assert rss < 64 * 1024
    stuck.close()
    still_serving(s)


def test_a_client_that_stops_reading_is_dropped_after_the_command_timeout(samotop):
    # Regression: the driver waited forever to write replies to a peer that does not read,
    # holding its connection slot beyond every timeout.
    s = start(samotop, "--deliver", "null", "--command-timeout", "2", "--max-connections", "3")
    stuck = Client(s.port)
    ehlo(stuck, "stuck.test")
    stuff_until_blocked(stuck.sock)
    wait_until(lambda: "helo=stuck.test" in s.log, timeout=30, what="the stuck session ends")
    assert re.search(r"helo=stuck\.test .*end=(timeout|failed)", s.log), s.log
    stuck.close()
    still_serving(s)


# ---- clients that vanish, sessions that never end -------------------------------------------


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("command", ["DATA", "BDAT"])
def test_a_client_that_vanishes_mid_message_leaves_nothing(samotop, tmp_path, how, command):
    md = tmp_path / "Maildir"
    s = start(samotop, "--deliver", f"maildir:{md}")
    r = Client(s.port)
    ehlo(r)
    open_transaction(r)
    if command == "DATA":
        assert r.cmd("DATA")[0] == 354
        r.send(b"Subject: cut\r\n\r\n" + b"x" * 70 + b"\r\n" * 3000)  # no end of data
    else:
        r.send(b"BDAT 1000000 LAST\r\n" + b"y" * 300_000)
    time.sleep(0.3)
    if how == "reset":
        r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    r.close()
    wait_until(lambda: "helo=client.test" in s.log, what="the session ends")
    wait_until(lambda: files(md, "tmp") == [], what="the partial copy is removed")
    assert files(md) == []
    still_serving(s)
    assert len(files(md)) == 1


def test_one_session_cannot_run_transactions_forever(samotop):
    s = start(samotop, "--deliver", "null")
    r = Client(s.port, timeout=30)
    ehlo(r)
    reader = Reader(r.sock, timeout=30)
    reader.start()
    r.sock.sendall(b"MAIL FROM:<a@x.org>\r\nRSET\r\n" * 1001 + b"QUIT\r\n")
    reader.join(timeout=60)
    lines = reader.data.split(b"\r\n")
    assert lines[0:2000:2] == [b"250 2.1.0 Sender OK"] * 1000
    assert lines[2000].startswith(b"421 4.7.0"), lines[2000]  # the 1001st transaction
    assert lines[2001:] == [b""], lines[2001:]  # and the connection is closed
    still_serving(s)


# ---- BDAT that lies -------------------------------------------------------------------------


@pytest.mark.parametrize("last", ["", " LAST"], ids=["more", "last"])
def test_bdat_announcing_more_than_it_sends_then_closing(samotop, tmp_path, last):
    md = tmp_path / "Maildir"
    s = start(samotop, "--deliver", f"maildir:{md}")
    r = Client(s.port)
    ehlo(r)
    open_transaction(r)
    r.send(f"BDAT 100{last}\r\n".encode() + b"0123456789")
    time.sleep(0.2)
    r.close()
    wait_until(lambda: "helo=client.test" in s.log, what="the session ends")
    assert "end=eof" in s.log
    assert files(md) == []
    wait_until(lambda: files(md, "tmp") == [], what="tmp/ is cleaned")
    still_serving(s)
    assert len(files(md)) == 1


@pytest.mark.parametrize("last", [True, False], ids=["last", "more"])
def test_bdat_sending_more_than_announced_the_rest_is_commands(samotop, tmp_path, last):
    md = tmp_path / "Maildir"
    s = start(samotop, "--deliver", f"maildir:{md}")
    r = Client(s.port)
    ehlo(r)
    open_transaction(r)
    # 20 bytes after BDAT 10: the last 10 are two command lines.
    r.send(b"BDAT 10" + (b" LAST" if last else b"") + b"\r\n0123456789NOOP\r\nAB\r\n")
    code, texts = r.reply()
    assert code == 250, texts
    assert enhanced(texts) == "2.0.0"
    assert r.reply() == (250, ["2.0.0 OK"])  # NOOP
    code, texts = r.reply()  # AB
    assert (code, enhanced(texts)) == (500, "5.5.2"), texts
    if not last:
        code, texts = r.cmd("BDAT 0 LAST")
        assert code == 250, texts
    assert r.cmd("QUIT")[0] == 221
    stored = files(md)
    assert len(stored) == 1
    assert stored[0].read_bytes().endswith(b"\r\n0123456789")
    still_serving(s)


def test_bdat_zero_last(samotop, tmp_path):
    md = tmp_path / "Maildir"
    s = start(samotop, "--deliver", f"maildir:{md}", "--max-errors", "50")
    r = Client(s.port)
    ehlo(r)
    # Without a transaction: refused, the session goes on.
    code, texts = r.cmd("BDAT 0 LAST")
    assert code == 503, texts
    assert r.cmd("NOOP")[0] == 250
    # An empty message: stored (trace fields only) or refused, never a hang or a crash.
    open_transaction(r)
    code, texts = r.cmd("BDAT 0 LAST")
    assert code in (250, 554), texts
    # Empty chunks, then the last one.
    open_transaction(r)
    assert r.cmd("BDAT 0")[0] == 250
    assert r.cmd("BDAT 0")[0] == 250
    r.send(b"BDAT 3 LAST\r\nabc")
    code, texts = r.reply()
    assert code == 250, texts
    assert r.cmd("NOOP")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    assert any(p.read_bytes().endswith(b"\r\nabc") for p in files(md))
    still_serving(s)


def test_bdat_mixed_with_data(samotop, tmp_path):
    md = tmp_path / "Maildir"
    s = start(samotop, "--deliver", f"maildir:{md}", "--max-errors", "50")
    r = Client(s.port)
    ehlo(r)
    open_transaction(r)
    r.send(b"BDAT 5\r\nhello")
    assert r.reply()[0] == 250
    code, texts = r.cmd("DATA")
    assert (code, enhanced(texts)) == (503, "5.5.1"), texts
    code, texts = r.cmd("RCPT TO:<c@y.org>")
    assert code == 503, texts
    # The transaction survives the refused commands and ends with BDAT LAST.
    r.send(b"BDAT 6 LAST\r\n world")
    code, texts = r.reply()
    assert code == 250, texts
    # DATA first: "BDAT" inside DATA is content.
    open_transaction(r)
    assert r.cmd("DATA")[0] == 354
    code, texts = r.cmd("BDAT 5 LAST\r\nhello\r\n.")
    assert code == 250, texts
    assert r.cmd("NOOP")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    assert len(files(md)) == 2
    stored = b"".join(p.read_bytes() for p in files(md))
    assert stored.count(b"hello world") == 1
    assert stored.count(b"BDAT 5 LAST\r\nhello\r\n") == 1
    still_serving(s)


@pytest.mark.parametrize(
    "size", ["99999999999999999999", "18446744073709551616", "18446744073709551615", "-1", "1e9", ""]
)
def test_absurd_mail_size_is_refused_not_a_crash(samotop, size):
    s = start(samotop, "--deliver", "null")
    r = Client(s.port)
    ehlo(r)
    code, texts = r.cmd(f"MAIL FROM:<a@b.org> SIZE={size}")
    assert code in (501, 552, 555), texts
    # The session goes on: the same sender without the parameter is fine.
    assert r.cmd("MAIL FROM:<a@b.org>")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    still_serving(s)


@pytest.mark.parametrize("size", ["99999999999999999999999", "18446744073709551615", "-5", "1 LAST LAST"])
def test_absurd_bdat_size_is_refused_not_a_crash(samotop, size):
    s = start(samotop, "--deliver", "null")
    r = Client(s.port)
    ehlo(r)
    open_transaction(r)
    if size == "18446744073709551615":
        # A valid number, far over the size limit: the chunk is read and thrown away (RFC 3030
        # leaves no other way to find the next command). We send a little of it and leave.
        r.send(f"BDAT {size} LAST\r\n".encode() + b"x" * 100_000)
        time.sleep(0.2)
        r.close()
    else:
        code, texts = r.cmd(f"BDAT {size}")
        assert code in (500, 501, 552), texts
        assert r.cmd("NOOP")[0] == 250
        r.close()
    still_serving(s)


def test_bdat_over_the_size_limit_is_552_and_the_session_goes_on(samotop, tmp_path):
    md = tmp_path / "Maildir"
    s = start(samotop, "--deliver", f"maildir:{md}", "--max-message-size", "100000")
    r = Client(s.port, timeout=30)
    ehlo(r)
    open_transaction(r)
    r.send(b"BDAT 200000 LAST\r\n" + b"x" * 200_000)
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (552, "5.3.4"), texts
    assert r.cmd("NOOP")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    assert files(md) == [] and files(md, "tmp") == []
    still_serving(s)


@pytest.mark.parametrize("limit", [None, 1000], ids=["default-100", "limit-1000"])
def test_1001_recipients(samotop, tmp_path, limit):
    md = tmp_path / "Maildir"
    extra = ["--max-recipients", str(limit)] if limit else []
    s = start(samotop, "--deliver", f"maildir:{md}", *extra)
    allowed = limit or 100
    r = Client(s.port, timeout=60)
    ehlo(r)
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
    reader = Reader(r.sock, timeout=30)
    reader.start()
    r.sock.sendall(b"".join(f"RCPT TO:<r{i}@y.org>\r\n".encode() for i in range(1001)) + b"NOOP\r\n")
    wait_until(lambda: reader.data.count(b"\r\n") >= 1002, timeout=60, what="1002 replies")
    lines = reader.data.split(b"\r\n")[:1002]
    assert lines[:allowed] == [b"250 2.1.5 Recipient OK"] * allowed
    assert lines[allowed:1001] == [b"452 4.5.3 Too many recipients"] * (1001 - allowed)
    assert lines[1001] == b"250 2.0.0 OK"
    r.sock.sendall(b"DATA\r\nSubject: many\r\n\r\nto many\r\n.\r\nQUIT\r\n")
    reader.join(timeout=30)
    tail = reader.data.split(b"\r\n")[1002:]
    assert tail[0].startswith(b"354"), tail
    assert tail[1].startswith(b"250 2.0.0"), tail
    assert tail[2].startswith(b"221"), tail
    stored = files(md)
    assert len(stored) == 1
    data = stored[0].read_bytes()
    assert b"\tfor <" not in data  # many recipients: none of them is written into the message
    assert b"r5@y.org" not in data
    still_serving(s)


# ---- header injection -----------------------------------------------------------------------

HEADER_NAME = re.compile(rb"\A[!-9;-~]+:")


def header_block(data):
    head, sep, _ = data.partition(b"\r\n\r\n")
    assert sep, data[:200]
    return head + b"\r\n"


def assert_well_formed_header(data):
    """Every header line ends in CR LF (no bare CR or LF), is a field or a folded continuation,
    and the trace fields we wrote are whole."""
    head = header_block(data)
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", head) is None, head
    lines = head.split(b"\r\n")[:-1]
    for line in lines:
        assert HEADER_NAME.match(line) or line[:1] in (b" ", b"\t"), (line, head)
    assert lines[0].startswith(b"Return-Path: <") and lines[0].endswith(b">"), lines[0]
    assert lines[1].startswith(b"Received: from "), lines[1]
    # The Received field: its first line, then folded lines; the last is the date, after ";".
    received = [lines[1]]
    for line in lines[2:]:
        if line[:1] not in (b" ", b"\t"):
            break
        received.append(line)
    assert received[-2].endswith(b";"), received
    assert re.match(rb"\t\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}\Z", received[-1]), received
    for line in lines:
        assert not line.lower().startswith(b"x-injected"), head


INJECTED_HELOS = [
    b"EHLO a\rX-Injected: helo",
    b"HELO a\rX-Injected: helo",
    b"EHLO a\r\rX-Injected: helo",
    b"EHLO [127.0.0.1]\rX-Injected: helo",
    b"EHLO a\x0bX-Injected",
    b"EHLO a\x0cX-Injected",
    b"EHLO a\x00X-Injected",
    b"EHLO a\x85X-Injected",
    b"EHLO a\xc2\x85X-Injected",
    b"EHLO a b\rX-Injected: helo",
]
INJECTED_SENDERS = [
    b"MAIL FROM:<a\rX-Injected: mail@b.org>",
    b"MAIL FROM:<a@b.org\rX-Injected: mail>",
    b"MAIL FROM:<\"a\rX-Injected: mail\"@b.org>",
    b"MAIL FROM:<\"a\\\rX-Injected: mail\"@b.org>",
    b"MAIL FROM:<a@b.org> SIZE=1\rX-Injected: mail",
    b"MAIL FROM:<a\xc2\x85X-Injected@b.org> SMTPUTF8",
    b"MAIL FROM:<a@[1.2.3.4\r]>",
]
INJECTED_RCPTS = [
    b"RCPT TO:<b\rX-Injected: rcpt@y.org>",
    b"RCPT TO:<b@y.org\rX-Injected: rcpt>",
    b"RCPT TO:<\"b\rX-Injected: rcpt\"@y.org>",
    b"RCPT TO:<b@y.org> NOTIFY=NEVER\rX-Injected",
    b"RCPT TO:<\"b\\\x00\"@y.org>",
]


def test_cr_and_lf_in_helo_and_addresses_never_reach_the_received_header(samotop, tmp_path):
    md = tmp_path / "Maildir"
    s = start(samotop, "--deliver", f"maildir:{md}", "--max-errors", "100")
    r = Client(s.port)
    for line in INJECTED_HELOS:
        code, texts = r.cmd(line)
        assert code == 501, (line, code, texts)
    ehlo(r)
    for line in INJECTED_SENDERS:
        code, texts = r.cmd(line)
        assert code in (501, 553, 555), (line, code, texts)
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
    for line in INJECTED_RCPTS:
        code, texts = r.cmd(line)
        assert code in (501, 553, 555), (line, code, texts)
    assert r.cmd("NOOP") == (250, ["2.0.0 OK"])  # still in step
    assert r.cmd("RCPT TO:<b@y.org>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    assert r.cmd("Subject: clean\r\n\r\nbody\r\n.")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    r.close()
    stored = files(md)
    assert len(stored) == 1
    assert_well_formed_header(stored[0].read_bytes())


def test_unusual_but_valid_names_are_stored_in_a_well_formed_header(samotop, tmp_path):
    """What the grammar accepts (quoted local parts, address literals, UTF-8 with SMTPUTF8,
    U+2028 which is no line break in a mail header) lands in one-line trace fields."""
    md = tmp_path / "Maildir"
    s = start(samotop, "--deliver", f"maildir:{md}")
    cases = [
        (b"EHLO [127.0.0.1]", b"MAIL FROM:<\"x: y\"@b.org>", b"RCPT TO:<\"Received: z\"@y.org>"),
        (b"EHLO [IPv6:::1]", b"MAIL FROM:<a@[192.0.2.1]>", b"RCPT TO:<b@y.org>"),
        ("EHLO xn--caf-dma.test".encode(), "MAIL FROM:<é\u2028x@b.org> SMTPUTF8".encode(), "RCPT TO:<ü@y.org>".encode()),
        (b"HELO " + b"a" * 250 + b".test", b"MAIL FROM:<>", b"RCPT TO:<postmaster>"),
        (b"EHLO \"quoted\"", b"MAIL FROM:<a@b.org>", b"RCPT TO:<b@y.org>"),
    ]
    accepted = 0
    for helo, mail, rcpt in cases:
        r = Client(s.port)
        if r.cmd(helo)[0] != 250:
            ehlo(r)
        if r.cmd(mail)[0] != 250:
            assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
        if r.cmd(rcpt)[0] != 250:
            assert r.cmd("RCPT TO:<b@y.org>")[0] == 250
        assert r.cmd("DATA")[0] == 354
        assert r.cmd("Subject: odd names\r\n\r\nbody\r\n.")[0] == 250
        accepted += 1
        assert r.cmd("QUIT")[0] == 221
        r.close()
    stored = files(md)
    assert len(stored) == accepted
    for p in stored:
        assert_well_formed_header(p.read_bytes())
    still_serving(s)

"""PROXY protocol v1 and v2 (issue 7): samotop behind a real HAProxy (`/usr/sbin/haproxy`,
Debian package `haproxy`) on loopback, and hand-written headers over raw sockets.

samotop trusts 127.0.0.1/32 (`--proxy-protocol-from`): HAProxy connects from there and tells
the real client, 127.0.0.2 (the test binds its client socket to it). Every test checks the
reply, then that a well-behaved client on a fresh connection still gets 250.
"""

import os
import pathlib
import shutil
import smtplib
import socket
import struct
import subprocess
import time

import pytest

from conftest import Raw, enhanced, free_port, wait_port, wait_until

TRUST = ("--proxy-protocol-from", "127.0.0.1/32")
BODY = b"Subject: proxied\r\n\r\nhi\r\n"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def start(samotop, tmp_path, *args):
    md = tmp_path / "mail"
    s = samotop("--spf", "off", "--deliver", f"maildir:{md}", *args, wait=False)
    # The harness' readiness probe sends no header; wait for the port without it.
    wait_listening(s.port, s.proc)
    return s, md


def listening(port):
    """True when a socket listens on 127.0.0.1:port (read from /proc/net/tcp: no connection)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        return any(
            fields[1] == want and fields[3] == "0A"  # 0A: LISTEN
            for fields in (line.split() for line in f)
            if len(fields) > 3
        )


def wait_listening(port, proc, timeout=15.0):
    """Waits until samotop listens on 127.0.0.1:port, without connecting to it (a connection
    without a PROXY header would be logged as one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"samotop exited early with {proc.returncode}")
        if listening(port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def maildir_messages(path):
    new = pathlib.Path(path) / "new"
    if not new.is_dir():
        return []
    return [p.read_bytes() for p in sorted(new.iterdir())]


def received(message):
    """The first Received field, unfolded."""
    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    fields = head.replace("\r\n\t", " ").split("\r\n")
    return next(f for f in fields if f.startswith("Received:"))


def v1(src="192.0.2.1", dst="127.0.0.1", sport=40000, dport=25, family="TCP4"):
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src="192.0.2.1", dst="127.0.0.1", sport=40000, dport=25, command=1, tlvs=b""):
    if ":" in src:
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        family = 0x21
    else:
        addrs = socket.inet_aton(src) + socket.inet_aton(dst)
        family = 0x11
    addrs += struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(addrs) + len(tlvs)) + addrs + tlvs


class ProxiedSMTP(smtplib.SMTP):
    """smtplib that opens its connection with a PROXY header, as HAProxy would."""

    header = b""

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        sock.sendall(self.header)
        return sock


def send(port, header=None, source="127.0.0.1", rcpt="b@example.org"):
    """One message with smtplib, through `header` when given; returns the final (code, text)."""
    cls = smtplib.SMTP
    if header is not None:
        cls = type("P", (ProxiedSMTP,), {"header": header})
    with cls("127.0.0.1", port, timeout=30, source_address=(source, 0)) as c:
        c.ehlo("client.test")
        code, msg = c.mail("a@example.com")
        assert code == 250, (code, msg)
        code, msg = c.rcpt(rcpt)
        assert code == 250, (code, msg)
        return c.data(BODY)


def still_serving(server, md, header=None, client="192.0.2.1"):
    """A fresh, well-behaved client (behind the proxy: with a proper header) gets 250."""
    before = len(maildir_messages(md))
    if header is None:
        header = v2(src=client, dport=server.port)
    code, text = send(server.port, header)
    assert code == 250, text
    messages = maildir_messages(md)
    assert len(messages) == before + 1
    assert server.alive()


def raw(port, header=b"", source="127.0.0.1", greet=True, timeout=10.0):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    if header:
        sock.sendall(header)
    return Raw(port, timeout=timeout, greet=greet, sock=sock)


# ---- HAProxy ----------------------------------------------------------------------------------


def haproxy_binary():
    for path in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy"):
        if os.path.exists(path):
            return path
    return shutil.which("haproxy")


@pytest.fixture
def haproxy(tmp_path):
    """Starts HAProxy in front of a samotop port: a v2 frontend and a v1 frontend. Yields a
    function port -> (v2_port, v1_port); every HAProxy is killed by its PID at the end."""
    binary = haproxy_binary()
    if binary is None:
        pytest.fail("haproxy is not installed (Debian: apt-get install -y haproxy)")
    procs = []

    def run(backend_port, check=""):
        p2, p1 = free_port(), free_port()
        conf = tmp_path / f"haproxy-{backend_port}.cfg"
        conf.write_text(
            f"""global
    maxconn 100

defaults
    mode tcp
    option smtpchk EHLO haproxy.check
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend smtp_v2
    bind 127.0.0.1:{p2}
    default_backend samotop_v2

backend samotop_v2
    server s1 127.0.0.1:{backend_port} send-proxy-v2 {check}

frontend smtp_v1
    bind 127.0.0.1:{p1}
    default_backend samotop_v1

backend samotop_v1
    server s1 127.0.0.1:{backend_port} send-proxy
"""
        )
        log = open(tmp_path / f"haproxy-{backend_port}.log", "wb")
        proc = subprocess.Popen(
            [binary, "-f", str(conf), "-db"], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        procs.append(proc)
        for p in (p2, p1):
            wait_port(p, proc)
        run.log = tmp_path / f"haproxy-{backend_port}.log"
        return p2, p1

    yield run
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, 15)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, 9)
                proc.wait(timeout=10)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_message_through_haproxy_names_the_real_client(samotop, tmp_path, haproxy, version):
    s, md = start(samotop, tmp_path, *TRUST, "--name", "mx.test")
    p2, p1 = haproxy(s.port)
    port = p2 if version == "v2" else p1
    code, text = send(port, source="127.0.0.2")
    assert code == 250, text
    [message] = maildir_messages(md)
    assert received(message).startswith("Received: from client.test ([127.0.0.2]) by mx.test"), message
    assert message.endswith(BODY)
    wait_until(
        lambda: "peer=127.0.0.2 helo=client.test" in s.log,
        what="the session log names the real client",
    )
    # (The readiness probes on HAProxy's ports came from 127.0.0.1, and are logged so.)
    assert "peer=127.0.0.1 helo=client.test" not in s.log
    # Again through HAProxy, from another client.
    code, text = send(port, source="127.0.0.3")
    assert code == 250, text
    clients = sorted(received(m).split("(")[1].split(")")[0] for m in maildir_messages(md))
    assert clients == ["[127.0.0.2]", "[127.0.0.3]"], clients
    still_serving(s, md)


def test_haproxy_smtp_health_checks_with_a_proxy_header(samotop, tmp_path, haproxy):
    # The health check of docs/DEPLOY.md: `option smtpchk` + `check-send-proxy` (v2 LOCAL).
    s, md = start(samotop, tmp_path, *TRUST)
    haproxy(s.port, check="check check-send-proxy inter 200ms fall 2 rise 1")
    wait_until(
        lambda: s.log.count("helo=haproxy.check tls=no mails=0 rcpts=0 rejected=0 bytes=0 errors=0 end=quit") >= 3,
        what="three health checks that end with QUIT",
    )
    assert "closed:" not in s.log
    assert "is DOWN" not in haproxy.log.read_text()
    still_serving(s, md)


def test_per_ip_limit_counts_the_real_client_behind_haproxy(samotop, tmp_path, haproxy):
    s, md = start(samotop, tmp_path, *TRUST, "--max-connections-per-ip", "1", "--per-ip-limit-exempt", "192.0.2.0/32")
    p2, _ = haproxy(s.port)
    a = raw(p2, source="127.0.0.2")
    assert a.greeting[0] == 220, a.greeting
    b = raw(p2, source="127.0.0.2")
    assert (b.greeting[0], enhanced(b.greeting[1])) == (421, "4.7.0"), b.greeting
    b.close()
    # Another client through the same proxy (same TCP peer for samotop) is admitted.
    c = raw(p2, source="127.0.0.3")
    assert c.greeting[0] == 220, c.greeting
    for r in (a, c):
        assert r.cmd("QUIT")[0] == 221
        r.close()
    still_serving(s, md)


# ---- hand-written headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, client",
    [
        (lambda port: v1("192.0.2.1", "127.0.0.1", 40000, port), "[192.0.2.1]"),
        (lambda port: v2("192.0.2.1", "127.0.0.1", 40000, port), "[192.0.2.1]"),
        (lambda port: v1("2001:db8::7", "2001:db8::25", 40000, port, family="TCP6"), "[IPv6:2001:db8::7]"),
        (lambda port: v2("2001:db8::7", "2001:db8::25", 40000, port), "[IPv6:2001:db8::7]"),
        # TLVs (PP2_TYPE_UNIQUE_ID, PP2_TYPE_NOOP) are skipped.
        (lambda port: v2("192.0.2.9", "127.0.0.1", 40000, port, tlvs=b"\x05\x00\x03abc\x04\x00\x01\x00"), "[192.0.2.9]"),
        # UNKNOWN (v1) and LOCAL (v2): the real peer stands.
        (lambda port: b"PROXY UNKNOWN\r\n", "[127.0.0.1]"),
        (lambda port: b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", "[127.0.0.1]"),
        (lambda port: v2("192.0.2.1", "127.0.0.1", 40000, port, command=0), "[127.0.0.1]"),
    ],
    ids=["v1-tcp4", "v2-ipv4", "v1-tcp6", "v2-ipv6", "v2-tlvs", "v1-unknown", "v1-unknown-addrs", "v2-local"],
)
def test_hand_written_header(samotop, tmp_path, header, client):
    s, md = start(samotop, tmp_path, *TRUST)
    code, text = send(s.port, header(s.port))
    assert code == 250, text
    [message] = maildir_messages(md)
    assert received(message).startswith(f"Received: from client.test ({client})"), received(message)
    still_serving(s, md)


def test_address_literal_is_the_address_the_client_reached(samotop, tmp_path):
    # Behind the proxy, "our address" for user@[IP] is the header's destination.
    s, md = start(samotop, tmp_path, *TRUST, "--accept-domain", "example.org")
    r = raw(s.port, v1("192.0.2.1", "198.51.100.25", 40000, 25))
    assert r.greeting[0] == 220, r.greeting
    assert r.cmd("EHLO x.test")[0] == 250
    assert r.cmd("MAIL FROM:<a@example.com>")[0] == 250
    assert r.cmd("RCPT TO:<user@[198.51.100.25]>")[0] == 250
    code, texts = r.cmd("RCPT TO:<user@[127.0.0.1]>")
    assert (code, enhanced(texts)) == (550, "5.7.1"), texts
    assert r.cmd("QUIT")[0] == 221
    r.close()
    still_serving(s, md)


def test_header_and_commands_in_one_segment(samotop, tmp_path):
    # Nothing after the header is swallowed: a client that pipelines (early) gets its answers.
    s, md = start(samotop, tmp_path, *TRUST)
    r = raw(s.port, v2(dport=s.port) + b"EHLO eager.test\r\nNOOP\r\n")
    assert r.greeting[0] == 220, r.greeting
    assert r.reply()[0] == 250
    assert r.reply() == (250, ["2.0.0 OK"])
    assert r.cmd("QUIT")[0] == 221
    r.close()
    still_serving(s, md)


def test_header_in_pieces(samotop, tmp_path):
    s, md = start(samotop, tmp_path, *TRUST)
    header = v2("192.0.2.5", dport=s.port)
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    for piece in (header[:3], header[3:14], header[14:20], header[20:]):
        sock.sendall(piece)
        time.sleep(0.05)
    r = Raw(s.port, sock=sock)
    assert r.greeting[0] == 220, r.greeting
    assert r.cmd("EHLO x.test")[0] == 250
    r.close()
    wait_until(lambda: "peer=192.0.2.5" in s.log, what="the log names the client of the header")
    still_serving(s, md)


def test_banner_delay_behind_the_proxy(samotop, tmp_path):
    # The header is not early talk; what the client sends before the banner is.
    s, md = start(samotop, tmp_path, *TRUST, "--banner-delay", "1")
    patient = raw(s.port, v2("192.0.2.1", dport=s.port))
    assert patient.greeting[0] == 220, patient.greeting
    assert patient.cmd("QUIT")[0] == 221
    patient.close()
    eager = raw(s.port, v2("192.0.2.2", dport=s.port) + b"EHLO eager.test\r\n", greet=False)
    code, texts = eager.reply()
    assert (code, enhanced(texts)) == (554, "5.5.1"), texts
    assert eager.closed()
    eager.close()
    wait_until(lambda: "peer=192.0.2.2 helo=- " in s.log, what="the early talker's log line")
    still_serving(s, md)


def test_ipv6_clients_behind_the_proxy_are_limited_per_64(samotop, tmp_path):
    s, md = start(samotop, tmp_path, *TRUST, "--max-connections-per-ip", "1", "--per-ip-limit-exempt", "192.0.2.0/32")
    a = raw(s.port, v1("2001:db8:1:2::1", "2001:db8::25", 1, 25, family="TCP6"))
    assert a.greeting[0] == 220, a.greeting
    # Same /64, another address: counted together.
    b = raw(s.port, v1("2001:db8:1:2:ffff::9", "2001:db8::25", 2, 25, family="TCP6"))
    assert (b.greeting[0], enhanced(b.greeting[1])) == (421, "4.7.0"), b.greeting
    b.close()
    # Another /64: admitted.
    c = raw(s.port, v1("2001:db8:1:3::1", "2001:db8::25", 3, 25, family="TCP6"))
    assert c.greeting[0] == 220, c.greeting
    for r in (a, c):
        r.close()
    still_serving(s, md)


# ---- no header, bad header, header from a network not trusted ---------------------------------


def test_direct_client_without_header_is_closed(samotop, tmp_path):
    s, md = start(samotop, tmp_path, *TRUST)
    # A client that talks SMTP straight away: closed at once, no banner.
    r = raw(s.port, b"EHLO direct.test\r\n", greet=False)
    assert r.closed(timeout=5)
    assert r.buf == b""
    r.close()
    wait_until(lambda: "expected a PROXY header" in s.log, what="a log line")
    still_serving(s, md)


def test_silent_client_without_header_is_closed_after_the_header_timeout(samotop, tmp_path):
    # A client that waits for the banner never gets one: closed after the header timeout (10 s).
    s, md = start(samotop, tmp_path, *TRUST)
    r = raw(s.port, greet=False, timeout=30)
    assert r.closed(timeout=25)
    assert r.buf == b""
    r.close()
    wait_until(lambda: "no complete PROXY header within" in s.log, what="a log line")
    still_serving(s, md)


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 not.an.ip 127.0.0.1 40000 25\r\n",
        b"PROXY TCP4 192.0.2.1 127.0.0.1 40000\r\n",
        b"PROXY TCP9 192.0.2.1 127.0.0.1 40000 25\r\n",
        b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 25\n",
        b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
        V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),  # version 3
        V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # IPv4 with 4 address bytes
        V2_SIGNATURE + b"\x21\x11\xff\xff",  # 64 KiB announced: too long for us
        b"GET / HTTP/1.1\r\n\r\n",
    ],
    ids=["v1-bad-ip", "v1-no-port", "v1-bad-family", "v1-lf-only", "v1-too-long", "v2-version", "v2-short", "v2-huge", "http"],
)
def test_malformed_header_closes(samotop, tmp_path, header):
    s, md = start(samotop, tmp_path, *TRUST)
    r = raw(s.port, header, greet=False)
    assert r.closed(timeout=15)
    assert r.buf == b"", r.buf
    r.close()
    wait_until(lambda: "closed:" in s.log, what="a log line")
    still_serving(s, md)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_header_from_an_untrusted_network_is_refused(samotop, tmp_path, version):
    # 127.0.0.2 is not in --proxy-protocol-from: its header is non-SMTP talk, never believed.
    s, md = start(samotop, tmp_path, *TRUST)
    header = v1(dport=s.port) if version == "v1" else v2(dport=s.port)
    r = raw(s.port, source="127.0.0.2")
    assert r.greeting[0] == 220
    r.send(header + b"EHLO x.test\r\nMAIL FROM:<a@example.com>\r\n")
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (500, "5.5.2"), texts
    assert r.closed()
    r.close()
    assert "PROXY header from an untrusted peer" in s.log
    # A well-behaved direct client on the untrusted network is served as itself.
    code, text = send(s.port, source="127.0.0.2")
    assert code == 250, text
    assert "[127.0.0.2]" in received(maildir_messages(md)[-1])
    still_serving(s, md)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_header_without_any_trust_is_refused(samotop, tmp_path, version):
    # No --proxy-protocol-from at all.
    md = tmp_path / "mail"
    s = samotop("--spf", "off", "--deliver", f"maildir:{md}")
    header = v1(dport=s.port) if version == "v1" else v2(dport=s.port)
    r = raw(s.port, header, greet=False)
    assert r.reply()[0] == 220
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (500, "5.5.2"), texts
    assert r.closed()
    r.close()
    code, text = send(s.port)
    assert code == 250, text
    assert "[127.0.0.1]" in received(maildir_messages(md)[-1])

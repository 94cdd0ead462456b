"""Guards and per-IP policy over the wire, against the real binary (issue 7): early talkers,
connections and messages per IP (127.0.0.1 and 127.0.0.2 are two clients: loopback takes any
127.x source), the error budget, HTTP on the SMTP port, recipient domains.

Every test checks the reply, then that a well-behaved client on a fresh connection still gets
250.
"""

import smtplib
import socket
import subprocess
import time

import pytest

from conftest import Raw, enhanced, free_port, wait_port, wait_until

BODY = b"Subject: t\r\n\r\nhi\r\n"


def start(samotop, *args, **kwargs):
    return samotop("--spf", "off", *args, **kwargs)


def connect(port, source="127.0.0.1", host="127.0.0.1", timeout=10.0, greet=True):
    """A Raw client whose socket is bound to `source` (another loopback address = another client)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.bind((source, 0))
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    return Raw(port, timeout=timeout, greet=greet, sock=sock)


def send_from(port, source="127.0.0.1", host="127.0.0.1", rcpt="b@example.org"):
    """Sends one message with smtplib from `source`; returns the final (code, text)."""
    with smtplib.SMTP(host, port, timeout=30, source_address=(source, 0)) as c:
        c.ehlo("client.test")
        code, msg = c.mail("a@example.com")
        assert code == 250, (code, msg)
        code, msg = c.rcpt(rcpt)
        assert code == 250, (code, msg)
        return c.data(BODY)


def still_serving(server, source="127.0.0.1", host="127.0.0.1", rcpt="b@example.org"):
    """A fresh, well-behaved client gets 250 for its message (retried a little while a
    connection that just ended is still counted)."""

    def served():
        try:
            return send_from(server.port, source, host, rcpt)[0] == 250
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, ConnectionError):
            return False

    wait_until(served, timeout=15, what="a fresh client is served")
    assert server.alive()


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# ---- early talkers (postscreen's pregreet test) --------------------------------------------


def test_early_talker_gets_554_and_is_disconnected(samotop):
    s = start(samotop, "--deliver", "null", "--banner-delay", "1")
    r = Raw(s.port, greet=False)
    r.send("EHLO impatient.test\r\n")
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (554, "5.5.1"), texts
    assert r.closed()
    r.close()
    wait_until(lambda: "helo=- tls=no mails=0 rcpts=0 rejected=0 bytes=0 errors=0 end=refused" in s.log,
               what="the early talker's session log line")
    still_serving(s)


def test_patient_client_gets_the_banner_after_the_delay(samotop):
    s = start(samotop, "--deliver", "null", "--banner-delay", "1")
    r = Raw(s.port, greet=False)
    # Nothing comes during the first half second (a lower bound: never flaky).
    r.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        r.sock.recv(1)
    r.sock.settimeout(10)
    code, texts = r.reply()
    assert code == 220, texts
    assert r.cmd("EHLO patient.test")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    r.close()
    still_serving(s)


# ---- connections per IP ----------------------------------------------------------------------


def admitted(port, source="127.0.0.1", host="127.0.0.1", attempts=100):
    """A client that got 220 (a connection that has just ended may hold its place a moment)."""
    for _ in range(attempts):
        r = connect(port, source, host)
        if r.greeting[0] == 220:
            return r
        r.close()
        time.sleep(0.05)
    raise AssertionError(f"no connection from {source} admitted after {attempts} attempts")


def test_max_connections_per_ip(samotop):
    s = start(samotop, "--deliver", "null", "--max-connections-per-ip", "2", "--per-ip-limit-exempt", "192.0.2.0/32")
    a = admitted(s.port)
    b = admitted(s.port)
    c = connect(s.port)
    assert (c.greeting[0], enhanced(c.greeting[1])) == (421, "4.7.0"), c.greeting
    assert c.closed()
    c.close()
    # Another address is another client: admitted while 127.0.0.1 is full.
    d = connect(s.port, source="127.0.0.2")
    assert d.greeting[0] == 220, d.greeting
    assert d.cmd("EHLO other.test")[0] == 250
    # The full address gets its place back when a session ends.
    assert a.cmd("QUIT")[0] == 221
    a.close()
    e = admitted(s.port)
    assert e.cmd("EHLO again.test")[0] == 250
    for r in (b, d, e):
        assert r.cmd("QUIT")[0] == 221
        r.close()
    still_serving(s)
    assert "Too many connections from your address" in s.log


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_loopback_is_exempt_from_the_default_per_ip_limit(samotop):
    # On by default (20), but the machine's own clients are not counted (Postfix's
    # smtpd_client_event_limit_exceptions): 25 sessions from 127.0.0.1 are all served.
    s = start(samotop, "--deliver", "null")
    clients = [connect(s.port) for _ in range(25)]
    assert [c.greeting[0] for c in clients] == [220] * 25
    for c in clients:
        c.close()


def test_the_per_ip_limit_is_20_by_default(samotop):
    s = start(samotop, "--deliver", "null", "--per-ip-limit-exempt", "192.0.2.0/32")
    clients = [connect(s.port) for _ in range(20)]
    assert [c.greeting[0] for c in clients] == [220] * 20
    extra = connect(s.port)
    assert (extra.greeting[0], enhanced(extra.greeting[1])) == (421, "4.7.0"), extra.greeting
    extra.close()
    for c in clients:
        c.close()
    # A slot freed is a slot again; the server keeps serving.
    again = admitted(s.port)
    again.close()


def test_max_connections_per_ip_over_ipv6_loopback(samotop):
    port = None
    for _ in range(5):
        port = free_port()
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind(("::1", port))
            break
        except OSError:
            continue
    s = start(
        samotop,
        "--smtp", f"127.0.0.1:{port}",
        "--smtp", f"[::1]:{port}",
        "--deliver", "null",
        "--max-connections-per-ip", "1",
        "--per-ip-limit-exempt", "192.0.2.0/32",
        port=port,
    )
    wait_port(port, s.proc, host="::1")
    a = admitted(s.port, source="::1", host="::1")
    b = connect(s.port, source="::1", host="::1")
    assert (b.greeting[0], enhanced(b.greeting[1])) == (421, "4.7.0"), b.greeting
    assert b.closed()
    b.close()
    # IPv4 loopback is another client.
    c = admitted(s.port)
    for r in (a, c):
        assert r.cmd("QUIT")[0] == 221
        r.close()
    still_serving(s, source="::1", host="::1")
    still_serving(s)


# ---- messages per minute per IP --------------------------------------------------------------


def test_message_rate_per_ip(samotop):
    s = start(samotop, "--deliver", "null", "--max-messages-per-minute-per-ip", "2")
    r = connect(s.port)
    assert r.cmd("EHLO busy.test")[0] == 250
    for _ in range(2):
        assert r.cmd("MAIL FROM:<a@example.com>")[0] == 250
        assert r.cmd("RSET")[0] == 250
    code, texts = r.cmd("MAIL FROM:<a@example.com>")
    assert (code, enhanced(texts)) == (451, "4.7.1"), texts
    # The session goes on: other commands work, MAIL stays refused.
    assert r.cmd("NOOP")[0] == 250
    assert r.cmd("MAIL FROM:<a@example.com>")[0] == 451
    assert r.cmd("QUIT")[0] == 221
    r.close()
    # A fresh connection from the same address is still limited, at MAIL, not at connect.
    again = connect(s.port)
    assert again.greeting[0] == 220
    assert again.cmd("EHLO busy.test")[0] == 250
    assert again.cmd("MAIL FROM:<a@example.com>")[0] == 451
    again.close()
    # Another address is unaffected: its messages are accepted.
    still_serving(s, source="127.0.0.2")
    still_serving(s, source="127.0.0.3")


# ---- error budget, HTTP on the SMTP port -----------------------------------------------------


def test_error_budget_closes_with_421(samotop):
    s = start(samotop, "--deliver", "null", "--max-errors", "2")
    r = Raw(s.port)
    assert r.cmd("EHLO x.test")[0] == 250
    assert r.cmd("XYZZY")[0] == 500
    assert r.cmd("RCPT TO:<b@example.org>")[0] == 503
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (421, "4.7.0"), texts
    assert r.closed()
    r.close()
    still_serving(s)


def test_http_request_gets_500_and_is_closed_at_once(samotop):
    s = start(samotop, "--deliver", "null")
    r = Raw(s.port)
    r.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n")
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (500, "5.5.2"), texts
    assert r.closed()
    r.close()
    still_serving(s)


def test_curl_http_fails_quickly(samotop):
    s = start(samotop, "--deliver", "null")
    # curl reads our 220 as an HTTP/0.9 answer and gives up, or sees the connection close:
    # either way it fails on its own, long before its 20 s timeout (exit 28).
    run = subprocess.run(
        ["curl", "-sS", "--max-time", "20", f"http://127.0.0.1:{s.port}/"],
        capture_output=True,
        timeout=60,
    )
    assert run.returncode not in (0, 28), (run.returncode, run.stderr)
    still_serving(s)


# ---- recipient domains ----------------------------------------------------------------------


def test_accept_domain(samotop):
    s = start(
        samotop,
        "--deliver", "null",
        "--accept-domain", "example.org",
        "--accept-domain", "Example.NET.",
    )
    r = Raw(s.port)
    assert r.cmd("EHLO x.test")[0] == 250
    assert r.cmd("MAIL FROM:<a@example.com>")[0] == 250
    cases = [
        ("<b@example.org>", 250, "2.1.5"),
        ("<b@EXAMPLE.ORG>", 250, "2.1.5"),
        ("<b@example.net>", 250, "2.1.5"),
        ("<b@example.org.>", 501, "5.1.3"),  # a trailing dot is not address syntax
        ("<b@other.org>", 550, "5.7.1"),
        ("<b@sub.example.org>", 550, "5.7.1"),
        ("<Postmaster>", 250, "2.1.5"),
        ("<postmaster>", 250, "2.1.5"),
        ("<postmaster@other.org>", 550, "5.7.1"),
        ("<user@[127.0.0.1]>", 250, "2.1.5"),  # our own listening address
        ("<user@[127.0.0.2]>", 550, "5.7.1"),
        ("<user@[192.0.2.1]>", 550, "5.7.1"),
        ("<user@[IPv6:::1]>", 550, "5.7.1"),  # not the address this client reached
    ]
    for rcpt, want, want_enhanced in cases:
        code, texts = r.cmd(f"RCPT TO:{rcpt}")
        assert (code, enhanced(texts)) == (want, want_enhanced), (rcpt, texts)
    # Refused recipients are not in the envelope; the accepted ones get the message.
    assert r.cmd("DATA")[0] == 354
    r.send(BODY + b".\r\n")
    assert r.reply()[0] == 250
    assert r.cmd("QUIT")[0] == 221
    r.close()
    still_serving(s)


def test_address_literal_of_the_listening_address(samotop):
    # Listening on every address: the literal must name the one the client connected to.
    port = free_port()
    s = start(
        samotop,
        "--smtp", f"0.0.0.0:{port}",
        "--deliver", "null",
        "--accept-domain", "example.org",
        wait=False,
        port=port,
    )
    wait_port(port, s.proc, host="127.0.0.2")
    r = Raw(port, host="127.0.0.2")
    assert r.cmd("EHLO x.test")[0] == 250
    assert r.cmd("MAIL FROM:<a@example.com>")[0] == 250
    assert r.cmd("RCPT TO:<user@[127.0.0.2]>")[0] == 250
    code, texts = r.cmd("RCPT TO:<user@[127.0.0.1]>")
    assert (code, enhanced(texts)) == (550, "5.7.1"), texts
    assert r.cmd("QUIT")[0] == 221
    r.close()
    still_serving(s, host="127.0.0.2")
    still_serving(s, rcpt="user@[127.0.0.1]")

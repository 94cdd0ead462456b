"""SPF through the real binary, against a real DNS server on loopback (issue 7): `dnsmasq`
(Debian package `dnsmasq`) serves the SPF records of `*.test` on a free high port, and samotop
asks it (`--dns 127.0.0.1:PORT`).

pass.test allows 127.0.0.1, fail.test allows nobody. Every test checks the reply, then that a
well-behaved client on a fresh connection still gets 250.
"""

import os
import pathlib
import shutil
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import Raw, enhanced, wait_until

RECORDS = [
    # No quotes: an argument list, not a shell; dnsmasq would keep quotes in the record.
    "--txt-record=pass.test,v=spf1 ip4:127.0.0.1 -all",
    "--txt-record=fail.test,v=spf1 -all",
    # Names under test/ that are not listed get NXDOMAIN rather than REFUSED.
    "--local=/test/",
]
BODY = b"Subject: spf\r\n\r\nhi\r\n"


def dnsmasq_binary():
    for d in ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"):
        path = os.path.join(d, "dnsmasq")
        if os.path.exists(path):
            return path
    return shutil.which("dnsmasq")


def free_udp_and_tcp_port():
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port for both UDP and TCP")


def txt_query(name):
    q = bytearray([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0])
    for label in name.split("."):
        q.append(len(label))
        q += label.encode()
    q += bytes([0, 0, 16, 0, 1])
    return bytes(q)


def answers(port):
    """True once the server answers a TXT query for pass.test with one record."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(txt_query("pass.test"), ("127.0.0.1", port))
            data = s.recv(512)
        except OSError:
            return False
    return len(data) > 12 and data[3] & 0x0F == 0 and data[7] == 1


@pytest.fixture
def dns(tmp_path):
    """A dnsmasq on a free loopback port: yields the port; killed by its PID at the end."""
    binary = dnsmasq_binary()
    if binary is None:
        pytest.fail("dnsmasq is not installed (Debian: apt-get install -y dnsmasq)")
    procs = []

    def stop(proc):
        if proc.poll() is None:
            os.kill(proc.pid, 15)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, 9)
                proc.wait(timeout=10)

    try:
        for attempt in range(5):
            port = free_udp_and_tcp_port()
            args = [
                binary,
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                f"--port={port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                f"--pid-file={tmp_path / f'dnsmasq-{attempt}.pid'}",
            ] + RECORDS
            if os.geteuid() == 0:
                args.append("--user=root")  # else it switches to "nobody", who may not exist
            log = open(tmp_path / f"dnsmasq-{attempt}.log", "wb")
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            procs.append(proc)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and proc.poll() is None:
                if answers(port):
                    yield port
                    return
                time.sleep(0.05)
            stop(proc)  # most likely the port was taken meanwhile: try another
        pytest.fail("dnsmasq did not answer on loopback after 5 tries")
    finally:
        for proc in procs:
            stop(proc)


def maildir_messages(path):
    new = pathlib.Path(path) / "new"
    if not new.is_dir():
        return []
    return [p.read_bytes() for p in sorted(new.iterdir())]


def headers_of(message):
    return message.split(b"\r\n\r\n", 1)[0]


def mail(port, sender, source="127.0.0.1"):
    """MAIL FROM over a raw session; returns (raw client, code, texts) with the client open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))
    r = Raw(port, timeout=60, sock=sock)
    assert r.greeting[0] == 220, r.greeting
    assert r.cmd("EHLO client.test")[0] == 250
    code, texts = r.cmd(f"MAIL FROM:<{sender}>")
    return r, code, texts


def send(port, sender, rcpt="b@example.org"):
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        c.ehlo("client.test")
        code, msg = c.mail(sender)
        assert code == 250, (code, msg)
        code, msg = c.rcpt(rcpt)
        assert code == 250, (code, msg)
        return c.data(BODY)


def still_serving(server, maildir, sender="amy@pass.test"):
    before = len(maildir_messages(maildir))
    code, text = send(server.port, sender)
    assert code == 250, text
    assert len(maildir_messages(maildir)) == before + 1
    assert server.alive()


def test_pass_is_delivered_with_received_spf_pass(samotop, dns, tmp_path):
    md = tmp_path / "mail"
    s = samotop("--dns", f"127.0.0.1:{dns}", "--spf", "reject", "--deliver", f"maildir:{md}",
                "--name", "mx.test")
    code, text = send(s.port, "amy@pass.test")
    assert code == 250, text
    [message] = maildir_messages(md)
    head = headers_of(message)
    assert b"Received-SPF: pass (mx.test: domain of amy@pass.test designates 127.0.0.1" in head, head
    assert b"client-ip=127.0.0.1;" in head
    assert b'envelope-from="amy@pass.test"' in head
    assert b"helo=client.test" in head
    assert message.endswith(BODY)
    still_serving(s, md)


def test_fail_is_refused_at_mail_under_reject(samotop, dns, tmp_path):
    md = tmp_path / "mail"
    s = samotop("--dns", f"127.0.0.1:{dns}", "--spf", "reject", "--deliver", f"maildir:{md}")
    r, code, texts = mail(s.port, "amy@fail.test")
    assert (code, enhanced(texts)) == (550, "5.7.23"), texts
    # Refused at MAIL: no transaction, RCPT needs MAIL first; the session goes on.
    assert r.cmd("RCPT TO:<b@example.org>")[0] == 503
    assert r.cmd("MAIL FROM:<amy@pass.test>")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    r.close()
    assert maildir_messages(md) == []
    still_serving(s, md)


def test_null_sender_is_checked_as_postmaster_at_helo(samotop, dns, tmp_path):
    # RFC 7208 2.4: MAIL FROM:<> checks postmaster@<HELO name>.
    md = tmp_path / "mail"
    s = samotop("--dns", f"127.0.0.1:{dns}", "--spf", "reject", "--deliver", f"maildir:{md}")
    for helo, want in (("fail.test", 550), ("pass.test", 250)):
        r = Raw(s.port, timeout=60)
        assert r.cmd(f"EHLO {helo}")[0] == 250
        code, texts = r.cmd("MAIL FROM:<>")
        assert code == want, (helo, texts)
        r.close()
    still_serving(s, md)


def test_dns_unreachable_is_451_under_reject(samotop, tmp_path):
    md = tmp_path / "mail"
    nobody = free_udp_and_tcp_port()  # nothing listens there
    s = samotop("--dns", f"127.0.0.1:{nobody}", "--spf", "reject", "--deliver", f"maildir:{md}")
    r, code, texts = mail(s.port, "amy@pass.test")
    assert (code, enhanced(texts)) == (451, "4.7.24"), texts
    assert r.cmd("QUIT")[0] == 221
    r.close()
    assert maildir_messages(md) == []
    # Without DNS no sender can pass under reject (each check takes the resolver's full
    # timeout, ~15 s, so only one here); the server goes on serving: a fresh client is greeted
    # and its commands are answered 250.
    r = Raw(s.port, timeout=60)
    assert r.cmd("EHLO client.test")[0] == 250
    assert r.cmd("NOOP")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    r.close()
    assert s.alive()


def test_tag_stores_received_spf_fail_instead_of_refusing(samotop, dns, tmp_path):
    md = tmp_path / "mail"
    s = samotop("--dns", f"127.0.0.1:{dns}", "--spf", "tag", "--deliver", f"maildir:{md}")
    code, text = send(s.port, "amy@fail.test")
    assert code == 250, text
    [message] = maildir_messages(md)
    head = headers_of(message)
    assert b"Received-SPF: fail" in head, head
    assert b"client-ip=127.0.0.1;" in head
    assert b'envelope-from="amy@fail.test"' in head
    assert head.count(b"Received-SPF:") == 1
    still_serving(s, md)


def test_spf_off_adds_nothing(samotop, dns, tmp_path):
    md = tmp_path / "mail"
    s = samotop("--dns", f"127.0.0.1:{dns}", "--spf", "off", "--deliver", f"maildir:{md}")
    code, text = send(s.port, "amy@fail.test")
    assert code == 250, text
    [message] = maildir_messages(md)
    assert b"Received-SPF" not in headers_of(message)
    still_serving(s, md)


def test_spf_checks_the_client_named_by_the_proxy_header(samotop, dns, tmp_path):
    # Behind a trusted proxy, SPF judges the client from the PROXY header, not the proxy:
    # pass.test allows 127.0.0.1 only, so a client at 192.0.2.1 fails.
    md = tmp_path / "mail"
    s = samotop("--dns", f"127.0.0.1:{dns}", "--spf", "reject", "--deliver", f"maildir:{md}",
                "--proxy-protocol-from", "127.0.0.1/32")
    for client, want in (("192.0.2.1", (550, "5.7.23")), ("127.0.0.1", (250, "2.1.0"))):
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=60)
        sock.sendall(f"PROXY TCP4 {client} 127.0.0.1 40000 {s.port}\r\n".encode())
        r = Raw(s.port, timeout=60, sock=sock)
        assert r.greeting[0] == 220, r.greeting
        assert r.cmd("EHLO client.test")[0] == 250
        code, texts = r.cmd("MAIL FROM:<amy@pass.test>")
        assert (code, enhanced(texts)) == want, (client, texts)
        r.close()
    wait_until(lambda: "peer=192.0.2.1" in s.log, what="session log names the proxied client")
    assert s.alive()

"""Every promise kept at the edges (issue 13), through the real binary.

EHLO offers what the backend carries; parameters of extensions not offered get 555; every
wait is bounded (a silent STARTTLS client, a hung backend); limits that are on by default
(rejected recipients, messages per session); `--name` defaults to the host name; a slow
sender's data reaches Dovecot before the end; replies after the data say 2.0.0.
"""

import smtplib
import socket
import subprocess
import threading
import time

from conftest import Raw, enhanced, free_port, wait_until
from dovecot import dovecot  # noqa: F401  (`dovecot` is a fixture)

SENDER = "a@example.com"
ALICE = "alice@example.org"


def start(samotop, *args):
    return samotop("--spf", "off", *args)


def ehlo_keywords(port):
    r = Raw(port)
    code, texts = r.cmd("EHLO client.test")
    r.close()
    assert code == 250
    return [t.split()[0] for t in texts[1:]]


def test_ehlo_offers_what_the_backend_carries(samotop, dovecot, tmp_path):
    md = start(samotop, "--deliver", f"maildir:{tmp_path / 'mail'}")
    assert {"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING",
            "BINARYMIME"} <= set(ehlo_keywords(md.port))
    dc = dovecot(users=[ALICE])
    lm = start(samotop, "--deliver", f"lmtp:unix:{dc.socket}")
    keywords = ehlo_keywords(lm.port)
    assert "BINARYMIME" not in keywords and "SMTPUTF8" not in keywords, keywords
    assert "CHUNKING" in keywords and "8BITMIME" in keywords, keywords


def test_parameters_of_extensions_not_offered_get_555(samotop):
    s = start(samotop, "--deliver", "null")
    r = Raw(s.port)
    r.cmd("EHLO client.test")
    for params, named in [("RET=FULL", "RET"), ("ENVID=abc", "ENVID")]:
        code, texts = r.cmd(f"MAIL FROM:<{SENDER}> {params}")
        assert (code, enhanced(texts)) == (555, "5.5.4") and named in texts[0], (params, texts)
    assert r.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
    for params, named in [("NOTIFY=SUCCESS,FAILURE", "NOTIFY"), ("ORCPT=rfc822;b@example.org", "ORCPT")]:
        code, texts = r.cmd(f"RCPT TO:<b@example.org> {params}")
        assert (code, enhanced(texts)) == (555, "5.5.4") and named in texts[0], (params, texts)
    assert r.cmd("RCPT TO:<b@example.org>")[0] == 250
    r.close()
    # After plain HELO no extension is offered: SIZE is a parameter of nothing.
    r = Raw(s.port)
    r.cmd("HELO client.test")
    code, texts = r.cmd(f"MAIL FROM:<{SENDER}> SIZE=100")
    assert (code, enhanced(texts)) == (555, "5.5.4"), texts
    assert r.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
    r.close()


def test_smtplib_dsn_options_are_refused_not_ignored(samotop):
    """A client that asks for delivery notifications learns that we send none."""
    s = start(samotop, "--deliver", "null")
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        try:
            c.sendmail(SENDER, ["b@example.org"], b"Subject: dsn\r\n\r\nx\r\n",
                       mail_options=["RET=HDRS"])
            raise AssertionError("RET=HDRS accepted")
        except smtplib.SMTPSenderRefused as e:
            assert e.smtp_code == 555 and e.smtp_error.startswith(b"5.5.4"), e
        c.rset()
        try:
            c.sendmail(SENDER, ["b@example.org"], b"Subject: dsn\r\n\r\nx\r\n",
                       rcpt_options=["NOTIFY=FAILURE"])
            raise AssertionError("NOTIFY accepted")
        except smtplib.SMTPRecipientsRefused as e:
            [(code, text)] = e.recipients.values()
            assert code == 555 and text.startswith(b"5.5.4"), e.recipients


def test_a_client_silent_after_starttls_is_dropped_after_the_handshake_timeout(samotop):
    s = start(samotop, "--deliver", "null", "--tls-self-signed", "--handshake-timeout", "2")
    r = Raw(s.port, timeout=30)
    r.cmd("EHLO client.test")
    code, _ = r.cmd("STARTTLS")
    assert code == 220
    started = time.monotonic()
    assert r.closed(timeout=20), "closed after the handshake timeout"
    assert time.monotonic() - started < 15
    r.close()
    # The server goes on.
    r = Raw(s.port)
    assert r.cmd("EHLO again.test")[0] == 250
    r.close()


class Silent:
    """A downstream SMTP server that greets, answers EHLO and MAIL, then never answers RCPT."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        for _ in range(16):
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self.talk, args=(conn,), daemon=True).start()

    def talk(self, conn):
        conn.settimeout(60)
        try:
            conn.sendall(b"220 silent ESMTP\r\n")
            buf = b""
            for _ in range(100):
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        conn.sendall(b"250-silent\r\n250 PIPELINING\r\n")
                    elif verb in (b"MAIL", b"RSET"):
                        conn.sendall(b"250 2.0.0 OK\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        return
                    # RCPT: no answer, ever.
        except OSError:
            return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_a_hung_backend_gets_451_4_4_1_and_the_session_goes_on(samotop):
    down = Silent()
    try:
        s = start(samotop, "--deliver", f"smtp:127.0.0.1:{down.port}", "--backend-timeout", "2")
        r = Raw(s.port, timeout=30)
        r.cmd("EHLO client.test")
        assert r.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
        started = time.monotonic()
        code, texts = r.cmd("RCPT TO:<b@example.org>")
        assert (code, enhanced(texts)) == (451, "4.4.1"), texts
        assert time.monotonic() - started < 20
        # The session goes on.
        assert r.cmd("RSET")[0] == 250
        assert r.cmd("NOOP")[0] == 250
        r.close()
        assert s.alive()
    finally:
        down.close()


def test_rejected_recipients_are_limited(samotop):
    s = start(samotop, "--deliver", "null", "--accept-domain", "example.org",
              "--max-rejected-recipients", "5")
    r = Raw(s.port)
    r.cmd("EHLO client.test")
    assert r.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
    for i in range(5):
        assert r.cmd(f"RCPT TO:<probe{i}@elsewhere.net>")[0] == 550
    code, texts = r.cmd("RCPT TO:<probe5@elsewhere.net>")
    assert code == 550
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (421, "4.7.0"), texts
    assert r.closed()
    r.close()
    # Another session is served.
    r = Raw(s.port)
    assert r.cmd("EHLO client.test")[0] == 250
    r.close()


def test_max_messages_per_session_is_a_flag(samotop):
    s = start(samotop, "--deliver", "null", "--max-messages-per-session", "2")
    r = Raw(s.port)
    r.cmd("EHLO client.test")
    for _ in range(2):
        assert r.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
        assert r.cmd("RCPT TO:<b@example.org>")[0] == 250
        r.send(b"DATA\r\n")
        assert r.reply()[0] == 354
        assert r.cmd("Subject: n\r\n\r\nx\r\n.")[0] == 250
    code, texts = r.cmd(f"MAIL FROM:<{SENDER}>")
    assert (code, enhanced(texts)) == (421, "4.7.0"), texts
    assert r.closed()
    r.close()


def test_the_name_defaults_to_the_host_name(samotop):
    s = start(samotop, "--deliver", "null")
    r = Raw(s.port)
    code, texts = r.greeting
    r.close()
    assert code == 220
    assert texts[0].split()[0] == socket.gethostname(), texts


def test_replies_after_the_data_say_2_0_0(samotop):
    s = start(samotop, "--deliver", "null")
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        c.mail(SENDER)
        c.rcpt("b@example.org")
        code, text = c.data(b"Subject: x\r\n\r\nx\r\n")
    assert (code, text[:6]) == (250, b"2.0.0 "), text


def test_a_slow_senders_data_reaches_dovecot_before_the_end(samotop, dovecot):
    """Data gathered for Dovecot goes on when the client pauses (1 s), not only once a whole
    64 KiB chunk is there: Dovecot has read the first part while the client still waits."""
    dc = dovecot(users=[ALICE])
    s = start(samotop, "--deliver", f"lmtp:unix:{dc.socket}")
    r = Raw(s.port, timeout=60)
    r.cmd("EHLO client.test")
    assert r.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
    assert r.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    r.send(b"DATA\r\n")
    assert r.reply()[0] == 354
    marker = b"first part of a slow message " * 100
    before = dc.bytes_read()
    r.send(b"Subject: slow\r\n\r\n" + marker + b"\r\n")
    wait_until(lambda: dc.bytes_read() - before >= len(marker), timeout=20,
               what="Dovecot read the first part during the pause")
    r.send(b"the end\r\n.\r\n")
    code, texts = r.reply()
    r.close()
    assert code == 250, texts
    [stored] = dc.messages(ALICE)
    assert marker in stored and b"the end" in stored

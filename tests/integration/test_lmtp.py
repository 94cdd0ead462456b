"""Issue 6: LMTP both ways, against the real binary and a real Dovecot.

* SMTP in, `--deliver lmtp:unix:SOCK` out to Dovecot: both users get the message byte for byte;
  an unknown user gets Dovecot's 550 5.1.1 at RCPT time; Dovecot down -> 4xx, never 250;
  Dovecot killed in the middle of a 20 MB message -> 4xx after the data, never 250.
* `--map '(.*)@(.*)=$2-$1'` rewrites recipients before they reach Dovecot.
* `--lmtp` listener (TCP and Unix): one reply per accepted recipient after the data, in RCPT
  order (smtplib.LMTP, a raw socket, Postfix's smtp-source -L), HELO/EHLO refused, LHLO works;
  LMTP in, LMTP out (Dovecot's per-recipient outcomes relayed), LMTP in, per-recipient Maildirs.
* `--deliver smtp:HOST:PORT`: samotop A forwards to samotop B step by step.
"""

import os
import pathlib
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile

import pytest

from conftest import Raw, free_port, wait_path, wait_port, wait_until
from dovecot import QUOTA_CONFIG, dovecot, maildir_fetch  # noqa: F401  (`dovecot` is a fixture)

ALICE = "alice@example.org"
BOB = "bob@example.org"
SENDER = "sender@example.net"

#: Bytes a user would not want changed: a line-starting dot, two, 8-bit, an empty line.
BODY = (
    b"From: <sender@example.net>\r\n"
    b"To: <alice@example.org>, <bob@example.org>\r\n"
    b"Subject: issue 6\r\n"
    b"Message-ID: <issue6@example.net>\r\n"
    b"\r\n"
    b"first line\r\n"
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b"8-bit: \xe9t\xe9 \xff\r\n"
    b"\r\n"
    b"last line\r\n"
)

#: Our Received field: the first line names the client's EHLO and address; folded lines follow.
RECEIVED = re.compile(rb"Received: from (\S+) \(([^)\r\n]*)\)\r\n((?:\t[^\r\n]*\r\n)+)")


def short_dir():
    """A temporary directory with a short path (Unix socket paths have 107 bytes at most)."""
    d = tempfile.mkdtemp(prefix="st-", dir="/tmp")
    os.chmod(d, 0o755)
    return pathlib.Path(d)


@pytest.fixture
def sockdir():
    d = short_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def smtp_to(samotop, dc, *args):
    """samotop with an SMTP listener, delivering to Dovecot's LMTP socket."""
    return samotop("--name", "mx.test", "--spf", "off", "--deliver", f"lmtp:unix:{dc.socket}", *args)


def lmtp_listener(samotop, *args, unix=None):
    """samotop with only an LMTP listener: TCP on a free port, or `unix` (a path)."""
    if unix is not None:
        s = samotop("--lmtp", f"unix:{unix}", "--name", "mx.test", "--spf", "off", *args)
        wait_path(str(unix), s.proc)
        return s
    port = free_port()
    s = samotop("--lmtp", f"127.0.0.1:{port}", "--name", "mx.test", "--spf", "off", *args, port=port)
    wait_port(port, s.proc)
    return s


def raw_unix(path, timeout=30.0):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return Raw(None, sock=sock, timeout=timeout)


def split_ours(stored, ehlo="client.test", name="mx.test", proto="ESMTP", peer="[127.0.0.1]"):
    """Finds our Received field in a stored message; returns (before, field, after)."""
    at = stored.find(b"Received: from " + ehlo.encode() + b" ")
    assert at >= 0, f"no Received field of ours in {stored[:600]!r}"
    m = RECEIVED.match(stored, at)
    assert m, f"malformed Received field: {stored[at:at + 400]!r}"
    field = m.group(0)
    assert m.group(2) == peer.encode(), field
    assert f"\tby {name} (Samotop) with {proto} id ".encode() in field, field
    return stored[:at], field, stored[m.end():]


def maildir_files(d, subs=("new", "cur")):
    """The message files in a Maildir's new/ and cur/."""
    d = pathlib.Path(d)
    return sorted(p for sub in subs if (d / sub).is_dir() for p in (d / sub).iterdir())


def read_replies(raw, n):
    return [raw.reply() for _ in range(n)]


# -- SMTP in, Dovecot's LMTP out -----------------------------------------------------------


def test_a_message_to_two_users_lands_in_both_maildirs_byte_exact(samotop, dovecot):
    dc = dovecot(users=[ALICE, BOB])
    s = smtp_to(samotop, dc)
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail(SENDER)[0] == 250
        assert c.rcpt(ALICE)[0] == 250
        assert c.rcpt(BOB)[0] == 250
        code, text = c.data(BODY)
    assert code == 250, (code, text, s.log, dc.log)

    for user in (ALICE, BOB):
        assert [m["hdr.subject"] for m in dc.fetch(user, "hdr.subject")] == ["issue 6"], dc.log
        (stored,) = dc.messages(user)
        before, field, after = split_ours(stored)
        # Dovecot's own fields come first (Delivered-To only when it got one recipient), then
        # ours, then the data exactly as sent.
        assert before.startswith(f"Return-Path: <{SENDER}>\r\n".encode()), before
        assert b"with LMTP" in before, before
        assert after == BODY
        # Two recipients: neither is named in our trace field (Bcc would leak).
        assert b" for <" not in field, field
    # What doveadm reads back agrees (8-bit bytes aside: JSON turns them into U+FFFD).
    (msg,) = dc.fetch(ALICE, "body")
    assert msg["body"].startswith("first line\r\n.a line that starts with a dot\r\n..two dots\r\n")
    assert s.alive()


def test_an_unknown_user_gets_dovecots_550_at_rcpt_time(samotop, dovecot):
    dc = dovecot(users=[ALICE])
    s = smtp_to(samotop, dc)
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail(SENDER)[0] == 250
        code, text = c.rcpt("nobody@example.org")
        assert code == 550, (code, text)
        assert text.startswith(b"5.1.1 "), text
        assert b"nobody@example.org" in text, text
        # The transaction goes on: a known user is still accepted and gets the message.
        assert c.rcpt(ALICE)[0] == 250
        code, text = c.data(BODY)
        assert code == 250, (code, text, dc.log)
    (stored,) = dc.messages(ALICE)
    before, field, after = split_ours(stored)
    assert after == BODY
    assert f"Delivered-To: {ALICE}\r\n".encode() in before, before
    assert f"for <{ALICE}>".encode() in field, field
    assert b"nobody" not in stored
    assert not dc.maildir("nobody@example.org").exists()


def refused_without_dovecot(port):
    """A transaction while Dovecot is away: 4xx at MAIL or RCPT, and no way to 250."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        c.ehlo("client.test")
        code, text = c.mail(SENDER)
        step = "MAIL"
        if code == 250:
            code, text = c.rcpt(ALICE)
            step = "RCPT"
        assert 400 <= code < 500, (step, code, text)
        # Nothing can be acknowledged now: DATA has no recipient to deliver to.
        code, text = c.docmd("DATA")
        assert code not in (250, 354), (code, text)
        c.rset()
    return step


def test_dovecot_stopped_means_4xx_and_nothing_acknowledged(samotop, dovecot):
    dc = dovecot(users=[ALICE])
    s = smtp_to(samotop, dc)
    # One message first, so that samotop keeps a connection to Dovecot in its pool.
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        c.sendmail(SENDER, [ALICE], b"Subject: one\r\n\r\nbefore\r\n")
    assert len(dc.messages(ALICE)) == 1

    dc.stop()
    assert not dc.running()
    refused_without_dovecot(s.port)
    refused_without_dovecot(s.port)  # the pool has nothing left; a new connection fails too
    assert s.alive()
    assert len(dc.messages(ALICE)) == 1

    # Dovecot back: mail flows again, through a new connection.
    dc.start()
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.sendmail(SENDER, [ALICE], b"Subject: two\r\n\r\nafter\r\n") == {}
    assert len(dc.messages(ALICE)) == 2


def test_dovecot_never_started_means_4xx(samotop, sockdir):
    s = samotop("--spf", "off", "--deliver", f"lmtp:unix:{sockdir}/no-such.sock")
    refused_without_dovecot(s.port)
    # A TCP port where nothing listens: the same.
    t = samotop("--spf", "off", "--deliver", f"lmtp:127.0.0.1:{free_port()}")
    refused_without_dovecot(t.port)
    assert s.alive() and t.alive()


BIG = 20 * 1024 * 1024
LINE = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\r\n"
CHUNK = (LINE * (64 * 1024 // len(LINE) + 1))[: 64 * 1024 - (64 * 1024) % len(LINE)]


@pytest.mark.parametrize("kill_at", [2 * 1024 * 1024, BIG], ids=["mid-transfer", "before-the-final-dot"])
def test_dovecot_killed_during_a_20mb_message_is_4xx_never_250(samotop, dovecot, kill_at):
    dc = dovecot(users=[ALICE])
    s = smtp_to(samotop, dc, "--data-timeout", "60")
    raw = Raw(s.port, timeout=60)
    assert raw.cmd("EHLO client.test")[0] == 250
    assert raw.cmd(f"MAIL FROM:<{SENDER}> SIZE={BIG + 100}")[0] == 250
    assert raw.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    assert raw.cmd("DATA")[0] == 354
    raw.send(b"Subject: big\r\n\r\n")
    sent = 0
    for _ in range(BIG // len(CHUNK) + 1):  # bounded
        if sent >= kill_at:
            break
        raw.send(CHUNK)
        sent += len(CHUNK)
    # Kill when Dovecot itself has read that much of the message, not while it is only in
    # socket buffers on the way.
    wait_until(lambda: dc.bytes_read() >= kill_at, timeout=60, what=f"Dovecot read {kill_at} bytes")
    dc.kill()
    for _ in range(BIG // len(CHUNK) + 1):  # the rest, if any
        if sent >= BIG:
            break
        raw.send(CHUNK)
        sent += len(CHUNK)
    assert not dc.running()
    raw.send(b".\r\n")
    code, texts = raw.reply()
    assert 400 <= code < 500, (code, texts, s.log)
    # The session goes on.
    assert raw.cmd("RSET")[0] == 250
    assert raw.cmd("QUIT")[0] == 221
    raw.close()
    assert dc.messages(ALICE) == [], "nothing delivered"
    assert s.alive()
    assert "delivery failed" in s.log and str(dc.socket) in s.log, s.log

    # Dovecot back: the next message is delivered, and only it.
    dc.start()
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.sendmail(SENDER, [ALICE], b"Subject: small\r\n\r\nx\r\n") == {}
    (stored,) = dc.messages(ALICE)
    assert b"Subject: small" in stored and b"Subject: big" not in stored


def test_map_rewrites_recipients_before_dovecot(samotop, dovecot):
    dc = dovecot(users=["example.org-alice", "example.org-bob"])
    s = smtp_to(samotop, dc, "--map", "(.*)@(.*)=$2-$1")
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail(SENDER)[0] == 250
        assert c.rcpt(ALICE)[0] == 250
        assert c.rcpt(BOB)[0] == 250
        code, text = c.rcpt("carol@example.org")  # maps to example.org-carol: unknown
        assert (code, text[:6]) == (550, b"5.1.1 "), (code, text)
        code, text = c.data(BODY)
        assert code == 250, (code, text, dc.log)
    for user in ("example.org-alice", "example.org-bob"):
        (stored,) = dc.messages(user)
        before, _, after = split_ours(stored)
        assert after == BODY
        assert b"with LMTP" in before, before
    assert not dc.maildir(ALICE).exists()
    assert sorted(p.name for p in dc.mail.iterdir()) == ["example.org-alice", "example.org-bob"]


def test_mixed_outcomes_over_smtp_are_4xx_and_a_single_refusal_is_relayed(samotop, dovecot):
    # Bob is over quota: Dovecot refuses his copy after the data and keeps Alice's.
    dc = dovecot(users={ALICE: "", BOB: "userdb_quota_rule=*:storage=1K"}, extra_config=QUOTA_CONFIG)
    s = smtp_to(samotop, dc)
    big = b"Subject: quota\r\n\r\n" + (b"y" * 78 + b"\r\n") * 60
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail(SENDER)[0] == 250
        assert c.rcpt(ALICE)[0] == 250
        assert c.rcpt(BOB)[0] == 250
        # SMTP has one reply for both: a retry may duplicate Alice's copy, but Bob's is not lost.
        code, text = c.data(big)
        assert 400 <= code < 500, (code, text, s.log)
        # Bob alone: Dovecot's refusal is the reply.
        assert c.mail(SENDER)[0] == 250
        assert c.rcpt(BOB)[0] == 250
        code, text = c.data(big)
        assert (code, text[:6]) == (552, b"5.2.2 "), (code, text)
    assert len(dc.messages(ALICE)) == 1
    assert dc.messages(BOB) == []


# -- the LMTP listener ---------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["tcp", "unix"])
def test_smtplib_lmtp_gets_the_refused_recipient_and_one_reply_per_recipient(samotop, tmp_path, sockdir, listen):
    mail = tmp_path / "mail"
    args = ["--accept-domain", "example.org", "--deliver", f"maildir:{mail}", "--maildir-layout", "per-recipient"]
    if listen == "unix":
        path = sockdir / "lmtp.sock"
        s = lmtp_listener(samotop, *args, unix=path)
        c = smtplib.LMTP(str(path), local_hostname="client.test", timeout=30)
    else:
        s = lmtp_listener(samotop, *args)
        c = smtplib.LMTP("127.0.0.1", s.port, local_hostname="client.test", timeout=30)
    with c:
        refused = c.sendmail(SENDER, [ALICE, "x@other.net", BOB], BODY)
        assert list(refused) == ["x@other.net"], refused
        code, text = refused["x@other.net"]
        assert (code, text[:6]) == (550, b"5.7.1 "), refused
        # smtplib reads one reply after the data (the first recipient's); LMTP sends one per
        # accepted recipient: the second one is there to read.
        code, text = c.getreply()
        assert code == 250, (code, text)
        assert c.noop()[0] == 250  # and nothing more is pending
    for local in ("alice", "bob"):
        files = maildir_files(mail / "example.org" / local, subs=("new",))
        assert len(files) == 1, (local, files, s.log)
        stored = files[0].read_bytes()
        assert stored.startswith(f"Return-Path: <{SENDER}>\r\n".encode()), stored[:200]
        peer = "unix" if listen == "unix" else "[127.0.0.1]"
        _, field, after = split_ours(stored, proto="LMTP", peer=peer)
        assert after == BODY
        assert b" for <" not in field, field
    assert not (mail / "other.net").exists()
    # Dovecot reads what samotop stored (on a copy: the original stays as it is).
    assert maildir_fetch(mail / "example.org" / "alice", "hdr.subject") == [{"hdr.subject": "issue 6"}]
    assert len(maildir_files(mail / "example.org" / "alice", subs=("new",))) == 1


def test_raw_lmtp_one_reply_per_accepted_recipient_in_rcpt_order(samotop, dovecot):
    # Dovecot refuses bob's copy after the data (over quota): the outcomes differ, so their
    # order shows.
    dc = dovecot(
        users={ALICE: "", BOB: "userdb_quota_rule=*:storage=1K", "carol@example.org": ""},
        extra_config=QUOTA_CONFIG,
    )
    s = lmtp_listener(samotop, "--accept-domain", "example.org", "--deliver", f"lmtp:unix:{dc.socket}")
    raw = Raw(s.port, timeout=30)
    assert raw.greeting[0] == 220
    assert raw.cmd("LHLO client.test")[0] == 250
    assert raw.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
    assert raw.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    code, texts = raw.cmd("RCPT TO:<x@other.net>")
    assert (code, texts[0][:6]) == (550, "5.7.1 "), (code, texts)
    code, texts = raw.cmd("RCPT TO:<nobody@example.org>")  # Dovecot: no such user
    assert (code, texts[0][:6]) == (550, "5.1.1 "), (code, texts)
    assert raw.cmd(f"RCPT TO:<{BOB}>")[0] == 250
    assert raw.cmd("RCPT TO:<carol@example.org>")[0] == 250
    assert raw.cmd("DATA")[0] == 354
    raw.send(b"Subject: quota\r\n\r\n" + b"x" * 70 + b"\r\n" + (b"y" * 78 + b"\r\n") * 60 + b".\r\n")
    replies = read_replies(raw, 3)
    codes = [code for code, _ in replies]
    assert codes == [250, 552, 250], (replies, s.log, dc.log)
    assert replies[1][1][0].startswith("5.2.2 "), replies
    # Exactly three: nothing else is pending.
    raw.sock.settimeout(1.0)
    with pytest.raises(socket.timeout):
        raw._line()
    raw.sock.settimeout(30)
    assert raw.cmd("QUIT")[0] == 221
    raw.close()
    assert len(dc.messages(ALICE)) == 1
    assert len(dc.messages("carol@example.org")) == 1
    assert dc.messages(BOB) == []


def test_lmtp_listener_dovecot_killed_mid_transfer_gives_one_4xx_per_recipient(samotop, dovecot):
    dc = dovecot(users=[ALICE, BOB])
    s = lmtp_listener(samotop, "--deliver", f"lmtp:unix:{dc.socket}", "--data-timeout", "60")
    raw = Raw(s.port, timeout=60)
    # Pipelined, as an MTA's LMTP client does.
    raw.send(
        f"LHLO client.test\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{ALICE}>\r\n"
        f"RCPT TO:<nobody@example.org>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n"
    )
    codes = [code for code, _ in read_replies(raw, 6)]
    assert codes == [250, 250, 250, 550, 250, 354], codes
    raw.send(b"Subject: big\r\n\r\n")
    sent = 0
    for _ in range(100):  # bounded: 100 chunks of 64 KiB
        if sent >= 3 * 1024 * 1024:
            break
        raw.send(CHUNK)
        sent += len(CHUNK)
    wait_until(lambda: dc.bytes_read() >= 2 * 1024 * 1024, timeout=60, what="Dovecot read 2 MB")
    dc.kill()
    raw.send(CHUNK * 16 + b".\r\n")
    replies = read_replies(raw, 2)
    assert all(400 <= code < 500 for code, _ in replies), (replies, s.log)
    raw.sock.settimeout(1.0)
    with pytest.raises(socket.timeout):
        raw._line()  # exactly one per accepted recipient
    raw.sock.settimeout(30)
    assert raw.cmd("RSET")[0] == 250
    raw.close()
    assert dc.messages(ALICE) == [] and dc.messages(BOB) == []
    assert s.alive()


@pytest.mark.parametrize("listen", ["tcp", "unix"])
def test_helo_and_ehlo_are_refused_on_lmtp_and_lhlo_works(samotop, sockdir, listen):
    if listen == "unix":
        path = sockdir / "lmtp.sock"
        lmtp_listener(samotop, "--deliver", "null", unix=path)
        raw = raw_unix(path)
    else:
        s = lmtp_listener(samotop, "--deliver", "null")
        raw = Raw(s.port)
    assert raw.greeting[0] == 220
    for verb in ("HELO", "EHLO"):
        code, texts = raw.cmd(f"{verb} client.test")
        assert (code, texts[0][:6]) == (500, "5.5.1 "), (verb, code, texts)
    code, texts = raw.cmd("MAIL FROM:<a@example.org>")
    assert code == 503, (code, texts)  # still no LHLO
    code, texts = raw.cmd("LHLO client.test")
    assert code == 250, (code, texts)
    ext = {t.split()[0].upper() for t in texts[1:]}
    assert {"PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME"} <= ext, texts
    assert raw.cmd("MAIL FROM:<a@example.org>")[0] == 250
    assert raw.cmd("QUIT")[0] == 221
    raw.close()


def test_lmtp_to_dovecot_refuses_the_unknown_recipient_at_rcpt(samotop, dovecot):
    dc = dovecot(users=[ALICE, BOB])
    s = lmtp_listener(samotop, "--deliver", f"lmtp:unix:{dc.socket}")
    with smtplib.LMTP("127.0.0.1", s.port, local_hostname="client.test", timeout=30) as c:
        c.ehlo_or_helo_if_needed()
        assert c.mail(SENDER)[0] == 250
        assert c.rcpt(ALICE)[0] == 250
        code, text = c.rcpt("nobody@example.org")
        assert (code, text[:6]) == (550, b"5.1.1 "), (code, text)
        assert c.rcpt(BOB)[0] == 250
        code, text = c.data(BODY)
        assert code == 250 and ALICE.encode() in text, (code, text)
        code, text = c.getreply()
        assert code == 250 and BOB.encode() in text, (code, text)
    for user in (ALICE, BOB):
        (stored,) = dc.messages(user)
        _, field, after = split_ours(stored, proto="LMTP")
        assert after == BODY
    assert not dc.maildir("nobody@example.org").exists()


def test_smtp_source_in_lmtp_mode_delivers_every_message(samotop, tmp_path):
    tool = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    if not os.path.exists(tool):
        pytest.fail("this test needs Postfix's smtp-source (apt-get install postfix)", pytrace=False)
    mail = tmp_path / "mail"
    s = lmtp_listener(samotop, "--deliver", f"maildir:{mail}", "--maildir-layout", "per-recipient", "--max-mailboxes", "1000")
    n = 20
    out = subprocess.run(
        [tool, "-L", "-s", "2", "-m", str(n), "-c", "-f", "a@example.org", "-t", "b@example.org", f"127.0.0.1:{s.port}"],
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, (out.stdout, out.stderr, s.log)
    files = maildir_files(mail / "example.org" / "b", subs=("new",))
    assert len(files) == n, (len(files), out.stderr, s.log)
    for f in files:
        assert f.read_bytes().startswith(b"Return-Path: <a@example.org>\r\nReceived: from ")


# -- the SMTP dispatcher -------------------------------------------------------------------


def test_smtp_forwarding_to_another_samotop(samotop, tmp_path):
    mail = tmp_path / "b-mail"
    b = samotop("--name", "b.test", "--spf", "off", "--accept-domain", "example.org", "--deliver", f"maildir:{mail}")
    a = samotop("--name", "a.test", "--spf", "off", "--deliver", f"smtp:127.0.0.1:{b.port}")
    with smtplib.SMTP("127.0.0.1", a.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail(SENDER)[0] == 250
        assert c.rcpt(ALICE)[0] == 250
        # B refuses it, so A refuses it at RCPT time: nothing to bounce later.
        code, text = c.rcpt("x@other.net")
        assert (code, text[:6]) == (550, b"5.7.1 "), (code, text, a.log)
        code, text = c.data(BODY)
        assert code == 250, (code, text, a.log, b.log)
    (path,) = maildir_files(mail, subs=("new",))
    stored = path.read_bytes()
    assert stored.startswith(f"Return-Path: <{SENDER}>\r\n".encode()), stored[:200]
    # B's trace field on top (its client was A), A's below it, then the data as sent.
    b_at = stored.find(b"Received: from a.test ")
    a_at = stored.find(b"Received: from client.test ")
    assert 0 < b_at < a_at, stored[:600]
    _, b_field, rest = split_ours(stored, ehlo="a.test", name="b.test")
    assert rest.startswith(b"Received: from client.test "), rest[:300]
    _, a_field, after = split_ours(rest, ehlo="client.test", name="a.test")
    assert after == BODY
    assert f"for <{ALICE}>".encode() in a_field and f"for <{ALICE}>".encode() in b_field
    assert b"other.net" not in stored


def test_smtp_forwarding_relays_the_next_hops_failures(samotop, tmp_path):
    mail = tmp_path / "b-mail"
    b = samotop("--name", "b.test", "--spf", "off", "--max-message-size", "1000", "--deliver", f"maildir:{mail}")
    a = samotop("--name", "a.test", "--spf", "off", "--deliver", f"smtp:127.0.0.1:{b.port}")
    big = b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * 60
    with smtplib.SMTP("127.0.0.1", a.port, timeout=30) as c:
        c.ehlo("client.test")
        # A learnt B's limit at start: it offers no more than B takes.
        assert c.esmtp_features.get("size") == "1000", c.esmtp_features
        # Too big, found after the data: 552.
        assert c.mail(SENDER)[0] == 250
        assert c.rcpt(ALICE)[0] == 250
        code, text = c.data(big)
        assert (code, text[:6]) == (552, b"5.3.4 "), (code, text)
        # Declared too big: refused at MAIL.
        code, text = c.mail(SENDER, [f"SIZE={len(big)}"])
        assert (code, text[:6]) == (552, b"5.3.4 "), (code, text)
    assert maildir_files(mail) == []
    b.stop()
    # B down: MAIL is ours, the first RCPT asks B: 4xx there.
    with smtplib.SMTP("127.0.0.1", a.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail(SENDER)[0] == 250
        code, text = c.rcpt(ALICE)
        assert 400 <= code < 500, (code, text)
    assert a.alive()


def test_binarymime_goes_through_to_a_next_hop_that_takes_it(samotop, tmp_path):
    """B (samotop into a Maildir) offers BINARYMIME; A learns it, offers it too, and passes
    binary content on in BDAT chunks, byte for byte: bare CR, bare LF, NUL and all."""
    mail = tmp_path / "b-mail"
    b = samotop("--name", "b.test", "--spf", "off", "--deliver", f"maildir:{mail}")
    a = samotop("--name", "a.test", "--spf", "off", "--deliver", f"smtp:127.0.0.1:{b.port}")
    raw = Raw(a.port)
    code, texts = raw.cmd("EHLO client.test")
    assert "BINARYMIME" in texts and "CHUNKING" in texts, texts
    assert raw.cmd(f"MAIL FROM:<{SENDER}> BODY=BINARYMIME")[0] == 250
    assert raw.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    msg = b"Subject: binary\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\xff\n.\n\r.\r\n" * 3000
    half = len(msg) // 2
    raw.send(b"BDAT %d\r\n" % half + msg[:half])
    assert raw.reply()[0] == 250
    raw.send(b"BDAT %d LAST\r\n" % (len(msg) - half) + msg[half:])
    code, texts = raw.reply()
    raw.close()
    assert code == 250, (code, texts, a.log, b.log)
    (path,) = maildir_files(mail, subs=("new",))
    assert path.read_bytes().endswith(b"\r\n" + msg)


def test_binarymime_is_not_offered_in_front_of_a_next_hop_without_it(dovecot, samotop):
    """Dovecot 2.3's LMTP offers CHUNKING but not BINARYMIME: so neither do we, and a client
    that asks gets 555 rather than a bounce after the data; 8-bit BDAT goes through."""
    dc = dovecot(users=[ALICE])
    s = samotop("--spf", "off", "--deliver", f"lmtp:unix:{dc.socket}")
    raw = Raw(s.port)
    code, texts = raw.cmd("EHLO client.test")
    assert "CHUNKING" in texts and "BINARYMIME" not in texts, texts
    code, texts = raw.cmd(f"MAIL FROM:<{SENDER}> BODY=BINARYMIME")
    assert (code, texts[0][:6]) == (555, "5.5.4 "), (code, texts)
    assert raw.cmd(f"MAIL FROM:<{SENDER}> BODY=8BITMIME")[0] == 250
    assert raw.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    msg = b"Subject: eight bit\r\n\r\n\xff\xfe\r\n"
    raw.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    code, texts = raw.reply()
    raw.close()
    assert code == 250, (code, texts)
    [stored] = dc.messages(ALICE)
    assert stored.endswith(b"\xff\xfe\r\n") or stored.endswith(b"\xff\xfe\n"), stored[-40:]


def test_utf8_recipient_refused_when_the_next_hop_lacks_smtputf8(dovecot, samotop):
    """Dovecot 2.3's LMTP does not offer SMTPUTF8: so neither do we (a client then sends no
    UTF-8 address), the parameter gets 555, and a UTF-8 recipient 553 5.6.7 at RCPT, never a
    confusing syntax error from downstream."""
    dc = dovecot(users=[ALICE])
    s = samotop("--spf", "off", "--deliver", f"lmtp:unix:{dc.socket}")
    raw = Raw(s.port)
    code, texts = raw.cmd("EHLO client.test")
    assert "SMTPUTF8" not in texts, texts
    code, texts = raw.cmd("MAIL FROM:<s@example.org> SMTPUTF8")
    assert (code, texts[0][:6]) == (555, "5.5.4 "), (code, texts)
    assert raw.cmd("MAIL FROM:<s@example.org>")[0] == 250
    code, texts = raw.cmd("RCPT TO:<jörg@example.org>")
    assert code == 553 and texts[0].startswith("5.6.7"), (code, texts)
    assert raw.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    raw.close()


# ---- partial failure: no duplicate storm (issue 13) ----------------------------------------

CAROL = "carol@example.org"


def _send_three(port, msg):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail(SENDER)[0] == 250
        for rcpt in (ALICE, BOB, CAROL):
            assert c.rcpt(rcpt)[0] == 250, rcpt
        try:
            return c.data(msg)
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error


def test_a_full_mailbox_among_three_is_retried_without_duplicates(dovecot, samotop):
    """Dovecot checks quota after the data (lmtp_rcpt_check_quota = no, its default): Alice
    and Bob store the message, Carol's full mailbox refuses it. Over SMTP that is one 451, and
    the client sends the whole message again; Alice and Bob must not get a copy per retry."""
    full = "userdb_quota_rule=*:storage=1K"
    dc = dovecot(users={ALICE: "", BOB: "", CAROL: full}, extra_config=QUOTA_CONFIG)
    s = samotop("--spf", "off", "--deliver", f"lmtp:unix:{dc.socket}")
    msg = (
        b"From: <sender@example.net>\r\nTo: <team@example.org>\r\nSubject: quota\r\n"
        b"Message-ID: <retry-1@example.net>\r\n\r\n" + b"0123456789abcdef" * 256 + b"\r\n"
    )
    for attempt in range(3):
        code, text = _send_three(s.port, msg)
        assert (code, text[:6]) == (451, b"4.3.0 "), (attempt, code, text, s.log)
        assert len(dc.messages(ALICE)) == 1 and len(dc.messages(BOB)) == 1, (attempt, dc.log)
        assert dc.messages(CAROL) == []
    wait_until(lambda: "were already delivered" in s.log or "already delivered" in s.log,
               what="the retry's skip in the log")
    assert "reached 2 of 3 recipients" in s.log, s.log
    # Carol makes room (her quota is raised, Dovecot restarted: our pooled connection goes
    # stale too); the next retry reaches her alone: 250.
    dc.stop()
    (dc.dir / "users").write_text("".join(f"{u}:{{PLAIN}}x::::::\n" for u in (ALICE, BOB, CAROL)))
    dc.start()
    code, text = _send_three(s.port, msg)
    assert code == 250, (code, text, s.log, dc.log)
    for user in (ALICE, BOB, CAROL):
        assert len(dc.messages(user)) == 1, (user, dc.log)
    # Another message (another Message-ID) is not skipped.
    other = msg.replace(b"retry-1", b"retry-2")
    code, text = _send_three(s.port, other)
    assert code == 250, (code, text)
    for user in (ALICE, BOB, CAROL):
        assert len(dc.messages(user)) == 2, user


def test_a_stale_pooled_connection_to_dovecot_is_replaced(dovecot, samotop):
    """Dovecot restarted between two messages: the pooled connection is dead; a fresh one
    takes over, unseen by the client."""
    dc = dovecot(users=[ALICE])
    s = samotop("--spf", "off", "--deliver", f"lmtp:unix:{dc.socket}")
    for round_ in range(2):
        with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
            c.ehlo("client.test")
            c.sendmail(SENDER, [ALICE], b"Subject: stale %d\r\n\r\nx\r\n" % round_)
        if round_ == 0:
            dc.stop()
            dc.start()
    assert len(dc.messages(ALICE)) == 2, dc.log

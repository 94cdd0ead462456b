"""The Maildir backend against the real binary (`--deliver maildir:DIR`).

Issue 4: what lands in `new/` is `Return-Path:`, our `Received:` field, then the message byte for
byte (smtplib and swaks); Bcc stays private; Python's `mailbox.Maildir` and Dovecot's `doveadm`
read what we wrote; 200 parallel senders; `kill -9` in the middle of a stream loses nothing that
got 250 and leaves no partial file in `new/`; a full disk answers 4xx and the server keeps
serving; the per-recipient layout refuses hostile names and follows `--map`; a 100 MB message
is streamed, not buffered.
"""

import email
import email.header
import email.utils
import functools
import hashlib
import mailbox
import os
import pathlib
import random
import re
import smtplib
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Raw, enhanced, send_one, wait_until
from dovecot import doveadm_maildir, maildir_fetch


def start(samotop, maildir, *args, **kwargs):
    """A server delivering into `maildir`, SPF off (no DNS look-ups, no Received-SPF field)."""
    return samotop("--spf", "off", "--deliver", f"maildir:{maildir}", *args, **kwargs)


def names(d):
    d = pathlib.Path(d)
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def files(maildir, sub="new"):
    d = pathlib.Path(maildir) / sub
    return sorted(d.iterdir()) if d.is_dir() else []


DAY = rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
MONTH = rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
STORED = re.compile(
    rb"\AReturn-Path: <(?P<sender>[^>\r\n]*)>\r\n"
    rb"(?P<received>Received: from (?P<helo>\S+) \(\[127\.0\.0\.1\]\)\r\n"
    rb"\tby (?P<by>\S+) \(Samotop\) with (?P<with>\S+) id (?P<id>\S+)"
    rb"(?:\r\n\tfor <(?P<for>[^>\r\n]*)>)?;\r\n"
    rb"\t(?P<date>" + DAY + rb", \d{2} " + MONTH + rb" \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4})\r\n)"
)


def split_stored(data):
    """A stored file as a dict: sender, received (the whole field), helo, with, id, for (None
    without), date, and data (the message as the client sent it). Fails on any other shape."""
    m = STORED.match(data)
    assert m, f"not Return-Path + Received + message: {data[:400]!r}"
    out = {k: v for k, v in m.groupdict().items()}
    out["data"] = data[m.end():]
    # The date is an RFC 5322 date-time (email.utils parses it; the zone is explicit).
    parsed = email.utils.parsedate_to_datetime(out["date"].decode())
    assert parsed.tzinfo is not None, out["date"]
    return out


def subject_of(data):
    m = re.search(rb"^Subject: ([^\r\n]*)\r\n", data, re.M)
    return m.group(1).decode("latin-1") if m else None


def by_subject(maildir):
    """{subject: parsed stored file} for every file in `new/` (subjects must be unique)."""
    out = {}
    for p in files(maildir):
        parsed = split_stored(p.read_bytes())
        subj = subject_of(parsed["data"])
        assert subj not in out, f"two files with subject {subj!r}"
        out[subj] = parsed
    return out


def data_lines(rng, size, width=78):
    """About `size` bytes of CR LF lines of random 8-bit bytes (no CR or LF inside), some of
    them starting with dots."""
    alphabet = bytes(b for b in range(256) if b not in (10, 13))
    lines = []
    total = 0
    n = 0
    while total < size:
        line = bytes(rng.choice(alphabet) for _ in range(width)) if n % 50 else b""
        if n % 7 == 0:
            line = b"." * (n % 3 + 1) + line
        lines.append(line + b"\r\n")
        total += len(line) + 2
        n += 1
    return b"".join(lines)


def big_body(size, seed):
    """A message of about `size` bytes built from a 64 KiB random block (fast to make)."""
    rng = random.Random(seed)
    block = data_lines(rng, 64 * 1024)
    reps = max(1, size // len(block))
    return block * reps


# Each is (subject, message as handed to the client, message as it must be stored).
@functools.lru_cache(maxsize=1)
def messages():
    eight_bit = (
        b"From: <a@x.org>\r\nTo: <b@y.org>\r\nSubject: eight-bit\r\n\r\n"
        b"\xff\xfe\x80 latin-1 caf\xe9, not UTF-8 \xc3\x28\r\n"
        + bytes(range(0x80, 0x100)) + b"\r\n\x00\x01\x7f\r\n"
    )
    dots = (
        b"From: <a@x.org>\r\nSubject: dots\r\n\r\n"
        b".\r\n.leading dot\r\n..two dots\r\n...\r\n.\r\n . space then dot\r\nend\r\n"
    )
    no_crlf = b"From: <a@x.org>\r\nSubject: no-final-crlf\r\n\r\nfirst\r\n.dot\r\nlast line"
    five_mb = b"From: <a@x.org>\r\nSubject: five-mb\r\n\r\n" + big_body(5 * 1024 * 1024, 5)
    return [
        ("eight-bit", eight_bit, eight_bit),
        ("dots", dots, dots),
        ("no-final-crlf", no_crlf, no_crlf + b"\r\n"),
        ("five-mb", five_mb, five_mb),
    ]


def check_stored(parsed, sender, rcpt, expected):
    assert parsed["sender"] == sender.encode()
    assert parsed["helo"] == b"client.test"
    assert parsed["with"] == b"ESMTP"
    assert parsed["for"] == (rcpt.encode() if rcpt else None)
    assert parsed["data"] == expected


# -- byte-exact storage ------------------------------------------------------------------------


def test_smtplib_messages_are_stored_byte_exact(samotop, tmp_path):
    md = tmp_path / "Maildir"
    s = start(samotop, md)
    ids = {}
    for subject, sent, _ in messages():
        with smtplib.SMTP("127.0.0.1", s.port, timeout=60) as c:
            assert c.ehlo("client.test")[0] == 250
            assert c.mail("a@x.org")[0] == 250
            assert c.rcpt("b@y.org")[0] == 250
            code, text = c.data(sent)  # smtplib dot-stuffs and adds a missing final CR LF
            assert code == 250, (subject, text)
            ids[subject] = re.search(rb"accepted as (\S+)$", text).group(1)
    assert files(md, "tmp") == []
    assert files(md, "cur") == []
    stored = by_subject(md)
    assert sorted(stored) == sorted(m[0] for m in messages())
    for subject, _, expected in messages():
        check_stored(stored[subject], "a@x.org", "b@y.org", expected)
        assert stored[subject]["id"] == ids[subject]
    # Mail is private: files 0600.
    for p in files(md):
        assert p.stat().st_mode & 0o777 == 0o600, p


def test_smtplib_sendmail_null_sender(samotop, tmp_path):
    md = tmp_path / "Maildir"
    s = start(samotop, md)
    body = b"Subject: bounce\r\n\r\nnull sender\r\n"
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.sendmail("<>", ["postmaster@y.org"], body) == {}
    (p,) = files(md)
    check_stored(split_stored(p.read_bytes()), "", "postmaster@y.org", body)


@pytest.mark.parametrize("which", ["eight-bit", "dots", "no-final-crlf", "five-mb"])
def test_swaks_messages_are_stored_byte_exact(samotop, tmp_path, which):
    md = tmp_path / "Maildir"
    s = start(samotop, md)
    (_, sent, _), = [m for m in messages() if m[0] == which]
    # swaks itself rewrites `\\n` into a newline and `%TOKEN%`s in the data: keep those
    # two bytes out of what it sends.
    sent = sent.replace(b"\\", b"/").replace(b"%", b"#")
    f = tmp_path / "swaks.eml"
    f.write_bytes(sent)
    run = subprocess.run(
        [
            "swaks", "--server", f"127.0.0.1:{s.port}", "--helo", "client.test",
            "--from", "sw@x.org", "--to", "rcpt@y.org", "--data", f"@{f}",
            "--timeout", "60", "--suppress-data",
        ],
        capture_output=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert re.search(rb"<-  250 2\.0\.0 ", run.stdout), run.stdout[-4000:]
    # swaks sends the file as it is, then CR LF . CR LF: the stored message is the file plus
    # CR LF (one more empty line when the file ends with CR LF already; see its transcript).
    (p,) = files(md)
    check_stored(split_stored(p.read_bytes()), "sw@x.org", "rcpt@y.org", sent + b"\r\n")
    assert files(md, "tmp") == []


# -- Bcc privacy -------------------------------------------------------------------------------


def test_bcc_recipients_are_nowhere_in_the_stored_file(samotop, tmp_path):
    md = tmp_path / "Maildir"
    s = start(samotop, md)
    body = b"From: <a@x.org>\r\nTo: <visible@y.org>\r\nSubject: bcc\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.sendmail("a@x.org", ["visible@y.org", "hidden-bcc@z.org"], body) == {}
    (p,) = files(md)
    raw = p.read_bytes()
    parsed = split_stored(raw)
    assert parsed["for"] is None, parsed["received"]
    assert b"for <" not in raw
    assert b"hidden-bcc" not in raw
    # The visible recipient appears once: in the client's own To: field.
    assert raw.count(b"visible@y.org") == 1
    assert parsed["data"] == body
    # No envelope list under any other name either.
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    header_names = {l.split(b":", 1)[0].lower() for l in head if l[:1] not in (b"\t", b" ")}
    assert header_names == {b"return-path", b"received", b"from", b"to", b"subject"}, header_names


# -- other readers -----------------------------------------------------------------------------


SUBJECTS = [f"reader {i} \u00e9t\u00e9" if i % 3 == 0 else f"reader {i}" for i in range(12)]


def send_readable(port, n=len(SUBJECTS)):
    """Sends SUBJECTS with smtplib (non-ASCII ones as RFC 2047 words), to one or two
    recipients; returns the bodies by index."""
    bodies = []
    for i, subject in enumerate(SUBJECTS[:n]):
        header = email.header.Header(subject, "utf-8").encode() if not subject.isascii() else subject
        body = (
            f"From: <a@x.org>\r\nTo: <b@y.org>\r\nSubject: {header}\r\n"
            f"Message-ID: <reader-{i}@x.org>\r\n\r\nbody {i}\r\n.dot\r\n"
        ).encode()
        rcpts = ("b@y.org",) if i % 2 else ("b@y.org", "c@y.org")
        code, text = send_one(port, sender="a@x.org", rcpts=rcpts, body=body)
        assert code == 250, text
        bodies.append(body)
    return bodies


def decoded_subject(value):
    return str(email.header.make_header(email.header.decode_header(value)))


def test_python_mailbox_reads_every_message(samotop, tmp_path):
    md = tmp_path / "Maildir"
    s = start(samotop, md)
    bodies = send_readable(s.port)
    box = mailbox.Maildir(str(md), factory=None, create=False)
    try:
        assert len(box) == len(SUBJECTS)
        got = sorted(decoded_subject(m["Subject"]) for m in box)
        assert got == sorted(SUBJECTS)
        for key in box.keys():
            raw = box.get_bytes(key)
            i = int(re.search(rb"Message-ID: <reader-(\d+)@x.org>", raw).group(1))
            assert split_stored(raw)["data"] == bodies[i]
            msg = box[key]
            assert msg["Return-Path"] == "<a@x.org>"
            assert msg.get_subdir() == "new"
    finally:
        box.close()


def test_dovecot_reads_every_message(samotop, tmp_path):
    md = tmp_path / "Maildir"
    s = start(samotop, md)
    send_readable(s.port)
    found = doveadm_maildir(md, "search", "ALL")
    assert len([l for l in found.splitlines() if l.strip()]) == len(SUBJECTS), found
    records = maildir_fetch(md, "hdr.subject hdr.return-path", "ALL")
    assert len(records) == len(SUBJECTS), records
    got = sorted(decoded_subject(r["hdr.subject"]) for r in records)
    assert got == sorted(SUBJECTS), records
    assert {r["hdr.return-path"] for r in records} == {"<a@x.org>"}, records
    # One search by subject, so that Dovecot parsed the headers and not just counted files.
    hit = doveadm_maildir(md, "search", "SUBJECT", "reader 7")
    assert len([l for l in hit.splitlines() if l.strip()]) == 1, hit
    # doveadm worked on a copy: ours is untouched.
    assert len(files(md)) == len(SUBJECTS)
    assert files(md, "cur") == []


# -- concurrency -------------------------------------------------------------------------------


def test_200_parallel_senders(samotop, tmp_path):
    md = tmp_path / "Maildir"
    s = start(samotop, md)
    n = 200
    barrier = threading.Barrier(n, timeout=60)

    def one(i):
        body = f"From: <p{i}@x.org>\r\nSubject: parallel {i}\r\n\r\nbody of {i}\r\n".encode()
        with smtplib.SMTP("127.0.0.1", s.port, timeout=120) as c:
            c.ehlo("client.test")
            assert c.mail(f"p{i}@x.org")[0] == 250
            assert c.rcpt(f"r{i}@y.org")[0] == 250
            barrier.wait()  # everyone sends DATA at about the same moment
            return i, body, c.data(body)

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n), timeout=300))
    assert all(code == 250 for _, _, (code, _) in results), [r for r in results if r[2][0] != 250][:5]
    assert len(files(md)) == n
    assert files(md, "tmp") == []
    stored = by_subject(md)
    for i, body, _ in results:
        parsed = stored[f"parallel {i}"]
        check_stored(parsed, f"p{i}@x.org", f"r{i}@y.org", body)
    assert s.alive()


# -- crash safety ------------------------------------------------------------------------------


def test_kill_9_mid_stream_loses_nothing_acknowledged(samotop, tmp_path):
    md = tmp_path / "Maildir"
    s = start(samotop, md)
    stop = threading.Event()
    killing = threading.Event()
    lock = threading.Lock()
    sent = {}  # subject -> body, for every message any thread started to send
    acked = set()  # subjects that got 250
    errors = []
    sizes = [300, 20_000, 200_000, 1_500_000]

    def sender(t):
        rng = random.Random(t)
        block = data_lines(rng, 64 * 1024)
        for j in range(400):  # bounded; the kill ends it much earlier
            if stop.is_set():
                return
            subject = f"crash {t}-{j}"
            size = sizes[(t + j) % len(sizes)]
            payload = (block * (size // len(block) + 1))[:size]
            payload = payload[: payload.rfind(b"\r\n") + 2] if b"\r\n" in payload else b"x\r\n"
            body = (
                f"From: <c{t}@x.org>\r\nSubject: {subject}\r\n"
                f"Message-ID: <crash-{t}-{j}@x.org>\r\n\r\n"
            ).encode() + payload
            with lock:
                sent[subject] = body
            try:
                with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
                    c.ehlo("client.test")
                    c.mail(f"c{t}@x.org")
                    c.rcpt("r@y.org")
                    code, _ = c.data(body)
                if code == 250:
                    with lock:
                        acked.add(subject)
                else:
                    with lock:
                        errors.append((subject, code))
            except (OSError, smtplib.SMTPException) as e:
                if not killing.is_set():
                    with lock:
                        errors.append((subject, repr(e)))
                return  # the server is gone

    threads = [threading.Thread(target=sender, args=(t,), daemon=True) for t in range(6)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 40, timeout=120, what="40 messages acknowledged")
    killing.set()
    s.proc.kill()  # SIGKILL, in the middle of the stream
    s.proc.wait(timeout=10)
    stop.set()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert errors == [], errors

    def check():
        stored = by_subject(md)  # every file in new/ parses ...
        for subject, parsed in stored.items():
            assert subject in sent, subject
            body = sent[subject]
            assert parsed["data"] == body, f"{subject}: {len(parsed['data'])} of {len(body)} bytes"
        missing = sorted(acked - set(stored))
        assert missing == [], f"acknowledged but not in new/: {missing}"
        return stored

    stored = check()
    leftover = files(md, "tmp")
    print(
        f"\nkill -9: {len(sent)} started, {len(acked)} acknowledged, {len(stored)} in new/ "
        f"({len(set(stored) - acked)} stored without a 250), {len(leftover)} left in tmp/"
    )

    # Restarted on the same Maildir: everything is still there, and it takes mail again.
    s2 = start(samotop, md)
    sent["after restart"] = b"Subject: after restart\r\n\r\nstill here\r\n"
    code, text = send_one(s2.port, body=sent["after restart"])
    assert code == 250, text
    stored = check()
    assert "after restart" in stored


# -- disk full ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 2 MiB tmpfs, unmounted afterwards; skipped where it cannot be mounted."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    run = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, timeout=30
    )
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {run.stderr.decode().strip()}")
    yield mnt
    if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_disk_full_is_452_and_the_server_keeps_serving(samotop, tiny_tmpfs):
    md = tiny_tmpfs / "Maildir"
    s = start(samotop, md)
    try:
        big = b"From: <a@x.org>\r\nSubject: too big for the disk\r\n\r\n" + big_body(3 * 1024 * 1024, 3)
        with smtplib.SMTP("127.0.0.1", s.port, timeout=60) as c:
            c.ehlo("client.test")
            assert c.mail("a@x.org")[0] == 250
            assert c.rcpt("b@y.org")[0] == 250
            try:
                code, text = c.data(big)
            except smtplib.SMTPServerDisconnected as e:
                pytest.fail(f"server dropped the connection instead of answering 4xx: {e}")
            assert code in (451, 452), (code, text)
            if code == 452:
                assert text.startswith(b"4.3.1"), text
            else:
                assert text.startswith(b"4.3.0"), text
            # The same session goes on: a small message fits.
            assert c.mail("a@x.org")[0] == 250
            assert c.rcpt("b@y.org")[0] == 250
            code, text = c.data(b"Subject: small one\r\n\r\nfits\r\n")
            assert code == 250, text
        assert files(md, "tmp") == []
        stored = by_subject(md)
        assert list(stored) == ["small one"], list(stored)
        assert s.alive()
        assert re.search(r"WARN.*maildir", s.log), s.log

        # Fill the disk to the last byte: even a small message gets 4xx, and once space is
        # freed the next one gets 250.
        filler = tiny_tmpfs / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (65536, 4096, 1):  # bounded: at most 2 MiB in each size
                for _ in range(2 * 1024 * 1024 // size):
                    try:
                        os.write(fd, b"\0" * size)
                    except OSError:
                        break
        finally:
            os.close(fd)
        code, text = send_one(s.port, body=b"Subject: no room\r\n\r\n" + b"x" * 8000 + b"\r\n")
        assert code in (451, 452), (code, text)
        assert files(md, "tmp") == []
        filler.unlink()
        code, text = send_one(s.port, body=b"Subject: room again\r\n\r\nok\r\n")
        assert code == 250, text
        assert sorted(by_subject(md)) == ["room again", "small one"]
        assert files(md, "tmp") == []
        assert s.alive()
    finally:
        s.stop()


# -- per-recipient layout ----------------------------------------------------------------------


def test_per_recipient_layout_one_copy_each(samotop, tmp_path):
    md = tmp_path / "mail"
    s = start(samotop, md, "--maildir-layout", "per-recipient", "--max-mailboxes", "1000")
    body = b"From: <a@x.org>\r\nSubject: spread\r\n\r\n8-bit \xe9\xff\r\n"
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        rcpts = ["alice@example.org", "Bob@Other.ORG", '"john doe"@example.org', "alice@EXAMPLE.org"]
        assert c.sendmail("a@x.org", rcpts, body) == {}
    # alice@example.org and alice@EXAMPLE.org share one Maildir and one copy.
    assert names(md) == ["example.org", "other.org"]
    assert names(md / "example.org") == ["alice", "john doe"]
    assert names(md / "other.org") == ["Bob"]
    for box in [md / "example.org" / "alice", md / "example.org" / "john doe", md / "other.org" / "Bob"]:
        assert names(box) == ["cur", "new", "tmp"], box
        (p,) = files(box)
        parsed = split_stored(p.read_bytes())
        assert parsed["for"] is None  # several recipients: nobody learns the others
        assert parsed["data"] == body
        assert files(box, "tmp") == []

    # A single recipient: its own Received `for`.
    code, text = send_one(s.port, rcpts=("carol@example.org",), body=b"Subject: one\r\n\r\nx\r\n")
    assert code == 250, text
    (p,) = files(md / "example.org" / "carol")
    assert split_stored(p.read_bytes())["for"] == b"carol@example.org"


HOSTILE = [
    # (RCPT argument, acceptable codes)
    ('<"../../etc"@x.org>', (550,)),
    ("<../../etc@x.org>", (550, 501)),
    ("<a/b@c>", (550,)),
    ('<"a/b"@c>', (550,)),
    ("<.hidden@x.org>", (550, 501)),
    ('<".."@x.org>', (550,)),
    ('<"."@x.org>', (550,)),
    ("<a\\b@x.org>", (550, 501)),
    ('<"a\\\\b"@x.org>', (550,)),
    ("<a@../../etc>", (501, 550)),
    ("<a@x/y>", (501, 550)),
    ("<a\x01b@x.org>", (501, 550)),
    ('<"a\x01b"@x.org>', (501, 550)),
    ("<a\x7fb@x.org>", (501, 550)),
    ("<\"\xc2\x85\"@x.org>", (501, 550)),
    ('<""@x.org>', (501, 550)),
]


def test_per_recipient_hostile_recipients_are_refused(samotop, tmp_path):
    root = tmp_path / "root"
    md = root / "mail"
    s = start(samotop, md, "--maildir-layout", "per-recipient", "--max-mailboxes", "1000", "--max-errors", "100")
    r = Raw(s.port)
    try:
        assert r.cmd("EHLO client.test")[0] == 250
        assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
        for arg, allowed in HOSTILE:
            r.send(b"RCPT TO:" + arg.encode("latin-1") + b"\r\n")
            code, texts = r.reply()
            assert code in allowed, (arg, code, texts)
            if code == 550:
                assert enhanced(texts) == "5.1.3", (arg, texts)
        # A good recipient still works in the same transaction, and only it gets the message.
        assert r.cmd("RCPT TO:<ok@x.org>")[0] == 250
        assert r.cmd("DATA")[0] == 354
        r.send(b"Subject: hostile\r\n\r\nonly ok\r\n.\r\n")
        code, texts = r.reply()
        assert code == 250, texts
        assert r.cmd("QUIT")[0] == 221
    finally:
        r.close()
    assert s.alive()
    # Nothing outside DIR, and under DIR only x.org/ok.
    assert names(root) == ["mail"]
    assert not (tmp_path / "etc").exists()
    made = sorted(str(p.relative_to(md)) for p in md.rglob("*") if p.is_dir())
    assert made == ["x.org", "x.org/ok", "x.org/ok/cur", "x.org/ok/new", "x.org/ok/tmp"], made
    (p,) = files(md / "x.org" / "ok")
    assert split_stored(p.read_bytes())["data"] == b"Subject: hostile\r\n\r\nonly ok\r\n"


def test_per_recipient_follows_map(samotop, tmp_path):
    md = tmp_path / "mail"
    s = start(
        samotop, md, "--maildir-layout", "per-recipient", "--max-mailboxes", "1000", "--map", r"(.*)@example\.org=$1@users.example"
    )
    body = b"Subject: mapped\r\n\r\nto john\r\n"
    code, text = send_one(s.port, rcpts=("john@example.org",), body=body)
    assert code == 250, text
    code, text = send_one(s.port, rcpts=("jane@other.org",), body=b"Subject: unmapped\r\n\r\nx\r\n")
    assert code == 250, text
    assert names(md) == ["other.org", "users.example"]
    assert names(md / "users.example") == ["john"]
    (p,) = files(md / "users.example" / "john")
    parsed = split_stored(p.read_bytes())
    assert parsed["data"] == body
    # The trace field records the recipient the client gave (RFC 5321 4.4), not our mapping.
    assert parsed["for"] == b"john@example.org"
    (p,) = files(md / "other.org" / "jane")
    assert split_stored(p.read_bytes())["for"] == b"jane@other.org"


def test_per_recipient_map_to_a_hostile_name_is_refused(samotop, tmp_path):
    root = tmp_path / "root"
    md = root / "mail"
    s = start(samotop, md, "--maildir-layout", "per-recipient", "--max-mailboxes", "1000", "--map", r"(.*)@evil\.org=../$1")
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail("a@x.org")[0] == 250
        code, text = c.rcpt("x@evil.org")
        assert code == 550 and text.startswith(b"5.1.3"), (code, text)
    assert names(root) == ["mail"]
    assert names(md) == []


# -- memory ------------------------------------------------------------------------------------


@pytest.mark.parametrize("deliver", ["maildir", "null"])
def test_100_mb_message_is_streamed(samotop, tmp_path, deliver):
    md = tmp_path / "Maildir"
    total = 100 * 1024 * 1024
    args = ["--max-message-size", str(total * 2), "--data-timeout", "600"]
    if deliver == "maildir":
        s = start(samotop, md, *args)
    else:
        s = samotop("--spf", "off", "--deliver", "null", *args)
    # Warm up (one small message), then take the base line.
    code, text = send_one(s.port, body=b"Subject: warm-up\r\n\r\nx\r\n")
    assert code == 250, text
    time.sleep(0.3)
    base = s.rss_kib()
    peak = [base]
    done = threading.Event()

    def sample():
        for _ in range(600 * 20):  # bounded: 10 minutes at 50 ms
            if done.is_set():
                return
            try:
                peak[0] = max(peak[0], s.rss_kib())
            except OSError:
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    block = data_lines(random.Random(100), 64 * 1024)
    head = b"From: <a@x.org>\r\nSubject: hundred-mb\r\n\r\n"
    reps = total // len(block)
    digest = hashlib.sha256(head)
    r = Raw(s.port, timeout=300)
    try:
        assert r.cmd("EHLO client.test")[0] == 250
        assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
        assert r.cmd("RCPT TO:<b@y.org>")[0] == 250
        assert r.cmd("DATA")[0] == 354
        r.send(head)
        # Lines starting with "." are stuffed on the wire, as a client must.
        stuffed = re.sub(rb"(?m)^\.", b"..", block)
        for _ in range(reps):
            r.sock.sendall(stuffed)
            digest.update(block)
        r.send(b".\r\n")
        code, texts = r.reply()
        assert code == 250, texts
        r.cmd("QUIT")
    finally:
        r.close()
        done.set()
        sampler.join(timeout=10)
    growth_mib = (peak[0] - base) / 1024
    print(f"\n{deliver}: {len(head) + reps * len(block)} bytes, RSS {base / 1024:.1f} MiB -> "
          f"peak {peak[0] / 1024:.1f} MiB (growth {growth_mib:.1f} MiB)")
    assert growth_mib < 64, f"RSS grew by {growth_mib:.1f} MiB for a 100 MiB message"
    if deliver == "maildir":
        stored = {subject_of(p.read_bytes()[:4096]): p for p in files(md)}
        p = stored["hundred-mb"]
        with open(p, "rb") as f:
            start_bytes = f.read(4096)
            m = STORED.match(start_bytes)
            assert m, start_bytes[:400]
            f.seek(m.end())
            got = hashlib.sha256()
            for _ in range(total // 65536 + 10):
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                got.update(chunk)
        assert got.hexdigest() == digest.hexdigest()
        assert files(md, "tmp") == []


# -- per-recipient rules (issue 13) -----------------------------------------------------------


def test_per_recipient_layout_needs_accepted_domains_or_a_mailbox_cap(tmp_path):
    from conftest import BIN

    md = tmp_path / "mail"
    run = subprocess.run(
        [BIN, "--spf", "off", "--smtp", "127.0.0.1:0", "--deliver", f"maildir:{md}",
         "--maildir-layout", "per-recipient"],
        capture_output=True, timeout=30,
    )
    assert run.returncode == 2, run
    assert b"--accept-domain" in run.stderr and b"--max-mailboxes" in run.stderr, run.stderr


def test_the_mailbox_cap_refuses_a_new_mailbox_and_keeps_serving(samotop, tmp_path):
    md = tmp_path / "mail"
    s = start(samotop, md, "--maildir-layout", "per-recipient", "--max-mailboxes", "2")
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail("a@x.org")[0] == 250
        assert c.rcpt("one@example.org")[0] == 250
        assert c.rcpt("two@example.org")[0] == 250
        code, text = c.rcpt("three@example.org")
        assert (code, text[:6]) == (452, b"4.3.1 "), (code, text)
        # A mailbox already known is fine.
        assert c.rcpt("one@example.org")[0] == 250
        code, _ = c.data(b"Subject: cap\r\n\r\nx\r\n")
        assert code == 250
    assert len(files(md / "example.org" / "one")) == 1
    assert not (md / "example.org" / "three").exists()
    # After a restart, the two on disk count.
    s.stop()
    s2 = start(samotop, md, "--maildir-layout", "per-recipient", "--max-mailboxes", "2")
    with smtplib.SMTP("127.0.0.1", s2.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail("a@x.org")[0] == 250
        assert c.rcpt("three@example.org")[0] == 452
        assert c.rcpt("two@example.org")[0] == 250


def test_names_are_nfc_and_case_folds_where_asked(samotop, tmp_path):
    md = tmp_path / "mail"
    s = start(samotop, md, "--maildir-layout", "per-recipient", "--accept-domain", "example.org",
              "--maildir-fold-case")
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        # One name typed two ways (precomposed, decomposed), and in two cases.
        for rcpt in ("jos\u00e9@example.org", "Jose\u0301@example.org"):
            c.sendmail("a@x.org", [rcpt], b"Subject: nfc\r\n\r\nx\r\n", mail_options=["SMTPUTF8"])
    assert names(md / "example.org") == ["jos\u00e9"], names(md / "example.org")
    assert len(files(md / "example.org" / "jos\u00e9")) == 2


def test_stale_tmp_files_are_cleaned_in_every_mailbox_it_opens(samotop, tmp_path):
    md = tmp_path / "mail"
    box = md / "example.org" / "alice"
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True)
    old, fresh = box / "tmp" / "1.crashed.host", box / "tmp" / "2.recent.host"
    old.write_bytes(b"left by a crash")
    fresh.write_bytes(b"being written by someone")
    past = time.time() - 40 * 3600
    os.utime(old, (past, past))
    s = start(samotop, md, "--maildir-layout", "per-recipient", "--accept-domain", "example.org")
    assert old.exists(), "cleaned when first opened, not at start"
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.sendmail("a@x.org", ["alice@example.org"], b"Subject: tmp\r\n\r\nx\r\n")
    assert not old.exists()
    assert fresh.exists()
    assert len(files(box)) == 1

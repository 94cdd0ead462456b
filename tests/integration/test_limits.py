"""Limits over the wire: every limit answers with a clear reply (code and enhanced code), and
the server keeps serving: after each one a fresh well-behaved client still gets 250.

Issue 3 (Foundation).
"""

import concurrent.futures
import smtplib
import time

import pytest

from conftest import Raw, enhanced, send_one, stdout_messages, wait_until


def start(samotop, *args, **kwargs):
    return samotop("--spf", "off", *args, **kwargs)


def ehlo(raw):
    code, texts = raw.cmd("EHLO client.test")
    assert code == 250, texts
    return texts


def still_serving(server):
    code, text = send_one(server.port)
    assert code == 250, text
    assert server.alive()


def admitted(port, attempts=100):
    """A Raw client that got the 220 greeting. A connection that is still counted (the harness'
    readiness probe, a client that has just quit) may hold a place for a moment: retry, bounded."""
    for _ in range(attempts):
        r = Raw(port)
        if r.greeting[0] == 220:
            return r
        r.close()
        time.sleep(0.05)
    raise AssertionError(f"no connection admitted after {attempts} attempts")


# ---- line length ----------------------------------------------------------------------------


def test_one_megabyte_line_gets_500_and_server_goes_on(samotop):
    s = start(samotop, "--deliver", "null")
    r = Raw(s.port, timeout=30)
    ehlo(r)
    r.send(b"A" * 1_000_000)  # no CR LF
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (500, "5.5.2"), texts
    # The rest of the long line is skipped without another reply; then commands work again.
    r.send(b"BBBB\r\n")
    code, texts = r.cmd("NOOP")
    assert (code, texts) == (250, ["2.0.0 OK"])
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    r.close()
    still_serving(s)


def test_one_megabyte_line_then_close(samotop):
    s = start(samotop, "--deliver", "null")
    r = Raw(s.port, timeout=30)
    r.send(b"MAIL FROM:<" + b"x" * 1_000_000)
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (500, "5.5.2"), texts
    r.close()
    still_serving(s)


def test_lines_up_to_the_limit_are_fine(samotop):
    # 4096 octets including CR LF (Limits::max_line_length).
    s = start(samotop, "--deliver", "null")
    r = Raw(s.port)
    ehlo(r)
    line = "NOOP " + "x" * (4096 - 2 - 5)
    assert len(line) + 2 == 4096
    code, texts = r.cmd(line)
    assert (code, enhanced(texts)) == (250, "2.0.0"), texts
    code, texts = r.cmd("NOOP")
    assert (code, enhanced(texts)) == (250, "2.0.0"), texts
    # One octet more is too long.
    code, texts = r.cmd(line + "x")
    assert (code, enhanced(texts)) == (500, "5.5.2"), texts
    r.close()
    still_serving(s)


# Regression: a line just over the limit, with its LF in the same read, used to swallow
# the command after it.
@pytest.mark.parametrize("length", [4097, 5000])
@pytest.mark.parametrize("pipelined", [False, True], ids=["separate", "pipelined"])
def test_command_after_a_slightly_too_long_line_is_answered(samotop, length, pipelined):
    s = start(samotop, "--deliver", "null")
    r = Raw(s.port, timeout=5)
    ehlo(r)
    line = b"NOOP " + b"x" * (length - 7) + b"\r\n"
    assert len(line) == length
    r.send(line + (b"NOOP\r\n" if pipelined else b""))
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (500, "5.5.2"), texts
    if not pipelined:
        r.send(b"NOOP\r\n")
    code, texts = r.reply()
    assert (code, texts) == (250, ["2.0.0 OK"])


def test_long_lines_in_data_are_content(samotop):
    """The command line limit is not a data line limit: a 200 kB data line is stored whole."""
    s = start(samotop, "--deliver", "stdout")
    body = b"Subject: long\r\n\r\n" + b"y" * 200_000 + b"\r\n"
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.sendmail("a@x.org", ["b@y.org"], body) == {}
    msgs = stdout_messages(s.stdout)
    assert len(msgs) == 1 and msgs[0]["data"] == body


# ---- many clients ---------------------------------------------------------------------------


def test_200_parallel_clients(samotop):
    s = start(samotop, "--deliver", "null", "--max-connections", "1000")

    def one(i):
        with smtplib.SMTP("127.0.0.1", s.port, timeout=60) as c:
            c.ehlo(f"client{i}.test")
            c.mail(f"sender{i}@x.org")
            c.rcpt(f"rcpt{i}@y.org")
            return c.data(f"Subject: parallel {i}\r\n\r\nbody {i}\r\n".encode())[0]

    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        codes = list(pool.map(one, range(200), timeout=300))
    assert len(codes) == 200
    assert codes.count(250) == 200, codes
    still_serving(s)
    # Each session was logged with its message.
    wait_until(lambda: s.log.count("mails=1 ") >= 201, what="201 session log lines")


# ---- timeouts -------------------------------------------------------------------------------


def test_silent_client_is_dropped_after_command_timeout(samotop):
    s = start(samotop, "--deliver", "null", "--command-timeout", "1")
    r = Raw(s.port, timeout=20)
    assert r.greeting[0] == 220
    code, texts = r.reply()  # say nothing
    assert (code, enhanced(texts)) == (421, "4.4.2"), texts
    assert r.closed()
    # Also after a greeting, inside a transaction.
    r = Raw(s.port, timeout=20)
    ehlo(r)
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (421, "4.4.2"), texts
    assert r.closed()
    still_serving(s)


def test_data_timeout_mid_data(samotop):
    s = start(samotop, "--deliver", "stdout", "--data-timeout", "1")
    r = Raw(s.port, timeout=20)
    ehlo(r)
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
    assert r.cmd("RCPT TO:<b@y.org>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: stalled\r\n\r\npartial body line\r\n")
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (421, "4.4.2"), texts
    assert r.closed()
    # A frame is written only at the commit: the aborted message leaves stdout empty.
    wait_until(lambda: "end=timeout" in s.log, what="the timed-out session's log line")
    assert s.stdout == b"", s.stdout
    still_serving(s)
    assert len(stdout_messages(s.stdout)) == 1


def test_refused_and_aborted_messages_leave_stdout_empty(samotop):
    """`--deliver stdout` writes a frame at the commit, so nothing else reaches stdout: not a
    message over the size limit, not one whose client left mid-data, nor a BDAT transfer reset
    before its LAST chunk."""
    s = start(samotop, "--deliver", "stdout", "--max-message-size", "1000")
    # Over the size limit: refused after the data.
    r = Raw(s.port, timeout=20)
    ehlo(r)
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
    assert r.cmd("RCPT TO:<b@y.org>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    code, texts = r.cmd("Subject: big\r\n\r\n" + "x" * 2000 + "\r\n.")
    assert (code, enhanced(texts)) == (552, "5.3.4"), texts
    # BDAT chunks, then RSET before LAST: the transaction is aborted.
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
    assert r.cmd("RCPT TO:<b@y.org>")[0] == 250
    body = b"Subject: chunked\r\n\r\nfirst chunk\r\n"
    r.send(b"BDAT %d\r\n" % len(body) + body)
    assert r.reply()[0] == 250
    assert r.cmd("RSET")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    r.close()
    # The client leaves in the middle of the data.
    r = Raw(s.port, timeout=20)
    ehlo(r)
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
    assert r.cmd("RCPT TO:<b@y.org>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: left\r\n\r\nhalf a message\r\n")
    r.close()
    wait_until(lambda: s.log.count("helo=client.test") >= 2, what="both sessions' log lines")
    assert s.stdout == b"", s.stdout
    # A message that is accepted is the one frame.
    still_serving(s)
    [msg] = stdout_messages(s.stdout)
    # (After the trace fields the checks add, such as Authentication-Results.)
    assert msg["data"] == b"Subject: t\r\n\r\nhi\r\n" or msg["data"].endswith(b"\r\nSubject: t\r\n\r\nhi\r\n"), msg


def test_data_timeout_leaves_no_file_in_maildir(samotop, tmp_path):
    md = tmp_path / "md"
    s = start(samotop, "--deliver", f"maildir:{md}", "--data-timeout", "1")
    r = Raw(s.port, timeout=20)
    ehlo(r)
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
    assert r.cmd("RCPT TO:<b@y.org>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: stalled\r\n\r\npartial body line\r\n")
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (421, "4.4.2"), texts
    assert r.closed()
    assert list((md / "new").iterdir()) == []
    assert list((md / "tmp").iterdir()) == []
    still_serving(s)
    assert len(list((md / "new").iterdir())) == 1


# ---- per-transaction limits -----------------------------------------------------------------


def test_max_recipients(samotop):
    s = start(samotop, "--deliver", "stdout", "--max-recipients", "3")
    r = Raw(s.port)
    ehlo(r)
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
    for i in range(3):
        code, texts = r.cmd(f"RCPT TO:<r{i}@y.org>")
        assert (code, enhanced(texts)) == (250, "2.1.5"), texts
    code, texts = r.cmd("RCPT TO:<r3@y.org>")
    assert (code, enhanced(texts)) == (452, "4.5.3"), texts
    code, texts = r.cmd("RCPT TO:<r4@y.org>")
    assert (code, enhanced(texts)) == (452, "4.5.3"), texts
    assert r.cmd("DATA")[0] == 354
    code, texts = r.cmd("Subject: three\r\n\r\nhi\r\n.")
    assert (code, enhanced(texts)) == (250, "2.0.0"), texts
    assert r.cmd("QUIT")[0] == 221
    msgs = stdout_messages(s.stdout)
    assert len(msgs) == 1
    assert msgs[0]["rcpts"] == ["r0@y.org", "r1@y.org", "r2@y.org"]
    assert msgs[0]["data"] == b"Subject: three\r\n\r\nhi\r\n"
    still_serving(s)


def test_declared_size_over_limit_is_refused_at_mail(samotop):
    s = start(samotop, "--deliver", "null", "--max-message-size", "1000")
    r = Raw(s.port)
    assert "SIZE 1000" in ehlo(r)
    code, texts = r.cmd("MAIL FROM:<a@x.org> SIZE=2000")
    assert (code, enhanced(texts)) == (552, "5.3.4"), texts
    # No transaction was opened: RCPT needs MAIL.
    code, texts = r.cmd("RCPT TO:<b@y.org>")
    assert (code, enhanced(texts)) == (503, "5.5.1"), texts
    code, texts = r.cmd("MAIL FROM:<a@x.org> SIZE=1000")
    assert (code, enhanced(texts)) == (250, "2.1.0"), texts
    assert r.cmd("QUIT")[0] == 221
    still_serving(s)


def test_actual_size_over_limit_is_refused_at_end_of_data(samotop):
    s = start(samotop, "--deliver", "stdout", "--max-message-size", "1000")
    r = Raw(s.port)
    ehlo(r)

    def transaction(body):
        assert r.cmd("MAIL FROM:<a@x.org>")[0] == 250
        assert r.cmd("RCPT TO:<b@y.org>")[0] == 250
        assert r.cmd("DATA")[0] == 354
        r.send(body + b".\r\n")
        return r.reply()

    big = b"Subject: big\r\n\r\n" + (b"z" * 98 + b"\r\n") * 50  # 5016 bytes
    code, texts = transaction(big)
    assert (code, enhanced(texts)) == (552, "5.3.4"), texts
    # Exactly the limit (after unstuffing) is fine; one more octet is not.
    exact = b"Subject: exact\r\n\r\n" + b".." + b"e" * (1000 - 18 - 1 - 2) + b"\r\n"
    assert len(exact) - 1 == 1000
    code, texts = transaction(exact)
    assert (code, enhanced(texts)) == (250, "2.0.0"), texts
    code, texts = transaction(b"Subject: exact\r\n\r\n" + b"f" * (1000 - 18 - 1) + b"\r\n")
    assert (code, enhanced(texts)) == (552, "5.3.4"), texts
    assert r.cmd("QUIT")[0] == 221
    delivered = [m["data"] for m in stdout_messages(s.stdout) if m["data"]]
    assert delivered == [exact.replace(b"\r\n..", b"\r\n.")]
    still_serving(s)


# ---- per-session and per-server limits ------------------------------------------------------


def test_max_errors_closes_with_421(samotop):
    s = start(samotop, "--deliver", "null", "--max-errors", "3")
    r = Raw(s.port)
    ehlo(r)
    for bad in ("FOO", "BAR baz"):
        code, texts = r.cmd(bad)
        assert (code, enhanced(texts)) == (500, "5.5.2"), texts
    code, texts = r.cmd("QUUX")
    assert (code, enhanced(texts)) == (500, "5.5.2"), texts
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (421, "4.7.0"), texts
    assert r.closed()
    still_serving(s)


def test_max_errors_counts_sequence_errors(samotop):
    s = start(samotop, "--deliver", "null", "--max-errors", "3")
    r = Raw(s.port)
    assert r.cmd("MAIL FROM:<a@x.org>")[0] == 503
    ehlo(r)
    assert r.cmd("RCPT TO:<b@y.org>")[0] == 503
    assert r.cmd("DATA")[0] == 503
    code, texts = r.reply()
    assert (code, enhanced(texts)) == (421, "4.7.0"), texts
    assert r.closed()
    still_serving(s)


def test_max_connections(samotop):
    s = start(samotop, "--deliver", "null", "--max-connections", "2")
    a = admitted(s.port)
    b = admitted(s.port)
    # Both places are taken by live sessions: the third is refused at connect.
    c = Raw(s.port)
    assert (c.greeting[0], enhanced(c.greeting[1])) == (421, "4.3.2"), c.greeting
    assert c.closed()
    # The two admitted sessions work.
    assert a.cmd("EHLO a.test")[0] == 250
    assert b.cmd("EHLO b.test")[0] == 250
    # Close one: a fourth gets 220.
    assert a.cmd("QUIT")[0] == 221
    assert a.closed()
    d = admitted(s.port)
    assert d.cmd("EHLO d.test")[0] == 250
    for r in (b, d):
        assert r.cmd("QUIT")[0] == 221
        r.close()

    def fresh():
        try:
            return send_one(s.port)[0] == 250
        except smtplib.SMTPConnectError:
            return False

    wait_until(fresh, what="a fresh client is served")
    assert s.alive()

"""Routes and fan-out end to end: Postfix relays one multi-recipient message into samotop,
which splits it over a webhook, a command and two Maildirs (one behind a fan-out with a
second webhook). Each route gets it once; when the webhook fails, samotop answers 451,
Postfix retries, and the retry reaches only the route that failed (no duplicate storm).
"""

import os
import pathlib
import shutil
import smtplib
import tempfile

import pytest

import postfixkit
from conftest import free_port, wait_port, wait_until
from test_trigger_webhook import SECRET, Hooks

MAIN_CF = """\
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{next_hop}
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
# Retry soon: the test waits for the retry after samotop's 451.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""


class Relay:
    """A throw-away Postfix: listens on `port`, relays everything to samotop."""

    def __init__(self, next_hop):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="samotop-postfix-"))
        self.port = free_port()
        postfixkit.configure(self.dir, self.port, MAIN_CF.format(next_hop=next_hop))
        postfixkit.start(self.dir)
        wait_port(self.port, timeout=30)

    def log(self):
        p = self.dir / "maillog"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self):
        postfixkit.stop(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def hooks():
    h = Hooks()
    yield h
    h.close()


def maildir_files(d):
    new = pathlib.Path(d) / "new"
    return sorted(new.iterdir()) if new.exists() else []


def test_postfix_relays_one_message_that_splits_over_routes(samotop, hooks, tmp_path):
    if not os.path.exists(postfixkit.POSTFIX) or os.geteuid() != 0:
        pytest.fail("this test needs Postfix (apt-get install postfix) and root", pytrace=False)
    md, md2, out = tmp_path / "md", tmp_path / "md2", tmp_path / "out"
    out.mkdir()
    prog = tmp_path / "run.sh"
    prog.write_text('#!/bin/sh\ncat > "$1/$USER.$$"\nenv > "$1/env.$USER"\n')
    prog.chmod(0o755)
    s = samotop(
        "--deliver", f"maildir:{md}",
        "--route", f"alerts+*@example.org={hooks.url('/flaky')}",
        "--route", rf"re:^run-.*@example\.org$=exec:{prog} {out}",
        "--route", f"both@example.org=maildir:{md2},{hooks.url('/ok')}",
        "--webhook-secret", SECRET, "--spf", "off", "--name", "mx.test",
    )
    relay = Relay(s.port)
    try:
        rcpts = ["alerts+env=prod@example.org", "run-1@example.org", "bob@example.org",
                 "both@example.org", "carol@example.org"]
        msg = (b"From: a@example.com\r\nTo: team@example.org\r\nSubject: split\r\n"
               b"Message-ID: <split-1@example.com>\r\n\r\nOne message, four routes.\r\n")
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as c:
            c.sendmail("a@example.com", rcpts, msg)
        # First attempt: the webhook 500s, samotop answers 451, Postfix retries (1-2 s).
        wait_until(lambda: len(hooks.to("/flaky")) >= 2, timeout=90,
                   what=f"Postfix's retry\n{relay.log()[-3000:]}\n{s.log[-3000:]}")
        wait_until(lambda: "status=sent" in relay.log(), timeout=30, what="delivered")
        flaky = hooks.to("/flaky")
        assert len(flaky) == 2, "the failed route got the retry, once"
        assert flaky[0][1]["webhook-id"] == flaky[1][1]["webhook-id"]
        assert all(r[3] is True for r in flaky), [r[3] for r in flaky]
        assert flaky[1][4] == ["alerts+env=prod@example.org"]
        # Every other route got it exactly once, though the message came twice.
        assert len(maildir_files(md)) == 1
        assert len(maildir_files(md2)) == 1
        assert len(hooks.to("/ok")) == 1
        assert hooks.to("/ok")[0][4] == ["both@example.org"]
        assert len(list(out.glob("run-1.*"))) == 1
        stored = maildir_files(md)[0].read_bytes()
        assert b"One message, four routes." in stored
        assert b"Received: from relay.test" in stored
        env = (out / "env.run-1").read_text()
        assert "HELO=relay.test" in env and "RECIPIENT=run-1@example.org" in env
        assert "451" in relay.log() and "skipped" in s.log
    finally:
        relay.stop()


def test_fan_out_all_or_451(samotop, hooks, tmp_path):
    """--deliver twice: a Maildir and a webhook; 250 only when both took it."""
    from test_trigger_webhook import send

    md = tmp_path / "md"
    s = samotop("--deliver", f"maildir:{md}", "--deliver", hooks.url("/flaky"),
                "--webhook-secret", SECRET, "--spf", "off")
    msg = b"Subject: both\r\nMessage-ID: <fan-1@example.com>\r\n\r\nfan out\r\n"
    assert send(s.port, body=msg)[0] == 451
    assert len(maildir_files(md)) == 1
    assert send(s.port, body=msg)[0] == 250
    assert len(maildir_files(md)) == 1, "the retry did not store it twice"
    assert len(hooks.to("/flaky")) == 2
    # A webhook that refuses for good: 5xx to the client, the Maildir copy stays (logged).
    s2 = samotop("--deliver", f"maildir:{md}", "--deliver", hooks.url("/gone"), "--spf", "off")
    code, text = send(s2.port, body=msg.replace(b"fan-1", b"fan-2"))
    assert code == 550, text

"""Seeing what it does (issue 18), with real parts: Prometheus scrapes the real binary and
answers PromQL; promtool checks the exposition; transcripts read back in order and stay
bounded; JSON logs parse with jq line by line under load.

One Prometheus runs per module (it starts in a second or two) and scrapes every samotop
this module starts, through a file_sd target list the tests rewrite.
"""

import concurrent.futures
import hashlib
import json
import os
import pathlib
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

from conftest import Raw, free_port, wait_port, wait_until

SENDER = "a@example.com"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def http_get(url, headers=None, timeout=10):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.headers.get("Content-Type", ""), r.read().decode()


class Prometheus:
    """A throw-away Prometheus scraping the targets in a file it watches."""

    def __init__(self):
        if not os.access(PROMETHEUS, os.X_OK):
            pytest.fail("this test needs a real Prometheus (scripts/setup installs it)", pytrace=False)
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="prom-"))
        self.port = free_port()
        self.targets = self.dir / "targets.json"
        self.targets.write_text("[]")
        (self.dir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: samotop\n    file_sd_configs:\n"
            f"      - files: ['{self.targets}']\n        refresh_interval: 1s\n"
        )
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
        )
        wait_port(self.port, self.proc, timeout=30)

    def scrape(self, port):
        """Scrape 127.0.0.1:port from now on (and only it)."""
        self.targets.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"]}]))

    def query(self, promql):
        """The value of an instant query (the sum of its series), or None."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        _, body = http_get(url)
        data = json.loads(body)["data"]["result"]
        return sum(float(s["value"][1]) for s in data) if data else None

    def wait(self, promql, want, timeout=30):
        return wait_until(lambda: self.query(promql) == want, timeout=timeout,
                          step=0.5, what=f"{promql} == {want} (last {self.query(promql)})")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def prometheus():
    p = Prometheus()
    yield p
    p.close()


def send(port, rcpts=("b@example.org",), body=b"Subject: m\r\n\r\nhello\r\n"):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        return c.sendmail(SENDER, list(rcpts), body)


def test_prometheus_counts_a_scripted_mix(samotop, prometheus, tmp_path):
    mport = free_port()
    s = samotop("--spf", "off", "--deliver", f"maildir:{tmp_path / 'mail'}",
                "--accept-domain", "example.org", "--tls-self-signed",
                "--command-timeout", "1", "--metrics", f"127.0.0.1:{mport}")
    wait_port(mport, s.proc)
    prometheus.scrape(mport)
    for _ in range(3):
        assert send(s.port) == {}
    # Refusals: a relayed recipient (a guard at RCPT) and an unknown command.
    r = Raw(s.port)
    r.cmd("EHLO client.test")
    assert r.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
    assert r.cmd("RCPT TO:<x@elsewhere.net>")[0] == 550
    assert r.cmd("BOGUS")[0] == 500
    assert r.cmd("QUIT")[0] == 221
    r.close()
    # A TLS session.
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.starttls(context=ctx)
        c.ehlo("client.test")
        assert c.sendmail(SENDER, ["b@example.org"], b"Subject: tls\r\n\r\nx\r\n") == {}
    # A timeout: a client that says nothing.
    quiet = Raw(s.port)
    assert quiet.closed(timeout=10)
    quiet.close()

    prometheus.wait('samotop_messages_total{result="accepted"}', 4)
    prometheus.wait('samotop_refusals_total{origin="rcpt",class="5xx",status="5.7"}', 1)
    prometheus.wait('samotop_guard_refusals_total{guard="accept_domains"}', 1)
    prometheus.wait('samotop_refusals_total{origin="command"}', 1)
    prometheus.wait('samotop_tls_handshakes_total{version="TLS1.3"}', 1)
    prometheus.wait('samotop_limits_total{limit="timeout"}', 1)
    prometheus.wait('samotop_sessions_closed_total{end="timeout"}', 1)
    # Six sessions, and the harness's readiness probe.
    prometheus.wait('samotop_sessions_opened_total{listener="smtp"}', 7)
    prometheus.wait("samotop_sessions_active", 0)
    prometheus.wait("samotop_message_recipients_count", 4)
    prometheus.wait('samotop_delivery_seconds_count{backend="maildir"}', 4)
    assert prometheus.query("samotop_received_bytes_total") > 0
    assert prometheus.query("samotop_process_resident_memory_bytes") > 1_000_000
    assert prometheus.query("samotop_process_open_fds") > 3


def test_prometheus_counts_failures_sizes_and_refused_connections(samotop, prometheus, tmp_path):
    """The rest of the families: messages refused and failed by a backend, backend errors,
    message sizes, a failed TLS handshake, connections refused by a limit, an LMTP listener;
    and /metrics on the inbox's --http listener too."""
    mport, lport, sport = free_port(), free_port(), free_port()
    s = samotop("--smtp", f"127.0.0.1:{sport}", "--spf", "off", "--deliver", "null", "--tls-self-signed",
                "--route", "never@example.org=exec:/bin/false",
                "--route", "later@example.org=exec:/bin/sh -c 'exit 75'",
                "--max-message-size", "2000", "--max-connections-per-ip", "3", "--per-ip-limit-exempt", "10.0.0.0/8",
                "--lmtp", f"127.0.0.1:{lport}", "--metrics", f"127.0.0.1:{mport}", port=sport)
    wait_port(mport, s.proc)
    wait_port(lport, s.proc)
    prometheus.scrape(mport)
    at = f'instance="127.0.0.1:{mport}"'

    assert send(s.port) == {}
    for rcpt, code in (("never@example.org", 554), ("later@example.org", 451)):
        with pytest.raises(smtplib.SMTPDataError) as e:
            send(s.port, rcpts=(rcpt,))
        assert e.value.smtp_code == code, e.value
    # Too big: refused at MAIL when SIZE says so, after the data when it does not.
    with pytest.raises(smtplib.SMTPException):
        send(s.port, body=b"Subject: big\r\n\r\n" + b"x" * 4000 + b"\r\n")
    big = Raw(s.port)
    big.cmd("EHLO client.test")
    assert big.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
    assert big.cmd("RCPT TO:<b@example.org>")[0] == 250
    assert big.cmd("DATA")[0] == 354
    big.send(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 60 + b".\r\n")
    assert big.reply()[0] == 552
    assert big.cmd("QUIT")[0] == 221
    big.close()
    # STARTTLS, then bytes that are no ClientHello.
    r = Raw(s.port)
    r.cmd("EHLO client.test")
    assert r.cmd("STARTTLS")[0] == 220
    r.send(b"this is not TLS\r\n" * 20)
    assert r.closed(timeout=15)
    r.close()
    # Three connections from this address are the limit; the fourth gets 421.
    held = [Raw(s.port) for _ in range(3)]
    extra = Raw(s.port, greet=False)
    assert extra.reply()[0] == 421
    extra.close()
    for h in held:
        h.close()
    wait_until(lambda: 'samotop_sessions_active{listener="smtp"} 0\n' in
               http_get(f"http://127.0.0.1:{mport}/metrics")[1], what="the held sessions closed")
    # An LMTP session.
    lm = Raw(lport)
    assert lm.cmd("LHLO client.test")[0] == 250
    assert lm.cmd("QUIT")[0] == 221
    lm.close()

    prometheus.wait(f'samotop_messages_total{{{at},result="accepted"}}', 1)
    prometheus.wait(f'samotop_messages_total{{{at},result="refused",origin="backend"}}', 1)
    prometheus.wait(f'samotop_messages_total{{{at},result="failed",origin="backend"}}', 1)
    prometheus.wait(f'samotop_messages_total{{{at},result="refused",origin="data"}}', 1)
    prometheus.wait(f'samotop_backend_errors_total{{{at},status="5.3"}}', 1)
    prometheus.wait(f'samotop_backend_errors_total{{{at},status="4.3"}}', 1)
    prometheus.wait(f'samotop_limits_total{{{at},limit="message_size"}}', 2)  # at MAIL, after the data
    prometheus.wait(f'samotop_tls_failures_total{{{at}}}', 1)
    prometheus.wait(f'sum(samotop_connections_refused_total{{{at}}})', 1)
    prometheus.wait(f'samotop_sessions_opened_total{{{at},listener="lmtp"}}', 2)  # and the readiness probe
    assert prometheus.query(f'samotop_message_size_bytes_count{{{at}}}') >= 3
    assert prometheus.query(f'samotop_message_size_bytes_sum{{{at}}}') > 0

    # The inbox's --http listener serves /metrics too.
    hport = free_port()
    inbox = samotop("--spf", "off", "--deliver", f"sqlite:{tmp_path / 'inbox.db'}", "--http", str(hport))
    wait_port(hport, inbox.proc)
    assert send(inbox.port) == {}
    wait_until(lambda: 'samotop_messages_total{listener="smtp",result="accepted"' in
               http_get(f"http://127.0.0.1:{hport}/metrics")[1], what="/metrics on --http")


def test_promtool_finds_no_problem_and_formats_are_negotiated(samotop):
    mport = free_port()
    s = samotop("--spf", "off", "--deliver", "null", "--metrics", str(mport))
    wait_port(mport, s.proc)
    assert send(s.port) == {}
    wait_until(lambda: "samotop_messages_total" in http_get(f"http://127.0.0.1:{mport}/metrics")[1],
               what="a message counted")
    ctype, classic = http_get(f"http://127.0.0.1:{mport}/metrics",
                              {"Accept": "text/plain; version=0.0.4"})
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    assert "# EOF" not in classic
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=classic.encode(),
                           capture_output=True, timeout=30)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check
    ctype, om = http_get(f"http://127.0.0.1:{mport}/metrics",
                         {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert ctype.startswith("application/openmetrics-text"), ctype
    assert om.rstrip().endswith("# EOF")
    # No label value is something a peer said.
    assert "client.test" not in classic and SENDER not in classic


def transcripts(d):
    return sorted(pathlib.Path(d).glob("*.transcript"))


def sizes(d):
    """Each transcript's size; a file the server prunes between the listing and its stat is gone."""
    out = {}
    for p in transcripts(d):
        try:
            out[p.name] = p.stat().st_size
        except FileNotFoundError:
            pass
    return out


def settled(d, timeout=60.0):
    """The transcript directory once the writer has stopped changing it (two looks 0.5 s apart)."""
    last = sizes(d)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sizes(d)
        if now == last:
            return now
        last = now
    raise TimeoutError(f"{d} still changing after {timeout}s")


def test_a_transcript_reads_back_in_order(samotop, tmp_path):
    tdir = tmp_path / "transcripts"
    s = samotop("--spf", "off", "--deliver", "null", "--tls-self-signed",
                "--accept-domain", "example.org", "--transcript", str(tdir))
    r = Raw(s.port)
    r.cmd("EHLO client.test")
    assert r.cmd("STARTTLS")[0] == 220
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    r.sock = ctx.wrap_socket(r.sock, server_hostname="mx")
    content = b"Subject: chunked\r\n\r\nbody\r\n"
    # Pipelined: EHLO, MAIL, a refused RCPT, an accepted one, BDAT LAST, QUIT.
    r.send(b"EHLO again.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<x@elsewhere.net>\r\n"
           b"RCPT TO:<b@example.org>\r\nBDAT %d LAST\r\n" % len(content) + content + b"QUIT\r\n")
    codes = [r.reply()[0] for _ in range(6)]
    assert codes == [250, 250, 550, 250, 250, 221], codes
    r.close()
    # (The harness's readiness probe has a transcript of its own: a greeting, no command.)
    [path] = wait_until(lambda: [p for p in transcripts(tdir) if "C: QUIT" in p.read_text()],
                        what="the transcript")
    lines = [l[25:] for l in path.read_text().splitlines()]
    said = [l for l in lines if l.startswith(("C: ", "S: ", "* TLS", "* message", "* delivered"))]
    order = [
        "C: EHLO client.test", "S: 250-", "C: STARTTLS", "S: 220", "* TLS TLS1.3",
        "C: EHLO again.test", "S: 250-", "C: MAIL FROM:<a@example.com>", "S: 250",
        "C: RCPT TO:<x@elsewhere.net>", "S: 550 5.7.1", "C: RCPT TO:<b@example.org>", "S: 250",
        f"C: BDAT {len(content)} LAST", "* message", "* delivered", "S: 250 2.0.0", "C: QUIT", "S: 221",
    ]
    i = 0
    for line in said:
        if i < len(order) and line.startswith(order[i]):
            i += 1
    assert i == len(order), (order[i] if i < len(order) else None, said)
    digest = hashlib.sha256(content).hexdigest()
    assert f"* message {len(content)} bytes sha256={digest}" in lines
    assert "body" not in path.read_text(), "the content is never written"
    assert lines[-1].startswith("* end quit")


def test_hostile_sessions_cannot_grow_the_transcripts_past_their_bound(samotop, tmp_path):
    tdir = tmp_path / "transcripts"
    s = samotop("--spf", "off", "--deliver", "null", "--transcript", str(tdir),
                "--transcript-max-files", "100", "--transcript-max-session-bytes", "20000",
                "--max-errors", "100000")
    # One session of 10 000 commands.
    r = Raw(s.port, timeout=60)
    r.send(b"NOOP\r\n" * 10_000 + b"QUIT\r\n")
    for _ in range(10_001):
        r.reply()
    r.close()
    [long_one] = wait_until(lambda: [p for p in transcripts(tdir) if "NOOP" in p.read_text()],
                            what="the long session's transcript")
    assert long_one.stat().st_size <= 20_000 + 200
    assert "transcript cut" in long_one.read_text()

    # 10 000 sessions.
    def one(_):
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.recv(512)
            c.sendall(b"QUIT\r\n")
            c.recv(512)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(10_000)))
    wait_until(lambda: "end=quit" in s.log, what="sessions ended")
    files = settled(tdir)
    assert len(files) <= 100, len(files)
    assert sum(files.values()) <= 100 * 20_200
    assert s.alive()


def test_a_read_only_transcript_directory_does_not_stop_mail(samotop, tmp_path):
    tdir = tmp_path / "ro"
    tdir.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(tdir)],
                           capture_output=True, timeout=30)
    assert mount.returncode == 0, mount
    try:
        mport = free_port()
        s = samotop("--spf", "off", "--deliver", f"maildir:{tmp_path / 'mail'}",
                    "--transcript", str(tdir), "--metrics", str(mport))
        wait_port(mport, s.proc)
        for _ in range(3):
            assert send(s.port) == {}
        assert len(list((tmp_path / "mail" / "new").iterdir())) == 3
        wait_until(lambda: "samotop_transcript_lines_dropped_total" in
                   http_get(f"http://127.0.0.1:{mport}/metrics")[1], what="drops counted")
        _, text = http_get(f"http://127.0.0.1:{mport}/metrics")
        dropped = [l for l in text.splitlines() if l.startswith("samotop_transcript_lines_dropped_total")]
        assert float(dropped[0].split()[-1]) > 0, dropped
        assert "transcripts are dropped and counted" in s.log
    finally:
        subprocess.run(["umount", str(tdir)], timeout=30)


def test_a_full_transcript_disk_and_the_byte_bound(samotop, tmp_path):
    """A transcript directory whose disk fills: mail goes on, lines are dropped and counted.
    And --transcript-max-bytes keeps the directory under its total."""
    full = tmp_path / "full"
    full.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)],
                           capture_output=True, timeout=30)
    assert mount.returncode == 0, mount
    try:
        mport = free_port()
        s = samotop("--spf", "off", "--deliver", "null", "--transcript", str(full),
                    "--transcript-max-files", "100000", "--transcript-max-bytes", str(1 << 30),
                    "--metrics", str(mport))
        wait_port(mport, s.proc)
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda i: send(s.port), range(300)))
        assert results == [{}] * 300, "every message accepted while the disk is full"

        def dropped():
            _, text = http_get(f"http://127.0.0.1:{mport}/metrics")
            found = [l for l in text.splitlines() if l.startswith("samotop_transcript_lines_dropped_total")]
            return float(found[0].split()[-1]) if found else 0.0

        wait_until(lambda: dropped() > 0, what="drops counted")
        assert s.alive() and send(s.port) == {}
    finally:
        subprocess.run(["umount", str(full)], timeout=30)

    bounded = tmp_path / "bounded"
    s = samotop("--spf", "off", "--deliver", "null", "--transcript", str(bounded),
                "--transcript-max-files", "100000", "--transcript-max-bytes", "50000")
    for _ in range(300):
        assert send(s.port) == {}
    s.stop()
    total = sum(p.stat().st_size for p in bounded.iterdir())
    assert 0 < total <= 50000 + 8192, total  # the bound, and at most the session being written


def test_json_logs_parse_with_jq_under_load(samotop, tmp_path):
    s = samotop("--spf", "off", "--deliver", "null", "--log-format", "json",
                "--accept-domain", "example.org", "--route", "fail@example.org=exec:/bin/false",
                env={"RUST_LOG": "debug"})

    def one(i):
        rcpt = "fail@example.org" if i % 7 == 3 else "b@example.org" if i % 5 else "x@elsewhere.net"
        try:
            send(s.port, rcpts=[rcpt])
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError):
            pass

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, range(400)))
    wait_until(lambda: s.log.count('"end=quit') + s.log.count("end=quit") >= 400, timeout=30,
               what="400 session lines")
    s.stop()
    log = s.log_path.read_bytes()
    jq = subprocess.run(["jq", "-c", "."], input=log, capture_output=True, timeout=60)
    assert jq.returncode == 0, jq.stderr[:500]
    lines = [json.loads(l) for l in log.splitlines() if l.strip()]
    assert len(lines) > 400
    for line in lines:
        assert set(line) >= {"ts", "level", "target", "msg"}, line
    # Every line of a session carries its id; a refusal is logged with it.
    about = [l for l in lines if "session" in l]
    assert len(about) >= 400
    assert any("refused at rcpt by accept_domains: 550 5.7.1" in l["msg"] and l.get("session")
               for l in lines), lines[:5]
    # Each session: one summary line; a refusal logged once by the session, with the reply;
    # a backend failure once more by the backend, with its cause, naming the same session.
    sessions = {}
    for l in about:
        sessions.setdefault(l["session"], []).append(l)
    failed = refused = 0
    for sid, mine in sessions.items():
        if not any(l["msg"].startswith(f"session id={sid} ") for l in mine):
            continue  # the harness's readiness probe has no session line of its own
        assert sum(l["msg"].startswith(f"session id={sid} ") for l in mine) == 1, mine
        refusals = [l for l in mine if l["msg"].startswith("refused at ")]
        causes = [l for l in mine if l["msg"].startswith("exec /bin/false for ")]
        if any("554 5.3.0" in l["msg"] for l in refusals):
            failed += 1
            assert [l["msg"] for l in refusals] == ["refused at backend: 554 5.3.0 Command failed"], mine
            assert refusals[0]["level"] == "WARN"
            assert len(causes) == 1 and "exit status: 1" in causes[0]["msg"], mine
        elif refusals:
            refused += 1
            assert [l["msg"] for l in refusals] == [
                "refused at rcpt by accept_domains: 550 5.7.1 Relay not permitted"], mine
    assert failed == len([i for i in range(400) if i % 7 == 3])
    assert refused == len([i for i in range(400) if i % 7 != 3 and i % 5 == 0])

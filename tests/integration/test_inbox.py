"""The inbox through the real binary (issue 15): `--deliver sqlite:PATH` with `--http`, real SMTP
clients (smtplib, swaks, curl), the JSON API (Mailpit's v1 and ours), the wait, the token,
and the durability contract: kill -9 under load loses no acknowledged message, a full disk or
a read-only database gets 4xx and the server keeps serving.
"""

import json
import os
import random
import shutil
import smtplib
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN, free_port, wait_port, wait_until


def start_inbox(samotop, db, *args, http_port=None, **kwargs):
    http_port = http_port or free_port()
    s = samotop("--spf", "off", "--deliver", f"sqlite:{db}", "--http", f"127.0.0.1:{http_port}", *args, **kwargs)
    wait_port(http_port, s.proc)
    s.http = f"http://127.0.0.1:{http_port}"
    return s


def api(server, path, method="GET", body=None, token=None, raw=False, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.http + path, data=data, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        payload = r.read()
        if raw:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, payload
        return json.loads(payload) if r.headers.get("Content-Type", "").startswith("application/json") else payload


def wait_query(server, query, mailbox=None, after=0, timeout=20):
    q = urllib.parse.quote(query)
    path = f"/api/v1/wait?query={q}&after={after}&timeout={timeout}"
    if mailbox:
        path += "&mailbox=" + urllib.parse.quote(mailbox)
    return api(server, path, timeout=timeout + 10)


def smtp_send(port, sender, rcpts, body):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        c.mail(sender)
        for r in rcpts:
            assert c.rcpt(r)[0] == 250
        return c.data(body)


import urllib.parse  # noqa: E402


def test_smtplib_swaks_curl_into_the_store_and_the_mailpit_api(samotop, tmp_path):
    s = start_inbox(samotop, tmp_path / "inbox.db")
    body = (
        b"From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\nSubject: hello from smtplib\r\n"
        b"Message-ID: <one@example.com>\r\n\r\nHi Bob,\r\nan 8-bit byte: \xe9\r\n"
    )
    # Bob is in To:, Eve only in the envelope (a Bcc).
    code, text = smtp_send(s.port, "alice@example.com", ["bob@example.org", "eve@example.org"], body)
    assert code == 250, text

    attachment = tmp_path / "report.csv"
    attachment.write_bytes(b"a,b\r\n1,2\r\n")
    swaks = shutil.which("swaks")
    assert swaks, "swaks is missing: run scripts/setup"
    run = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{s.port}", "--from", "carol@example.net", "--to", "dave@example.org",
         "--header", "Subject: swaks with a file", "--attach", f"@{attachment}", "--attach-type", "text/csv"],
        capture_output=True, timeout=60,
    )
    assert run.returncode == 0, run.stdout.decode(errors="replace")[-500:]
    msg = b"From: x@example.com\r\nTo: z@example.org\r\nSubject: curl says hi\r\n\r\ncurl body\r\n"
    run = subprocess.run(
        ["curl", "-sS", f"smtp://127.0.0.1:{s.port}", "--mail-from", "x@example.com", "--mail-rcpt", "z@example.org", "-T", "-"],
        input=msg, capture_output=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr

    got = wait_query(s, "subject:curl")
    assert got["messages"] and got["messages"][0]["Subject"] == "curl says hi"
    page = api(s, "/api/v1/messages")
    assert page["total"] == 3
    assert [m["Subject"] for m in page["messages"]][-1] == "hello from smtplib"
    first = page["messages"][-1]
    assert first["From"] == {"Name": "Alice", "Address": "alice@example.com"}
    assert first["To"] == [{"Name": "Bob", "Address": "bob@example.org"}]
    assert first["Bcc"] == [], "envelope recipients are never pushed into Bcc"
    mid = first["ID"]

    # The raw message: our Received: field, then exactly what smtplib sent.
    raw = api(s, f"/api/v1/message/{mid}/raw")
    assert raw.startswith(b"Received: from client.test")
    assert raw.endswith(body)
    # The envelope, whole for the operator, one recipient per address view.
    env = api(s, f"/api/v1/message/{mid}/envelope")
    assert env["MailFrom"] == "alice@example.com"
    assert env["Recipients"] == ["bob@example.org", "eve@example.org"]
    assert env["Helo"] == "client.test" and env["Peer"] == "127.0.0.1"
    eve = api(s, "/api/v1/inbox/eve@example.org")
    assert eve["total"] == 1 and eve["messages"][0]["ID"] == mid
    assert api(s, f"/api/v1/inbox/eve@example.org/message/{mid}/envelope")["Recipients"] == ["eve@example.org"]
    assert api(s, f"/api/v1/inbox/bob@example.org/message/{mid}")["Envelope"]["Recipients"] == ["bob@example.org"]
    with pytest.raises(urllib.error.HTTPError) as e:
        api(s, f"/api/v1/inbox/z@example.org/message/{mid}")
    assert e.value.code == 404, "another address cannot open it"

    # Mailpit's message, headers, latest, search, read state.
    m = api(s, f"/api/v1/message/{mid}")
    assert m["Subject"] == "hello from smtplib" and "an 8-bit byte" in m["Text"]
    assert m["MessageID"] == "one@example.com" and m["ReturnPath"] == "alice@example.com"
    headers = api(s, f"/api/v1/message/{mid}/headers")
    assert headers["Subject"] == ["hello from smtplib"]
    latest = api(s, "/api/v1/message/latest")
    assert latest["Subject"] == "curl says hi"
    found = api(s, "/api/v1/search?query=" + urllib.parse.quote("from:alice bob"))
    assert found["messages_count"] == 1
    assert api(s, "/api/v1/search?query=rcpt:eve@example.org")["messages_count"] == 1
    assert api(s, "/api/v1/search?query=is:unread")["messages_count"] == page["total"] - 2  # two were opened
    api(s, "/api/v1/messages", method="PUT", body={"IDs": [mid], "Read": False})
    assert api(s, "/api/v1/search?query=is:unread")["messages_count"] == page["total"] - 1
    api(s, "/api/v1/messages", method="PUT", body={"Read": True})
    assert api(s, "/api/v1/messages")["unread"] == 0

    sw = api(s, "/api/v1/search?query=has:attachment")["messages"][0]
    full = api(s, f"/api/v1/message/{sw['ID']}")
    att = [a for a in full["Attachments"] if a["FileName"] == "report.csv"][0]
    status, hdrs, data = api(s, f"/api/v1/message/{sw['ID']}/part/{att['PartID']}", raw=True)
    assert data == b"a,b\r\n1,2\r\n"
    assert "attachment" in hdrs["content-disposition"]

    # The sandboxed HTML endpoint's policy.
    status, hdrs, _ = api(s, f"/api/v1/message/{mid}/html", raw=True)
    assert "default-src 'none'" in hdrs["content-security-policy"] and "sandbox" in hdrs["content-security-policy"]
    assert hdrs["x-content-type-options"] == "nosniff"

    # Delete one, then all.
    api(s, "/api/v1/messages", method="DELETE", body={"IDs": [mid]})
    assert api(s, "/api/v1/messages")["total"] == page["total"] - 1
    api(s, "/api/v1/messages", method="DELETE")
    assert api(s, "/api/v1/messages")["total"] == 0
    assert api(s, "/livez") == b"ok" and api(s, "/readyz") == b"ok"
    assert s.alive()


def test_wait_returns_when_the_mail_arrives_and_the_cursor_misses_nothing(samotop, tmp_path):
    s = start_inbox(samotop, tmp_path / "w.db")
    empty = wait_query(s, "subject:token", mailbox="ci@example.org", timeout=1)
    assert empty["timed_out"] and empty["messages"] == []
    result = {}

    def waiter():
        result["r"] = wait_query(s, "subject:token", mailbox="ci@example.org", after=empty["cursor"], timeout=30)
        result["t"] = time.monotonic()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)
    sent = time.monotonic()
    smtp_send(s.port, "app@example.com", ["ci@example.org"], b"Subject: your token 1\r\n\r\n123\r\n")
    t.join(timeout=40)
    r = result["r"]
    assert [m["Subject"] for m in r["messages"]] == ["your token 1"]
    assert result["t"] - sent < 10, "the wait returned on arrival, not at its timeout"
    # Two arrive between calls: the next call with the cursor gets them, in order.
    smtp_send(s.port, "app@example.com", ["other@example.org"], b"Subject: your token X\r\n\r\n-\r\n")
    smtp_send(s.port, "app@example.com", ["ci@example.org"], b"Subject: your token 2\r\n\r\n2\r\n")
    smtp_send(s.port, "app@example.com", ["ci@example.org"], b"Subject: your token 3\r\n\r\n3\r\n")
    seen, cursor = [], r["cursor"]
    for _ in range(10):
        n = wait_query(s, "subject:token", mailbox="ci@example.org", after=cursor, timeout=10)
        seen += [m["Subject"] for m in n["messages"]]
        cursor = n["cursor"]
        if len(seen) >= 2 or n["timed_out"]:
            break
    assert seen == ["your token 2", "your token 3"]


def test_the_token_guards_everything_but_health_and_public_needs_it(samotop, tmp_path):
    port = free_port()
    run = subprocess.run(
        [BIN, "--smtp", f"127.0.0.1:{free_port()}", "--deliver", f"sqlite:{tmp_path / 'p.db'}", "--http", f"0.0.0.0:{port}"],
        capture_output=True, timeout=60,
    )
    assert run.returncode != 0 and b"--http-token" in run.stderr
    s = start_inbox(samotop, tmp_path / "t.db", "--http-token", "s3cret")
    assert api(s, "/livez") == b"ok"
    with pytest.raises(urllib.error.HTTPError) as e:
        api(s, "/api/v1/messages")
    assert e.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as e:
        api(s, "/api/v1/messages", token="wrong")
    assert e.value.code == 401
    assert api(s, "/api/v1/messages", token="s3cret")["total"] == 0
    req = urllib.request.Request(s.http + "/api/v1/info")
    req.add_header("Authorization", "Basic dTpzM2NyZXQ=")  # u:s3cret, as Mailpit clients send it
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read())["Messages"] == 0


# ---- durability -------------------------------------------------------------------------------


def make_body(i, rng, size=2000):
    line = "".join(chr(rng.randrange(97, 123)) for _ in range(70))
    return (f"Message-ID: <load-{i}@test>\r\nSubject: load {i}\r\n\r\n" + (line + "\r\n") * (size // 72)).encode()


def assert_none_lost(server, acked, bodies, tries=300, what="acknowledged but lost"):
    """Every message number in `acked` is stored (found by its Message-ID through `server`'s
    API) and, for the first 50, whole. Parsing is lazy: a message whose parse a kill
    interrupted is parsed after the restart, so the look is repeated (bounded). The stored
    ids by Message-ID."""
    ids = stored_ids(server)
    missing = [i for i in acked if f"load-{i}@test" not in ids]
    for _ in range(tries):
        if not missing:
            break
        time.sleep(0.1)
        ids = stored_ids(server)
        missing = [i for i in acked if f"load-{i}@test" not in ids]
    assert missing == [], f"{what}: {missing[:10]}"
    for i in list(acked)[:50]:
        raw = api(server, f"/api/v1/message/{ids[f'load-{i}@test'][0]}/raw")
        assert raw.endswith(bodies[i])
    return ids


def run_load(ports, bodies, todo, acked, refused, stop, threads=4):
    """`threads` senders per port in `ports`, sharing one queue of message numbers `todo`; an
    accepted number goes into `acked`, a refused one into `refused` (with its code) and back
    into the queue, as does one whose session failed (that sender then stops). Each sender
    makes at most len(bodies) attempts."""
    lock = threading.Lock()

    def worker(port):
        for _ in range(len(bodies)):
            if stop.is_set():
                return
            with lock:
                if not todo:
                    return
                i = todo.pop()
            try:
                code, _ = smtp_send(port, "load@example.com", [f"u{i % 5}@example.org"], bodies[i])
            except (OSError, smtplib.SMTPException):
                with lock:
                    todo.append(i)
                return
            with lock:
                if code == 250:
                    acked.add(i)
                else:
                    refused[i] = code
                    todo.append(i)

    ts = [threading.Thread(target=worker, args=(p,)) for p in ports for _ in range(threads)]
    for t in ts:
        t.start()
    return ts


def stored_ids(s):
    out = {}
    start = 0
    for _ in range(100):
        page = api(s, f"/api/v1/messages?start={start}&limit=1000")
        for m in page["messages"]:
            out.setdefault(m["MessageID"], []).append(m["ID"])
        start += len(page["messages"])
        if not page["messages"]:
            break
    return out


def test_kill_9_under_load_loses_no_acknowledged_message(samotop, tmp_path):
    db = tmp_path / "k.db"
    rng = random.Random(3)
    total = 600
    bodies = {i: make_body(i, rng) for i in range(total)}
    todo, acked, refused = list(range(total)), set(), {}
    s = start_inbox(samotop, db)
    stop = threading.Event()
    workers = run_load([s.port], bodies, todo, acked, refused, stop)
    kill_at = rng.randrange(100, 250)
    wait_until(lambda: len(acked) >= kill_at, timeout=120, what=f"{kill_at} acknowledged")
    s.proc.kill()
    s.proc.wait(timeout=10)
    stop.set()
    for t in workers:
        t.join(timeout=60)
    acked_before = set(acked)
    s2 = start_inbox(samotop, db)
    ids = assert_none_lost(s2, acked_before, bodies)
    print(f"\nkill -9 after {len(acked_before)} acknowledged: {sum(len(v) for v in ids.values())} stored")
    assert refused == {}, refused


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"cannot mount a tmpfs (the disk-full test runs as root): {e}")
    if run.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the disk-full test runs as root): {run.stderr.decode(errors='replace').strip()}")
    yield mnt
    if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            for _ in range(8 * 1024 * 1024 // size):
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)


def test_disk_full_is_4xx_and_serving_resumes(samotop, tmpfs):
    s = start_inbox(samotop, tmpfs / "full.db")
    assert smtp_send(s.port, "a@example.com", ["b@example.org"], b"Subject: before\r\n\r\nok\r\n")[0] == 250
    fill(tmpfs / "ballast")
    rng = random.Random(5)
    codes = []
    for i in range(5):
        body = make_body(1000 + i, rng, size=200_000)
        try:
            codes.append(smtp_send(s.port, "a@example.com", ["b@example.org"], body)[0])
        except smtplib.SMTPServerDisconnected as e:
            pytest.fail(f"the server dropped the connection instead of answering 4xx: {e}")
    assert all(400 <= c < 500 for c in codes), codes
    assert 452 in codes or 451 in codes
    assert "the database is full" in s.log or "database" in s.log
    assert s.alive()
    os.unlink(tmpfs / "ballast")
    code = wait_until(
        lambda: smtp_send(s.port, "a@example.com", ["b@example.org"], b"Subject: after\r\n\r\nok\r\n")[0] == 250,
        timeout=30, step=0.5, what="a 250 once space is back",
    )
    assert code
    assert wait_query(s, "subject:after")["messages"]


def test_a_read_only_database_is_451_and_the_face_still_reads(samotop, tmp_path):
    assert shutil.which("setpriv"), "setpriv (util-linux) is missing: run scripts/setup"
    d = tmp_path / "ro"
    d.mkdir()
    db = d / "ro.db"
    s = start_inbox(samotop, db)
    assert smtp_send(s.port, "a@example.com", ["b@example.org"], b"Subject: kept\r\n\r\nok\r\n")[0] == 250
    wait_query(s, "subject:kept")
    s.stop()
    # As an unprivileged user, over files it may read but not write.
    for p in [d, *d.iterdir()]:
        os.chown(p, 0, 0)
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    for p in [tmp_path, *tmp_path.parents]:
        if str(p) in ("/", "/tmp"):
            break
        os.chmod(p, os.stat(p).st_mode | 0o005)
    http_port = free_port()
    smtp_port = free_port()
    wrapped = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BIN]
    log = open(tmp_path / "ro.log", "wb")
    proc = subprocess.Popen(
        wrapped + ["--smtp", f"127.0.0.1:{smtp_port}", "--spf", "off", "--deliver", f"sqlite:{db}", "--http", f"127.0.0.1:{http_port}"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL,
    )
    try:
        try:
            wait_port(smtp_port, proc)
            wait_port(http_port, proc)
        except (RuntimeError, TimeoutError):
            log.flush()
            pytest.fail((tmp_path / "ro.log").read_text(errors="replace")[-2000:])
        for i in range(3):
            code, text = smtp_send(smtp_port, "a@example.com", ["b@example.org"], f"Subject: ro {i}\r\n\r\nx\r\n".encode())
            assert 400 <= code < 500, (code, text)
        assert proc.poll() is None, "still serving"

        class Face:
            http = f"http://127.0.0.1:{http_port}"

        page = api(Face, "/api/v1/messages")
        assert [m["Subject"] for m in page["messages"]] == ["kept"]
        log.flush()
        assert "read-only" in (tmp_path / "ro.log").read_text(errors="replace")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()

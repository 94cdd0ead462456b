"""The PostgreSQL inbox through the real binary (issue 15): two `samotop --deliver postgres://...`
receivers share one database and one of them is the `--http` web face: its wait and its live
events see the mail the other one received (LISTEN/NOTIFY). Durability: kill -9 of both
receivers under load loses no acknowledged message; a PostgreSQL crash and restart under load
loses none either, and the receivers answer 4xx meanwhile and take mail again after; a database
made read-only (`ALTER SYSTEM SET default_transaction_read_only = on` and a reload) answers
every message with a 4xx while the face still reads, and takes mail again once writable.

One throw-away cluster (`initdb`/`pg_ctl` from Debian's server binaries, which scripts/setup
installs) on a Unix socket in a temporary directory serves the whole module; each test has
its own database. Missing server binaries fail the tests, they do not skip them.
"""

import glob
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

from conftest import Server, free_port, wait_port, wait_until
from test_inbox import api, assert_none_lost, make_body, run_load, smtp_send, wait_query


def pg_bin():
    if os.environ.get("SAMOTOP_PG_BIN"):
        return os.environ["SAMOTOP_PG_BIN"]
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


class Cluster:
    """A throw-away PostgreSQL on a Unix socket; run as `postgres` when we are root."""

    def __init__(self):
        self.bin = pg_bin()
        self.base = tempfile.mkdtemp(prefix="samotop-pg-")
        self.data = os.path.join(self.base, "data")
        self.sock = os.path.join(self.base, "sock")
        self.log = os.path.join(self.base, "server.log")
        os.mkdir(self.sock)
        self.user = []
        if os.getuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            for d in (self.base, self.sock):
                os.chown(d, pw.pw_uid, pw.pw_gid)
            self.user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups"]
        self._run([f"{self.bin}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
        self.start()

    def _run(self, argv, check=True):
        r = subprocess.run(self.user + argv, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"{argv[0]}: {r.stdout.decode(errors='replace')}{r.stderr.decode(errors='replace')}")
        return r

    def start(self):
        self._run([f"{self.bin}/pg_ctl", "-D", self.data, "-w", "-t", "60", "-l", self.log, "-o",
                   f"-k {self.sock} -c listen_addresses='' -c max_connections=300", "start"])
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())

    def crash(self):
        """Stops the server the hard way (no checkpoint: recovery replays the WAL)."""
        self._run([f"{self.bin}/pg_ctl", "-D", self.data, "-m", "immediate", "stop"], check=False)

    def stop(self):
        self._run([f"{self.bin}/pg_ctl", "-D", self.data, "-m", "fast", "-t", "30", "stop"], check=False)
        try:
            os.kill(self.pid, signal.SIGKILL)  # by its PID, should fast mode not have ended it
        except ProcessLookupError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)

    def psql(self, sql, db="postgres"):
        r = subprocess.run(
            [f"{self.bin}/psql", "-h", self.sock, "-U", "postgres", "-d", db, "-X", "-q", "-t", "-A",
             "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        return r.stdout.decode().strip()

    def url(self, db):
        return f"postgres://postgres@/{db}?host={self.sock}"


@pytest.fixture(scope="module")
def cluster():
    if not pg_bin():
        pytest.fail("PostgreSQL's server binaries (initdb, pg_ctl) are missing under /usr/lib/postgresql: "
                    "run scripts/setup (it installs Debian's postgresql package)")
    c = Cluster()
    yield c
    c.stop()


@pytest.fixture
def database(cluster, request):
    name = "t_" + re.sub(r"\W", "_", request.node.name)[:40].lower()
    cluster.psql(f"DROP DATABASE IF EXISTS {name}")
    cluster.psql(f"CREATE DATABASE {name}")
    return cluster.url(name)


def receiver(samotop, url, name, face=False):
    args = ["--spf", "off", "--name", name, "--deliver", url]
    http_port = free_port() if face else None
    if face:
        args += ["--http", f"127.0.0.1:{http_port}"]
    s = samotop(*args)
    if face:
        wait_port(http_port, s.proc)
        s.http = f"http://127.0.0.1:{http_port}"
    return s


class Events:
    """Reads the face's server-sent events on a thread."""

    def __init__(self, http):
        self.lines = []
        self.resp = urllib.request.urlopen(http + "/api/v1/events", timeout=60)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for _ in range(100_000):
                line = self.resp.readline()
                if not line:
                    return
                self.lines.append(line.decode(errors="replace").strip())
        except (OSError, ValueError, AttributeError):  # closed under our feet
            return

    def close(self):
        self.resp.close()


def test_two_receivers_one_face_sees_the_others_mail(samotop, database):
    face = receiver(samotop, database, "rx-a.test", face=True)
    other = receiver(samotop, database, "rx-b.test")
    events = Events(face.http)
    try:
        empty = wait_query(face, "subject:token", mailbox="ci@example.org", timeout=1)
        assert empty["timed_out"]
        result = {}

        def waiter():
            result["r"] = wait_query(face, "subject:token", mailbox="ci@example.org", after=empty["cursor"], timeout=30)
            result["t"] = time.monotonic()

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.5)
        sent = time.monotonic()
        code, text = smtp_send(other.port, "app@example.com", ["ci@example.org"], b"Subject: your token 1\r\n\r\n123\r\n")
        assert code == 250, text
        t.join(timeout=40)
        r = result["r"]
        assert [m["Subject"] for m in r["messages"]] == ["your token 1"]
        assert result["t"] - sent < 10, "the wait returned on arrival"
        mid = r["messages"][0]["ID"]
        raw = api(face, f"/api/v1/message/{mid}/raw")
        assert b"by rx-b.test" in raw.split(b"\r\n\r\n")[0], "received by the other receiver"
        # The face's live events heard it (the other receiver's NOTIFY): stored, then new.
        wait_until(lambda: "event: stored" in events.lines and "event: new" in events.lines, timeout=20,
                   what=f"events from the other receiver, got {events.lines}")
        # Mail into the face itself, and more through the other: one store, commit order,
        # the cursor misses nothing.
        for i, port in enumerate([face.port, other.port, other.port, face.port]):
            assert smtp_send(port, "app@example.com", ["ci@example.org"], f"Subject: your token {i + 2}\r\n\r\n-\r\n".encode())[0] == 250
        seen, cursor = [], r["cursor"]
        for _ in range(20):
            n = wait_query(face, "subject:token", mailbox="ci@example.org", after=cursor, timeout=10)
            seen += [m["Subject"] for m in n["messages"]]
            cursor = n["cursor"]
            if len(seen) >= 4 or n["timed_out"]:
                break
        assert seen == [f"your token {i}" for i in range(2, 6)]
        page = api(face, "/api/v1/messages")
        assert page["total"] == 5
        info = api(face, "/api/v1/info")
        assert info["Database"].startswith("postgres://postgres@"), info
        assert "password" not in info["Database"]
    finally:
        events.close()
    assert face.alive() and other.alive()


def test_kill_9_of_both_receivers_under_load_loses_no_acknowledged_message(samotop, database):
    rng = random.Random(11)
    total = 600
    bodies = {i: make_body(i, rng) for i in range(total)}
    todo, acked, refused = list(range(total)), set(), {}
    a = receiver(samotop, database, "rx-a.test")
    b = receiver(samotop, database, "rx-b.test")
    stop = threading.Event()
    workers = run_load([a.port, b.port], bodies, todo, acked, refused, stop, threads=3)
    kill_at = rng.randrange(100, 250)
    wait_until(lambda: len(acked) >= kill_at, timeout=180, what=f"{kill_at} acknowledged")
    b.proc.kill()
    time.sleep(0.2)
    a.proc.kill()
    a.proc.wait(timeout=10)
    b.proc.wait(timeout=10)
    stop.set()
    for t in workers:
        t.join(timeout=60)
    acked_before = set(acked)
    face = receiver(samotop, database, "rx-a.test", face=True)
    ids = assert_none_lost(face, acked_before, bodies)
    print(f"\nkill -9 of both after {len(acked_before)} acknowledged: {sum(len(v) for v in ids.values())} stored")
    assert refused == {}, refused


def test_a_postgres_crash_under_load_is_4xx_then_mail_flows_again(samotop, cluster, database):
    rng = random.Random(12)
    total = 400
    bodies = {i: make_body(i, rng) for i in range(total)}
    todo, acked, refused = list(range(total)), set(), {}
    face = receiver(samotop, database, "rx-a.test", face=True)
    stop = threading.Event()
    workers = run_load([face.port], bodies, todo, acked, refused, stop, threads=4)
    try:
        wait_until(lambda: len(acked) >= 80, timeout=120, what="80 acknowledged")
        cluster.crash()
        acked_at_crash = set(acked)
        wait_until(lambda: refused, timeout=60, what="a refusal while PostgreSQL is down")
    finally:
        cluster.start()
    for t in workers:
        t.join(timeout=300)
    assert face.alive(), "the receiver kept serving"
    assert all(400 <= c < 500 for c in refused.values()), refused
    # The load's workers retry what was refused; once PostgreSQL is back, all of it lands.
    wait_until(lambda: not todo or smtp_send(face.port, "a@example.com", ["b@example.org"], b"Subject: back\r\n\r\nok\r\n")[0] == 250,
               timeout=60, step=0.5, what="a 250 after the restart")
    # Each one stored and, for the first 50, whole (the look repeats for the lazy parse).
    assert_none_lost(face, acked_at_crash, bodies, what="acknowledged before the crash but lost")
    print(f"\nPostgreSQL crashed after {len(acked_at_crash)} acknowledged; {len(refused)} refused meanwhile")


def test_a_read_only_database_is_4xx_and_the_face_still_reads(samotop, cluster, database):
    face = receiver(samotop, database, "rx-a.test", face=True)
    other = receiver(samotop, database, "rx-b.test")
    assert smtp_send(other.port, "a@example.com", ["b@example.org"], b"Subject: kept\r\n\r\nok\r\n")[0] == 250
    wait_query(face, "subject:kept")
    cluster.psql("ALTER SYSTEM SET default_transaction_read_only = on")
    cluster.psql("SELECT pg_reload_conf()")
    try:
        for i in range(3):
            for port in (face.port, other.port):
                code, text = smtp_send(port, "a@example.com", ["b@example.org"], f"Subject: ro {i}\r\n\r\nx\r\n".encode())
                assert 400 <= code < 500, (code, text)
        assert face.alive() and other.alive(), "still serving"
        page = api(face, "/api/v1/messages")
        assert [m["Subject"] for m in page["messages"]] == ["kept"]
        assert api(face, "/readyz") == b"ok"
        assert "read-only" in face.log and "read-only" in other.log
    finally:
        cluster.psql("ALTER SYSTEM RESET default_transaction_read_only")
        cluster.psql("SELECT pg_reload_conf()")
    code = wait_until(
        lambda: smtp_send(other.port, "a@example.com", ["b@example.org"], b"Subject: writable\r\n\r\nok\r\n")[0] == 250,
        timeout=30, step=0.5, what="a 250 once writable",
    )
    assert code
    assert wait_query(face, "subject:writable")["messages"]

#!/usr/bin/python3
"""Side-by-side SMTP receiver benchmark: samotop against smtp-sink, Postfix and aiosmtpd.

Started by scripts/bench, which installs what is missing and builds the release binary.

Every server runs on a fresh loopback port with an empty temporary directory:
  samotop-null      samotop --deliver null
  samotop-maildir   samotop --deliver maildir:DIR   (tmp/, fsync, rename, fsync new/)
  samotop-null-metrics      samotop-null with Prometheus metrics on (--metrics)
  samotop-null-transcripts  samotop-null with a transcript per session (--transcript DIR)
  smtp-sink         Postfix's protocol-only sink: the upper bound of the protocol
  postfix           a throw-away Postfix instance; smtpd -> cleanup -> queue file, fsync,
                    kept in the hold queue (durable, never delivered)
  aiosmtpd-discard  Debian's python3-aiosmtpd, 250 and forget
  aiosmtpd-maildir  aiosmtpd storing like samotop's Maildir (tmp/, fsync, rename, fsync new/)
  disk-16-threads   not a server: the disk's rate for durable 1 KiB files from 16 threads
                    (bench/disk_rate.py), measured in the same rounds (1 KiB, 32 sessions)

Each is driven by Postfix's smtp-source in interleaved rounds, the server order rotated
each round. Per server and case: messages/s (median, min-max), the server's CPU per
message (utime+stime of the whole process tree, exited children included), peak memory.
Then, the same way:
  TLS               bench/tls-load (Rust, tokio-rustls) against every server that has TLS:
                    samotop (STARTTLS and --smtps), Postfix (smtpd_tls_security_level = may,
                    and a wrapper-mode smtpd for implicit TLS), aiosmtpd (STARTTLS, and an
                    implicit-TLS listener); 32 long sessions, and one message per connection
                    with session resumption off and on; the same client in plain SMTP too
  the Dovecot path  smtp-source -> samotop -> Dovecot LMTP (Unix socket), smtp-source -L
                    straight into that Dovecot, Postfix relaying into it with its lmtp
                    transport (bench/dovecot_lmtp.py)
Then: memory per idle connection (plain and after STARTTLS), memory while one 100 MB
message streams through, and the disk's own limit for durable Maildir writes.
All servers with TLS use the same throw-away ECDSA P-256 certificate.

Knobs (environment; scripts/bench --quick / --full set the first two):
  BENCH_ROUNDS=3          rounds per (server, case)
  BENCH_SECONDS=1         target seconds per measurement (counts come from a warm-up)
  BENCH_SERVERS=a,b       only these servers (names above)
  BENCH_CASES=a,b         only these cases (names in CASES below)
  BENCH_TLS_CASES=a,b     only these TLS cases (names in TLS_CASES; empty: skip TLS)
  BENCH_LMTP_CASES=a,b    only these Dovecot-path cases (names in LMTP_CASES; empty: skip)
  BENCH_IDLE_CONNS=10000  idle connections (0: skip)
  BENCH_BIG_MB=100        size of the streamed message in MB (0: skip)
  BENCH_DISK_SECONDS=2    seconds per disk-rate measurement (0: skip)
  BENCH_TMPDIR=DIR        where the temporary directories go (default: the system's)
  BENCH_FRESH_FS=0        no fresh loop-mounted ext4 for the run (FreshFs): write into
                          BENCH_TMPDIR itself
  BENCH_OUT=FILE          also write the markdown report here (and FILE.json)
  BENCH_TRIGGER=0         skip the trigger scenarios (bench/trigger.py: webhook, exec:)
  SAMOTOP=PATH            the samotop binary (default target/bench/release/samotop)
  BENCH_BASELINE=PATH     another samotop binary, run as base-null and base-maildir (A/B
                          of a change in one interleaved run; name them in BENCH_SERVERS),
                          and as base-lmtp on the Dovecot path
  TLS_LOAD=PATH           the TLS load generator (default target/bench/release/tls-load)
"""

import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import postfixkit  # noqa: E402  (the throw-away Postfix the tests use too)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
PY = "/usr/bin/python3"
TLS_LOAD = os.environ.get("TLS_LOAD", os.path.join(ROOT, "target/bench/release/tls-load"))
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# name: (message body bytes, parallel sessions, recipients, messages per connection > 1)
CASES = {
    "1k-s1": (1024, 1, 1, True),
    "1k-s32": (1024, 32, 1, True),
    "100k-s8": (102400, 8, 1, True),
    "1k-conn-s32": (1024, 32, 1, False),
    "1k-10rcpt-s8": (1024, 8, 10, True),
}
CASE_TEXT = {
    "1k-s1": "1 KiB, 1 session",
    "1k-s32": "1 KiB, 32 sessions",
    "100k-s8": "100 KiB, 8 sessions",
    "1k-conn-s32": "1 KiB, 1 msg/connection, 32 parallel",
    "1k-10rcpt-s8": "1 KiB, 10 rcpts, 8 sessions",
}
# Messages in the warm-up of each case; the measured counts are scaled from its rate.
WARMUP = {"1k-s1": 200, "1k-s32": 1000, "100k-s8": 80, "1k-conn-s32": 400, "1k-10rcpt-s8": 300}
# samotop ends a session after 1000 transactions by default (Limits::max_transactions): the
# bench raises it (--max-messages-per-session), so one session carries every message of a
# measurement, as it does for the other servers.
MAX_MESSAGES_PER_SESSION = 100_000_000
MAX_COUNT = 200_000

# TLS cases, all 1 KiB, driven by bench/tls-load:
# name: (mode, parallel sessions, one message per connection, session resumption)
TLS_CASES = {
    "plain-s32": ("plain", 32, False, False),
    "starttls-s32": ("starttls", 32, False, False),
    "smtps-s32": ("smtps", 32, False, False),
    "plain-conn-s32": ("plain", 32, True, False),
    "starttls-conn-s32": ("starttls", 32, True, False),
    "starttls-conn-s32-resume": ("starttls", 32, True, True),
    "smtps-conn-s32": ("smtps", 32, True, False),
}
TLS_CASE_TEXT = {
    "plain-s32": "plain, 32 sessions",
    "starttls-s32": "STARTTLS, 32 sessions",
    "smtps-s32": "implicit TLS, 32 sessions",
    "plain-conn-s32": "plain, 1 msg/conn",
    "starttls-conn-s32": "STARTTLS, 1 msg/conn",
    "starttls-conn-s32-resume": "STARTTLS, 1 msg/conn, resumed",
    "smtps-conn-s32": "implicit TLS, 1 msg/conn",
}
TLS_WARMUP = {c: (200 if v[2] else 1000) for c, v in TLS_CASES.items()}
# Servers without TLS (smtp-sink), or not needed for the TLS comparison.
NO_TLS = {"smtp-sink", "samotop-null-metrics", "samotop-null-transcripts", "aiosmtpd-maildir"}

# The Dovecot path: name: (message body bytes, parallel sessions)
LMTP_CASES = {
    "lmtp-1k-s1": (1024, 1),
    "lmtp-1k-s32": (1024, 32),
}
LMTP_CASE_TEXT = {"lmtp-1k-s1": "1 KiB, 1 session", "lmtp-1k-s32": "1 KiB, 32 sessions"}
LMTP_WARMUP = {"lmtp-1k-s1": 40, "lmtp-1k-s32": 300}
LMTP_PATHS = ["dovecot-direct", "samotop-lmtp", "postfix-lmtp"]
IDLE_STATE_TEXT = {"banner": "banner", "ehlo": "EHLO reply",
                   "starttls": "STARTTLS and EHLO in TLS"}
SERVERS = [
    "samotop-null",
    "samotop-null-metrics",
    "samotop-null-transcripts",
    "samotop-maildir",
    "smtp-sink",
    "postfix",
    "aiosmtpd-discard",
    "aiosmtpd-maildir",
    "disk-16-threads",
]
# Each server is compared with the samotop of its class.
CLASS = {
    "samotop-null": "samotop-null",
    "samotop-null-metrics": "samotop-null",
    "samotop-null-transcripts": "samotop-null",
    "smtp-sink": "samotop-null",
    "aiosmtpd-discard": "samotop-null",
    "samotop-maildir": "samotop-maildir",
    "postfix": "samotop-maildir",
    "aiosmtpd-maildir": "samotop-maildir",
    "base-null": "samotop-null",
    "base-maildir": "samotop-maildir",
    "disk-16-threads": "samotop-maildir",
}


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def env_int(name, default):
    return int(os.environ.get(name, default))


def env_float(name, default):
    return float(os.environ.get(name, default))


def run_ok(argv, data=b"", timeout=300):
    """Runs `argv` with `data` on its stdin; its stdout, or RuntimeError with its stderr."""
    r = subprocess.run(argv, input=data, capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("%s: %s" % (argv[0], r.stderr.decode(errors="replace").strip()))
    return r.stdout


class FreshFs:
    """The bench's directory: a new ext4 file system (a sparse image, loop-mounted) made for
    this run, so that no round pays for an earlier run's files. Every run creates and deletes
    hundreds of thousands of files; in a long-lived /tmp, ext4's inode allocator then searches
    its bitmaps past recently freed inodes while holding the directory's lock, and whole rounds
    ran at half their rate (docs/PERFORMANCE.md). Needs root, mkfs.ext4 and a loop device;
    otherwise (or with BENCH_FRESH_FS=0) a directory in BENCH_TMPDIR, as before. Used by
    bench.py, auth.py and inbox.py, one per run."""

    SIZE = 16 << 30  # sparse: only what is written takes space

    def __init__(self, prefix):
        parent = os.environ.get("BENCH_TMPDIR")
        self.image = self.mount = None
        self.dir = tempfile.mkdtemp(prefix=prefix, dir=parent)
        if os.environ.get("BENCH_FRESH_FS", "1") == "0" or os.geteuid() != 0:
            return
        image = self.dir + ".img"
        try:
            with open(image, "wb") as f:
                f.truncate(self.SIZE)
            # No lazy initialisation: ext4lazyinit would write in the background mid-bench.
            run_ok(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                    image])
            run_ok(["mount", "-o", "loop", image, self.dir])
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            log("no fresh file system (%s): using %s" % (e, self.dir))
            if os.path.exists(image):
                os.unlink(image)
            return
        self.image, self.mount = image, self.dir
        log("a fresh ext4 for this run: %s on %s" % (image, self.dir))

    def close(self, keep=False):
        """Unmounts and removes it all; `keep` (BENCH_KEEP) leaves it as it is."""
        if keep:
            log("kept %s%s" % (self.dir, " (mounted from %s)" % self.image if self.image else ""))
            return
        if self.mount:
            # A server just stopped may still be on its way out ("target is busy"): a few
            # tries, then a lazy unmount (the file system goes when its last user does).
            for _ in range(20):
                r = subprocess.run(["umount", self.mount], capture_output=True, timeout=300)
                if r.returncode == 0:
                    break
                time.sleep(0.5)
            else:
                log("umount %s: %s; unmounting lazily" % (
                    self.mount, r.stderr.decode(errors="replace").strip()))
                subprocess.run(["umount", "-l", self.mount], capture_output=True, timeout=60)
            try:
                os.rmdir(self.mount)
            except OSError as e:
                log("cannot remove %s: %s" % (self.mount, e))
        elif os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        if self.image and os.path.exists(self.image):
            os.unlink(self.image)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_banner(port, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def raise_nofile(n):
    """Raises the soft limit of open files towards n (the hard limit too, where allowed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, max(n, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


# ---------------------------------------------------------------- /proc


def proc_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in ticks, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): field n is rest[n - 3]
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


def all_ppids():
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                out[int(d)] = st[0]
    return out


def tree(root):
    """root and its descendants."""
    ppids = all_ppids()
    pids, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for c, pp in ppids.items():
            if pp == p and c not in pids:
                pids.add(c)
                frontier.append(c)
    return pids


def cpu_ticks(root):
    """CPU of the tree: live processes' own time plus the reaped children's."""
    total = 0
    for pid in tree(root):
        st = proc_stat(pid)
        if st:
            total += st[1] + (st[2] if pid == root else 0)
    return total


def rss_bytes(pid):
    try:
        with open("/proc/%d/statm" % pid) as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def pss_bytes(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_hwm(pid):
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
    except OSError:
        pass


class MemSampler:
    """Samples the memory of a server's processes (RSS of one, PSS sum of many)."""

    def __init__(self, server, interval=0.05):
        self.server, self.interval = server, interval
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.memory())
            self._stop.wait(self.interval)

    def __enter__(self):
        if self.server.single:
            reset_hwm(self.server.pid)
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.server.memory())
        if self.server.single:
            self.peak = max(self.peak, status_kb(self.server.pid, "VmHWM") * 1024)


# ---------------------------------------------------------------- servers


class Server:
    """A server under test: one process (single) or a process tree (Postfix)."""

    single = True
    # Implicit TLS port (None: no implicit TLS); `tls`: STARTTLS is offered.
    smtps_port = None
    tls = False

    def __init__(self, name, base):
        self.name = name
        self.dir = os.path.join(base, name)
        os.makedirs(self.dir)
        self.port = free_port()
        self.proc = None
        self.pid = None

    def memory(self):
        if self.single:
            return rss_bytes(self.pid)
        return sum(pss_bytes(p) for p in tree(self.pid))

    def spawn(self, argv, nofile=4096, env=None):
        logf = open(os.path.join(self.dir, "server.log"), "wb")

        def pre():
            os.setsid()
            raise_nofile(nofile)

        self.proc = subprocess.Popen(
            argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=pre, env=env,
        )
        self.pid = self.proc.pid
        if not wait_banner(self.port):
            self.stop()
            raise RuntimeError("%s did not come up; see %s/server.log" % (self.name, self.dir))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Samotop(Server):
    """samotop; with `tls` (cert, key) it offers STARTTLS and listens for implicit TLS on
    `smtps_port` too. `deliver`: "null", "maildir", or a --deliver URI."""

    def __init__(self, name, base, binary, deliver, extra=(), nofile=4096, tls=None):
        super().__init__(name, base)
        self.maildir = os.path.join(self.dir, "maildir")
        if deliver == "maildir":
            target = "maildir:" + self.maildir
        else:
            target = deliver
        argv = [
            binary, "--smtp", "127.0.0.1:%d" % self.port, "--deliver", target,
            "--spf", "off", "--max-connections-per-ip", "0",
            "--max-message-size", str(200 * 1024 * 1024), "--shutdown-grace", "1",
            "--max-messages-per-session", str(MAX_MESSAGES_PER_SESSION),
            "--name", "samotop.bench", *extra,
        ]
        # The delivery path alone, as the peers do it (bench/auth.py measures the checks).
        for flag in ("--dkim", "--dmarc"):
            if flag not in extra:
                argv += [flag, "off"]
        if tls:
            self.smtps_port = free_port()
            argv += ["--tls-cert", tls[0], "--tls-key", tls[1],
                     "--smtps", "127.0.0.1:%d" % self.smtps_port]
        self.tls = bool(tls)
        self.spawn(argv, nofile=nofile)


class Sink(Server):
    def __init__(self, name, base, nofile=4096, max_conns=256):
        super().__init__(name, base)
        argv = [SMTP_SINK, "-u", "nobody", "-m", str(max_conns), "-h", "sink.bench",
                "127.0.0.1:%d" % self.port, "1024"]
        self.spawn(argv, nofile=nofile)


class Aiosmtpd(Server):
    def __init__(self, name, base, mode, nofile=4096, tls=None):
        super().__init__(name, base)
        self.maildir = os.path.join(self.dir, "maildir")
        argv = [PY, os.path.join(HERE, "aiosmtpd_server.py"), "--port", str(self.port),
                "--mode", mode, "--dir", self.maildir]
        if tls:
            self.smtps_port = free_port()
            argv += ["--tls-cert", tls[0], "--tls-key", tls[1],
                     "--smtps-port", str(self.smtps_port)]
        self.tls = bool(tls)
        self.spawn(argv, nofile=nofile)


POSTFIX_MAIN = """\
# scripts/bench: every message fsynced into the queue and kept in the hold queue (never
# delivered, never bounced), or (the Dovecot path) handed on to Dovecot's LMTP socket.
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
{delivery}smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
default_process_limit = 200
message_size_limit = 209715200
smtp_tls_security_level = none
{tls}"""


POSTFIX_HOLD = """\
# HOLD: the queue file is written and fsynced by cleanup, then parked in hold/.
smtpd_end_of_data_restrictions = check_client_access static:HOLD
# Held mail is never picked up by qmgr, so flow-control tokens would never come back:
# without this each message would wait up to 1 s (in_flow_delay) once the tokens run out.
in_flow_delay = 0
"""

POSTFIX_LMTP = """\
# Everything goes on to Dovecot's LMTP socket (the Dovecot path). As many deliveries at once
# as the other paths have sessions (Postfix's default is 20).
default_transport = lmtp:unix:{socket}
relay_transport = lmtp:unix:{socket}
lmtp_destination_concurrency_limit = 32
"""

POSTFIX_TLS = """\
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_session_cache_database = btree:{dir}/data/smtpd_scache
smtpd_tls_loglevel = 0
"""


class Postfix(Server):
    """A throw-away Postfix: mail held (durable) by default, or relayed into Dovecot's LMTP
    socket `lmtp`; with `tls` (cert, key) STARTTLS is offered (smtpd_tls_security_level =
    may) and a wrapper-mode smtpd listens on `smtps_port`."""

    single = False

    def __init__(self, name, base, tls=None, lmtp=None, extra=""):
        super().__init__(name, base)
        d = self.dir
        os.chmod(base, 0o755)  # postfix's processes must reach the queue
        delivery = POSTFIX_LMTP.format(socket=lmtp) if lmtp else POSTFIX_HOLD
        tls_conf = ("smtpd_tls_security_level = none\n" if not tls else
                    POSTFIX_TLS.format(cert=tls[0], key=tls[1], dir=d))
        main = POSTFIX_MAIN.format(delivery=delivery, tls=tls_conf) + extra
        if tls:
            self.tls = True
            self.smtps_port = free_port()
        self.conf = str(postfixkit.configure(d, self.port, main, hostname="postfix.bench",
                                             smtps_port=self.smtps_port if tls else None))
        self.pid = postfixkit.start(d)
        if not wait_banner(self.port):
            self.stop()
            raise RuntimeError("postfix did not answer; see %s/maillog" % d)

    def stop(self):
        postfixkit.stop(self.dir)


def start(name, base, samotop, tls=None):
    """Starts server `name`; `tls` (cert, key) for those that can do TLS."""
    if name in NO_TLS:
        tls = None
    if name == "samotop-null":
        return Samotop(name, base, samotop, "null", tls=tls)
    if name == "samotop-maildir":
        return Samotop(name, base, samotop, "maildir", tls=tls)
    if name == "samotop-null-metrics":
        return Samotop(name, base, samotop, "null", extra=("--metrics", "127.0.0.1:0"))
    if name == "samotop-null-transcripts":
        tdir = os.path.join(base, name + "-transcripts")
        return Samotop(name, base, samotop, "null", extra=("--transcript", tdir))
    if name in ("base-null", "base-maildir"):
        binary = os.environ.get("BENCH_BASELINE")
        if not binary:
            raise ValueError("%s needs BENCH_BASELINE=PATH" % name)
        return Samotop(name, base, binary, name.split("-")[1], tls=tls)
    if name == "smtp-sink":
        return Sink(name, base)
    if name == "postfix":
        return Postfix(name, base, tls=tls)
    if name == "aiosmtpd-discard":
        return Aiosmtpd(name, base, "discard", tls=tls)
    if name == "aiosmtpd-maildir":
        return Aiosmtpd(name, base, "maildir")
    raise ValueError(name)


def make_cert(base):
    """A throw-away ECDSA P-256 certificate for localhost: (cert path, key path)."""
    cert, key = os.path.join(base, "cert.pem"), os.path.join(base, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost"], check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o644)  # aiosmtpd and samotop run as root too; Postfix reads it as root
    return cert, key


# ---------------------------------------------------------------- driving


def source(port, size, sessions, rcpts, reuse, count, timeout, to="rcpt@sink.test",
           lmtp=False):
    """Runs smtp-source; `port` is a TCP port on loopback or a Unix socket path (with
    `lmtp`: smtp-source -L speaks LMTP)."""
    argv = [SMTP_SOURCE, "-s", str(sessions), "-m", str(count), "-l", str(size),
            "-f", "bench@source.test", "-t", to, "-M", "source.test"]
    if reuse:
        argv.append("-d")
    if rcpts > 1:
        argv += ["-r", str(rcpts)]
    if lmtp:
        argv.append("-L")
    argv.append("unix:%s" % port if isinstance(port, str) else "127.0.0.1:%d" % port)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("smtp-source %s: %s" % (" ".join(argv[1:]), r.stderr.strip()))


class DiskRate:
    """The disk's own rate for durable files as a row of the matrix, so that it is measured
    in the same rounds as samotop-maildir: bench/disk_rate.py with 16 writer threads, each
    doing what a durable Maildir delivery does (tmp/, write, fsync, rename, fsync of new/),
    for the 1 KiB cases."""

    name = "disk-16-threads"
    tls = False
    single = True

    def __init__(self, base):
        self.dir = os.path.join(base, "disk-rate-matrix")

    def measure(self, case, seconds):
        size, sessions = CASES[case][0], CASES[case][1]
        if size != 1024 or sessions != 32:
            raise RuntimeError("the disk row is for 1 KiB, 32 sessions only")
        r = subprocess.run([PY, os.path.join(HERE, "disk_rate.py"), self.dir, "--threads", "16",
                            "--seconds", "%.2f" % seconds, "--size", str(size)],
                           capture_output=True, text=True, timeout=600)
        rate = float(json.loads(r.stdout)["files_per_s"]["16"])
        return {"rate": rate, "cpu_us": 0.0, "peak": 0, "count": int(rate * seconds),
                "seconds": seconds}

    def stop(self):
        pass


def measure(server, case, count):
    """Sends `count` messages; returns (messages/s, CPU µs per message, peak bytes)."""
    if isinstance(server, DiskRate):
        return server.measure(case, max(0.5, min(4.0, count / 2000)))
    size, sessions, rcpts, reuse = CASES[case]
    # One smtp-source run: with reuse, each session carries count / sessions messages (over
    # 1000 in one session is common: samotop's limit is raised, see MAX_MESSAGES_PER_SESSION).
    sent = max(sessions, count)
    with MemSampler(server) as mem:
        cpu0 = cpu_ticks(server.pid)
        t0 = time.monotonic()
        source(server.port, size, sessions, rcpts, reuse, sent, timeout=300)
        elapsed = time.monotonic() - t0
        cpu1 = cpu_ticks(server.pid)
    return {
        "rate": sent / elapsed,
        "cpu_us": (cpu1 - cpu0) / TICK * 1e6 / sent,
        "peak": mem.peak,
        "count": sent,
        "seconds": elapsed,
    }


def tls_load(port, mode, sessions, count, per_connection, resume, timeout):
    """Runs bench/tls-load; returns its JSON line."""
    argv = [TLS_LOAD, "--mode", mode, "--sessions", str(sessions), "--messages", str(count),
            "--size", "1024", "--timeout", "30"]
    if per_connection:
        argv.append("--per-connection")
    if resume:
        argv.append("--resume")
    argv.append("127.0.0.1:%d" % port)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("tls-load %s: %s" % (" ".join(argv[1:]), r.stderr.strip()[-500:]))
    return json.loads(r.stdout)


def measure_tls(server, case, count):
    """Like `measure`, driven by bench/tls-load over plain SMTP, STARTTLS or implicit TLS."""
    mode, sessions, per_connection, resume = TLS_CASES[case]
    port = server.smtps_port if mode == "smtps" else server.port
    if port is None:
        raise RuntimeError("no implicit TLS port")
    sent = max(sessions, count)
    with MemSampler(server) as mem:
        cpu0 = cpu_ticks(server.pid)
        out = tls_load(port, mode, sessions, sent, per_connection, resume, timeout=300)
        cpu1 = cpu_ticks(server.pid)
    return {
        "rate": out["rate"],
        "cpu_us": (cpu1 - cpu0) / TICK * 1e6 / sent,
        "peak": mem.peak,
        "count": sent,
        "seconds": out["seconds"],
        "resumed": out["handshakes_resumed"],
        "full": out["handshakes_full"],
    }


class LmtpPath:
    """One way into the bench's Dovecot: `server` is None for smtp-source -L straight into
    its LMTP socket, else the samotop or Postfix in front of it."""

    def __init__(self, name, dovecot, server):
        self.name, self.dovecot, self.server = name, dovecot, server
        self.seq = 0
        # Memory: of the front server where there is one, else of Dovecot.
        self.pid = server.pid if server else dovecot.pid
        self.single = server.single if server else False

    def memory(self):
        if self.server:
            return self.server.memory()
        return sum(pss_bytes(p) for p in tree(self.dovecot.pid))

    def cpu(self):
        """CPU ticks of Dovecot and of the front server, if any: the whole path's cost."""
        return cpu_ticks(self.dovecot.pid) + (cpu_ticks(self.server.pid) if self.server else 0)

    def stop(self):
        if self.server:
            self.server.stop()


def measure_lmtp(path, case, count):
    """Sends `count` messages along `path` into a fresh Dovecot mailbox; the time runs until
    Dovecot has stored them all (Postfix's 250 comes at its queue, before delivery)."""
    size, sessions = LMTP_CASES[case]
    path.seq += 1
    user = "%s-%d@sink.test" % (path.name, path.seq)
    sent = max(sessions, count)
    dc = path.dovecot
    with MemSampler(path) as mem:
        cpu0 = path.cpu()
        t0 = time.monotonic()
        if path.server is None:
            source(dc.socket, size, sessions, 1, True, sent, timeout=300, to=user, lmtp=True)
        else:
            source(path.server.port, size, sessions, 1, True, sent, timeout=300, to=user)
        deadline = time.monotonic() + 300
        while dc.count(user) < sent:
            if time.monotonic() > deadline:
                raise RuntimeError("Dovecot stored %d of %d" % (dc.count(user), sent))
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        cpu1 = path.cpu()
    return {
        "rate": sent / elapsed,
        "cpu_us": (cpu1 - cpu0) / TICK * 1e6 / sent,
        "peak": mem.peak,
        "count": sent,
        "seconds": elapsed,
    }


def run_matrix(servers, cases, rounds, seconds, measure=measure, warmup=WARMUP,
               sessions_of=lambda case: CASES[case][1]):
    """Every (server, case), in rounds with the server order rotated; `measure(server, case,
    count)` gives one measurement."""
    counts = {}
    if not servers or not cases:
        return {}
    log("warm-up and calibration (%.0f s per measurement)" % seconds)
    for case in cases:
        for s in servers:
            if isinstance(s, DiskRate) and case != "1k-s32":
                continue
            try:
                m = measure(s, case, warmup[case])
            except Exception as e:  # noqa: BLE001 - a failing server is reported, not fatal
                log("%s %s: warm-up failed: %s" % (s.name, case, e))
                continue
            sessions = sessions_of(case)
            counts[(s.name, case)] = int(min(MAX_COUNT, max(sessions * 4, m["rate"] * seconds)))
    results = {}
    for r in range(rounds):
        order = servers[r % len(servers):] + servers[: r % len(servers)]
        log("round %d/%d: %s" % (r + 1, rounds, " ".join(s.name for s in order)))
        for case in cases:
            for s in order:
                key = (s.name, case)
                if key not in counts:
                    continue
                try:
                    m = measure(s, case, counts[key])
                except Exception as e:  # noqa: BLE001
                    log("%s %s: %s" % (s.name, case, e))
                    results.setdefault(key, []).append({"error": str(e)})
                    continue
                results.setdefault(key, []).append(m)
                log("  %-16s %-13s %8.0f msg/s  %6.1f µs CPU/msg" % (s.name, case, m["rate"],
                                                                    m["cpu_us"]))
    return results


# ---------------------------------------------------------------- extras


def idle_memory(name, base, samotop, n, tls=None):
    """Memory per idle connection, by state: after the banner, after the EHLO reply, and
    (samotop with `tls`) after STARTTLS and the EHLO inside TLS."""
    out = {}
    states = ["banner", "ehlo"] + (["starttls"] if tls and name == "samotop" else [])
    for state in states:
        nofile = n + 1024
        if name == "samotop":
            s = Samotop("idle-samotop-%s" % state, base, samotop, "null",
                        extra=["--max-connections", str(n + 100)], nofile=nofile,
                        tls=tls if state == "starttls" else None)
        elif name == "smtp-sink":
            s = Sink("idle-sink-%s" % state, base, nofile=nofile, max_conns=n + 100)
        else:
            s = Aiosmtpd("idle-aiosmtpd-%s" % state, base, "discard", nofile=nofile)
        try:
            time.sleep(0.3)
            before_rss, before_pss = rss_bytes(s.pid), pss_bytes(s.pid)
            flags = {"banner": [], "ehlo": ["--ehlo"], "starttls": ["--starttls"]}[state]
            argv = [PY, os.path.join(HERE, "idle_conns.py"), "127.0.0.1", str(s.port), str(n),
                    "--hold", "300"] + flags
            client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, preexec_fn=lambda: raise_nofile(n + 1024))
            line = client.stdout.readline().split()
            alive = int(line[1]) if len(line) == 2 else 0
            time.sleep(0.5)
            after_rss, after_pss = rss_bytes(s.pid), pss_bytes(s.pid)
            client.stdin.close()
            client.wait(60)
            out[state] = {
                "open": alive,
                "rss_per_conn": (after_rss - before_rss) / max(alive, 1),
                "pss_per_conn": (after_pss - before_pss) / max(alive, 1),
                "rss_total": after_rss,
            }
            log("idle %s %s: %d open, %.0f B RSS/conn" % (
                name, state, alive, (after_rss - before_rss) / max(alive, 1)))
        finally:
            s.stop()
    return out


def big_message(server, mb):
    """Memory growth while one message of `mb` MB streams through."""
    before = server.memory()
    t0 = time.monotonic()
    with MemSampler(server, interval=0.02) as mem:
        source(server.port, mb * 1024 * 1024, 1, 1, False, 1, timeout=600)
    elapsed = time.monotonic() - t0
    return {"before": before, "peak": mem.peak, "growth": mem.peak - before, "seconds": elapsed}


def disk_rate(base, seconds):
    d = os.path.join(base, "disk-rate")
    r = subprocess.run([PY, os.path.join(HERE, "disk_rate.py"), d, "--threads", "1,16",
                        "--seconds", str(seconds)], capture_output=True, text=True, timeout=600)
    return json.loads(r.stdout)["files_per_s"]


def dovecot_path(base, samotop, cases, rounds, seconds):
    """The Dovecot path: smtp-source -L into one Dovecot's LMTP socket, samotop relaying
    into it (--deliver lmtp:unix:SOCKET), Postfix relaying into it (lmtp transport)."""
    import dovecot_lmtp  # bench/dovecot_lmtp.py

    why = dovecot_lmtp.available()
    if why:
        log("Dovecot path skipped: %s" % why)
        return {}
    dc = dovecot_lmtp.Dovecot()
    log("Dovecot path: LMTP socket %s" % dc.socket)
    paths = []
    try:
        paths.append(LmtpPath("dovecot-direct", dc, None))
        paths.append(LmtpPath("samotop-lmtp", dc, Samotop(
            "lmtp-samotop", base, samotop, "lmtp:unix:" + dc.socket)))
        paths.append(LmtpPath("postfix-lmtp", dc, Postfix("lmtp-postfix", base, lmtp=dc.socket)))
        baseline = os.environ.get("BENCH_BASELINE")
        if baseline:
            paths.append(LmtpPath("base-lmtp", dc, Samotop(
                "lmtp-base", base, baseline, "lmtp:unix:" + dc.socket)))
        return run_matrix(paths, cases, rounds, seconds, measure=measure_lmtp,
                          warmup=LMTP_WARMUP, sessions_of=lambda c: LMTP_CASES[c][1])
    finally:
        for p in paths:
            p.stop()
        dc.close()


# ---------------------------------------------------------------- report


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024 // 1024
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "mem_gib": mem}


def versions(samotop):
    def cmd(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:  # noqa: BLE001
            return "?"
    aio = cmd([PY, "-c", "import aiosmtpd; print(aiosmtpd.__version__)"])
    pf = cmd(["postconf", "-dh", "mail_version"])  # -d: no main.cf needed
    git = cmd(["git", "-C", ROOT, "describe", "--always", "--dirty"])
    return {"samotop": git, "postfix": pf, "aiosmtpd": aio, "python": platform.python_version()}


def mib(b):
    return b / 1024 / 1024


def matrix_table(add, results, cases, names, case_text, ref_of, ref_label, what="server"):
    """A table of one matrix's medians; `ref_of(name)`: the server each is compared with.
    Returns the medians."""
    medians = {}
    for (name, case), rs in results.items():
        ok = [r for r in rs if "rate" in r]
        if ok:
            medians[(name, case)] = statistics.median(r["rate"] for r in ok)
    add("| case | %s | msg/s median | min–max | CPU µs/msg | peak MiB | %s |" % (what, ref_label))
    add("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for case in cases:
        for name in names:
            rs = results.get((name, case), [])
            ok = [r for r in rs if "rate" in r]
            if not ok:
                if rs:
                    add("| %s | %s | failed: %s | | | | |"
                        % (case_text[case], name, rs[0].get("error", "?")[:80]))
                continue
            rates = [r["rate"] for r in ok]
            med = medians[(name, case)]
            cpu = statistics.median(r["cpu_us"] for r in ok)
            peak = max(r["peak"] for r in ok)
            ref = medians.get((ref_of(name), case))
            ratio = "%.2f×" % (ref / med) if ref and ref_of(name) != name else "—"
            fails = len(rs) - len(ok)
            add("| %s | %s | %.0f | %.0f–%.0f%s | %.1f | %.1f | %s |" % (
                case_text[case], name, med, min(rates), max(rates),
                " (%d failed)" % fails if fails else "", cpu, mib(peak), ratio))
    return medians


def report(info, results, cases, servers, extras, tls_cases=(), lmtp_cases=()):
    lines = []
    add = lines.append
    m = info["machine"]
    add("Run of %s: %d rounds, ~%.0f s per measurement, samotop %s, Postfix %s, aiosmtpd %s."
        % (info["date"], info["rounds"], info["seconds"], info["versions"]["samotop"],
           info["versions"]["postfix"], info["versions"]["aiosmtpd"]))
    add("Machine: %s, nproc %d, %d GiB, Linux %s; load average %s at start, %s at end."
        % (m["cpu"], m["nproc"], m["mem_gib"], m["kernel"], info["load_start"], info["load_end"]))
    add("")
    add("| case | server | msg/s median | min–max | CPU µs/msg | peak MiB | samotop ÷ this |")
    add("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    medians = {}
    for case in cases:
        for s in servers:
            ok = [r for r in results.get((s, case), []) if "rate" in r]
            if ok:
                medians[(s, case)] = statistics.median(r["rate"] for r in ok)
    for case in cases:
        for s in servers:
            rs = results.get((s, case), [])
            ok = [r for r in rs if "rate" in r]
            if not ok:
                if rs:
                    add("| %s | %s | failed | | | | |" % (CASE_TEXT[case], s))
                continue
            rates = [r["rate"] for r in ok]
            med = medians[(s, case)]
            cpu = statistics.median(r["cpu_us"] for r in ok)
            peak = max(r["peak"] for r in ok)
            ref = medians.get((CLASS[s], case))
            ratio = "%.2f×" % (ref / med) if ref and s != CLASS[s] else "—"
            fails = len(rs) - len(ok)
            add("| %s | %s | %.0f | %.0f–%.0f%s | %.1f | %.1f | %s |" % (
                CASE_TEXT[case], s, med, min(rates), max(rates),
                " (%d failed)" % fails if fails else "", cpu, mib(peak), ratio))
    add("")
    add("Peak MiB: the process's peak RSS in the case (VmHWM reset before it), or for Postfix "
        "the largest sampled sum of PSS over the instance's processes. CPU: utime+stime of the "
        "server's processes (Postfix: master, all its children, reaped ones included) over the "
        "messages sent. samotop ÷ this: the median of the samotop of the same class (null for "
        "protocol-only servers, maildir for durable ones) over this server's median.")
    tls_medians = {}
    if extras.get("tls"):
        add("")
        add("TLS, 1 KiB, driven by bench/tls-load (Rust, tokio-rustls, one command at a time, "
            "session resumption off unless the case says resumed):")
        add("")
        names = [n for n in servers if any(k[0] == n for k in extras["tls"])]
        tls_medians = matrix_table(add, extras["tls"], tls_cases, names, TLS_CASE_TEXT,
                                   lambda n: CLASS.get(n, n), "samotop ÷ this")
    lmtp_medians = {}
    if extras.get("lmtp"):
        add("")
        add("The Dovecot path: smtp-source into one Dovecot's LMTP socket (Unix), straight (-L) "
            "or through samotop or Postfix; a fresh mailbox per measurement; the time runs until "
            "Dovecot has stored every message. CPU: Dovecot's processes plus the front "
            "server's; peak MiB: the front server (direct: Dovecot):")
        add("")
        names = [n for n in LMTP_PATHS + ["base-lmtp"]
                 if any(k[0] == n for k in extras["lmtp"])]
        lmtp_medians = matrix_table(add, extras["lmtp"], lmtp_cases, names, LMTP_CASE_TEXT,
                                    lambda n: "samotop-lmtp", "samotop-lmtp ÷ this", "path")
    if "idle" in extras:
        add("")
        add("| idle connections | state | open | RSS/conn | PSS/conn |")
        add("| --- | --- | ---: | ---: | ---: |")
        for name, v in extras["idle"].items():
            for state, d in v.items():
                add("| %s | after %s | %d | %.1f KiB | %.1f KiB |" % (
                    name, IDLE_STATE_TEXT[state], d["open"],
                    d["rss_per_conn"] / 1024, d["pss_per_conn"] / 1024))
    if "big" in extras:
        add("")
        add("| one %d MB message | before MiB | peak MiB | growth MiB | seconds |"
            % info["big_mb"])
        add("| --- | ---: | ---: | ---: | ---: |")
        for name, d in extras["big"].items():
            if "error" in d:
                add("| %s | failed: %s | | | |" % (name, d["error"]))
                continue
            add("| %s | %.1f | %.1f | %.1f | %.1f |" % (
                name, mib(d["before"]), mib(d["peak"]), mib(d["growth"]), d["seconds"]))
    if "disk" in extras:
        add("")
        d = extras["disk"]
        add("Disk limit for durable Maildir writes (1 KiB: open, write, fsync, close, rename, "
            "fsync dir): %s files/s with 1 thread, %s with 16."
            % (d.get("1", "?"), d.get("16", "?")))
    targets = []

    def ratio(a, b):
        if a in medians and b in medians:
            return medians[a] / medians[b]
        return None

    for label, a, b, want in [
        ("null, 1 KiB, 32 sessions vs smtp-sink", "samotop-null", "smtp-sink", 0.6),
        ("metrics on vs off, null, 1 KiB, 32 sessions", "samotop-null-metrics", "samotop-null",
         0.97),
        ("transcripts on vs off, null, 1 KiB, 32 sessions", "samotop-null-transcripts",
         "samotop-null", 0.85),
        ("null, 1 KiB, 32 sessions vs aiosmtpd-discard", "samotop-null", "aiosmtpd-discard", 4.0),
        ("maildir, 1 KiB, 32 sessions vs Postfix", "samotop-maildir", "postfix", 1.0),
        ("maildir, 1 KiB, 32 sessions vs aiosmtpd-maildir", "samotop-maildir",
         "aiosmtpd-maildir", 2.0),
    ]:
        r = ratio((a, "1k-s32"), (b, "1k-s32"))
        if r is not None:
            targets.append("| %s | ≥ %.2f× | %.2f× | %s |" % (label, want, r,
                                                               "met" if r >= want else "not met"))
    def target(label, r, want, unit="×"):
        if r is None:
            return
        ok = r >= want if unit == "×" else r <= want
        targets.append("| %s | %s %.2f%s | %.2f%s | %s |" % (
            label, "≥" if unit == "×" else "≤", want, unit if unit == "×" else " " + unit, r,
            unit if unit == "×" else " " + unit, "met" if ok else "not met"))

    def tls_ratio(a, b):
        if a in tls_medians and b in tls_medians:
            return tls_medians[a] / tls_medians[b]
        return None

    for case, lbl in (("starttls-conn-s32", "STARTTLS, 1 msg/conn"),
                      ("starttls-conn-s32-resume", "STARTTLS, 1 msg/conn, resumed"),
                      ("smtps-conn-s32", "implicit TLS, 1 msg/conn")):
        target("%s: samotop-maildir vs Postfix (both durable)" % lbl,
               tls_ratio(("samotop-maildir", case), ("postfix", case)), 2.0)
        target("%s: samotop-null vs Postfix (held)" % lbl,
               tls_ratio(("samotop-null", case), ("postfix", case)), 2.0)
        target("%s: samotop-null vs aiosmtpd-discard" % lbl,
               tls_ratio(("samotop-null", case), ("aiosmtpd-discard", case)), 3.0)
    for name in ("samotop-null", "samotop-maildir"):
        target("STARTTLS vs plain, 32 long sessions, %s" % name,
               tls_ratio((name, "starttls-s32"), (name, "plain-s32")), 0.8)
        target("implicit TLS vs plain, 32 long sessions, %s" % name,
               tls_ratio((name, "smtps-s32"), (name, "plain-s32")), 0.8)
    for case in lmtp_cases:
        for b, want in (("dovecot-direct", 0.8), ("postfix-lmtp", 2.0)):
            a_, b_ = ("samotop-lmtp", case), (b, case)
            if a_ in lmtp_medians and b_ in lmtp_medians:
                target("Dovecot path, %s: samotop vs %s" % (LMTP_CASE_TEXT[case], b),
                       lmtp_medians[a_] / lmtp_medians[b_], want)
    idle = extras.get("idle", {}).get("samotop", {})
    for state, want in (("ehlo", 4), ("starttls", 32)):
        if state in idle:
            target("memory per idle connection (%s)" % IDLE_STATE_TEXT[state],
                   idle[state]["rss_per_conn"] / 1024, want, "KiB")
    target("durable Maildir, 1 KiB, 32 sessions vs the disk (16 writer threads, same rounds)",
           ratio(("samotop-maildir", "1k-s32"), ("disk-16-threads", "1k-s32")), 0.9)
    one = [r for r in results.get(("samotop-null", "1k-s1"), []) if "rate" in r]
    if one:
        targets.append("| one session, %d messages (--max-messages-per-session raised) | "
                       "no error | %d sent | met |" % (max(r["count"] for r in one),
                                                        max(r["count"] for r in one)))
    for name in ("samotop-null", "samotop-maildir"):
        d = extras.get("big", {}).get(name)
        if d and "growth" in d:
            g = mib(d["growth"])
            targets.append("| RSS growth, %d MB message, %s | < 8 MiB | %.1f MiB | %s |"
                           % (info["big_mb"], name, g, "met" if g < 8 else "not met"))
    if targets:
        add("")
        add("| target | want | got | |")
        add("| --- | ---: | ---: | --- |")
        lines.extend(targets)
    return "\n".join(lines) + "\n"


def main():
    rounds = env_int("BENCH_ROUNDS", 3)
    seconds = env_float("BENCH_SECONDS", 1)
    samotop = os.environ.get("SAMOTOP", os.path.join(ROOT, "target/bench/release/samotop"))
    names = [n for n in os.environ.get("BENCH_SERVERS", ",".join(SERVERS)).split(",") if n]
    cases = [c for c in os.environ.get("BENCH_CASES", ",".join(CASES)).split(",") if c]
    for n in names:
        if n not in SERVERS and n not in ("base-null", "base-maildir", "disk-16-threads"):
            sys.exit("bench: unknown server %s (one of %s)" % (n, ", ".join(SERVERS)))
    for c in cases:
        if c not in CASES:
            sys.exit("bench: unknown case %s (one of %s)" % (c, ", ".join(CASES)))
    if not os.access(samotop, os.X_OK):
        sys.exit("bench: no samotop binary at %s" % samotop)
    raise_nofile(65536)
    fs = FreshFs("samotop-bench-")
    base = fs.dir
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rounds": rounds,
        "seconds": seconds,
        "machine": machine(),
        "versions": versions(samotop),
        "load_start": "%.1f/%.1f/%.1f" % os.getloadavg(),
        "big_mb": env_int("BENCH_BIG_MB", 100),
    }
    log("temporary directory %s" % base)
    servers = []
    extras = {}
    results = {}
    tls_cases = [c for c in os.environ.get("BENCH_TLS_CASES", ",".join(TLS_CASES)).split(",")
                 if c]
    lmtp_cases = [c for c in os.environ.get("BENCH_LMTP_CASES", ",".join(LMTP_CASES)).split(",")
                  if c]
    for c in tls_cases:
        if c not in TLS_CASES:
            sys.exit("bench: unknown TLS case %s (one of %s)" % (c, ", ".join(TLS_CASES)))
    for c in lmtp_cases:
        if c not in LMTP_CASES:
            sys.exit("bench: unknown Dovecot-path case %s (one of %s)"
                     % (c, ", ".join(LMTP_CASES)))
    if tls_cases and not os.access(TLS_LOAD, os.X_OK):
        sys.exit("bench: no tls-load binary at %s (cargo build --release -p tls-load)" % TLS_LOAD)
    tls = make_cert(base)
    tls_results = {}
    lmtp_results = {}
    try:
        for n in names:
            log("starting %s" % n)
            if n == "disk-16-threads":
                servers.append(DiskRate(base))
                continue
            servers.append(start(n, base, samotop, tls=tls))
        results = run_matrix(servers, cases, rounds, seconds)
        tls_servers = [s for s in servers if s.tls]
        if tls_cases and tls_servers:
            log("TLS: %s" % " ".join(s.name for s in tls_servers))
            tls_results = run_matrix(tls_servers, tls_cases, rounds, seconds,
                                     measure=measure_tls, warmup=TLS_WARMUP,
                                     sessions_of=lambda c: TLS_CASES[c][1])
        mb = info["big_mb"]
        if mb > 0:
            extras["big"] = {}
            for s in servers:
                log("one %d MB message through %s" % (mb, s.name))
                try:
                    extras["big"][s.name] = big_message(s, mb)
                except Exception as e:  # noqa: BLE001
                    extras["big"][s.name] = {"error": str(e)}
    finally:
        for s in servers:
            s.stop()
    if lmtp_cases:
        lmtp_results = dovecot_path(base, samotop, lmtp_cases, rounds, seconds)
    if os.environ.get("BENCH_TRIGGER", "1") != "0":  # bench/trigger.py: webhooks and exec:
        import trigger
        extras["trigger"] = trigger.run(sys.modules[__name__], ROOT, samotop, base, rounds, seconds)
    n = env_int("BENCH_IDLE_CONNS", 10000)
    if n > 0:
        extras["idle"] = {}
        for name in ("samotop", "smtp-sink", "aiosmtpd"):
            if name == "samotop" or any(s.name.startswith(name) for s in servers):
                try:
                    extras["idle"][name] = idle_memory(name, base, samotop, n, tls=tls)
                except Exception as e:  # noqa: BLE001
                    log("idle %s failed: %s" % (name, e))
    if env_int("BENCH_SMIME", 1):  # encryption at rest: bench/smime.py
        import smime
        extras["smime"] = smime.run(sys.modules[__name__], base, samotop, rounds, seconds)
    ds = env_float("BENCH_DISK_SECONDS", 2)
    if ds > 0:
        log("disk rate")
        extras["disk"] = disk_rate(base, ds)
    info["load_end"] = "%.1f/%.1f/%.1f" % os.getloadavg()
    extras["tls"] = tls_results
    extras["lmtp"] = lmtp_results
    text = report(info, results, cases, names, extras, tls_cases, lmtp_cases)
    if "trigger" in extras:
        text += "\n".join(trigger.report(extras["trigger"])) + "\n"
    if os.environ.get("BENCH_INBOX", "1") != "0":
        import inbox  # bench/inbox.py: durable SQL delivery and reads over 100 000 messages

        text += "\n" + inbox.report(inbox.run(samotop))
    text += __import__("smime").report(extras["smime"]) if "smime" in extras else ""
    if os.environ.get("BENCH_AUTH", "1") != "0":
        import auth  # bench/auth.py: DKIM/DMARC on and off, and Postfix + OpenDKIM + OpenDMARC

        text += "\n" + auth.report(auth.run(samotop))
    print(text)
    out = os.environ.get("BENCH_OUT")
    if out:
        with open(out, "w") as f:
            f.write(text)
        with open(out + ".json", "w") as f:
            flat = {k: {"%s %s" % kk: vv for kk, vv in extras.get(k, {}).items()}
                    for k in ("tls", "lmtp")}
            rest = {k: v for k, v in extras.items() if k not in ("tls", "lmtp")}
            json.dump({"info": info, "extras": rest, "tls": flat["tls"], "lmtp": flat["lmtp"],
                       "results": {"%s %s" % k: v for k, v in results.items()}}, f, indent=1)
    fs.close(keep=bool(os.environ.get("BENCH_KEEP")))


if __name__ == "__main__":
    main()

"""A real Dovecot for the integration tests, and `doveadm` on any Maildir.

Dovecot runs in a temporary directory of its own (short, under /tmp: Unix socket paths are
limited to 107 bytes), with LMTP on a Unix socket, users from a passwd-file, and
`mail_location = maildir:DIR/mail/%u`. It runs in its own process group, and stopping it
signals that group by PID; every wait is bounded.

    from dovecot import Dovecot, dovecot, doveadm_maildir  # `dovecot` is a pytest fixture

    def test_x(dovecot):
        dc = dovecot(users=["alice@example.org"])      # started, ready; killed after the test
        ... deliver to f"lmtp:unix:{dc.socket}" ...
        dc.fetch("alice@example.org", "hdr.subject")   # doveadm -c CONF fetch -u USER ...
        dc.messages("alice@example.org")               # the Maildir files, as bytes
        dc.kill()                                      # SIGKILL to the whole process group

    def test_y(tmp_path):
        # samotop wrote a Maildir; ask Dovecot what it sees there (on a copy, by default):
        maildir_fetch(tmp_path / "maildir", "uid hdr.subject")     # [{"uid": "1", ...}]
        doveadm_maildir(tmp_path / "maildir", "search", "ALL")      # any doveadm command

Needs `dovecot`, `doveadm` and /usr/lib/dovecot/lmtp (Debian: dovecot-core, dovecot-lmtpd;
scripts/setup installs them): a test that needs them fails, saying so, when they are missing.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

#: How long Dovecot may take to open its socket, to exit, and doveadm to answer.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
DOVEADM_TIMEOUT = 30.0


def tool(name):
    """The path of `dovecot` or `doveadm` (also outside PATH, in /usr/sbin or /usr/bin)."""
    for found in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if found and os.access(found, os.X_OK):
            return found
    return None


def available():
    """None when Dovecot can be used here, else the reason it cannot."""
    for name in ("dovecot", "doveadm"):
        if tool(name) is None:
            return f"`{name}` is not installed (apt-get install dovecot-core dovecot-lmtpd)"
    if not os.path.exists("/usr/lib/dovecot/lmtp"):
        return "/usr/lib/dovecot/lmtp is missing (apt-get install dovecot-lmtpd)"
    return None


def version():
    out = subprocess.run([tool("dovecot"), "--version"], capture_output=True, timeout=DOVEADM_TIMEOUT)
    return out.stdout.decode().strip()


def _mail_owner():
    """(uid, gid, internal user): ours, or nobody's when we are root (Dovecot refuses to access
    mail as root)."""
    if os.geteuid() == 0:
        return 65534, 65534, "root"
    import pwd

    return os.geteuid(), os.getegid(), pwd.getpwuid(os.geteuid()).pw_name


def _common_config(d, uid, gid, internal, crlf):
    return (
        f"base_dir = {d}/run\n"
        f"state_dir = {d}/state\n"
        f"log_path = {d}/dovecot.log\n"
        f"info_log_path = {d}/dovecot.log\n"
        "ssl = no\n"
        "listen = 127.0.0.1\n"
        "first_valid_uid = 0\n"
        "first_valid_gid = 0\n"
        f"mail_uid = {uid}\n"
        f"mail_gid = {gid}\n"
        f"default_internal_user = {internal}\n"
        f"default_internal_group = {internal}\n"
        f"default_login_user = {internal}\n"
        # Stored as received: CR LF line ends, so that a body can be compared byte for byte.
        f"mail_save_crlf = {'yes' if crlf else 'no'}\n"
        "mail_fsync = always\n"
    )


def _userdb(d, version_):
    if version_.startswith(("2.2", "2.3")):
        return (
            f"passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n"
            f"userdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n"
        )
    return (  # Dovecot 2.4 (untested here: this machine has 2.3)
        f"passdb passwd-file {{\n  passwd_file_path = {d}/users\n}}\n"
        f"userdb passwd-file {{\n  passwd_file_path = {d}/users\n}}\n"
    )


def _mail_location(path, version_):
    if version_.startswith(("2.2", "2.3")):
        return f"mail_location = maildir:{path}\n"
    return f"mail_driver = maildir\nmail_path = {path.replace('%u', '%{user}')}\n"


def _header_2_4(version_):
    if version_.startswith(("2.2", "2.3")):
        return ""
    return "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n"


#: `extra_config` for a per-user quota (Dovecot 2.3): a user with the extra field
#: `userdb_quota_rule=*:storage=1K` refuses a bigger message after the data with 552 5.2.2.
QUOTA_CONFIG = (
    "mail_plugins = $mail_plugins quota\n"
    "plugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=100M\n}\n"
)


class Dovecot:
    """A Dovecot LMTP server in a temporary directory of its own.

    users:   the passwd-file's user names (any string: `alice@example.org`, `example.org-alice`),
             or a dict name -> userdb extra fields (`"userdb_quota_rule=*:storage=1K"`).
    crlf:    `mail_save_crlf` (default yes: Maildir files keep CR LF, as delivered).
    maildir: the mail_location path (default DIR/mail/%u: one Maildir per user).
    owner:   (uid, gid) that mail is accessed as (default: ours, or nobody's when we are root).
    extra_config: appended to dovecot.conf (e.g. `QUOTA_CONFIG`).
    """

    def __init__(
        self,
        users=("alice@example.org", "bob@example.org"),
        crlf=True,
        start=True,
        maildir=None,
        owner=None,
        extra_config="",
    ):
        reason = available()
        if reason:
            pytest.fail(f"this test needs a real Dovecot: {reason}", pytrace=False)
        self.version = version()
        extras = dict(users) if isinstance(users, dict) else {u: "" for u in users}
        self.users = list(extras)
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="dc-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.mail = self.dir / "mail"
        self.mail.mkdir()
        os.chmod(self.mail, 0o777)
        self.conf = self.dir / "dovecot.conf"
        self.socket = self.dir / "lmtp.sock"
        uid, gid, internal = _mail_owner()
        if owner is not None:
            uid, gid = owner
        (self.dir / "users").write_text("".join(f"{u}:{{PLAIN}}x::::::{x}\n" for u, x in extras.items()))
        d = str(self.dir)
        self.conf.write_text(
            _header_2_4(self.version)
            + _common_config(d, uid, gid, internal, crlf)
            + "protocols = lmtp\n"
            + _mail_location(str(maildir) if maildir else f"{d}/mail/%u", self.version)
            + _userdb(d, self.version)
            + f"service lmtp {{\n  unix_listener {d}/lmtp.sock {{\n    mode = 0666\n  }}\n}}\n"
            + extra_config
        )
        self.proc = None
        self._stderr = None
        if start:
            self.start()

    # -- life cycle ------------------------------------------------------------------------

    def start(self):
        """Starts the master (again, after stop/kill) and waits, bounded, for the LMTP socket
        to answer."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if self._stderr:
            self._stderr.close()
        self._stderr = open(self.dir / "stderr.log", "ab")
        self.proc = subprocess.Popen(
            [tool("dovecot"), "-F", "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            start_new_session=True,  # its own process group: killpg ends it and its children
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.proc.returncode} at start:\n{self.log}")
            if self.answers():
                return self
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"dovecot's LMTP socket did not answer in {START_TIMEOUT}s:\n{self.log}")

    def answers(self):
        """True when something accepts connections on the LMTP socket and greets with 220."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2.0)
                s.connect(str(self.socket))
                return s.recv(512).startswith(b"220")
        except OSError:
            return False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM to the process group; bounded wait; SIGKILL if it lingers."""
        self._signal(signal.SIGTERM)

    def kill(self):
        """SIGKILL to the process group at once (e.g. in the middle of a transfer)."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig):
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group's id is the master's PID
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=STOP_TIMEOUT)
        # The master is gone; its children (lmtp, log, config, anvil) get the same signal via
        # the group, and are gone too once the group is empty (bounded; zombies of orphans
        # reaped by init may linger a moment, so this does not fail).
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, signal.SIGKILL if sig == signal.SIGKILL else 0)
            except ProcessLookupError:
                break
            except PermissionError:
                break
            if not self._group_alive(pgid):
                break
            time.sleep(0.05)

    def pids(self, name=None):
        """PIDs of Dovecot's processes (its process group), those named `name` (e.g. "lmtp")
        when given; zombies left out."""
        if self.proc is None:
            return []
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.find("(") + 1 : stat.rfind(")")]
            fields = stat.rsplit(")", 1)[-1].split()
            if fields[0] != "Z" and fields[2] == str(self.proc.pid) and (name is None or comm == name):
                found.append(int(pid))
        return found

    def bytes_read(self, name="lmtp"):
        """Bytes read so far by Dovecot's `name` processes (/proc/PID/io rchar): shows how far
        a transfer has come, e.g. before killing Dovecot in the middle of it."""
        total = 0
        for pid in self.pids(name):
            try:
                with open(f"/proc/{pid}/io") as f:
                    for line in f:
                        if line.startswith("rchar:"):
                            total += int(line.split()[1])
            except OSError:
                pass
        return total

    @staticmethod
    def _group_alive(pgid):
        """True when a process (not a zombie) of group `pgid` is left."""
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                return True
        return False

    def close(self):
        """Kills Dovecot and removes its directory."""
        self.kill()
        if self._stderr:
            self._stderr.close()
            self._stderr = None
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- what it stored --------------------------------------------------------------------

    @property
    def log(self):
        out = ""
        for name in ("stderr.log", "dovecot.log"):
            try:
                out += (self.dir / name).read_text(errors="replace")
            except OSError:
                pass
        return out

    def maildir(self, user):
        return self.mail / user

    def messages(self, user):
        """The files in a user's Maildir `new/` and `cur/`, read whole, oldest name first."""
        found = []
        for sub in ("new", "cur"):
            d = self.maildir(user) / sub
            if d.is_dir():
                found.extend(sorted(d.iterdir()))
        return [p.read_bytes() for p in found]

    def doveadm(self, *args, check=True):
        """`doveadm -c CONF ARGS...` (bounded); returns stdout as str."""
        return _run_doveadm(self.conf, args, check=check)

    def fetch(self, user, fields="hdr.subject", query=("ALL",)):
        """`doveadm -c CONF -f json fetch -u USER FIELDS QUERY...`: one dict per message,
        field name -> str (`fields` space-separated: "uid hdr.subject text"). Bytes that are
        not UTF-8 come back as U+FFFD: read `messages()` to compare bytes."""
        if isinstance(query, str):
            query = (query,)
        return json.loads(self.doveadm("-f", "json", "fetch", "-u", user, fields, *query) or "[]")

    def search(self, user, query=("ALL",)):
        """`doveadm -c CONF search -u USER QUERY...`: a list of (mailbox-guid, uid)."""
        if isinstance(query, str):
            query = (query,)
        out = self.doveadm("search", "-u", user, *query)
        return [tuple(line.split()) for line in out.splitlines() if line.strip()]


def _run_doveadm(conf, args, check=True):
    proc = subprocess.run(
        [tool("doveadm"), "-c", str(conf)] + [str(a) for a in args],
        capture_output=True,
        timeout=DOVEADM_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout.decode("utf-8", "replace")
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"doveadm {' '.join(map(str, args))} exited with {proc.returncode}:\n{out}\n"
            + proc.stderr.decode("utf-8", "replace")
        )
    return out


def doveadm_maildir(maildir, *args, user="test", copy=True, check=True):
    """Runs `doveadm -c CONF ARGS...` on a Maildir of any origin (e.g. what samotop wrote),
    as a user `user` whose mail_location is that Maildir. doveadm looks users up through
    Dovecot's auth service, so a Dovecot of its own runs meanwhile (and is killed after).

    `-u USER` is added after the command word (`doveadm_maildir(dir, "-f", "json", "fetch",
    "hdr.subject", "ALL")`); see also `maildir_fetch`. With `copy` (the default) Dovecot works
    on a copy, so that it neither moves files from new/ to cur/ nor adds its own files to the
    original; without it, mail is accessed as the Maildir's owner (not root: Dovecot refuses). Returns stdout as str.
    """
    work = pathlib.Path(tempfile.mkdtemp(prefix="da-", dir="/tmp"))
    dc = None
    try:
        os.chmod(work, 0o755)
        target = pathlib.Path(maildir)
        owner = None
        if copy:
            target = work / "Maildir"
            shutil.copytree(maildir, target, symlinks=False)
            for sub in ("new", "cur", "tmp"):
                (target / sub).mkdir(exist_ok=True)
            uid, gid, _ = _mail_owner()
            for root, dirs, files in os.walk(target):
                for name in dirs + files:
                    os.lchown(os.path.join(root, name), uid, gid)
            os.chown(target, uid, gid)
        else:
            st = os.stat(target)
            if st.st_uid == 0:
                raise ValueError(f"{target} is root's: Dovecot refuses mail access as root; use copy=True")
            owner = (st.st_uid, st.st_gid)
        dc = Dovecot(users=[user], maildir=target, owner=owner)
        args = [str(a) for a in args]
        if "-u" not in args:
            i = 0  # after doveadm's own options (-f json, -o k=v, -D, -v): the command word
            while i < len(args) and args[i].startswith("-"):
                i += 2 if args[i] in ("-f", "-o") else 1
            if i < len(args):
                args = args[: i + 1] + ["-u", user] + args[i + 1 :]
        return dc.doveadm(*args, check=check)
    finally:
        if dc is not None:
            dc.close()
        shutil.rmtree(work, ignore_errors=True)


def maildir_fetch(maildir, fields="hdr.subject", query=("ALL",), **kwargs):
    """`doveadm fetch` on any Maildir (see `doveadm_maildir`): one dict per message, field
    name -> str, as `Dovecot.fetch` gives."""
    if isinstance(query, str):
        query = (query,)
    out = doveadm_maildir(maildir, "-f", "json", "fetch", fields, *query, **kwargs)
    return json.loads(out or "[]")


@pytest.fixture
def dovecot():
    """Factory: dovecot(users=[...], crlf=True) -> a started Dovecot; all are killed (process
    group, SIGKILL) and their directories removed when the test ends, pass or fail."""
    started = []

    def start(users=("alice@example.org", "bob@example.org"), **kwargs):
        dc = Dovecot(users, start=False, **kwargs)
        started.append(dc)  # cleaned up even when it fails to start
        return dc.start()

    yield start
    for dc in started:
        dc.close()

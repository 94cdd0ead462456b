"""A throw-away Dovecot LMTP server for scripts/bench (the Dovecot path of bench/bench.py).

It runs like the integration tests' Dovecot (tests/integration/dovecot.py): its own directory
under /tmp (Unix socket paths are limited to 107 bytes), `dovecot -F -c CONF` in its own
process group, LMTP only, on a Unix socket (mode 0666, so that Postfix's lmtp client reaches
it too). Unlike the tests it accepts every user (a static userdb with allow_all_users), so
that each measurement can deliver into a mailbox of its own: Dovecot's cost of a save grows
with the size of the mailbox (its dovecot-uidlist), and a fresh mailbox per measurement keeps
the measurements comparable. `mail_fsync` is left at Dovecot's default (`optimized`: the
message file is fsynced before the LMTP 250).

    dc = Dovecot()                 # started; dc.socket is the LMTP socket
    dc.count("rcpt-1@sink.test")   # messages stored in that mailbox (new/ and cur/)
    dc.close()                     # SIGKILL to the process group, directory removed
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

START_TIMEOUT = 20.0


def tool(name):
    for found in (shutil.which(name), "/usr/sbin/" + name, "/usr/bin/" + name):
        if found and os.access(found, os.X_OK):
            return found
    return None


def available():
    """None when Dovecot's LMTP can be run here, else why not."""
    if tool("dovecot") is None:
        return "dovecot is not installed (apt-get install dovecot-core dovecot-lmtpd)"
    if not os.path.exists("/usr/lib/dovecot/lmtp"):
        return "/usr/lib/dovecot/lmtp is missing (apt-get install dovecot-lmtpd)"
    return None


class Dovecot:
    def __init__(self):
        reason = available()
        if reason:
            raise RuntimeError(reason)
        self.dir = tempfile.mkdtemp(prefix="dcb-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        d = self.dir
        self.mail = os.path.join(d, "mail")
        os.makedirs(self.mail)
        os.chmod(self.mail, 0o777)
        self.socket = os.path.join(d, "lmtp.sock")
        if os.geteuid() == 0:
            uid, gid, internal = 65534, 65534, "root"  # Dovecot refuses mail access as root
        else:
            import pwd

            uid, gid = os.geteuid(), os.getegid()
            internal = pwd.getpwuid(uid).pw_name
        self.conf = os.path.join(d, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(
                "base_dir = {d}/run\n"
                "state_dir = {d}/state\n"
                "log_path = {d}/dovecot.log\n"
                "info_log_path = {d}/dovecot.log\n"
                "ssl = no\n"
                "listen = 127.0.0.1\n"
                "protocols = lmtp\n"
                "first_valid_uid = 0\n"
                "first_valid_gid = 0\n"
                "mail_uid = {uid}\n"
                "mail_gid = {gid}\n"
                "default_internal_user = {internal}\n"
                "default_internal_group = {internal}\n"
                "default_login_user = {internal}\n"
                "mail_location = maildir:{d}/mail/%u\n"
                "passdb {{\n  driver = static\n  args = nopassword=y\n}}\n"
                "userdb {{\n  driver = static\n"
                "  args = uid={uid} gid={gid} home={d}/mail/%u allow_all_users=yes\n}}\n"
                "service lmtp {{\n  unix_listener {d}/lmtp.sock {{\n    mode = 0666\n  }}\n"
                "  process_limit = 200\n}}\n".format(d=d, uid=uid, gid=gid, internal=internal)
            )
        self._log = open(os.path.join(d, "stderr.log"), "ab")
        self.proc = subprocess.Popen(
            [tool("dovecot"), "-F", "-c", self.conf],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dovecot exited at start:\n" + self.log())
            if self.answers():
                return
            time.sleep(0.05)
        self.close()
        raise RuntimeError("dovecot's LMTP socket did not answer:\n" + self.log())

    def answers(self):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2.0)
                s.connect(self.socket)
                return s.recv(512).startswith(b"220")
        except OSError:
            return False

    def log(self):
        out = ""
        for name in ("stderr.log", "dovecot.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    out += f.read()
            except OSError:
                pass
        return out[-4000:]

    def count(self, user):
        """Messages stored in `user`'s mailbox."""
        n = 0
        for sub in ("new", "cur"):
            try:
                n += len(os.listdir(os.path.join(self.mail, user, sub)))
            except FileNotFoundError:
                pass
        return n

    def close(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

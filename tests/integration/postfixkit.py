"""A throw-away Postfix instance's configuration and start, shared by the tests that relay
through Postfix (authkit.py, test_trigger_routes.py) and by scripts/bench (bench/bench.py).

The instance lives in a directory of its own (not under pytest's tmp_path: its parents are
0700, and Postfix's daemons run as the postfix user), listens only where the caller says, on
loopback, and is started with `postfix -c DIR/conf start`. Needs root."""

import os
import pathlib
import shutil
import subprocess
import time

POSTFIX = "/usr/sbin/postfix"

# What every throw-away instance has: its own queue and log, loopback only, no local
# delivery, no aliases, no DNS look-ups of clients. The caller's lines follow.
BASE_MAIN = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = {domain}
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
alias_maps =
alias_database =
biff = no
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
"""


def master_cf(listeners):
    """Debian's master.cf without its inet services and with no chroot (the queue is not set
    up for one), and `listeners` (master.cf lines) appended."""
    out = []
    for line in pathlib.Path("/etc/postfix/master.cf").read_text().splitlines():
        fields = line.split()
        if line and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
            if fields[1] == "inet":
                continue  # no listener but ours
            fields[4] = "n"
            line = " ".join(fields)
        out.append(line)
    out.extend(listeners)
    return "\n".join(out) + "\n"


def configure(d, port, main, hostname="relay.test", smtps_port=None):
    """Writes an instance into directory `d` (made 0755): conf/ with main.cf (BASE_MAIN, then
    `main`) and master.cf (smtpd on 127.0.0.1:port, and a wrapper-mode smtpd on
    127.0.0.1:smtps_port when given), queue/, data/ (owned by postfix). The conf directory."""
    d = pathlib.Path(d)
    os.chmod(d, 0o755)
    for sub in ("conf", "queue", "data"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    shutil.chown(d / "data", "postfix")
    domain = hostname.split(".", 1)[-1]
    (d / "conf" / "main.cf").write_text(BASE_MAIN.format(dir=d, hostname=hostname, domain=domain)
                                        + main)
    listeners = [f"127.0.0.1:{port} inet n - n - - smtpd"]
    if smtps_port:
        listeners.append(f"127.0.0.1:{smtps_port} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes")
    (d / "conf" / "master.cf").write_text(master_cf(listeners))
    return d / "conf"


def start(d, timeout=60):
    """`postfix start` for the instance in `d`; its master's PID (from queue/pid/master.pid,
    waited for, bounded)."""
    d = pathlib.Path(d)
    r = subprocess.run([POSTFIX, "-c", str(d / "conf"), "start"], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"postfix start failed: {r.stdout} {r.stderr}; see {d}/maillog")
    pidfile = d / "queue" / "pid" / "master.pid"
    deadline = time.monotonic() + 15
    while True:
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, IndexError, ValueError):  # not there yet, or not yet written
            if time.monotonic() >= deadline:
                raise TimeoutError(f"postfix wrote no {pidfile}; see {d}/maillog") from None
            time.sleep(0.05)


def stop(d, timeout=60):
    """`postfix stop` for the instance in `d` (bounded)."""
    subprocess.run([POSTFIX, "-c", str(pathlib.Path(d) / "conf"), "stop"], capture_output=True,
                   timeout=timeout)

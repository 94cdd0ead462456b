"""The static binary and the Docker image, proven without a Docker engine (issue 8).

`scripts/build-static` (the recipe the Dockerfile runs) builds `samotop` once per session. The
binary alone is then copied into an empty directory with an empty mail directory owned by
10025:10025, and run there as the image runs it: `chroot --userspec=10025:10025 DIR /samotop`
with the Dockerfile's own CMD, no environment, no /etc, no libraries. A message sent from
outside with smtplib must land in DIR/mail/new.

* the binary is static (`file`, `ldd`, and no shared object mapped in the running process);
* the image's CMD works in an empty root (IP-literal listen address: no NSS, no resolver);
* without `--spf off` and without /etc/resolv.conf, the start fails with a clear error
  (which is why the image's CMD turns SPF, DKIM and DMARC off);
* a host name to listen on, with no /etc/hosts and no resolver, fails with a clear error;
* in a network namespace of its own with `ip_unprivileged_port_start=0` (what Docker and
  Podman set), the unchanged CMD listens on port 25 as 10025 and receives mail; without it,
  binding 25 fails with a clear error.

Skipped, with the reason, only where chroot is impossible (not root, no chroot, not
x86_64 Linux); the network-namespace test also needs unshare, nsenter and ip.
"""

import json
import os
import pathlib
import platform
import re
import shutil
import signal
import smtplib
import subprocess
import textwrap
import time

import pytest

from conftest import ROOT, free_port, wait_port

#: A cold build (LTO, one codegen unit) takes minutes; pytest.ini's 600 s is for one test.
pytestmark = pytest.mark.timeout(2400)
BUILD_TIMEOUT = 2100
UID = 10025
BODY = b"From: <a@example.com>\r\nSubject: static\r\n\r\nhello from outside the chroot\r\n"


def chroot_impossible():
    """None when this machine can chroot, else why not."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "amd64"):
        return f"the static build targets x86_64 Linux; this is {platform.system()} {platform.machine()}"
    if shutil.which("chroot") is None:
        return "`chroot` is not installed (coreutils)"
    if os.geteuid() != 0:
        return "chroot needs root (CAP_SYS_CHROOT); run the suite as root, e.g. in CI's container"
    return None


def dockerfile():
    """ENTRYPOINT, CMD, USER, EXPOSE and VOLUME of the final stage of ./Dockerfile."""
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM ") :]
    found = {}
    for key in ("FROM", "ENTRYPOINT", "CMD", "USER", "EXPOSE", "VOLUME"):
        m = re.search(rf"^{key} (.+)$", final, re.M)
        assert m, f"no {key} in the Dockerfile's final stage"
        value = m.group(1).strip()
        found[key] = json.loads(value) if value.startswith("[") else value
    return found


@pytest.fixture(scope="module")
def static_binary():
    """Runs scripts/build-static once; returns (path, the script's report lines)."""
    reason = chroot_impossible()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-static")],
        cwd=ROOT,
        capture_output=True,
        timeout=BUILD_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out + proc.stderr.decode(errors="replace")[-4000:]
    report = [line for line in out.splitlines() if line.startswith("build-static: ")]
    path = pathlib.Path(report[0].split(": ", 1)[1])
    if not path.is_absolute():
        path = ROOT / path
    assert path.is_file(), report
    # Root without CAP_SYS_CHROOT (a locked-down container) cannot chroot: skip, saying so.
    probe = subprocess.run(
        [shutil.which("chroot"), f"--userspec={UID}:{UID}", str(path.parent), f"/{path.name}", "--version"],
        capture_output=True,
        timeout=30,
    )
    if probe.returncode != 0 and b"Operation not permitted" in probe.stderr:
        pytest.skip(f"chroot is not permitted here: {probe.stderr.decode(errors='replace').strip()}")
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith(b"samotop "), probe.stdout
    return path, report


@pytest.fixture
def root(static_binary, tmp_path):
    """An empty root as the image has it: /samotop (the binary alone), /mail and /tmp (empty,
    owned by 10025)."""
    d = tmp_path / "root"
    d.mkdir()
    os.chmod(d, 0o755)
    shutil.copy2(static_binary[0], d / "samotop")
    os.chmod(d / "samotop", 0o755)
    for sub in ("mail", "tmp"):
        (d / sub).mkdir()
        os.chown(d / sub, UID, UID)
        os.chmod(d / sub, 0o700)
    return d


class Jailed:
    """samotop running in a chroot as 10025:10025, with no environment but RUST_LOG (a
    scratch image has no ENV either)."""

    def __init__(self, root, args, prefix=()):
        self.log_path = root.parent / f"samotop-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            list(prefix) + [shutil.which("chroot"), f"--userspec={UID}:{UID}", str(root), "/samotop"] + list(args),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={"RUST_LOG": "info"},
        )

    @property
    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout=30):
        self.proc.wait(timeout=timeout)
        self._log.close()
        return self.proc.returncode

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def jail():
    started = []

    def start(root, *args, prefix=()):
        j = Jailed(root, args, prefix)
        started.append(j)
        return j

    yield start
    for j in started:
        j.stop()


def cmd_on(address):
    """The Dockerfile's CMD with the --smtp address replaced."""
    cmd = list(dockerfile()["CMD"])
    cmd[cmd.index("--smtp") + 1] = address
    return cmd


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1:]
    return None


def mapped_objects(pid):
    """The files mapped into a running process (its executable, and any shared library)."""
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[5] for line in f if len(line.split()) >= 6 and line.split()[5].startswith("/")}


def test_the_binary_is_static_and_small(static_binary, capsys):
    path, report = static_binary
    size = path.stat().st_size
    file_out = subprocess.run(["file", "-b", str(path)], capture_output=True, text=True, timeout=30).stdout.strip()
    ldd = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=30)
    with capsys.disabled():
        print(f"\nstatic samotop: {path}\n  size: {size} bytes ({size / 1048576:.1f} MiB)\n  file: {file_out}")
        print(f"  ldd: {(ldd.stdout + ldd.stderr).strip()}")
    assert "ELF 64-bit" in file_out and "x86-64" in file_out, file_out
    assert "static" in file_out, file_out  # "statically linked" or "static-pie linked"
    assert "dynamically linked" not in file_out, file_out
    assert re.search(r"not a dynamic executable|statically linked", ldd.stdout + ldd.stderr), ldd
    assert "stripped" in file_out and "not stripped" not in file_out, file_out
    assert size < 20 * 1048576, f"{size} bytes: the release profile should keep it small"


def test_the_dockerfile_runs_the_same_build_and_a_scratch_image():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM rust:1\.95-bookworm AS build$", text, re.M)
    assert re.search(r"^RUN scripts/build-static\b", text, re.M), "the image must use the same recipe"
    d = dockerfile()
    assert d["FROM"] == "scratch"
    assert d["ENTRYPOINT"] == ["/samotop"]
    assert re.fullmatch(r"\d+:\d+", d["USER"]) and not d["USER"].startswith("0:"), d["USER"]
    assert d["USER"] == f"{UID}:{UID}"
    assert d["EXPOSE"].split() == ["25", "465"]
    assert d["VOLUME"] == "/mail"
    cmd = d["CMD"]
    assert cmd[cmd.index("--smtp") + 1] == "0.0.0.0:25", "not loopback only"
    assert cmd[cmd.index("--deliver") + 1] == "maildir:/mail"
    assert "target/x86_64-unknown-linux-gnu/release/samotop" in text
    # The root the tests make is the image's: /mail and /tmp owned by the user.
    assert re.search(rf"^COPY --from=build --chown={UID}:{UID} /out/mail /mail$", text, re.M)
    assert re.search(rf"^COPY --from=build --chown={UID}:{UID} /out/tmp /tmp$", text, re.M)
    assert re.search(r"mkdir -p [^\n]*/out/tmp\b", text)
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "target/" in ignore and ".git/" in ignore


def test_the_image_cmd_receives_mail_in_an_empty_chroot_as_10025(static_binary, root, jail):
    port = free_port()
    j = jail(root, *cmd_on(f"127.0.0.1:{port}"))
    try:
        wait_port(port, j.proc)
    except Exception:
        raise AssertionError(f"samotop did not start in the chroot:\n{j.log}")
    assert proc_status(j.proc.pid, "Uid")[:2] == [str(UID), str(UID)]
    assert proc_status(j.proc.pid, "Gid")[:2] == [str(UID), str(UID)]
    # Nothing but the executable itself is mapped: no libc.so, no NSS module.
    objects = mapped_objects(j.proc.pid)
    assert objects == {"/samotop"} or all(not re.search(r"\.so(\.|$)", o) for o in objects), objects

    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("outside.test")
        assert c.mail("a@example.com")[0] == 250
        assert c.rcpt("b@example.org")[0] == 250
        assert c.data(BODY)[0] == 250
    stored = list((root / "mail" / "new").iterdir())  # 250 means durable in new/
    assert len(stored) == 1, stored
    assert stored[0].stat().st_uid == UID
    data = stored[0].read_bytes()
    assert data.startswith(b"Return-Path: <a@example.com>\r\nReceived: from outside.test")
    assert data.endswith(BODY)
    assert sorted(p.name for p in root.iterdir()) == ["mail", "samotop", "tmp"], "it wrote nothing else"

    assert j.stop() == 0, j.log
    assert "stopped" in j.log


def test_a_message_past_the_spool_memory_bound_is_received_in_the_chroot(static_binary, root, jail):
    """With DKIM on, a message is spooled until the verdict; past the spool's memory bound it
    moves into an unlinked, encrypted file in /tmp: the image has one, so it is received."""
    port = free_port()
    cmd = cmd_on(f"127.0.0.1:{port}")
    cmd[cmd.index("--dkim") + 1] = "tag"
    cmd += ["--dns", f"127.0.0.1:{free_port()}"]  # unsigned: no key to look up
    j = jail(root, *cmd)
    wait_port(port, j.proc)
    body = BODY + b"x" * 76 + b"\r\n"
    body = body * (1024 * 1024 // len(body))  # 1 MiB: four times the spool's memory
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        assert c.sendmail("a@example.com", ["b@example.org"], body) == {}
    (stored,) = (root / "mail" / "new").iterdir()
    data = stored.read_bytes()
    assert b"dkim=none" in data.split(b"\r\n\r\n", 1)[0], data[:600]
    assert data.endswith(body)
    assert list((root / "tmp").iterdir()) == [], "the spool file was unlinked"
    assert j.stop() == 0, j.log


def test_without_a_resolver_config_the_default_spf_fails_clearly(static_binary, root, jail):
    cmd = cmd_on(f"127.0.0.1:{free_port()}")
    i = cmd.index("--spf")
    del cmd[i : i + 2]  # the binary's default: --spf tag
    j = jail(root, *cmd)
    assert j.wait() == 2, j.log
    assert "/etc/resolv.conf" in j.log and "--spf off" in j.log, j.log


def test_a_host_name_to_listen_on_fails_clearly_without_a_resolver(static_binary, root, jail):
    j = jail(root, *cmd_on(f"localhost:{free_port()}"))
    assert j.wait() == 2, j.log
    assert "cannot listen on localhost:" in j.log, j.log
    assert "panicked" not in j.log


def netns_impossible():
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return f"cannot make a network namespace: {probe.stderr.decode(errors='replace').strip()}"
    return None


@pytest.fixture
def netns():
    """A fresh network namespace (held by a sleeping process), loopback up; yields the
    nsenter prefix that runs a command inside it."""
    reason = netns_impossible()
    if reason:
        pytest.skip(f"needs a network namespace of its own: {reason}")
    holder = subprocess.Popen(["unshare", "-n", "sleep", "600"], stdin=subprocess.DEVNULL)
    try:
        prefix = [shutil.which("nsenter"), f"--target={holder.pid}", "--net"]
        deadline = time.monotonic() + 10
        while True:  # unshare has replaced itself with sleep once the namespace differs
            if os.readlink(f"/proc/{holder.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            assert time.monotonic() < deadline, "unshare did not make a namespace"
            time.sleep(0.02)
        subprocess.run(prefix + ["ip", "link", "set", "lo", "up"], check=True, timeout=30)
        yield prefix
    finally:
        holder.kill()
        holder.wait(timeout=10)


def send_inside(prefix, port):
    """Sends BODY with smtplib from inside the namespace; returns the final (code, text)."""
    script = textwrap.dedent(
        f"""
        import smtplib, sys
        with smtplib.SMTP("127.0.0.1", {port}, timeout=30) as c:
            c.ehlo("inside.test")
            assert c.mail("a@example.com")[0] == 250
            assert c.rcpt("b@example.org")[0] == 250
            code, text = c.data({BODY!r})
            print(code, text.decode())
        """
    )
    out = subprocess.run(prefix + ["python3", "-c", script], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout.decode().strip()


def wait_port_inside(prefix, port, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1).close()"
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"samotop exited with {proc.returncode}"
        if subprocess.run(prefix + ["python3", "-c", probe], capture_output=True, timeout=30).returncode == 0:
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} in the namespace")


def test_the_unchanged_cmd_listens_on_25_as_10025_like_in_docker(static_binary, root, jail, netns):
    cmd = dockerfile()["CMD"]
    assert cmd[cmd.index("--smtp") + 1] == "0.0.0.0:25"
    # The kernel's default: ports below 1024 need privilege; the error says so.
    assert subprocess.run(
        netns + ["sysctl", "-n", "net.ipv4.ip_unprivileged_port_start"], capture_output=True, text=True, timeout=30
    ).stdout.strip() == "1024"
    refused = jail(root, *cmd, prefix=netns)
    assert refused.wait() == 2, refused.log
    assert "cannot listen on 0.0.0.0:25: Permission denied" in refused.log, refused.log

    # What Docker (20.10+) and Podman set in a container's own network namespace.
    subprocess.run(
        netns + ["sysctl", "-q", "-w", "net.ipv4.ip_unprivileged_port_start=0"], check=True, timeout=30
    )
    j = jail(root, *cmd, prefix=netns)
    wait_port_inside(netns, 25, j.proc)
    assert proc_status(j.proc.pid, "Uid")[:2] == [str(UID), str(UID)]
    assert send_inside(netns, 25).startswith("250 ")
    stored = list((root / "mail" / "new").iterdir())
    assert len(stored) == 1 and stored[0].read_bytes().endswith(BODY)
    assert j.stop() == 0, j.log

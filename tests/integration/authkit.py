"""The real peers of the sender-authentication tests (test_auth.py): keys made by the real
tools, a dnsmasq serving them and the DMARC/SPF records, messages signed by software nobody
here wrote, the reference verifier, and a throw-away Postfix relaying through with OpenDKIM
as its signing milter.

    keys = Keys(tmp_dir)                  # opendkim-genkey (RSA), dknewkey (ed25519)
    dns = Dnsmasq(tmp_dir, records)       # 127.0.0.1:PORT; dns.stop() by PID
    signed = dkimsign(msg, keys["r2048"], "example.test", "relaxed", "simple")
    signed = opendkim_sign(msg, keys["ed"], "example.test", "relaxed/relaxed", tmp_dir)
    ok = dkimverify(signed, dns.port, index=0)   # Debian's dkimverify, its DNS on dnsmasq
    relay = Postfix(tmp_dir, relayhost_port, milter_port)   # postfix -c DIR; relay.stop()
    milter = OpenDkimMilter(tmp_dir, keys["r2048"], "example.test")

Signers and the verifier are Debian's: `/usr/bin/dkimsign` and `/usr/bin/dkimverify`
(python3-dkim, dkimpy 1.1.4, run by Debian's /usr/bin/python3, which has the module),
`opendkim` (test mode `-t`, and as a milter), `opendkim-testmsg` (rsa-sha1). Every process is
stopped by its PID; every wait is bounded.
"""

import base64
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import postfixkit

PYTHON = "/usr/bin/python3"
TIMEOUT = 60


def run(argv, data=b"", timeout=TIMEOUT):
    r = subprocess.run(argv, input=data, capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    return r.stdout


def free_port():
    """A loopback port free for UDP and TCP a moment ago."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port for both UDP and TCP")


def stop_pid(proc, timeout=10):
    """SIGTERM to a child by its PID, bounded wait, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


# ---- keys -------------------------------------------------------------------------------


class Key:
    def __init__(self, selector, kind, pem, dkimpy, record):
        self.selector = selector
        self.kind = kind  # "rsa" or "ed25519"
        self.pem = pem  # for OpenDKIM (and dkimpy, RSA)
        self.dkimpy = dkimpy  # what dkimsign signs with
        self.record = record  # the TXT record, as published

    @property
    def alg(self):
        return "rsa-sha256" if self.kind == "rsa" else "ed25519-sha256"


def genkey_record(txt):
    """The record of an opendkim-genkey .txt file: its quoted strings, joined."""
    out, rest = [], txt
    while '"' in rest:
        start = rest.index('"')
        end = rest.index('"', start + 1)
        out.append(rest[start + 1 : end])
        rest = rest[end + 1 :]
    return "".join(out)


def rsa_key(directory, selector, bits):
    run(["opendkim-genkey", f"--bits={bits}", f"--selector={selector}", "--domain=example.test",
         f"--directory={directory}"])
    pem = pathlib.Path(directory) / f"{selector}.private"
    record = genkey_record((pathlib.Path(directory) / f"{selector}.txt").read_text())
    return Key(selector, "rsa", pem, pem, record)


def ed25519_key(directory, selector):
    stem = pathlib.Path(directory) / selector
    run(["dknewkey", "--ktype", "ed25519", str(stem)])
    seed = base64.b64decode(stem.with_suffix(".key").read_text().strip())
    assert len(seed) == 32
    # PKCS#8 for OpenDKIM: the fixed prefix of an Ed25519 PrivateKeyInfo, then the seed.
    der = bytes([0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70,
                 0x04, 0x22, 0x04, 0x20]) + seed
    pem = pathlib.Path(directory) / f"{selector}.pem"
    pem.write_text("-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n"
                   % base64.b64encode(der).decode())
    record = stem.with_suffix(".dns").read_text().strip()
    return Key(selector, "ed25519", pem, stem.with_suffix(".key"), record)


# ---- DNS --------------------------------------------------------------------------------


def txt_query(name, qtype=16):
    q = bytearray([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0])
    for label in name.split("."):
        q.append(len(label))
        q += label.encode()
    q += bytes([0, 0, qtype, 0, 1])
    return bytes(q)


def answers(port, name):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(txt_query(name), ("127.0.0.1", port))
            data = s.recv(1500)
        except OSError:
            return False
    return len(data) > 12 and data[3] & 0x0F == 0 and data[7] >= 1


class Silent:
    """A name server that never answers: a UDP socket that reads and says nothing (TCP to
    its port is refused)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


class Dnsmasq:
    """dnsmasq on 127.0.0.1:PORT, authoritative for `local` domains (names it does not list
    are NXDOMAIN), serving `txt` records {name: [text, ...]} (each text cut into strings of
    at most 200 bytes, which a resolver must join, RFC 6376 3.6.2.2) and forwarding the
    `forward` domains {domain: port} to 127.0.0.1#port."""

    def __init__(self, directory, txt, local=("test",), forward=None):
        self.dir = pathlib.Path(directory)
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        args = ["--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                "--listen-address=127.0.0.1", "--bind-interfaces"]
        if os.geteuid() == 0:
            args.append("--user=root")  # else it switches to "nobody", who may not exist
        args += [f"--local=/{d}/" for d in local]
        for domain, port in (forward or {}).items():
            args.append(f"--server=/{domain}/127.0.0.1#{port}")
        probe = None
        for name, texts in txt.items():
            for text in texts:
                raw = text.encode()
                strings = [raw[i : i + 200].decode() for i in range(0, len(raw), 200)] or [""]
                assert not any("," in s for s in strings), text
                args.append(f"--txt-record={name}," + ",".join(strings))
                probe = probe or name
        self.proc = None
        for attempt in range(5):
            self.port = free_port()
            log = open(self.dir / f"dnsmasq-{attempt}.log", "wb")
            self.proc = subprocess.Popen(
                [binary, f"--port={self.port}", f"--pid-file={self.dir / 'dnsmasq.pid'}"] + args,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.proc.poll() is None:
                if answers(self.port, probe):
                    return
                time.sleep(0.05)
            stop_pid(self.proc)  # the port was most likely taken meanwhile: another
        raise RuntimeError("dnsmasq did not answer on loopback after 5 tries")

    def stop(self):
        stop_pid(self.proc)


# ---- signers and the reference verifier ---------------------------------------------------


def dkimsign(msg, key, domain, hcanon="relaxed", bcanon="simple"):
    """Debian's dkimsign (dkimpy): the message with a DKIM-Signature on top."""
    return run(["/usr/bin/dkimsign", "--hcanon", hcanon, "--bcanon", bcanon, "--signalg",
                key.alg, key.selector, domain, str(key.dkimpy)], msg)


_opendkim_runs = [0]


def opendkim_sign(msg, key, domain, canon, directory, alg=None):
    """OpenDKIM in test mode (`opendkim -t FILE`): the message with its DKIM-Signature."""
    _opendkim_runs[0] += 1
    n = _opendkim_runs[0]
    d = pathlib.Path(directory)
    conf, eml = d / f"opendkim-{n}.conf", d / f"opendkim-{n}.eml"
    conf.write_text(f"Mode s\nDomain {domain}\nSelector {key.selector}\nKeyFile {key.pem}\n"
                    f"Canonicalization {canon}\nSignatureAlgorithm {alg or key.alg}\n"
                    "Syslog no\nRequireSafeKeys no\nOversignHeaders From\n")
    eml.write_bytes(msg)
    out = run(["opendkim", "-x", str(conf), "-t", str(eml)]).decode()
    start = out.index("DKIM-Signature:")
    field = out[start:].rstrip().replace("\r\n", "\n").replace("\n", "\r\n")
    return (field + "\r\n").encode() + msg


def opendkim_testmsg(msg, key, domain, directory):
    """`opendkim-testmsg`: rsa-sha1, relaxed/simple (its fixed choice)."""
    return run(["opendkim-testmsg", "-C", "-d", domain, "-k", str(key.pem), "-s", key.selector,
                "-t", str(directory)], msg)


# The real dkimverify (dkim.dkimverify.main, what /usr/bin/dkimverify runs), with dnspython's
# default resolver pointed at our dnsmasq: the only change.
_DKIMVERIFY = r"""
import sys
import dns.resolver
r = dns.resolver.Resolver(configure=False)
r.nameservers = ["127.0.0.1"]
r.port = int(sys.argv[1])
r.timeout = r.lifetime = 5
dns.resolver.default_resolver = r
sys.argv = ["dkimverify", "--index", sys.argv[2]]
import dkim.dkimverify
dkim.dkimverify.main()
"""


def dkimverify(msg, port, index=0):
    """Debian's dkimverify on signature `index` of `msg`: True for "signature ok"."""
    r = subprocess.run([PYTHON, "-c", _DKIMVERIFY, str(port), str(index)], input=msg,
                       capture_output=True, timeout=TIMEOUT)
    return r.returncode == 0 and b"signature ok" in r.stdout


def count_signatures(msg):
    head = msg.split(b"\r\n\r\n", 1)[0]
    return sum(1 for line in head.split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))


# ---- header fields and Authentication-Results -------------------------------------------


def fields(msg):
    """The header fields of a message: [(name, value)], folding kept in the value."""
    head = msg.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    out = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1][1] += "\r\n" + line
        else:
            name, _, value = line.partition(":")
            out.append([name, value])
    return [tuple(f) for f in out]


def _split(text, sep):
    """Splits on `sep` outside quoted strings."""
    parts, cur, quoted, escaped = [], "", False, False
    for ch in text:
        if escaped:
            cur += ch
            escaped = False
        elif ch == "\\" and quoted:
            cur += ch
            escaped = True
        elif ch == '"':
            cur += ch
            quoted = not quoted
        elif (ch.isspace() if sep is None else ch == sep) and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in (x.strip() for x in parts) if p]


def results(value):
    """An Authentication-Results value as (authserv-id, [(method, result, {name: value})])
    (`reason` is one of the names)."""
    unfolded = value.replace("\r\n\t", " ").replace("\r\n ", " ")
    parts = _split(unfolded, ";")
    out = []
    for part in parts[1:]:
        tokens = _split(part, None)
        method, _, result = tokens[0].partition("=")
        props = {}
        for t in tokens[1:]:
            k, _, v = t.partition("=")
            props[k] = v.strip('"')
        out.append((method, result, props))
    return parts[0].split()[0], out


# ---- a Postfix relaying through, OpenDKIM signing as its milter ----------------------------


class OpenDkimMilter:
    """`opendkim -f` as a signing milter on 127.0.0.1:PORT (inet socket)."""

    def __init__(self, directory, key, domain, canon="relaxed/relaxed", mode="s", extra=""):
        self.dir = pathlib.Path(directory)
        self.proc = self.log = None
        for _ in range(5):  # a port taken meanwhile: another
            self.port = free_port()
            conf = self.dir / f"opendkim-milter-{self.port}.conf"
            conf.write_text(
                f"Mode {mode}\nDomain {domain}\nSelector {key.selector}\nKeyFile {key.pem}\n"
                f"Canonicalization {canon}\nSignatureAlgorithm {key.alg}\n"
                f"Socket inet:{self.port}@127.0.0.1\n"
                f"PidFile {self.dir / f'opendkim-{self.port}.pid'}\nSyslog no\nRequireSafeKeys no\n"
                "InternalHosts 127.0.0.0/8\nOversignHeaders From\n" + extra)
            self.log = open(self.dir / f"opendkim-{self.port}.log", "wb")
            self.proc = subprocess.Popen(["opendkim", "-f", "-x", str(conf)],
                                         stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"opendkim did not listen; see {self.dir}/opendkim-*.log")

    def stop(self):
        stop_pid(self.proc)
        self.log.close()


POSTFIX_MAIN = """\
# Relays everything to samotop, signing through the milter.
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{relay_port}
smtp_host_lookup = native
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_milters = inet:127.0.0.1:{milter_port}
milter_default_action = tempfail
"""


class Postfix:
    """A throw-away Postfix instance in a directory of its own under /tmp (its processes, as
    user postfix, must reach the queue) (`postfix -c DIR/conf start`), smtpd on 127.0.0.1:port,
    relaying to 127.0.0.1:relay_port, signing through the milter. Needs root. Stopped by its
    master's PID; `close()` removes the directory."""

    def __init__(self, relay_port, milter_port):
        d = self.dir = pathlib.Path(tempfile.mkdtemp(prefix="pf-", dir="/tmp"))
        os.chmod(d, 0o755)
        self.port = free_port()
        main = POSTFIX_MAIN.format(relay_port=relay_port, milter_port=milter_port)
        self.conf = postfixkit.configure(d, self.port, main)
        self.pid = postfixkit.start(d, timeout=TIMEOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(512).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"postfix did not answer; see {d}/maillog")

    @property
    def maillog(self):
        try:
            return (self.dir / "maillog").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        """SIGTERM to the master (it stops its children), bounded."""
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

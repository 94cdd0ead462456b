#!/usr/bin/python3
"""The sender-authentication benchmark (issue 14), called from bench/bench.py (or run alone:
`SAMOTOP=target/bench/release/samotop bench/auth.py`).

Durable delivery, 32 sessions, 10 KiB messages that each carry one valid DKIM signature
(rsa-sha256, 2048-bit key from opendkim-genkey, relaxed/simple, signed by Debian's dkimsign;
From aligned with d=, DMARC p=reject), sent by Postfix's smtp-source (`-F FILE`), in
interleaved rounds:

  auth-off       samotop --deliver maildir: --dkim off --dmarc off (no spool, no look-ups)
  auth-on        samotop --deliver maildir: --dkim tag --dmarc tag: every message spooled,
                 its signature and DMARC checked, Authentication-Results on top
  postfix-milters  a throw-away Postfix (queue file fsynced, kept in the hold queue, as the
                 bench's postfix peer) with OpenDKIM (verifying) and OpenDMARC as milters
                 (Debian packages opendkim and opendmarc)

SPF is off everywhere (it is the same work at MAIL for all). The DNS is one dnsmasq on port 53
of a loopback address (BENCH_AUTH_DNS, default 127.53.0.1; OpenDMARC's resolver cannot use
another port, so it runs in a mount namespace whose /etc/resolv.conf names it): samotop's
shared resolver and OpenDKIM's unbound cache the answers, so after the warm-up every look-up
is answered from a cache (OpenDMARC asks dnsmasq, on loopback, each time). Before measuring,
one stored message of each peer is checked to say dkim=pass and dmarc=pass.

Then the DKIM body hashing speed, from the criterion bench of samotop-auth
(`cargo bench -p samotop-auth --bench body_hash -- --quick`, in CARGO_TARGET_DIR).

Targets: auth-on keeps at least 0.8x of auth-off, and is at least 2x postfix-milters.

A/B: with BENCH_AUTH_BASELINE=PATH (another samotop binary, e.g. built from an older commit in
a `git worktree`), `auth-on-baseline` runs the same checks with it in the same rounds, and the
report adds its rate and CPU beside auth-on's and the ratio on / baseline: a change's effect
measured against the binary before it on the same machine at the same time, not against an
older figure.

Knobs: BENCH_AUTH=0 skips it in bench.py; BENCH_AUTH_ROUNDS (default BENCH_ROUNDS or 3),
BENCH_AUTH_SECONDS (default BENCH_SECONDS or 2) per measurement; BENCH_AUTH_DNS;
BENCH_AUTH_CRITERION=0 skips the criterion bench; BENCH_AUTH_MILTERS=0 skips the Postfix peer;
BENCH_FRESH_FS=0 writes into BENCH_TMPDIR itself instead of a fresh ext4 (bench.FreshFs).
If the milter peer fails its warm-up or its stored message lacks dkim=pass and dmarc=pass, it
is left out of the table and the report says why .
"""

import glob
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import bench as base  # the bench's process accounting, samotop and Postfix peers

SESSIONS = 32
SIZE = 10 * 1024
# Not under .test: OpenDKIM's libunbound answers that special-use zone itself (NXDOMAIN).
DOMAIN = "bench.example"
NAMES = ["auth-off", "auth-on", "auth-on-baseline", "postfix-milters"]


def log(*a):
    print("bench auth:", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- DNS, key, message


def genkey(d):
    base.run_ok(["opendkim-genkey", "--bits=2048", "--selector=bench", f"--domain={DOMAIN}",
                 f"--directory={d}"])
    txt = open(os.path.join(d, "bench.txt")).read()
    record = "".join(txt.split('"')[1::2])  # the quoted strings, joined
    return os.path.join(d, "bench.private"), record


def negative_answer_has_soa(addr, name):
    """Whether `addr`:53 answers TXT `name` with NXDOMAIN, authoritative, with a record in
    the authority section (the SOA whose TTL lets a resolver keep the answer, RFC 2308)."""
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(
        bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00\x00\x10\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(query, (addr, 53))
        reply = s.recv(4096)
    flags, nscount = int.from_bytes(reply[2:4], "big"), int.from_bytes(reply[8:10], "big")
    return reply[:2] == query[:2] and flags & 0x0400 != 0 and flags & 0xF == 3 and nscount > 0


class Dnsmasq:
    def __init__(self, d, addr, records):
        args = ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                "--port=53", f"--listen-address={addr}",
                "--local=/%s/" % DOMAIN.rsplit(".", 1)[1],
                "--user=root", f"--pid-file={d}/dnsmasq.pid",
                # dnsmasq gives its own records TTL 0 unless told: nothing would be cached,
                # and every message would ask again (a real key record lives for hours).
                "--local-ttl=3600",
                # Authoritative for the zone, so "no such name" comes with an SOA (negative
                # TTL 3600, RFC 2308) as from any real name server: without one (plain
                # --local) no resolver may keep the answer, and the DMARC tree walk's
                # question for _dmarc.example would reach dnsmasq for every message.
                # dnsmasq answers authoritatively only on an interface's own address, and
                # 127.53.0.1 is not one (lo holds 127.0.0.1/8): name the interface, and let
                # dnsmasq bind its addresses (127.0.0.1:53 too) rather than a wildcard.
                "--bind-dynamic",
                "--auth-server=ns.%s,lo" % DOMAIN.rsplit(".", 1)[1],
                "--auth-zone=%s" % DOMAIN.rsplit(".", 1)[1], "--auth-ttl=3600"]
        for name, text in records:
            raw = text.encode()
            args.append(f"--txt-record={name}," + ",".join(
                raw[i:i + 200].decode() for i in range(0, len(raw), 200)))
        self.log = open(os.path.join(d, "dnsmasq.log"), "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log)
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"dnsmasq could not listen on {addr}:53; see {d}/dnsmasq.log")
        if not negative_answer_has_soa(addr, "_dmarc." + DOMAIN.rsplit(".", 1)[1]):
            self.stop()
            raise RuntimeError(f"dnsmasq at {addr} gives no SOA with NXDOMAIN: no resolver "
                               "could keep the answer, and every message would ask again")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def message_file(d, key):
    """A 10 KiB message signed once by dkimsign, written with LF line ends (smtp-source -F
    sends each line with CR LF)."""
    lines = [b"%04d The quick brown fox jumps over the lazy dog;  and  again.\r\n" % i
             for i in range(SIZE // 64)]
    msg = (b"From: Bench <bench@" + DOMAIN.encode() + b">\r\nTo: rcpt@sink.test\r\n"
           b"Subject: auth bench\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
           b"Message-ID: <auth-bench@bench.example>\r\n\r\n" + b"".join(lines))
    signed = base.run_ok(["/usr/bin/dkimsign", "--hcanon", "relaxed", "--bcanon", "simple",
                          "bench", DOMAIN, key], msg)
    path = os.path.join(d, "message.eml")
    with open(path, "wb") as f:
        f.write(signed.replace(b"\r\n", b"\n"))
    return path, len(signed)


# ---------------------------------------------------------------- the milter peer


class Milters:
    """OpenDKIM (verify) and OpenDMARC as inet milters, both asking `addr`:53."""

    def __init__(self, d, addr):
        self.dir = d
        self.dkim_port, self.dmarc_port = base.free_port(), base.free_port()
        with open(os.path.join(d, "opendkim.conf"), "w") as f:
            f.write(f"Mode v\nSocket inet:{self.dkim_port}@127.0.0.1\nPidFile {d}/opendkim.pid\n"
                    f"Syslog no\nAuthservID postfix.bench\nQueryCache yes\n"
                    # Nameservers, not an unbound.conf (ResolverConfiguration): OpenDKIM
                    # 2.11 parses that file for every message, and libunbound's parser
                    # (flex) is not reentrant: under 32 sessions it aborts ("fatal flex
                    # scanner internal error") and Postfix answers 451 4.7.1.
                    f"Nameservers {addr}\n")
        with open(os.path.join(d, "opendmarc.conf"), "w") as f:
            f.write(f"Socket inet:{self.dmarc_port}@127.0.0.1\nPidFile {d}/opendmarc.pid\n"
                    "Syslog false\nAuthservID postfix.bench\nTrustedAuthservIDs postfix.bench\n"
                    "RejectFailures false\nSPFSelfValidate false\nRequiredHeaders false\n"
                    # Its default IgnoreHosts is 127.0.0.1: every message here would be
                    # passed over unchecked. Ignore only an address nothing comes from.
                    f"IgnoreHosts {d}/ignore.hosts\n")
        with open(os.path.join(d, "ignore.hosts"), "w") as f:
            f.write("192.0.2.255\n")
        with open(os.path.join(d, "resolv.conf"), "w") as f:
            f.write(f"nameserver {addr}\n")
        self.log = open(os.path.join(d, "milters.log"), "wb")
        self.dkim = subprocess.Popen(["opendkim", "-f", "-x", f"{d}/opendkim.conf"],
                                     stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        # unshare execs sh, sh execs opendmarc: one PID, its own /etc/resolv.conf.
        self.dmarc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c",
             f"mount --bind {d}/resolv.conf /etc/resolv.conf && exec opendmarc -f -c {d}/opendmarc.conf"],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        for port in (self.dkim_port, self.dmarc_port):
            for _ in range(100):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    time.sleep(0.1)
            else:
                self.stop()
                raise RuntimeError(f"a milter did not listen; see {d}/milters.log")

    def pids(self):
        return [self.dkim.pid, self.dmarc.pid]

    def stop(self):
        for p in (self.dkim, self.dmarc):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


class PostfixMilters(base.Postfix):
    """The bench's durable Postfix (hold queue) with the two milters in front of it."""

    def __init__(self, name, d, milters):
        self.milters = milters
        extra = ("smtpd_milters = inet:127.0.0.1:%d, inet:127.0.0.1:%d\n"
                 "milter_default_action = tempfail\n" % (milters.dkim_port, milters.dmarc_port))
        super().__init__(name, d, extra=extra)

    def cpu(self):
        return base.cpu_ticks(self.pid) + sum(base.cpu_ticks(p) for p in self.milters.pids())

    def memory(self):
        return super().memory() + sum(base.pss_bytes(p) for p in self.milters.pids())

    def one_stored(self):
        for path in glob.glob(os.path.join(self.dir, "queue", "hold", "**", "*"), recursive=True):
            if os.path.isfile(path):
                return base.run_ok(["/usr/sbin/postcat", "-c", self.conf, "-h", path])
        return b""


def cpu(server):
    return server.cpu() if hasattr(server, "cpu") else base.cpu_ticks(server.pid)


def samotop_one_stored(server):
    new = os.path.join(server.maildir, "new")
    for name in sorted(os.listdir(new)) if os.path.isdir(new) else []:
        with open(os.path.join(new, name), "rb") as f:
            return f.read(8192)
    return b""


# ---------------------------------------------------------------- driving


def source(port, path, count):
    argv = [base.SMTP_SOURCE, "-s", str(SESSIONS), "-m", str(count), "-F", path, "-d",
            "-f", "bench@source.test", "-t", "rcpt@sink.test", "-M", "source.test",
            "127.0.0.1:%d" % port]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("smtp-source: %s" % r.stderr.strip())


def measure(server, path, count):
    # One run of smtp-source: with -d each message is a connection of its own.
    sent = max(SESSIONS, count)
    with base.MemSampler(server) as mem:
        c0, t0 = cpu(server), time.monotonic()
        source(server.port, path, sent)
        elapsed, c1 = time.monotonic() - t0, cpu(server)
    return {"rate": sent / elapsed, "cpu_us": (c1 - c0) / base.TICK * 1e6 / sent,
            "peak": mem.peak}


def criterion():
    """MB/s of each body-hash case, from `cargo bench -p samotop-auth --bench body_hash`."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(base.ROOT, "target", "bench"))
    r = subprocess.run(["cargo", "bench", "-p", "samotop-auth", "--bench", "body_hash", "--",
                        "--quick"], cwd=base.ROOT, capture_output=True, text=True, timeout=3600,
                       env=dict(os.environ, CARGO_TARGET_DIR=target))
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    out = {}
    for path in glob.glob(os.path.join(target, "criterion", "dkim_body_hash", "*", "new",
                                       "estimates.json")):
        with open(os.path.join(os.path.dirname(path), "benchmark.json")) as f:
            meta = json.load(f)
        with open(path) as f:
            ns = json.load(f)["mean"]["point_estimate"]
        size = (meta.get("throughput") or {}).get("Bytes", 4 * 1024 * 1024)
        out[meta.get("function_id", path.split(os.sep)[-3])] = size / (ns * 1e-9) / 1e6
    return out


def run(samotop=None):
    samotop = samotop or os.environ.get("SAMOTOP", "target/bench/release/samotop")
    rounds = int(os.environ.get("BENCH_AUTH_ROUNDS", os.environ.get("BENCH_ROUNDS", "3")))
    seconds = float(os.environ.get("BENCH_AUTH_SECONDS", os.environ.get("BENCH_SECONDS", "2")))
    addr = os.environ.get("BENCH_AUTH_DNS", "127.53.0.1")
    fs = base.FreshFs("samotop-auth-bench-")
    d = fs.dir
    os.chmod(d, 0o755)
    out = {"load_start": "%.1f/%.1f/%.1f" % os.getloadavg(), "results": {}, "checked": {}}
    dns = milters = None
    servers = []
    try:
        key, record = genkey(d)
        dns = Dnsmasq(d, addr, [(f"bench._domainkey.{DOMAIN}", record),
                                (f"_dmarc.{DOMAIN}", "v=DMARC1; p=reject")])
        path, out["size"] = message_file(d, key)
        flags = ["--dns", f"{addr}:53"]
        servers.append(base.Samotop("auth-off", d, samotop, "maildir",
                                    extra=flags + ["--dkim", "off", "--dmarc", "off"]))
        servers.append(base.Samotop("auth-on", d, samotop, "maildir",
                                    extra=flags + ["--dkim", "tag", "--dmarc", "tag"]))
        baseline = os.environ.get("BENCH_AUTH_BASELINE")
        if baseline:
            servers.append(base.Samotop("auth-on-baseline", d, baseline, "maildir",
                                        extra=flags + ["--dkim", "tag", "--dmarc", "tag"]))
        if os.environ.get("BENCH_AUTH_MILTERS", "1") != "0":
            milters = Milters(d, addr)
            servers.append(PostfixMilters("postfix-milters", d, milters))
        counts = {}
        for s in list(servers):
            t0 = time.monotonic()
            try:
                measure(s, path, 320)  # warm-up: caches filled
            except RuntimeError as e:
                if s.name != "postfix-milters":
                    raise
                # Reported, not fatal: the comparison is left out, with the reason.
                out["excluded"] = {s.name: "warm-up failed: %s" % str(e)[-300:]}
                log("%s excluded: %s" % (s.name, e))
                s.stop()
                servers.remove(s)
                continue
            counts[s.name] = int(max(SESSIONS * 4, 320 / (time.monotonic() - t0) * seconds))
        on = samotop_one_stored(servers[1]).decode(errors="replace")
        out["checked"] = {"auth-on": "dkim=pass" in on and "dmarc=pass" in on}
        for s in servers[2:]:
            if s.name == "postfix-milters":
                pf = s.one_stored().decode(errors="replace")
            else:
                pf = samotop_one_stored(s).decode(errors="replace")
            out["checked"][s.name] = "dkim=pass" in pf and "dmarc=pass" in pf
            if not out["checked"][s.name]:
                out.setdefault("excluded", {})[s.name] = (
                    "its stored message does not say dkim=pass and dmarc=pass: %r" % pf[:400])
                s.stop()
                servers.remove(s)
        log("verdicts checked: %s" % out["checked"])
        for r in range(rounds):
            order = servers[r % len(servers):] + servers[:r % len(servers)]
            for s in order:
                m = measure(s, path, counts[s.name])
                out["results"].setdefault(s.name, []).append(m)
                log("round %d %-16s %7.0f msg/s %7.1f µs CPU/msg" % (r + 1, s.name, m["rate"],
                                                                    m["cpu_us"]))
    finally:
        for s in servers:
            s.stop()
        if milters:
            milters.stop()
        if dns:
            dns.stop()
        fs.close()
    out["load_end"] = "%.1f/%.1f/%.1f" % os.getloadavg()
    if os.environ.get("BENCH_AUTH_CRITERION", "1") != "0":
        try:
            log("criterion: cargo bench -p samotop-auth --bench body_hash -- --quick")
            out["body_hash"] = criterion()
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            out["body_hash_error"] = str(e)
    return out


def report(out):
    res = out["results"]
    med = {n: statistics.median(m["rate"] for m in v) for n, v in res.items()}
    lines = ["", "## Sender authentication (DKIM + DMARC, durable, %d sessions, %d-byte messages "
             "with one DKIM signature)" % (SESSIONS, out.get("size", SIZE)), "",
             "Load average %s at start, %s at end. Verdicts checked in a stored message: %s."
             % (out["load_start"], out.get("load_end", "?"), out.get("checked")), "",
             "| server | msg/s median | min–max | CPU µs/msg | peak MiB |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for n in NAMES:
        if n in res:
            rates = [m["rate"] for m in res[n]]
            lines.append("| %s | %.0f | %.0f–%.0f | %.1f | %.1f |" % (
                n, med[n], min(rates), max(rates),
                statistics.median(m["cpu_us"] for m in res[n]),
                max(m["peak"] for m in res[n]) / 1048576))
    for n, why in (out.get("excluded") or {}).items():
        lines += ["", "%s was left out: %s" % (n, why)]
    if "postfix-milters" in res:
        lines += ["", "CPU and memory of postfix-milters include both milters."]
    lines += ["", "| target | want | got | |", "| --- | ---: | ---: | --- |"]
    for label, a, b, want in [("checks on / checks off", "auth-on", "auth-off", 0.8),
                              ("checks on / Postfix + OpenDKIM + OpenDMARC", "auth-on",
                               "postfix-milters", 2.0),
                              ("checks on / the same with BENCH_AUTH_BASELINE", "auth-on",
                               "auth-on-baseline", None)]:
        if a in med and b in med:
            if want is None:
                # Paired by round: both ran in it, one after the other.
                r = statistics.median(x["rate"] / y["rate"] for x, y in zip(res[a], res[b]))
                lines.append("| %s | — | %.3f× | A/B, median of the rounds |" % (label, r))
                continue
            r = med[a] / med[b]
            lines.append("| %s | ≥ %.1f× | %.2f× | %s |" % (label, want, r,
                                                             "met" if r >= want else "not met"))
    if "body_hash" in out:
        lines += ["", "DKIM body hashing (criterion, 4 MiB body in 64 KiB chunks): " + ", ".join(
            "%s %.0f MB/s" % (k, v) for k, v in sorted(out["body_hash"].items())) + "."]
    elif "body_hash_error" in out:
        lines += ["", "DKIM body hashing: the criterion bench failed: %s"
                  % out["body_hash_error"][-300:]]
    return "\n".join(lines)


if __name__ == "__main__":
    result = run()
    print(report(result))
    print(json.dumps(result), file=sys.stderr)

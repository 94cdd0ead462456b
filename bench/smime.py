#!/usr/bin/python3
"""Encryption at rest in the side-by-side benchmark (issue #17), called from bench/bench.py.

Durable Maildir, 32 sessions, 10 KiB and 1 MiB messages, three servers in one interleaved run:
  smime-off         samotop --deliver maildir:DIR                       (encryption off)
  smime-on          samotop --deliver maildir:DIR --encrypt-to CERT    (on: RSA-2048)
  openssl-pipe      what Samotop 0.12 did: an aiosmtpd receiver that pipes each message
                    through `openssl smime -encrypt -aes256 CERT` and stores the output
                    durably like samotop's Maildir (tmp/, fsync, rename, fsync new/)

Knobs: BENCH_SMIME=0 skips it; BENCH_SMIME_CASES=a,b picks cases (smime-10k-s32,
smime-1m-s32). The same script serves the openssl-pipe peer:

    smime.py --serve --port PORT --dir DIR --cert CERT.pem
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CASES = {
    "smime-10k-s32": (10 * 1024, 32, 1, True),
    "smime-1m-s32": (1024 * 1024, 32, 1, True),
}
CASE_TEXT = {
    "smime-10k-s32": "10 KiB, 32 sessions, durable Maildir",
    "smime-1m-s32": "1 MiB, 32 sessions, durable Maildir",
}
WARMUP = {"smime-10k-s32": 600, "smime-1m-s32": 64}
SERVERS = ["smime-off", "smime-on", "openssl-pipe"]
# (case, on/off target, on/openssl-pipe target)
TARGETS = {"smime-10k-s32": (0.7, 5.0), "smime-1m-s32": (0.5, 5.0)}


def make_cert(base):
    key, cert = os.path.join(base, "smime-owner.key"), os.path.join(base, "smime-owner.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out",
                    cert, "-days", "30", "-subj", "/CN=bench owner", "-addext",
                    "keyUsage=keyEncipherment"], check=True, capture_output=True, timeout=60)
    os.remove(key)  # the server side never has it
    return cert


def start(bench, name, base, samotop, cert):
    if name == "smime-off":
        return bench.Samotop(name, base, samotop, "maildir")
    if name == "smime-on":
        return bench.Samotop(name, base, samotop, "maildir", extra=["--encrypt-to", cert])
    if name == "openssl-pipe":
        s = bench.Server(name, base)
        s.spawn([bench.PY, os.path.abspath(__file__), "--serve", "--port", str(s.port), "--dir",
                 os.path.join(s.dir, "maildir"), "--cert", cert])
        return s
    raise ValueError(name)


def run(bench, base, samotop, rounds, seconds):
    """Measures the servers; returns {"results": {(server, case): [m...]}, "cases": [...]}."""
    cases = [c for c in os.environ.get("BENCH_SMIME_CASES", ",".join(CASES)).split(",") if c]
    bench.CASES.update(CASES)
    bench.CASE_TEXT.update(CASE_TEXT)
    bench.WARMUP.update(WARMUP)
    cert = make_cert(base)
    servers = []
    try:
        for n in SERVERS:
            bench.log("starting %s" % n)
            servers.append(start(bench, n, base, samotop, cert))
        results = bench.run_matrix(servers, cases, rounds, seconds)
    finally:
        for s in servers:
            s.stop()
    return {"results": {"%s %s" % k: v for k, v in results.items()}, "cases": cases}


def report(data):
    """Markdown: the table and the ratios against the targets."""
    res, cases = data["results"], data["cases"]
    med, cpu = {}, {}
    for key, rs in res.items():
        ok = [r for r in rs if "rate" in r]
        if ok:
            med[key] = statistics.median(r["rate"] for r in ok)
            cpu[key] = statistics.median(r["cpu_us"] for r in ok)
    lines = ["", "Encryption at rest (S/MIME, RSA-2048 recipient; bench/smime.py):", "",
             "| case | server | msg/s median | CPU µs/msg |", "| --- | --- | ---: | ---: |"]
    for case in cases:
        for s in SERVERS:
            k = "%s %s" % (s, case)
            if k in med:
                lines.append("| %s | %s | %.0f | %.0f |" % (CASE_TEXT[case], s, med[k], cpu[k]))
            elif k in res:
                lines.append("| %s | %s | failed | |" % (CASE_TEXT[case], s))
    lines += ["", "| target | want | got | |", "| --- | ---: | ---: | --- |"]
    for case in cases:
        off, on, pipe = ("%s %s" % (s, case) for s in SERVERS)
        want_off, want_pipe = TARGETS[case]
        for label, a, b, want in [("on ÷ off", on, off, want_off), ("on ÷ openssl-pipe", on, pipe, want_pipe)]:
            if a in med and b in med:
                r = med[a] / med[b]
                lines.append("| %s, %s | ≥ %.1f× | %.2f× | %s |" % (
                    CASE_TEXT[case], label, want, r, "met" if r >= want else "not met"))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the openssl-pipe peer


def serve(args):
    sys.path.insert(0, HERE)
    from aiosmtpd.smtp import SMTP
    from aiosmtpd_server import Maildir

    store = Maildir(args.dir)

    def encrypt_and_store(data):
        r = subprocess.run(["openssl", "smime", "-encrypt", "-aes256", args.cert], input=data,
                           capture_output=True, timeout=300)
        if r.returncode != 0:
            raise OSError(r.stderr.decode(errors="replace"))
        store.store(r.stdout)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            head = "Return-Path: <%s>\r\n" % (envelope.mail_from or "")
            data = head.encode() + envelope.original_content
            try:
                await asyncio.get_running_loop().run_in_executor(None, encrypt_and_store, data)
            except OSError:
                return "451 4.3.0 Local error in processing"
            return "250 2.0.0 OK"

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Handler(), hostname="openssl-pipe.bench", data_size_limit=200 * 1024 * 1024),
            host="127.0.0.1", port=args.port, backlog=1024)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", action="store_true", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--cert", required=True)
    serve(p.parse_args())

"""Trigger benchmark (called from bench/bench.py; BENCH_TRIGGER=0 skips it).

32 sessions (smtp-source, 1 KiB messages, many per connection) into samotop delivering to:
  trigger-null      --deliver null (the protocol alone)
  trigger-forward   --deliver smtp: to a second samotop --deliver null (one hop, the
                    shape a webhook has: a connection to another server per message)
  trigger-webhook   --deliver http://... (signed) to a small Rust endpoint answering 200 at
                    once (crates/samotop-trigger/examples/trigger_bench.rs sink)
  trigger-exec      --deliver exec:/bin/true
and, beside exec, a plain loop that spawns /bin/true with the same input, 32 at once
(trigger_bench spawn). Reported: messages/s (median, min-max) and the server's CPU per
message (the first samotop only for forward; its children included for exec).
Targets: webhook >= 1x forward; exec >= 0.5x the spawn loop.
"""

import os
import resource
import statistics
import subprocess
import time

CASE = "1k-s32"
SIZE = 1024
PARALLEL = 32
SECRET = "whsec_c2Ftb3RvcC1iZW5jaC1zZWNyZXQtMDEyMzQ1Njc4OQ=="


def helper(root):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target/bench"))
    subprocess.run(["cargo", "build", "--release", "-p", "samotop-trigger", "--example",
                    "trigger_bench"], check=True, cwd=root,
                   env=dict(os.environ, CARGO_TARGET_DIR=target))
    return os.path.join(target, "release", "examples", "trigger_bench")


class Plain:
    """A process that is not an SMTP server (the HTTP sink)."""

    def __init__(self, argv, port):
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        self.port = port

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def start(b, name, base, samotop, deliver, extra=()):
    class S(b.Server):
        def __init__(self):
            super().__init__(name, base)
            self.spawn([samotop, "--smtp", "127.0.0.1:%d" % self.port, "--deliver", deliver,
                        "--spf", "off", "--dkim", "off", "--dmarc", "off",
                        "--max-connections-per-ip", "0", "--shutdown-grace", "1",
                        "--name", "samotop.bench", *extra])

    return S()


def spawn_loop(tool, count):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    out = subprocess.run([tool, "spawn", str(count), str(PARALLEL), str(SIZE + 300), "/bin/true"],
                         check=True, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rate = float(out.stdout.strip() or 0) or count / elapsed
    return {"rate": rate, "cpu_us": cpu * 1e6 / count, "count": count, "seconds": elapsed}


def run(b, root, samotop, base, rounds, seconds):
    """Runs the trigger scenarios; returns their results for report()."""
    tool = helper(root)
    sink_port = b.free_port()
    sink = Plain([tool, "sink", str(sink_port)], sink_port)
    servers = {}
    try:
        downstream = start(b, "trigger-downstream", base, samotop, "null")
        servers["trigger-null"] = start(b, "trigger-null", base, samotop, "null")
        servers["trigger-forward"] = start(b, "trigger-forward", base, samotop,
                                           "smtp:127.0.0.1:%d" % downstream.port)
        servers["trigger-webhook"] = start(b, "trigger-webhook", base, samotop,
                                           "http://127.0.0.1:%d/hook" % sink_port,
                                           ["--webhook-secret", SECRET])
        servers["trigger-exec"] = start(b, "trigger-exec", base, samotop, "exec:/bin/true")
        counts = {}
        for name, s in servers.items():
            m = b.measure(s, CASE, 300 if name == "trigger-exec" else 1000)
            counts[name] = int(min(b.MAX_COUNT, max(PARALLEL * 4, m["rate"] * seconds)))
        loop_count = counts["trigger-exec"]
        spawn_loop(tool, 200)
        results = {n: [] for n in list(servers) + ["spawn-loop"]}
        names = list(servers)
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            b.log("trigger round %d/%d" % (r + 1, rounds))
            for name in order:
                try:
                    m = b.measure(servers[name], CASE, counts[name])
                except Exception as e:  # noqa: BLE001 - reported, not fatal
                    b.log("%s: %s" % (name, e))
                    continue
                results[name].append(m)
                b.log("  %-16s %8.0f msg/s  %6.1f µs CPU/msg" % (name, m["rate"], m["cpu_us"]))
            m = spawn_loop(tool, loop_count)
            results["spawn-loop"].append(m)
            b.log("  %-16s %8.0f msg/s  %6.1f µs CPU/msg" % ("spawn-loop", m["rate"], m["cpu_us"]))
        downstream.stop()
        return results
    finally:
        for s in servers.values():
            s.stop()
        sink.stop()


TEXT = {
    "trigger-null": "--deliver null",
    "trigger-forward": "--deliver smtp: (to samotop --deliver null)",
    "trigger-webhook": "--deliver http:// (signed, Rust sink answering 200)",
    "trigger-exec": "--deliver exec:/bin/true",
    "spawn-loop": "plain loop spawning /bin/true, 32 at once",
}


def report(results):
    """Markdown lines for bench.py's report."""
    def med(name, key="rate"):
        v = [m[key] for m in results.get(name, [])]
        return statistics.median(v) if v else 0.0

    lines = ["", "### Triggers (1 KiB, 32 sessions)", "",
             "| path | msg/s (median) | min-max | server CPU µs/msg |",
             "| --- | ---: | ---: | ---: |"]
    for name, text in TEXT.items():
        v = [m["rate"] for m in results.get(name, [])]
        if not v:
            lines.append("| %s | failed | | |" % text)
            continue
        lines.append("| %s | %.0f | %.0f-%.0f | %.1f |" % (text, med(name), min(v), max(v),
                                                         med(name, "cpu_us")))
    hook = med("trigger-webhook") / (med("trigger-forward") or 1)
    exe = med("trigger-exec") / (med("spawn-loop") or 1)
    lines += ["", "| target | want | got | |", "| --- | ---: | ---: | --- |",
              "| webhook vs SMTP forward | >= 1.0x | %.2fx | %s |" % (hook, "met" if hook >= 1 else "not met"),
              "| exec: vs spawn loop | >= 0.5x | %.2fx | %s |" % (exe, "met" if exe >= 0.5 else "not met")]
    return lines

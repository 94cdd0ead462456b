#!/usr/bin/python3
"""Opens N idle SMTP connections and holds them (scripts/bench: memory per idle connection).

    idle_conns.py HOST PORT N [--ehlo] [--hold SECONDS]

Connects in batches of 100, below the listen backlog of 128 that std and mio listeners use
(a burst over it can leave a server-speaks-first connection hanging: the kernel completes
the client's handshake, drops it from the full accept queue, and no banner ever comes).
Reads each banner (and the EHLO reply with --ehlo), then prints `ready OPEN` on stdout
and holds every connection until stdin closes or SECONDS pass.
Raises its own RLIMIT_NOFILE as far as it may. Every wait is bounded.
"""

import argparse
import resource
import select
import selectors
import socket
import struct
import sys
import time


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def reply_complete(buf):
    """True once buf holds a whole (possibly multi-line) reply."""
    lines = buf.split(b"\r\n")
    return any(len(l) >= 4 and l[3:4] == b" " for l in lines[:-1])


def open_batch(host, port, n, ehlo, deadline):
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect((host, port))
        except BlockingIOError:
            pass
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, [b"", False])
    pending = n
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            s, st = key.fileobj, key.data
            try:
                chunk = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(s)
                pending -= 1
                continue
            st[0] += chunk
            if reply_complete(st[0]):
                if ehlo and not st[1]:
                    st[1] = True
                    st[0] = b""
                    s.send(b"EHLO idle.bench\r\n")
                else:
                    sel.unregister(s)
                    pending -= 1
    sel.close()
    return socks


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("n", type=int)
    p.add_argument("--ehlo", action="store_true")
    p.add_argument("--hold", type=float, default=120.0)
    p.add_argument("--batch", type=int, default=100)
    a = p.parse_args()
    raise_nofile(a.n)
    socks = []
    deadline = time.monotonic() + 120
    while len(socks) < a.n and time.monotonic() < deadline:
        socks += open_batch(a.host, a.port, min(a.batch, a.n - len(socks)), a.ehlo, deadline)
    # Count the ones still open (a refused one reads EOF).
    alive = 0
    for s in socks:
        try:
            alive += s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    print("ready %d" % alive, flush=True)
    select.select([sys.stdin], [], [], a.hold)
    linger = struct.pack("ii", 1, 0)  # RST, no TIME_WAIT: ports are reused at once
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass
        s.close()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Opens N idle SMTP connections and holds them (scripts/bench: memory per idle connection).

    idle_conns.py HOST PORT N [--ehlo] [--starttls] [--hold SECONDS]

Connects in batches of 100, below the listen backlog of 128 that std and mio listeners use
(a burst over it can leave a server-speaks-first connection hanging: the kernel completes
the client's handshake, drops it from the full accept queue, and no banner ever comes).
Reads each banner (and the EHLO reply with --ehlo), then prints `ready OPEN` on stdout
and holds every connection until stdin closes or SECONDS pass. With --starttls each
connection goes on: EHLO, STARTTLS, the TLS handshake (Python's ssl, no certificate check),
EHLO again inside TLS, and is held there (TLS 1.3 tickets the server sends are read too).
Raises its own RLIMIT_NOFILE as far as it may. Every wait is bounded.
"""

import argparse
import resource
import ssl
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


class Conn:
    """One connection's way to idleness: banner, [EHLO], [STARTTLS, handshake, EHLO]."""

    def __init__(self, sock, ehlo, starttls):
        self.sock = sock
        self.buf = b""
        # Steps still to take after the banner: each sends a command and reads its reply.
        self.steps = []
        if ehlo or starttls:
            self.steps.append(b"EHLO idle.bench\r\n")
        if starttls:
            self.steps += [b"STARTTLS\r\n", "tls", b"EHLO idle.bench\r\n"]
        self.handshaking = False
        self.done = False


def open_batch(host, port, n, ehlo, deadline, starttls=False, ctx=None):
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect((host, port))
        except BlockingIOError:
            pass
        c = Conn(s, ehlo, starttls)
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    pending = n

    def finish(c):
        nonlocal pending
        sel.unregister(c.sock)
        c.done = True
        pending -= 1

    def next_step(c):
        """Sends the next command (or starts TLS); finishes the connection when none is left."""
        while c.steps:
            step = c.steps.pop(0)
            if step == "tls":
                sel.unregister(c.sock)
                c.sock = ctx.wrap_socket(c.sock, do_handshake_on_connect=False)
                c.handshaking = True
                sel.register(c.sock, selectors.EVENT_READ, c)
                return handshake(c)
            try:
                c.sock.send(step)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                pass  # a few bytes into an empty socket buffer: does not happen in practice
            return True
        finish(c)
        return False

    def handshake(c):
        try:
            c.sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except (OSError, ssl.SSLError):
            finish(c)
            return False
        c.handshaking = False
        return next_step(c)

    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            if c.done:
                continue
            if c.handshaking:
                handshake(c)
                continue
            try:
                chunk = c.sock.recv(4096)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError):
                continue
            except OSError:
                chunk = b""
            if not chunk:
                finish(c)
                continue
            c.buf += chunk
            if reply_complete(c.buf):
                c.buf = b""
                next_step(c)
    sel.close()
    return [c.sock for c in conns]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("n", type=int)
    p.add_argument("--ehlo", action="store_true")
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--hold", type=float, default=120.0)
    p.add_argument("--batch", type=int, default=100)
    a = p.parse_args()
    raise_nofile(a.n)
    ctx = None
    if a.starttls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    socks = []
    deadline = time.monotonic() + 120
    while len(socks) < a.n and time.monotonic() < deadline:
        socks += open_batch(a.host, a.port, min(a.batch, a.n - len(socks)), a.ehlo, deadline,
                            a.starttls, ctx)
    # Count the ones still open (a refused one reads EOF).
    alive = 0
    for s in socks:
        if isinstance(s, ssl.SSLSocket):
            # TLS: the session is up and still open (a closed one reads EOF or fails).
            try:
                alive += s.recv(1) != b""
            except (ssl.SSLWantReadError, BlockingIOError):
                alive += 1
            except (OSError, ssl.SSLError):
                pass
            continue
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

#!/usr/bin/python3
"""An aiosmtpd receiver for the side-by-side benchmark (scripts/bench).

    aiosmtpd_server.py --port PORT --mode discard
    aiosmtpd_server.py --port PORT --mode maildir --dir DIR
    aiosmtpd_server.py --port PORT --tls-cert CERT --tls-key KEY [--smtps-port PORT2]

discard: every message is answered 250 and thrown away (protocol cost only).
maildir: every message is stored durably, as samotop's Maildir does: written to tmp/,
fsync, renamed into new/, fsync of new/; then 250. The file work runs in the event loop's
default thread pool, so sessions wait for their own fsync, not each other's.
With --tls-cert and --tls-key, STARTTLS is offered on PORT (Python's ssl, OpenSSL), and
--smtps-port also serves SMTP inside implicit TLS.

Run with Debian's python3-aiosmtpd: /usr/bin/python3.
"""

import argparse
import asyncio
import itertools
import os
import socket
import ssl
import time

from aiosmtpd.smtp import SMTP


class Discard:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"


class Maildir:
    def __init__(self, root):
        self.root = root
        self.tmp = os.path.join(root, "tmp")
        self.new = os.path.join(root, "new")
        for d in (self.tmp, self.new, os.path.join(root, "cur")):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self.seq = itertools.count()
        self.host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")

    def store(self, data):
        name = "%d.M%dP%dQ%d.%s" % (
            int(time.time()),
            time.time_ns() // 1000 % 1000000,
            os.getpid(),
            next(self.seq),
            self.host,
        )
        src = os.path.join(self.tmp, name)
        fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(src, os.path.join(self.new, name))
        dfd = os.open(self.new, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    async def handle_DATA(self, server, session, envelope):
        head = "Return-Path: <%s>\r\n" % (envelope.mail_from or "")
        data = head.encode() + envelope.original_content
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.store, data)
        except OSError:
            return "451 4.3.0 Local error in processing"
        return "250 2.0.0 OK"


async def serve(args):
    handler = Discard() if args.mode == "discard" else Maildir(args.dir)
    loop = asyncio.get_running_loop()
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)

    def factory(starttls):
        return lambda: SMTP(
            handler,
            hostname="aiosmtpd.bench",
            data_size_limit=200 * 1024 * 1024,
            enable_SMTPUTF8=True,
            tls_context=tls if starttls else None,
        )

    servers = [await loop.create_server(factory(True), host=args.host, port=args.port,
                                        backlog=1024)]
    if tls and args.smtps_port:
        servers.append(await loop.create_server(factory(False), host=args.host,
                                                port=args.smtps_port, backlog=1024, ssl=tls))
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=["discard", "maildir"], default="discard")
    p.add_argument("--dir")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--smtps-port", type=int)
    a = p.parse_args()
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if a.mode == "maildir" and not a.dir:
        p.error("--mode maildir needs --dir")
    try:
        asyncio.run(serve(a))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

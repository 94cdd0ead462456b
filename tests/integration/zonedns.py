"""A small authoritative DNS server for tests: serves zone data given as Python values, on
127.0.0.1, over UDP and TCP, on a free port, from threads of this process (PyPI `dnslib` for
the wire format).

The zone data follows the OpenSPF test suite's `zonedata` (pyspf `testspf.py` semantics):

    zone = {
        "example.com": [
            {"TXT": "v=spf1 -all"},            # one string, or a list of strings (one record)
            {"SPF": ["v=spf1 ", "a -all"]},    # type 99; copied to TXT unless the name has TXT
            {"TXT": "NONE"},                   # no TXT record, and no copy of SPF to TXT
            {"A": "192.0.2.1"}, {"AAAA": "2001:db8::1"},
            {"MX": [10, "mx.example.com"]},    # "" is the root: a null MX (RFC 7505)
            {"PTR": "host.example.com"}, {"CNAME": "other.example.com"},
            "TIMEOUT",                         # see below
        ],
    }

`TIMEOUT` makes a query of a type not listed before it go unanswered (the server drops it),
so the resolver times out; a type listed before it is answered. A record whose value is
`TIMEOUT` drops queries of its type. Names not in the zone are NXDOMAIN, except names under
`error.`, which time out. A name in the zone without records of the asked type is NOERROR with
no answer ("no data"). TXT strings are sent as their UTF-8 bytes, whatever they hold (NUL,
CR, non-ASCII), each string cut into 255-byte character-strings of one record. CNAMEs are
followed inside the zone (a loop ends the chain).

Usage:
    server = ZoneServer()
    port = server.add_zone(zone)     # one port per zone, the same server
    ...
    server.close()
"""

import ipaddress
import socket
import socketserver
import struct
import threading

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSLabel, DNSRecord

TTL = 300
SPF_TYPE = 99


def _strings(value):
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def load_zone(zonedata):
    """The suite's `zonedata` as {lower-case name: [entry]}, pyspf's `getrdata` semantics:
    SPF records are copied to TXT at the end of the list unless the name lists TXT, and
    `TXT: NONE` only stops the copying."""
    zone = {}
    for name, entries in (zonedata or {}).items():
        out, generated, gen = [], [], True
        for entry in entries or []:
            if not isinstance(entry, dict):
                out.append(entry)  # "TIMEOUT"
                continue
            for rtype, value in entry.items():
                if rtype in ("TXT", "SPF") and value != "TIMEOUT":
                    value = _strings(value)
                if rtype == "TXT":
                    gen = False
                elif rtype == "SPF" and gen:
                    generated.append(("TXT", value))
                if value != ("NONE",):
                    out.append((rtype, value))
        if gen:
            out.extend(generated)
        zone[name.lower().rstrip(".")] = out
    return zone


def _label(name):
    name = name.rstrip(".")
    if not name:
        return DNSLabel([])
    return DNSLabel([part.encode("utf-8") for part in name.split(".")])


def _rdata(rtype, value):
    if rtype == "A":
        return QTYPE.A, A(str(ipaddress.IPv4Address(value)))
    if rtype == "AAAA":
        return QTYPE.AAAA, AAAA(str(ipaddress.IPv6Address(value)))
    if rtype in ("TXT", "SPF"):
        parts = []
        for s in value:
            data = s.encode("utf-8")
            parts.extend(data[i:i + 255] for i in range(0, len(data), 255))
        return (QTYPE.TXT if rtype == "TXT" else SPF_TYPE), TXT(parts)
    if rtype == "MX":
        preference, exchange = value
        return QTYPE.MX, MX(_label(exchange), int(preference))
    if rtype == "PTR":
        return QTYPE.PTR, PTR(_label(value))
    if rtype == "CNAME":
        return QTYPE.CNAME, CNAME(_label(value))
    raise ValueError(f"unknown record type {rtype}")


class Drop(Exception):
    """The query is not answered (a timeout for the resolver)."""


def answer(zone, name, qtype):
    """(rcode, [(owner, rtype, value)]) for a query, or raises Drop. The owner is None for
    the name asked, else the CNAME target."""
    answers = []
    seen = set()
    owner = None  # the question's name, as asked
    for _ in range(10):  # CNAME chain, bounded
        key = (name if owner is None else owner).lower().rstrip(".")
        entries = zone.get(key)
        if entries is None:
            if key.startswith("error."):
                raise Drop()
            return (RCODE.NXDOMAIN if not answers else RCODE.NOERROR), answers
        seen.add(key)
        typed = False
        target = None
        for entry in entries:
            if entry == "TIMEOUT":
                if not typed:
                    raise Drop()
                break
            rtype, value = entry
            if rtype == qtype:
                typed = True
                if value == "TIMEOUT":
                    raise Drop()
                answers.append((owner, rtype, value))
            elif rtype == "CNAME" and qtype != "CNAME" and value != "TIMEOUT":
                answers.append((owner, rtype, value))
                target = value
        if target is None or target.lower().rstrip(".") in seen:
            return RCODE.NOERROR, answers
        owner = target
    return RCODE.NOERROR, answers


QTYPE_NAMES = {QTYPE.A: "A", QTYPE.AAAA: "AAAA", QTYPE.MX: "MX", QTYPE.TXT: "TXT",
               QTYPE.PTR: "PTR", QTYPE.CNAME: "CNAME", SPF_TYPE: "SPF"}


def reply_bytes(zone, data, limit=None):
    """The reply to one query message (bytes), or None to drop it."""
    try:
        request = DNSRecord.parse(data)
    except Exception:  # not a DNS message: no answer
        return None
    reply = request.reply()
    reply.header.ra = 0
    reply.header.aa = 1
    q = request.q
    name = ".".join(label.decode("latin-1") for label in q.qname.label)
    qtype = QTYPE_NAMES.get(q.qtype)
    if qtype is None:
        rcode, answers = answer(zone, name, "-")  # no data, or NXDOMAIN
    else:
        rcode, answers = answer(zone, name, qtype)
    reply.header.rcode = rcode
    for owner, rtype, value in answers:
        number, rdata = _rdata(rtype, value)
        rname = q.qname if owner is None else _label(owner)
        reply.add_answer(RR(rname, number, rdata=rdata, ttl=TTL))
    packed = reply.pack()
    if limit is not None and len(packed) > limit:
        reply.rr = []
        reply.header.tc = 1
        packed = reply.pack()
    return packed


def udp_limit(data):
    """The largest UDP reply the asker takes: 512, or its EDNS0 payload size."""
    try:
        request = DNSRecord.parse(data)
    except Exception:
        return 512
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(512, rr.rclass)
    return 512


class _Udp(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True
    allow_reuse_address = False


class _Tcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class ZoneServer:
    """One DNS server, one UDP+TCP port per zone. Every query is counted in `queries`."""

    def __init__(self):
        self._servers = []
        self._threads = []
        self.queries = []  # (port, name, qtype number), appended from server threads
        self._lock = threading.Lock()

    def _record(self, port, data):
        try:
            q = DNSRecord.parse(data).q
            with self._lock:
                self.queries.append((port, str(q.qname), q.qtype))
        except Exception:
            pass

    def add_zone(self, zone, host="127.0.0.1"):
        """Serves `zone` (as `load_zone` returns it) on a free port of `host`; returns it."""
        owner = self

        class UdpHandler(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                port = sock.getsockname()[1]
                owner._record(port, data)
                try:
                    out = reply_bytes(zone, data, limit=udp_limit(data))
                except Drop:
                    return
                if out is not None:
                    sock.sendto(out, self.client_address)

        class TcpHandler(socketserver.BaseRequestHandler):
            def handle(self):
                sock = self.request
                sock.settimeout(30)
                port = sock.getsockname()[1]
                for _ in range(1000):  # queries on one connection, bounded
                    head = _recv_exact(sock, 2)
                    if head is None:
                        return
                    data = _recv_exact(sock, struct.unpack("!H", head)[0])
                    if data is None:
                        return
                    owner._record(port, data)
                    try:
                        out = reply_bytes(zone, data)
                    except Drop:
                        continue
                    if out is not None:
                        sock.sendall(struct.pack("!H", len(out)) + out)

        last = None
        for _ in range(20):
            udp = _Udp((host, 0), UdpHandler)
            port = udp.server_address[1]
            try:
                tcp = _Tcp((host, port), TcpHandler)
            except OSError as e:
                udp.server_close()
                last = e
                continue
            for server in (udp, tcp):
                thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                          daemon=True)
                thread.start()
                self._servers.append(server)
                self._threads.append(thread)
            return port
        raise RuntimeError(f"no free port for both UDP and TCP: {last}")

    def close(self):
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def black_hole(host="127.0.0.1"):
    """A UDP socket bound to a free port that never answers (and nothing on TCP there):
    returns (socket, port). Close the socket when done."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock, sock.getsockname()[1]

#!/usr/bin/python3
"""The reference side of samotop-auth's integration tests: dkimpy (Debian's python3-dkim,
run with Debian's /usr/bin/python3, which has it; python3-dnspython for DNS, python3-nacl
for ed25519, python3-authres for ARC signing).

    helper.py sign JSON          < message > signed message   (dkim.sign; options in JSON)
    helper.py verify PORT FILE... > JSON: per file, per DKIM-Signature, true/false
    helper.py arc-sign JSON      < message > message with a new ARC set on top
    helper.py arc-verify PORT FILE... > JSON: per file, "pass" | "fail" | "none"

DNS questions go to the name server on 127.0.0.1:PORT (the tests' dnsmasq); a name that
does not answer counts as absent.
"""
import json
import sys

import dkim
import dns.exception
import dns.message
import dns.query
import dns.rdatatype


def dnsfunc_for(port):
    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        try:
            answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=timeout)
        except dns.exception.Timeout:
            raise dkim.DnsTimeoutError(name)
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(list(rrset.items)[0].strings)
        return None

    return dnsfunc


def count_signatures(message):
    d = dkim.DKIM(message)
    return sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")


def main():
    cmd = sys.argv[1]
    if cmd == "sign":
        opts = json.loads(sys.argv[2])
        message = sys.stdin.buffer.read()
        with open(opts["key"], "rb") as f:
            key = f.read()
        headers = opts.get("headers")
        sig = dkim.sign(
            message,
            opts["selector"].encode(),
            opts["domain"].encode(),
            key,
            identity=opts["identity"].encode() if opts.get("identity") else None,
            canonicalize=(opts.get("hcanon", "relaxed").encode(), opts.get("bcanon", "simple").encode()),
            signature_algorithm=opts.get("alg", "rsa-sha256").encode(),
            include_headers=[h.encode() for h in headers] if headers else None,
            length=bool(opts.get("length")),
        )
        sys.stdout.buffer.write(sig + message)
    elif cmd == "verify":
        dnsfunc = dnsfunc_for(int(sys.argv[2]))
        out = []
        for path in sys.argv[3:]:
            with open(path, "rb") as f:
                message = f.read()
            results = []
            for idx in range(count_signatures(message)):
                d = dkim.DKIM(message, minkey=1024)
                try:
                    results.append(bool(d.verify(idx=idx, dnsfunc=dnsfunc)))
                except dkim.DKIMException:
                    results.append(False)
            out.append(results)
        print(json.dumps(out))
    elif cmd == "arc-sign":
        opts = json.loads(sys.argv[2])
        message = sys.stdin.buffer.read()
        with open(opts["key"], "rb") as f:
            key = f.read()
        headers = dkim.arc_sign(
            message,
            opts["selector"].encode(),
            opts["domain"].encode(),
            key,
            opts["srv_id"].encode(),
        )
        if not headers:
            sys.exit("arc_sign gave no ARC set")
        sys.stdout.buffer.write(b"".join(headers) + message)
    elif cmd == "arc-verify":
        dnsfunc = dnsfunc_for(int(sys.argv[2]))
        out = []
        for path in sys.argv[3:]:
            with open(path, "rb") as f:
                message = f.read()
            cv, _results, _comment = dkim.arc_verify(message, dnsfunc=dnsfunc)
            out.append(cv.decode() if cv else "none")
        print(json.dumps(out))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()

"""Who really sent it: DKIM, DMARC, ARC and SPF through the real binary (issue 14), against
real signers and a real DNS server.

* Keys come from `opendkim-genkey` (RSA 512/1024/2048) and dkimpy's `dknewkey` (ed25519);
  dnsmasq on loopback serves them (long records as several strings), the DMARC policies
  and the SPF records of `*.test`, and forwards one zone to a name server that never answers.
* Messages are signed by Debian's `dkimsign` (dkimpy 1.1.4) and OpenDKIM (`opendkim -t`,
  `opendkim-testmsg`), rsa-sha256 and ed25519-sha256, simple and relaxed; a throw-away Postfix
  relays through with OpenDKIM as its signing milter.
* samotop runs with `--dns 127.0.0.1:PORT --spf tag --dkim tag --dmarc enforce` into a
  Maildir with `--quarantine-folder .Junk`, listening for SMTP and LMTP; each stored message
  must start with Return-Path and our single `Authentication-Results: mx.test; spf=... ;
  spf=... smtp.helo=...; dkim=... header.d= header.s= header.b=...; dmarc=... header.from=
  ...; arc=none`, and our DKIM verdict must agree with Debian's `dkimverify` on every message.
* A forged verdict with our authserv-id arrives renamed; `p=reject` is refused with 550 5.7.1
  at the end of the data and nothing is stored (over LMTP: one 550 per recipient); a name
  server that never answers is tagged `temperror`, never refused; a 100 MB signed message
  keeps memory flat; Dovecot's Sieve files by our header.

The peers are started once per module (dnsmasq, samotop, Postfix, Dovecot) and stopped by PID.
Needs the Debian packages dnsmasq, opendkim, opendkim-tools, python3-dkim (+ dnspython, nacl),
postfix, dovecot-core, dovecot-lmtpd, dovecot-sieve (scripts/setup installs them), and root for
the throw-away Postfix.
"""

import os
import pathlib
import re
import shutil
import smtplib
import threading
import time
import uuid

import pytest

import authkit
from authkit import Dnsmasq, Key, Silent, count_signatures, dkimsign, dkimverify, fields
from authkit import opendkim_sign, opendkim_testmsg, results
from conftest import Raw, Server, free_port, wait_port, wait_until
from dovecot import Dovecot

NAME = "mx.test"
SPF_PASS = "v=spf1 ip4:127.0.0.1 -all"
DMARC = {
    "dkim.test": "v=DMARC1; p=none",
    "example.test": "v=DMARC1; p=reject",
    "strict.test": "v=DMARC1; p=reject; adkim=s; aspf=s",
    "parent.test": "v=DMARC1; p=none; sp=reject",
    "quar.test": "v=DMARC1; p=quarantine",
    "none.test": "v=DMARC1; p=none",
    "slowkey.test": "v=DMARC1; p=reject",
}
# Every key is published under each of these domains (not slowkey.test: its keys are
# asked of a name server that never answers).
SIGNING_DOMAINS = ["dkim.test", "example.test", "mail.strict.test"]
BODY = (b"Hello,\r\n\r\nthis is a test message.  With  two spaces \t\r\n"
        b".a line starting with a dot\r\n\r\n \r\n\t\r\n")


class World:
    """The module's peers: keys, dnsmasq, samotop (SMTP and LMTP)."""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("test_auth needs root (a throw-away Postfix instance)", pytrace=False)
    w = World()
    w.dir = tmp_path_factory.mktemp("auth")
    keys = w.dir / "keys"
    keys.mkdir()
    w.keys = {
        "r2048": authkit.rsa_key(keys, "r2048", 2048),
        "r1024": authkit.rsa_key(keys, "r1024", 1024),
        "r512": authkit.rsa_key(keys, "r512", 512),
        "ed": authkit.ed25519_key(keys, "ed"),
    }
    # A key whose record was revoked (RFC 6376 3.6.1: an empty p=).
    w.keys["rev"] = Key("rev", "rsa", w.keys["r2048"].pem, w.keys["r2048"].pem, "v=DKIM1; k=rsa; p=")
    txt = {}
    for key in w.keys.values():
        for domain in SIGNING_DOMAINS:
            txt[f"{key.selector}._domainkey.{domain}"] = [key.record]
    for domain, record in DMARC.items():
        txt[f"_dmarc.{domain}"] = [record]
    for domain in ("sender.test", "example.test", "client.test", "relay.test"):
        txt.setdefault(domain, []).append(SPF_PASS)
    w.silent = Silent()
    w.dns = Dnsmasq(w.dir, txt, forward={"_domainkey.slowkey.test": w.silent.port})
    w.maildir = w.dir / "Maildir"
    w.lmtp_port = free_port()
    w.mx = Server(
        ["--smtp", f"127.0.0.1:{free_port()}", "--lmtp", f"127.0.0.1:{w.lmtp_port}",
         "--name", NAME, "--dns", f"127.0.0.1:{w.dns.port}", "--spf", "tag", "--dkim", "tag",
         "--dmarc", "enforce", "--deliver", f"maildir:{w.maildir}", "--quarantine-folder", ".Junk",
         "--max-message-size", str(200 * 1024 * 1024), "--data-timeout", "600"],
        w.dir,
    )
    w.mx.port = int(w.mx.args[1].rsplit(":", 1)[1])
    wait_port(w.mx.port, w.mx.proc)
    wait_port(w.lmtp_port, w.mx.proc)
    yield w
    w.mx.stop()
    w.dns.stop()
    w.silent.close()


def message(subject, author="a@dkim.test", extra="", body=BODY):
    return (
        f"From: {author}\r\nTo: b@mx.test\r\nSubject: {subject}\r\n"
        f"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\n"
        f"{extra}\r\n"
    ).encode() + body


def subject():
    return "auth-" + uuid.uuid4().hex[:12]


def send(port, msg, sender="bounce@sender.test", rcpts=("b@mx.test",), helo="client.test",
         timeout=120):
    """One message over SMTP; returns (code, text) of the reply to the data. `timeout` bounds
    each call, and the whole of the data (Python's sendall)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as c:
        c.ehlo(helo)
        code, text = c.mail(sender)
        assert code == 250, (code, text)
        for r in rcpts:
            code, text = c.rcpt(r)
            assert code == 250, (code, text)
        code, text = c.data(msg)
        return code, text.decode()


def stored(maildir, subj):
    """(folder, bytes) of the stored message with this subject: "inbox" or "junk"; or None."""
    needle = f"\r\nSubject: {subj}\r\n".encode()
    for folder, d in (("inbox", maildir / "new"), ("junk", maildir / ".Junk" / "new")):
        if d.is_dir():
            for p in d.iterdir():
                data = p.read_bytes()
                if needle in data:
                    return folder, data
    return None


def ours(msg):
    """Our Authentication-Results, checked to be the one field right after Return-Path that
    claims our authserv-id: its results as [(method, result, props)]."""
    fs = fields(msg)
    assert fs[0][0] == "Return-Path", fs[:3]
    assert fs[1][0] == "Authentication-Results", fs[:3]
    assert fs[1][1].startswith(f" {NAME};\r\n\t"), fs[1]
    claiming = [f for f in fs if f[0].strip().lower() == "authentication-results"
                and results(f[1])[0].lower() == NAME]
    assert len(claiming) == 1, claiming
    assert fs[2][0] == "Received", fs[:3]
    return results(fs[1][1])[1]


def dkim_results(msg):
    return [(r, p) for m, r, p in ours(msg) if m == "dkim"]


def b_value(signed, index):
    """The b= of the index-th DKIM-Signature, white space removed."""
    sigs = [v for n, v in fields(signed) if n.lower() == "dkim-signature"]
    m = re.search(r"(?:^|;)\s*b=([^;]*)", sigs[index])
    return re.sub(r"\s", "", m.group(1))


# ---- one field: SPF (MAIL FROM and HELO), DKIM, DMARC, ARC --------------------------------


def test_one_field_carries_spf_dkim_dmarc_and_arc(world):
    subj = subject()
    signed = dkimsign(message(subj, "a@example.test"), world.keys["r2048"], "example.test")
    code, text = send(world.mx.port, signed)
    assert code == 250, text
    folder, msg = stored(world.maildir, subj)
    assert folder == "inbox"
    ar = ours(msg)
    assert [(m, r) for m, r, _ in ar] == [
        ("spf", "pass"), ("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass"), ("arc", "none")]
    assert ar[0][2] == {"smtp.mailfrom": "sender.test"}
    assert ar[1][2] == {"smtp.helo": "client.test"}
    dkim = ar[2][2]
    assert (dkim["header.d"], dkim["header.s"], dkim["header.a"]) == ("example.test", "r2048",
                                                                      "rsa-sha256")
    assert len(dkim["header.b"]) >= 8 and b_value(signed, 0).startswith(dkim["header.b"])
    assert ar[3][2] == {"policy.dmarc": "reject", "header.from": "example.test"}
    head = msg.split(b"\r\n\r\n", 1)[0].decode()
    assert head.split("\r\n")[1:4] == [
        f"Authentication-Results: {NAME};",
        "\tspf=pass smtp.mailfrom=sender.test;",
        "\tspf=pass smtp.helo=client.test;",
    ], head
    # Received-SPF stays, after our Received.
    names = [n for n, _ in fields(msg)]
    assert names.index("Received-SPF") > names.index("Received")
    assert dkimverify(msg, world.dns.port)


# ---- DKIM: real signers, dkimverify agrees ----------------------------------------------


def _sign(world, case, msg):
    k = world.keys
    d = world.dir
    signers = {
        "dkimsign-rsa-relaxed-simple": lambda m: dkimsign(m, k["r2048"], "dkim.test", "relaxed", "simple"),
        "dkimsign-rsa-simple-simple": lambda m: dkimsign(m, k["r2048"], "dkim.test", "simple", "simple"),
        "dkimsign-rsa-relaxed-relaxed": lambda m: dkimsign(m, k["r2048"], "dkim.test", "relaxed", "relaxed"),
        "dkimsign-rsa-simple-relaxed": lambda m: dkimsign(m, k["r2048"], "dkim.test", "simple", "relaxed"),
        "dkimsign-rsa1024": lambda m: dkimsign(m, k["r1024"], "dkim.test"),
        "dkimsign-ed-relaxed-relaxed": lambda m: dkimsign(m, k["ed"], "dkim.test", "relaxed", "relaxed"),
        "dkimsign-ed-simple-simple": lambda m: dkimsign(m, k["ed"], "dkim.test", "simple", "simple"),
        "opendkim-rsa-relaxed-relaxed": lambda m: opendkim_sign(m, k["r2048"], "dkim.test", "relaxed/relaxed", d),
        "opendkim-rsa-simple-simple": lambda m: opendkim_sign(m, k["r2048"], "dkim.test", "simple/simple", d),
        "opendkim-rsa-relaxed-simple": lambda m: opendkim_sign(m, k["r2048"], "dkim.test", "relaxed/simple", d),
        "opendkim-ed-relaxed-relaxed": lambda m: opendkim_sign(m, k["ed"], "dkim.test", "relaxed/relaxed", d),
        # OpenDKIM 2.11 signs ed25519 with simple header canonicalization wrongly (it hashes
        # "; b=" on the h= line, then folds b= onto a line of its own): invalid, for dkimpy
        # as for us (crates/samotop-auth/tests/dkim.rs pins it).
        "opendkim-ed-simple-simple": lambda m: opendkim_sign(m, k["ed"], "dkim.test", "simple/simple", d),
        "two-signatures": lambda m: opendkim_sign(dkimsign(m, k["r2048"], "dkim.test"), k["ed"],
                                                  "dkim.test", "relaxed/relaxed", d),
    }
    return signers[case](msg)


SIGNED = {
    "dkimsign-rsa-relaxed-simple": ["pass"],
    "dkimsign-rsa-simple-simple": ["pass"],
    "dkimsign-rsa-relaxed-relaxed": ["pass"],
    "dkimsign-rsa-simple-relaxed": ["pass"],
    "dkimsign-rsa1024": ["pass"],
    "dkimsign-ed-relaxed-relaxed": ["pass"],
    "dkimsign-ed-simple-simple": ["pass"],
    "opendkim-rsa-relaxed-relaxed": ["pass"],
    "opendkim-rsa-simple-simple": ["pass"],
    "opendkim-rsa-relaxed-simple": ["pass"],
    "opendkim-ed-relaxed-relaxed": ["pass"],
    "opendkim-ed-simple-simple": ["fail"],
    "two-signatures": ["pass", "pass"],
}


@pytest.mark.parametrize("case", sorted(SIGNED))
def test_real_signers_and_dkimverify_agree(world, case):
    subj = subject()
    signed = _sign(world, case, message(subj))
    n = count_signatures(signed)
    assert n == len(SIGNED[case])
    code, text = send(world.mx.port, signed)
    assert code == 250, text
    _, msg = stored(world.maildir, subj)
    got = dkim_results(msg)
    assert [r for r, _ in got] == SIGNED[case], got
    reference = [dkimverify(signed, world.dns.port, i) for i in range(n)]
    assert reference == [r == "pass" for r, _ in got], (reference, got)
    for i, (_, props) in enumerate(got):
        assert props["header.d"] == "dkim.test"
        assert b_value(signed, i).startswith(props["header.b"])


def _tampered(world, case, subj):
    k = world.keys
    msg = message(subj)
    if case == "body-changed":
        signed = dkimsign(msg, k["r2048"], "dkim.test")
        return signed.replace(b"test message", b"test massage"), "fail", False
    if case == "signed-header-changed":
        signed = dkimsign(msg, k["r2048"], "dkim.test")
        return signed.replace(f"Subject: {subj}".encode(), f"Subject: {subj} (edited)".encode()), "fail", False
    if case == "replayed-signature":
        other = dkimsign(message(subj + "-original", body=b"Another body.\r\n"), k["r2048"], "dkim.test")
        sig = other.split(b"\r\nFrom: ", 1)[0] + b"\r\n"
        return sig + msg, "fail", False
    if case == "revoked-key":
        return dkimsign(msg, k["rev"], "dkim.test"), "permerror", False
    if case == "unknown-selector":
        return dkimsign(msg, Key("nosuch", "rsa", k["r2048"].pem, k["r2048"].pem, ""), "dkim.test"), "permerror", False
    if case == "rsa-512-bit-key":
        # dkimverify refuses keys under 1024 bits too (its minkey); we say policy (RFC 8301 3.2).
        return dkimsign(msg, k["r512"], "dkim.test"), "policy", False
    if case == "rsa-sha1":
        # The one deliberate difference: dkimpy still passes rsa-sha1, RFC 8301 3.1 says it
        # MUST NOT be accepted: policy.
        return opendkim_testmsg(msg, k["r1024"], "dkim.test", world.dir), "policy", True
    raise ValueError(case)


@pytest.mark.parametrize("case", ["body-changed", "signed-header-changed", "replayed-signature",
                                  "revoked-key", "unknown-selector", "rsa-512-bit-key", "rsa-sha1"])
def test_tampered_messages_get_the_right_result(world, case):
    subj = subject()
    signed, expected, reference = _tampered(world, case, subj)
    assert count_signatures(signed) == 1
    code, text = send(world.mx.port, signed)
    assert code == 250, text  # dkim.test asks p=none: stored, tagged
    found = stored(world.maildir, subj) or stored(world.maildir, subj + " (edited)")
    got = dkim_results(found[1])
    assert [r for r, _ in got] == [expected], got
    assert dkimverify(signed, world.dns.port) is reference
    dmarc = [(r, p) for m, r, p in ours(found[1]) if m == "dmarc"]
    assert dmarc == [("fail", {"policy.dmarc": "none", "header.from": "dkim.test"})], dmarc


# ---- DMARC --------------------------------------------------------------------------------

# name: (From, signing domain or None, MAIL FROM, reply code, [(dmarc, header.from, policy)],
#        folder)
DMARC_CASES = {
    "relaxed-aligned-dkim": ("a@news.example.test", "example.test", "bounce@sender.test", 250,
                             [("pass", "news.example.test", "reject")], "inbox"),
    "aligned-by-spf-only": ("a@example.test", None, "bounce@example.test", 250,
                            [("pass", "example.test", "reject")], "inbox"),
    "unaligned-p-reject": ("a@example.test", "dkim.test", "bounce@sender.test", 550, None, None),
    "strict-unaligned": ("a@strict.test", "mail.strict.test", "bounce@sender.test", 550, None, None),
    "strict-aligned": ("a@mail.strict.test", "mail.strict.test", "bounce@sender.test", 250,
                       [("pass", "mail.strict.test", "reject")], "inbox"),
    "subdomain-policy-sp-reject": ("a@sub.parent.test", None, "bounce@sender.test", 550, None, None),
    "organizational-p-none": ("a@parent.test", None, "bounce@sender.test", 250,
                              [("fail", "parent.test", "none")], "inbox"),
    "p-quarantine-to-junk": ("a@quar.test", None, "bounce@sender.test", 250,
                             [("fail", "quar.test", "quarantine")], "junk"),
    "two-author-domains-one-fails-p-none": (
        "a@example.test, b@none.test", "example.test", "bounce@sender.test", 250,
        [("pass", "example.test", "reject"), ("fail", "none.test", "none")], "inbox"),
    "two-author-domains-one-fails-p-reject": (
        "a@dkim.test, b@example.test", "dkim.test", "bounce@sender.test", 550, None, None),
}


@pytest.mark.parametrize("case", sorted(DMARC_CASES))
def test_dmarc(world, case):
    author, signer, sender, want, dmarc, folder = DMARC_CASES[case]
    subj = subject()
    msg = message(subj, author)
    if signer:
        msg = dkimsign(msg, world.keys["r2048"], signer)
    code, text = send(world.mx.port, msg, sender=sender)
    assert code == want, text
    found = stored(world.maildir, subj)
    if want == 550:
        assert text.startswith("5.7.1 "), text
        assert found is None, "refused, yet stored"
        return
    assert found is not None
    assert found[0] == folder
    got = [(r, p.get("header.from"), p.get("policy.dmarc")) for m, r, p in ours(found[1]) if m == "dmarc"]
    assert got == dmarc, got


def test_p_reject_over_lmtp_is_one_550_per_recipient(world):
    subj = subject()
    msg = dkimsign(message(subj, "a@example.test"), world.keys["r2048"], "dkim.test")
    r = Raw(world.lmtp_port, timeout=60)
    try:
        assert r.cmd("LHLO client.test")[0] == 250
        assert r.cmd("MAIL FROM:<bounce@sender.test>")[0] == 250
        assert r.cmd("RCPT TO:<b@mx.test>")[0] == 250
        assert r.cmd("RCPT TO:<c@mx.test>")[0] == 250
        assert r.cmd("DATA")[0] == 354
        r.send(msg.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        replies = [r.reply(), r.reply()]
        assert [(code, t[0][:6]) for code, t in replies] == [(550, "5.7.1 "), (550, "5.7.1 ")], replies
        assert r.cmd("QUIT")[0] == 221
    finally:
        r.close()
    assert stored(world.maildir, subj) is None


def test_a_key_that_times_out_is_temperror_never_refused(world):
    """slowkey.test asks p=reject, but its key's zone never answers: the signature might have
    passed and aligned, so DMARC is temperror, and the message is stored (after the query
    bound, 2 s per try and one retry)."""
    subj = subject()
    msg = dkimsign(message(subj, "a@slowkey.test"), world.keys["r2048"], "slowkey.test")
    started = time.monotonic()
    code, text = send(world.mx.port, msg)
    elapsed = time.monotonic() - started
    print(f"\nslow key: {code} after {elapsed:.1f} s")
    assert code == 250, text
    got = [(m, r) for m, r, _ in ours(stored(world.maildir, subj)[1])]
    assert ("dkim", "temperror") in got and ("dmarc", "temperror") in got, got


def test_an_unreachable_name_server_is_tagged_temperror_never_refused(world, tmp_path):
    """Every look-up goes to a server that never answers, under --spf tag --dmarc enforce:
    MAIL and the data wait for the query bounds, then the message is stored, tagged."""
    silent = Silent()
    md = tmp_path / "Maildir"
    s = Server(["--name", NAME, "--dns", f"127.0.0.1:{silent.port}", "--spf", "tag",
                "--dkim", "tag", "--dmarc", "enforce", "--deliver", f"maildir:{md}"], tmp_path)
    try:
        subj = subject()
        msg = dkimsign(message(subj, "a@example.test"), world.keys["r2048"], "example.test")
        with smtplib.SMTP("127.0.0.1", s.port, timeout=120) as c:
            c.ehlo("client.test")
            t0 = time.monotonic()
            assert c.mail("bounce@example.test")[0] == 250
            t1 = time.monotonic()
            assert c.rcpt("b@mx.test")[0] == 250
            t2 = time.monotonic()
            code, text = c.data(msg)
            t3 = time.monotonic()
        print(f"\nunreachable DNS: MAIL {t1 - t0:.1f} s, end of data {t3 - t2:.1f} s")
        assert code == 250, text
        folder, data = stored(md, subj)
        assert folder == "inbox"
        got = [(m, r) for m, r, _ in ours(data)]
        assert got == [("spf", "temperror"), ("spf", "temperror"), ("dkim", "temperror"),
                       ("dmarc", "temperror"), ("arc", "none")], got
    finally:
        s.stop()
        silent.close()


# ---- our verdicts cannot be forged ----------------------------------------------------------


def test_forged_verdicts_arrive_renamed(world):
    subj = subject()
    forged = (
        f"Authentication-Results: {NAME}; dkim=pass header.d=example.test; dmarc=pass\r\n"
        "Authentication-Results: (looks innocent) \"MX.TEST\" 1; dmarc=pass\r\n"
        f"ARC-Authentication-Results: i=1; {NAME}; dmarc=pass\r\n"
        "Authentication-Results: other.example; spf=pass smtp.mailfrom=other.example\r\n"
    )
    signed = dkimsign(message(subj, extra=forged), world.keys["r2048"], "dkim.test")
    code, text = send(world.mx.port, signed)
    assert code == 250, text
    _, msg = stored(world.maildir, subj)
    assert [r for m, r, _ in ours(msg) if m == "dkim"] == ["pass"]
    names = [n for n, _ in fields(msg)]
    assert names.count("X-Forged-Authentication-Results") == 2, names
    assert names.count("X-Forged-ARC-Authentication-Results") == 1, names
    # Ours, and the other receiver's, which claims nothing of ours.
    ar = [results(v)[0] for n, v in fields(msg) if n == "Authentication-Results"]
    assert ar == [NAME, "other.example"], ar
    assert "ARC-Authentication-Results" not in names


# ---- a Postfix relaying through ----------------------------------------------------------


def test_postfix_with_opendkim_relays_through(world):
    base = pathlib.Path(world.dir) / "postfix"
    base.mkdir()
    milter = authkit.OpenDkimMilter(base, world.keys["r2048"], "example.test")
    relay = None
    try:
        relay = authkit.Postfix(world.mx.port, milter.port)
        subj = subject()
        code, text = send(relay.port, message(subj, "a@example.test"), sender="bounce@example.test",
                          helo="client.test")
        assert code == 250, text
        found = wait_until(lambda: stored(world.maildir, subj), timeout=60,
                           what=f"the relayed message (maillog: {relay.maillog[-2000:]})")
        msg = found[1]
        ar = ours(msg)
        assert [(m, r) for m, r, _ in ar] == [("spf", "pass"), ("spf", "pass"), ("dkim", "pass"),
                                              ("dmarc", "pass"), ("arc", "none")], ar
        assert ar[0][2] == {"smtp.mailfrom": "example.test"}
        assert ar[1][2] == {"smtp.helo": "relay.test"}
        assert ar[2][2]["header.d"] == "example.test"
        # Postfix's own Received comes after ours; dkimverify agrees on what arrived.
        assert [n for n, _ in fields(msg)].count("Received") >= 2
        assert dkimverify(msg, world.dns.port)
    finally:
        if relay:
            relay.close()
        milter.stop()


# ---- memory ------------------------------------------------------------------------------


def rss_anon_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


@pytest.mark.timeout(1500)
def test_a_100_mb_signed_message_keeps_memory_flat(world):
    """The debug binary on a shared machine takes minutes for 100 MB: a bound, not a
    measurement."""
    subj = subject()
    line = b"%08d The quick brown fox jumps over the lazy dog, again and again.  \r\n"
    block = b"".join(line % i for i in range(1000))
    body = block * (100 * 1024 * 1024 // len(block))
    signed = dkimsign(message(subj, "a@example.test", body=body), world.keys["r2048"],
                      "example.test", "relaxed", "simple")
    pid = world.mx.proc.pid
    assert send(world.mx.port, message(subject()))[0] == 250  # warm-up
    time.sleep(0.3)
    base = rss_anon_kib(pid)
    peak = [base]
    done = threading.Event()

    def sample():
        for _ in range(1200 * 20):  # bounded: 20 minutes at 50 ms
            if done.is_set():
                return
            peak[0] = max(peak[0], rss_anon_kib(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        code, text = send(world.mx.port, signed, timeout=1200)
    finally:
        done.set()
        sampler.join(timeout=10)
    assert code == 250, text
    growth = (peak[0] - base) / 1024
    print(f"\n100 MB signed: RssAnon {base / 1024:.1f} MiB -> peak {peak[0] / 1024:.1f} MiB "
          f"(growth {growth:.1f} MiB)")
    _, msg = stored(world.maildir, subj)
    assert [(m, r) for m, r, _ in ours(msg[:65536])][2:4] == [("dkim", "pass"), ("dmarc", "pass")]
    assert growth < 8, f"RssAnon grew by {growth:.1f} MiB"


# ---- Dovecot Sieve files by our header ---------------------------------------------------

SIEVE = b'require "fileinto";\nif header :contains "Authentication-Results" "dmarc=fail" {\n  fileinto "Junk";\n}\n'


def test_dovecot_sieve_files_by_our_header(world, tmp_path):
    sieve = pathlib.Path("/tmp") / f"sieve-{uuid.uuid4().hex[:8]}"
    sieve.mkdir()
    os.chmod(sieve, 0o777)
    (sieve / "junk.sieve").write_bytes(SIEVE)
    authkit.run(["sievec", str(sieve / "junk.sieve")])
    for p in sieve.iterdir():
        os.chmod(p, 0o644)
    config = (
        "protocol lmtp {\n  mail_plugins = $mail_plugins sieve\n}\n"
        # No personal scripts (the users have no home): only the global one, before them.
        f"plugin {{\n  sieve = file:{sieve}/users/%u;active={sieve}/users/%u.sieve\n"
        f"  sieve_before = {sieve}/junk.sieve\n}}\n"
        "lda_mailbox_autocreate = yes\n"
    )
    dc = Dovecot(users=["alice@example.org"], extra_config=config)
    s = None
    try:
        s = Server(["--name", NAME, "--dns", f"127.0.0.1:{world.dns.port}", "--spf", "tag",
                    "--dkim", "tag", "--dmarc", "enforce", "--deliver", f"lmtp:unix:{dc.socket}"],
                   tmp_path)
        good, bad = subject(), subject()
        signed = dkimsign(message(good, "a@example.test"), world.keys["r2048"], "example.test")
        assert send(s.port, signed, rcpts=("alice@example.org",))[0] == 250
        # none.test asks p=none: a DMARC fail is delivered, tagged; Sieve files it.
        assert send(s.port, message(bad, "a@none.test"), rcpts=("alice@example.org",))[0] == 250
        inbox = [m["hdr.subject"] for m in dc.fetch("alice@example.org", "hdr.subject", ("mailbox", "INBOX"))]
        junk = [m["hdr.subject"] for m in dc.fetch("alice@example.org", "hdr.subject", ("mailbox", "Junk"))]
        assert (inbox, junk) == ([good], [bad]), dc.log
        head = dc.fetch("alice@example.org", "hdr", ("mailbox", "Junk"))[0]["hdr"]
        ar = [results(v) for n, v in fields(head.encode()) if n == "Authentication-Results"]
        assert ar[0][0] == NAME and ("dmarc", "fail") in [(m, r) for m, r, _ in ar[0][1]], head
    finally:
        if s:
            s.stop()
        dc.close()
        shutil.rmtree(sieve, ignore_errors=True)


# ---- the flags ----------------------------------------------------------------------------


def test_dkim_and_dmarc_off_leave_received_spf_alone(world, tmp_path):
    """--dkim off --dmarc off: no end-of-data check, no Authentication-Results; SPF still
    writes Received-SPF at MAIL."""
    md = tmp_path / "Maildir"
    s = Server(["--name", NAME, "--dns", f"127.0.0.1:{world.dns.port}", "--spf", "tag",
                "--dkim", "off", "--dmarc", "off", "--deliver", f"maildir:{md}"], tmp_path)
    try:
        subj = subject()
        assert send(s.port, dkimsign(message(subj), world.keys["r2048"], "dkim.test"))[0] == 250
        names = [n for n, _ in fields(stored(md, subj)[1])]
        assert names[:3] == ["Return-Path", "Received", "Received-SPF"], names
        assert "Authentication-Results" not in names
    finally:
        s.stop()


def test_dkim_off_reports_dmarc_without_dkim_results(world, tmp_path):
    md = tmp_path / "Maildir"
    s = Server(["--name", NAME, "--dns", f"127.0.0.1:{world.dns.port}", "--dkim", "off",
                "--dmarc", "tag", "--deliver", f"maildir:{md}"], tmp_path)
    try:
        subj = subject()
        # DMARC still verifies the signature (it needs it), but no dkim= is reported.
        assert send(s.port, dkimsign(message(subj, "a@example.test"), world.keys["r2048"],
                                     "example.test"))[0] == 250
        got = [(m, r) for m, r, _ in ours(stored(md, subj)[1])]
        assert got == [("spf", "pass"), ("spf", "pass"), ("dmarc", "pass"), ("arc", "none")], got
    finally:
        s.stop()


def test_the_defaults_tag_spf_dkim_and_dmarc_and_refuse_nothing(world, tmp_path):
    """No --spf, --dkim or --dmarc: all three are `tag`. A valid signature passes; a forged
    From under p=reject is stored with dmarc=fail (tag never refuses)."""
    md = tmp_path / "Maildir"
    s = Server(["--name", NAME, "--dns", f"127.0.0.1:{world.dns.port}", "--deliver",
                f"maildir:{md}"], tmp_path, binary_defaults=True)
    try:
        good, forged = subject(), subject()
        assert send(s.port, dkimsign(message(good, "a@example.test"), world.keys["r2048"],
                                     "example.test"))[0] == 250
        got = [(m, r) for m, r, _ in ours(stored(md, good)[1])]
        assert got == [("spf", "pass"), ("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass"),
                       ("arc", "none")], got
        # Signed by another domain: DKIM passes, DMARC is unaligned under p=reject.
        code, text = send(s.port, dkimsign(message(forged, "a@example.test"),
                                           world.keys["r2048"], "dkim.test"))
        assert code == 250, text
        folder, msg = stored(md, forged)
        assert folder == "inbox"
        got = [(m, r, p.get("policy.dmarc")) for m, r, p in ours(msg) if m == "dmarc"]
        assert got == [("dmarc", "fail", "reject")], got
        assert "Received-SPF" in [n for n, _ in fields(msg)]
    finally:
        s.stop()


@pytest.mark.parametrize("flag", [["--dkim", "enforce"], ["--dmarc", "maybe"]])
def test_an_unknown_policy_is_refused_at_start(tmp_path, flag):
    s = Server(["--deliver", "null", *flag], tmp_path, wait=False)
    assert s.proc.wait(timeout=30) == 2
    s.stop()
    assert f"{flag[0]}: unknown" in s.log, s.log


@pytest.mark.parametrize("value,code", [("enforce", 0), ("maybe", 2)])
def test_check_config_checks_the_policies_from_a_config_file(tmp_path, value, code):
    """--config keys are the long flag names: `dmarc = "..."` is checked by --check-config
    with the same parser as the flag, and the shared resolver is built (no query is sent)."""
    import subprocess

    from conftest import BIN

    cfg = tmp_path / "samotop.toml"
    cfg.write_text(f'dkim = "tag"\ndmarc = "{value}"\ndns = "127.0.0.1:9"\n')
    r = subprocess.run([BIN, "--config", str(cfg), "--check-config", "--deliver", "null"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == code, r.stderr
    assert f'dmarc = "{value}"  # {cfg}:2' in r.stdout, r.stdout
    if code:
        assert '--dmarc: unknown dmarc policy "maybe"' in r.stderr, r.stderr
    else:
        assert "the configuration is good" in r.stderr, r.stderr

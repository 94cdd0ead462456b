"""Encryption at rest (issue #17): the real binary with --encrypt-to / --encrypt-map stores
S/MIME messages that real decrypters read back byte for byte: `openssl cms -decrypt` for
every key type, `openssl smime -decrypt` for RSA recipients, and two readers independent of
OpenSSL's CMS code: GnuPG's gpgsm (RSA; Debian 12's gpgsm 2.2 has no CMS ECDH) and
smime_reader.py (asn1crypto + Python's cryptography, every key type). Dovecot lists the
encrypted Maildir by its clear header fields over IMAP."""

import base64
import datetime
import imaplib
import os
import pathlib
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import smime_reader  # noqa: E402
from conftest import ROOT, Raw, wait_until  # noqa: E402
from dovecot import Dovecot, _mail_owner  # noqa: E402

DATA = ROOT / "crates" / "samotop-smime" / "tests" / "data"
KEYS = ("rsa2048", "rsa4096", "p256", "p384")


def pem(name):
    return str(DATA / f"{name}.pem")


def key(name):
    return (DATA / f"{name}.key").read_bytes()


def maildir_files(d, sub="new"):
    p = pathlib.Path(d) / sub
    return sorted(p.iterdir()) if p.exists() else []


def wait_files(d, n):
    return wait_until(lambda: len(maildir_files(d)) >= n and maildir_files(d), what=f"{n} files in {d}/new")


def split(message):
    head, sep, body = message.partition(b"\r\n\r\n")
    assert sep, message[:200]
    return head.decode("utf-8", "replace"), body


def der_of(message):
    _, body = split(message)
    return base64.b64decode(body)


def openssl(tool, message, name):
    """openssl cms|smime -decrypt of a stored message, read as the S/MIME message it is."""
    r = subprocess.run(
        ["openssl", tool, "-decrypt", "-binary", "-inform", "SMIME", "-inkey", str(DATA / f"{name}.key")],
        input=message, capture_output=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def after_trace(plain):
    """The message after our trace fields (Received:, Received-SPF, Authentication-Results and
    their folded lines)."""
    lines = plain.split(b"\r\n")
    i = 0
    while i < len(lines) and (lines[i].startswith((b"Received:", b"Received-SPF:", b"Authentication-Results:"))
                              or lines[i].startswith(b"\t")):
        i += 1
    return b"\r\n".join(lines[i:])


def start(samotop, tmp_path, *flags):
    md = tmp_path / "maildir"
    s = samotop("--deliver", f"maildir:{md}", "--spf", "off", "--max-message-size", str(200 * 1024 * 1024), *flags)
    return s, md


def send(port, body, rcpts=("bob@example.org",), sender="alice@example.com", options=()):
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as c:
        c.ehlo("client.test")
        return c.sendmail(sender, list(rcpts), body, mail_options=list(options))


MESSAGE = (
    b"From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\nSubject: the plan\r\n"
    b"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <plan-1@example.com>\r\n"
    b"X-Secret: launch\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\nThe launch codes are 0000. \xc5\xbelu\xc5\xa5ou\xc4\x8dk\xc3\xbd\r\n"
)


@pytest.mark.parametrize("name", KEYS)
def test_every_key_type_decrypts_with_openssl_and_a_second_reader(samotop, tmp_path, name):
    s, md = start(samotop, tmp_path, "--encrypt-to", pem(name))
    send(s.port, MESSAGE, options=["BODY=8BITMIME"])
    (f,) = wait_files(md, 1)
    stored = f.read_bytes()
    head, body = split(stored)
    assert head.startswith("Return-Path: <alice@example.com>\r\n") and "\r\nReceived: from client.test" in head
    for clear in ("From: Alice", "To: Bob", "Subject: the plan", "Date: Thu", "Message-ID: <plan-1@"):
        assert clear in head, head
    assert "X-Secret" not in head and "text/plain" not in head
    assert "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m" in head
    assert b"launch" not in stored and stored.isascii()
    assert all(len(line) <= 76 for line in body.split(b"\r\n")), "76-column base64"
    assert after_trace(openssl("cms", stored, name)) == MESSAGE
    assert after_trace(smime_reader.decrypt_message(stored, key(name))) == MESSAGE
    if name.startswith("rsa"):
        assert after_trace(openssl("smime", stored, name)) == MESSAGE


def test_several_recipients_all_read_it(samotop, tmp_path):
    s, md = start(samotop, tmp_path, *sum((["--encrypt-to", pem(n)] for n in KEYS), []))
    send(s.port, MESSAGE, rcpts=("a@example.org", "b@example.org"))
    (f,) = wait_files(md, 1)
    stored = f.read_bytes()
    for name in KEYS:
        assert after_trace(openssl("cms", stored, name)) == MESSAGE, name
        assert after_trace(smime_reader.decrypt_message(stored, key(name))) == MESSAGE, name


def test_rsa_only_messages_also_decrypt_with_gpgsm(samotop, tmp_path):
    s, md = start(samotop, tmp_path, "--encrypt-to", pem("rsa2048"), "--encrypt-to", pem("rsa4096"))
    send(s.port, MESSAGE)
    (f,) = wait_files(md, 1)
    p7m = tmp_path / "m.p7m"
    p7m.write_bytes(der_of(f.read_bytes()))
    for name in ("rsa2048", "rsa4096"):  # each key alone, in a GnuPG home of its own
        assert after_trace(gpgsm_decrypt(tmp_path, p7m, name)) == MESSAGE, name


def gpgsm_decrypt(tmp_path, p7m, name):
    home = pathlib.Path(tempfile.mkdtemp(prefix="gpgsm-", dir="/tmp"))
    env = dict(os.environ, GNUPGHOME=str(home))
    os.chmod(home, 0o700)
    (home / "gpgsm.conf").write_text("disable-crl-checks\n")
    (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
    gpg = ["gpgsm", "--batch", "--pinentry-mode", "loopback", "--passphrase-fd", "0"]
    try:
        p12 = tmp_path / f"{name}.p12"
        # gpgsm 2.2 reads only the old PKCS#12 encryption.
        subprocess.run(["openssl", "pkcs12", "-export", "-in", pem(name), "-inkey", str(DATA / f"{name}.key"),
                        "-out", str(p12), "-passout", "pass:x", "-keypbe", "PBE-SHA1-3DES",
                        "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1"], check=True, timeout=60)
        # gpgsm exits 2 once it logged any error (an issuer it cannot check, an agent slow to
        # start), also when the key was imported: what counts is that the secret key is there.
        for _ in range(3):
            imported = subprocess.run(gpg + ["--import", str(p12)], input=b"x\n", env=env,
                                      capture_output=True, timeout=60)
            listed = subprocess.run(["gpgsm", "--batch", "--list-secret-keys"], env=env,
                                    capture_output=True, timeout=60)
            if listed.stdout.strip():
                break
            time.sleep(1)
        else:
            pytest.fail(f"gpgsm did not import {p12}: {imported.stderr.decode()}")
        # gpg-agent, loaded by a busy machine, once answered "No secret key" for a key it had
        # just listed: a fresh agent gets three tries before the failure counts.
        for _ in range(3):
            r = subprocess.run(gpg + ["-v", "--decrypt", str(p7m)], input=b"x\n", env=env,
                               capture_output=True, timeout=60)
            err = r.stderr.decode()
            if "decryption failed" not in err:
                break
            subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True, timeout=30)
            time.sleep(1)
        # gpgsm exits 2 once it logged any error, also "failed to find the certificate" for
        # the other recipient's RecipientInfo, even when it then decrypted with this key.
        assert "decryption failed" not in err and "AES256.CBC" in err, err
        assert r.returncode == 0 or "failed to find the certificate" in err, err
        return r.stdout
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True, timeout=30)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("name", KEYS)
def test_binary_and_empty_messages_round_trip(samotop, tmp_path, name):
    s, md = start(samotop, tmp_path, "--encrypt-to", pem(name))
    binary = b"Subject: bin\r\nContent-Type: application/octet-stream\r\n\r\n" + bytes(range(256)) * 400
    c = Raw(s.port)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@example.com> BODY=BINARYMIME")[0] == 250
    assert c.cmd("RCPT TO:<b@example.org>")[0] == 250
    c.send(b"BDAT %d LAST\r\n" % len(binary) + binary)
    assert c.reply()[0] == 250
    assert c.cmd("MAIL FROM:<a@example.com>")[0] == 250
    assert c.cmd("RCPT TO:<b@example.org>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(b".\r\n")  # zero bytes of message
    assert c.reply()[0] == 250
    c.close()
    files = wait_files(md, 2)
    got = sorted(after_trace(openssl("cms", f.read_bytes(), name)) for f in files)
    assert got == sorted([binary, b""])
    for f in files:
        assert after_trace(smime_reader.decrypt_message(f.read_bytes(), key(name))) in (binary, b"")


def test_100_mb_streams_in_bounded_memory(samotop, tmp_path):
    s, md = start(samotop, tmp_path, "--encrypt-to", pem("rsa2048"))
    before = s.rss_kib()
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
    body = b"Subject: big\r\n\r\n" + line * (100 * 1024 * 1024 // len(line))
    send(s.port, body)
    (f,) = wait_files(md, 1)
    with open(f"/proc/{s.proc.pid}/status") as st:
        hwm = next(int(l.split()[1]) for l in st if l.startswith("VmHWM:"))
    assert hwm - before < 8 * 1024, f"peak RSS grew {hwm - before} KiB"
    assert after_trace(openssl("cms", f.read_bytes(), "rsa2048")) == body


def test_per_recipient_keys_and_missing_policy(samotop, tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(pem("rsa2048"), certs / "alice@example.org.pem")
    s, md = start(samotop, tmp_path, "--encrypt-map", str(certs), "--encrypt-map", f"carol@example.org={pem('p384')}")
    c = Raw(s.port)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<x@example.com>")
    code, text = c.cmd("RCPT TO:<bob@example.org>")
    assert (code, text[0][:5]) == (550, "5.7.1"), text
    assert c.cmd("RCPT TO:<alice@example.org>")[0] == 250
    assert c.cmd("RCPT TO:<carol@example.org>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    assert c.reply()[0] == 250
    c.close()
    files = wait_files(md, 2)
    readers = {}
    for f in files:
        for name in ("rsa2048", "p384"):
            try:
                plain = smime_reader.decrypt_message(f.read_bytes(), key(name))
            except smime_reader.NoKey:
                continue
            readers.setdefault(f.name, []).append(name)
            assert after_trace(plain) == MESSAGE
    assert sorted(sum(readers.values(), [])) == ["p384", "rsa2048"], readers  # one reader per copy

    # SIGHUP reloads the directory: bob gets a certificate.
    shutil.copy(pem("p256"), certs / "bob@example.org.pem")
    s.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "encryption certificates reloaded" in s.log, what="reload")
    send(s.port, MESSAGE, rcpts=("bob@example.org",))
    files = wait_files(md, 3)
    newest = max(files, key=lambda p: p.stat().st_mtime_ns)
    assert after_trace(openssl("cms", newest.read_bytes(), "p256")) == MESSAGE


def test_missing_deliver_stores_that_copy_in_clear(samotop, tmp_path):
    s, md = start(samotop, tmp_path, "--encrypt-map", f"alice@example.org={pem('rsa2048')}",
                  "--encrypt-missing", "deliver")
    send(s.port, MESSAGE, rcpts=("bob@example.org",))
    (f,) = wait_files(md, 1)
    assert f.read_bytes().endswith(MESSAGE)


def test_encrypt_headers_all_hides_the_metadata(samotop, tmp_path):
    s, md = start(samotop, tmp_path, "--encrypt-to", pem("p256"), "--encrypt-headers", "all")
    send(s.port, MESSAGE)
    (f,) = wait_files(md, 1)
    stored = f.read_bytes()
    head, _ = split(stored)
    assert "Subject: Encrypted message" in head and "the plan" not in head
    assert "From: Alice" in head and "Date: Thu" in head and "Message-ID" not in head
    assert "Received:" not in head.split("\r\n", 1)[1]  # only Return-Path before From
    assert after_trace(openssl("cms", stored, "p256")) == MESSAGE


def expired_certificate(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired")])
    then = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
            .serial_number(1).not_valid_before(then).not_valid_after(then + datetime.timedelta(days=30))
            .sign(k, hashes.SHA256()))
    p = tmp_path / "expired.pem"
    p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return p


@pytest.mark.parametrize("bad,why", [
    ("expired", "expired at"),
    ("signonly", "keyEncipherment"),
    ("tlsonly", "emailProtection"),
    ("withkey", "private key"),
    ("p521", "P-256 and P-384"),
])
def test_bad_certificates_stop_the_start_naming_the_file(samotop, tmp_path, bad, why):
    path = expired_certificate(tmp_path) if bad == "expired" else DATA / f"{bad}.pem"
    s = samotop("--deliver", f"maildir:{tmp_path / 'md'}", "--encrypt-to", str(path), wait=False)
    assert s.proc.wait(timeout=30) != 0
    assert str(path) in s.log and why in s.log, s.log


def test_a_backend_failure_is_451_with_nothing_in_clear(samotop, tmp_path):
    s, md = start(samotop, tmp_path, "--encrypt-to", pem("rsa2048"))
    shutil.rmtree(md / "tmp")
    (md / "tmp").write_text("not a directory")  # the Maildir cannot store anything now
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        c.mail("a@example.com")
        c.rcpt("b@example.org")
        code, _ = c.data(MESSAGE)
    assert code == 451
    assert maildir_files(md) == []
    for root, _, files in os.walk(tmp_path):
        for name in files:
            assert b"launch" not in (pathlib.Path(root) / name).read_bytes(), name


def test_the_server_never_holds_a_private_key(samotop, tmp_path):
    cert = tmp_path / "owner.pem"
    shutil.copy(pem("rsa2048"), cert)
    s, md = start(samotop, tmp_path, "--encrypt-to", str(cert))
    send(s.port, MESSAGE)
    wait_files(md, 1)
    s.stop()
    secret = b"".join(key("rsa2048").split(b"\n")[1:-2])[:64]  # a slice of the key's base64
    for root, _, files in os.walk(tmp_path):
        for name in files:
            data = (pathlib.Path(root) / name).read_bytes()
            assert b"PRIVATE KEY" not in data and secret not in data, name


def test_dovecot_lists_the_encrypted_maildir_over_imap(samotop, tmp_path):
    s, md = start(samotop, tmp_path, "--encrypt-to", pem("rsa2048"))
    for i in range(3):
        send(s.port, MESSAGE.replace(b"the plan", b"plan %d" % i).replace(b"plan-1@", b"plan-%d@" % i))
    wait_files(md, 3)
    work = pathlib.Path(tempfile.mkdtemp(prefix="imap-", dir="/tmp"))
    dc = None
    try:
        os.chmod(work, 0o755)
        copy = work / "Maildir"
        shutil.copytree(md, copy)
        uid, gid, _ = _mail_owner()
        for root, dirs, files in os.walk(copy):
            for n in dirs + files:
                os.lchown(os.path.join(root, n), uid, gid)
        os.chown(copy, uid, gid)
        from conftest import free_port

        port = free_port()
        dc = Dovecot(users=["test"], maildir=copy, extra_config=(
            "protocols = imap lmtp\ndisable_plaintext_auth = no\nauth_mechanisms = plain\n"
            "default_login_user = nobody\n"  # imap-login refuses to run as root
            f"service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n"
        ))
        wait_until(lambda: _connects(port), what="Dovecot IMAP")
        imap = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        imap.login("test", "x")
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) == 3
        typ, data = imap.fetch("1:3", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM MESSAGE-ID)] BODYSTRUCTURE)")
        assert typ == "OK"
        text = b" ".join(x[1] if isinstance(x, tuple) else x for x in data).decode()
        for i in range(3):
            assert f"Subject: plan {i}" in text and f"<plan-{i}@example.com>" in text
        assert text.count('"application" "pkcs7-mime"') == 3, text
        typ, data = imap.search(None, "SUBJECT", '"plan 2"')
        assert typ == "OK" and len(data[0].split()) == 1, data
        typ, hit = imap.fetch(data[0].split()[0], "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"Subject: plan 2" in hit[0][1]
        imap.logout()
    finally:
        if dc is not None:
            dc.close()
        shutil.rmtree(work, ignore_errors=True)


def _connects(port):
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# -- every backend gets ciphertext --------------------------------------------------------------


def test_a_webhook_receives_ciphertext(samotop, tmp_path):
    import http.server
    import threading

    posts = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            posts.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s = samotop("--deliver", f"http://127.0.0.1:{server.server_address[1]}/in", "--spf", "off",
                    "--encrypt-to", pem("p256"))
        send(s.port, MESSAGE, options=["BODY=8BITMIME"])
        (body,) = posts
        assert b"launch" not in body and b"smime-type=enveloped-data" in body
        assert after_trace(openssl("cms", body, "p256")) == MESSAGE
    finally:
        server.shutdown()
        server.server_close()


def test_a_command_reads_ciphertext(samotop, tmp_path):
    out = tmp_path / "got.eml"
    s = samotop("--deliver", f"exec:/bin/sh -c 'cat > {out}'", "--spf", "off", "--encrypt-to", pem("rsa2048"))
    send(s.port, MESSAGE, options=["BODY=8BITMIME"])
    stored = out.read_bytes()
    assert b"launch" not in stored
    assert after_trace(openssl("cms", stored, "rsa2048")) == MESSAGE


def test_dovecot_over_lmtp_stores_ciphertext(samotop, tmp_path):
    dc = Dovecot(users=["bob@example.org"])
    try:
        s = samotop("--deliver", f"lmtp:unix:{dc.socket}", "--spf", "off", "--encrypt-to", pem("rsa2048"))
        send(s.port, MESSAGE, options=["BODY=8BITMIME"])
        wait_until(lambda: len(dc.messages("bob@example.org")) == 1, what="Dovecot stored it")
        (stored,) = dc.messages("bob@example.org")
        assert b"launch" not in stored and b"Subject: the plan" in stored
        assert after_trace(openssl("cms", stored, "rsa2048")) == MESSAGE
    finally:
        dc.stop()


def test_the_inbox_lists_encrypted_mail_by_its_clear_fields(samotop, tmp_path):
    import json
    import urllib.request

    from conftest import free_port

    http_port = free_port()
    s = samotop("--deliver", f"sqlite:{tmp_path / 'inbox.db'}", "--http", f"127.0.0.1:{http_port}",
                "--spf", "off", "--encrypt-to", pem("p384"))
    send(s.port, MESSAGE, options=["BODY=8BITMIME"])

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=30) as r:
            return r.read()

    # Listed at once, its fields once the indexer parsed it (lazily, after the commit).
    page = wait_until(lambda: [m for m in json.loads(get("/api/v1/messages"))["messages"] if m["Subject"]],
                      what="the message listed and parsed")
    assert page[0]["Subject"] == "the plan"
    raw = get(f"/api/v1/message/{page[0]['ID']}/raw")
    assert b"launch" not in raw
    assert after_trace(openssl("cms", raw, "p384")) == MESSAGE
    assert json.loads(get("/api/v1/search?query=launch"))["messages"] == [], "the body is not indexed"
    shown = json.loads(get(f"/api/v1/message/{page[0]['ID']}"))
    assert [a["FileName"] for a in shown["Attachments"]] == ["smime.p7m"], shown["Attachments"]


def test_sighup_reloads_encrypt_to_and_a_bad_file_keeps_the_old_keys(samotop, tmp_path):
    owner = tmp_path / "owner.pem"
    shutil.copy(pem("rsa2048"), owner)
    s, md = start(samotop, tmp_path, "--encrypt-to", str(owner))
    send(s.port, MESSAGE)
    wait_files(md, 1)

    def newest():
        return max(maildir_files(md), key=lambda p: p.stat().st_mtime_ns).read_bytes()

    def cannot(message, name):
        r = subprocess.run(["openssl", "cms", "-decrypt", "-inform", "SMIME", "-inkey", str(DATA / f"{name}.key")],
                           input=message, capture_output=True, timeout=60)
        return r.returncode != 0

    assert after_trace(openssl("cms", newest(), "rsa2048")) == MESSAGE
    # A new certificate in the same file: the next message is for it only.
    shutil.copy(pem("p384"), owner)
    s.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: s.log.count("encryption certificates reloaded") == 1, what="reload")
    send(s.port, MESSAGE)
    wait_files(md, 2)
    assert after_trace(openssl("cms", newest(), "p384")) == MESSAGE
    assert cannot(newest(), "rsa2048")
    # A broken file: the reload fails, says so, and the certificates in force stay.
    owner.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    s.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "keeping the certificates in force" in s.log or "reload failed" in s.log,
               what="the failed reload logged")
    send(s.port, MESSAGE)
    wait_files(md, 3)
    assert after_trace(openssl("cms", newest(), "p384")) == MESSAGE
    assert s.alive()

"""TLS (issue 5): STARTTLS, implicit TLS, key formats, refused versions, the STARTTLS injection
defence (CVE-2011-0411), failed handshakes, --require-tls, --tls-self-signed, the Received
header, bad certificate files at start-up, and reload on SIGHUP.

Certificates are made with `openssl req -x509` in pytest's tmp dirs. Real clients: Python's
smtplib and ssl, `openssl s_client -starttls smtp`, `swaks --tls`.
"""

import hashlib
import pathlib
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import warnings

import pytest

from conftest import BIN, Raw, free_port, wait_port

NAME = "mx.test"
MESSAGE = b"Subject: tls test\r\n\r\nhello over TLS\r\n"

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
needs_swaks = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")

KEYS = {
    # kind: (openssl req -newkey arguments, conversion of the PKCS#8 key or None, PEM header)
    "rsa-pkcs8": (["-newkey", "rsa:2048"], None, "BEGIN PRIVATE KEY"),
    "rsa-pkcs1": (["-newkey", "rsa:2048"], ["pkey", "-traditional"], "BEGIN RSA PRIVATE KEY"),
    "ec-p256-pkcs8": (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], None, "BEGIN PRIVATE KEY"),
    "ec-p256-sec1": (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], ["ec"], "BEGIN EC PRIVATE KEY"),
    "ed25519": (["-newkey", "ed25519"], None, "BEGIN PRIVATE KEY"),
}


def make_cert(directory, kind="ec-p256-pkcs8", name=NAME, tag="server"):
    """A self-signed certificate for `name` and its key; returns (cert_path, key_path)."""
    newkey, convert, header = KEYS[kind]
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{tag}.crt", directory / f"{tag}.key"
    subprocess.run(
        ["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    if convert:
        converted = directory / f"{tag}.conv.key"
        subprocess.run(["openssl", *convert, "-in", str(key), "-out", str(converted)],
                       check=True, capture_output=True, timeout=60)
        converted.replace(key)
    assert header in key.read_text(), (kind, key.read_text()[:40])
    return cert, key


def pem_fingerprint(cert_path):
    der = ssl.PEM_cert_to_DER_cert(pathlib.Path(cert_path).read_text())
    return hashlib.sha256(der).hexdigest()


def client_context(cafile=None, minimum=None, maximum=None):
    """Trusts `cafile` (checking the host name) or, without it, anything."""
    if cafile is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=str(cafile))
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def tls_server(samotop, cert, key, *extra):
    return samotop("--tls-cert", str(cert), "--tls-key", str(key), "--name", NAME,
                   "--deliver", "null", *extra)


def wait_log(server, text, count=1, timeout=15.0):
    """Waits (bounded) until `text` occurs `count` times in the server log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.log.count(text) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"log never said {text!r} ({count}x):\n{server.log}")


def starttls_raw(port, ctx=None, ehlo=True):
    """A Raw client that did EHLO and STARTTLS; returns (raw_over_tls, ssl_socket)."""
    raw = Raw(port)
    if ehlo:
        code, lines = raw.cmd("EHLO client.test")
        assert code == 250 and "STARTTLS" in lines, lines
    code, lines = raw.cmd("STARTTLS")
    assert code == 220 and lines[0].startswith("2.0.0"), (code, lines)
    assert raw.buf == b"", raw.buf
    tls = (ctx or client_context()).wrap_socket(raw.sock, server_hostname=NAME)
    return Raw(None, sock=tls, greet=False), tls


def smtplib_starttls(port, ctx, body=MESSAGE):
    """Sends one message with smtplib over STARTTLS; returns (final reply, peer cert DER,
    TLS version)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.has_extn("starttls"), c.esmtp_features
        code, msg = c.starttls(context=ctx)
        assert code == 220, (code, msg)
        c.ehlo("client.test")
        assert not c.has_extn("starttls"), c.esmtp_features
        der = c.sock.getpeercert(binary_form=True)
        version = c.sock.version()
        assert c.mail("a@example.com")[0] == 250
        assert c.rcpt("b@example.org")[0] == 250
        return c.data(body), der, version


# --- key formats, real clients ----------------------------------------------------------------


@needs_openssl
@pytest.mark.parametrize("kind", sorted(KEYS))
def test_smtplib_starttls_with_each_key_format(samotop, tmp_path, kind):
    cert, key = make_cert(tmp_path, kind)
    server = tls_server(samotop, cert, key)
    (code, msg), der, _ = smtplib_starttls(server.port, client_context(cafile=cert))
    assert code == 250, (code, msg)
    assert hashlib.sha256(der).hexdigest() == pem_fingerprint(cert)


@needs_openssl
def test_openssl_s_client_starttls_sends_a_message(samotop, tmp_path):
    cert, key = make_cert(tmp_path, "rsa-pkcs8")
    server = samotop("--tls-cert", str(cert), "--tls-key", str(key), "--name", NAME,
                     "--deliver", "stdout")
    script = (
        b"EHLO client.test\r\n"
        b"MAIL FROM:<a@example.com>\r\n"
        b"RCPT TO:<b@example.org>\r\n"
        b"DATA\r\n" + MESSAGE + b".\r\n"
        b"QUIT\r\n"
    )
    done = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{server.port}",
         "-CAfile", str(cert), "-verify_hostname", NAME, "-verify_return_error",
         "-quiet", "-ign_eof", "-nocommands"],
        input=script, capture_output=True, timeout=60,
    )
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, (out, done.stderr.decode(errors="replace"))
    assert "STARTTLS" not in out, out  # the EHLO after TLS no longer offers it
    assert "250 2.0.0" in out and "221" in out, out
    wait_log(server, "tls=TLS1.3")
    delivered = server.stdout.decode(errors="replace")
    assert "hello over TLS" in delivered, delivered
    assert "with ESMTPS" in delivered and "(using TLS1.3 with cipher TLS13_" in delivered, delivered


@needs_swaks
@needs_openssl
def test_swaks_tls(samotop, tmp_path):
    cert, key = make_cert(tmp_path, "ec-p256-sec1")
    server = tls_server(samotop, cert, key)
    done = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(server.port), "--tls",
         "--helo", "client.test", "--from", "a@example.com", "--to", "b@example.org",
         "--timeout", "20"],
        capture_output=True, timeout=60,
    )
    out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, out
    assert "TLS started" in out, out
    assert "<~  250 2.0.0" in out or "<~ 250 2.0.0" in out, out


@needs_openssl
def test_smtps_implicit_tls(samotop, tmp_path):
    cert, key = make_cert(tmp_path, "ed25519")
    smtp_port, smtps_port = free_port(), free_port()
    server = samotop("--smtp", f"127.0.0.1:{smtp_port}", "--smtps", f"127.0.0.1:{smtps_port}",
                     "--tls-cert", str(cert), "--tls-key", str(key), "--name", NAME,
                     "--deliver", "stdout")
    wait_port(smtps_port, server.proc)
    # The certificate also names IP:127.0.0.1, so SMTP_SSL verifies chain and host.
    with smtplib.SMTP_SSL("127.0.0.1", smtps_port, timeout=30,
                          context=client_context(cafile=cert)) as c:
        code, banner = c.ehlo("client.test")
        assert code == 250, banner
        assert not c.has_extn("starttls"), c.esmtp_features
        assert hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest() == \
            pem_fingerprint(cert)
        assert c.docmd("STARTTLS")[0] == 503
        assert c.mail("a@example.com")[0] == 250
        assert c.rcpt("b@example.org")[0] == 250
        code, msg = c.data(MESSAGE)
        assert code == 250, (code, msg)
    wait_log(server, "tls=TLS1.3")
    delivered = server.stdout.decode(errors="replace")
    assert "with ESMTPS" in delivered and "(using TLS1.3 with cipher" in delivered, delivered


@needs_openssl
def test_smtps_banner_comes_after_the_handshake(samotop, tmp_path):
    cert, key = make_cert(tmp_path)
    smtps_port = free_port()
    server = samotop("--smtp", f"127.0.0.1:{free_port()}", "--smtps", f"127.0.0.1:{smtps_port}",
                     "--tls-cert", str(cert), "--tls-key", str(key), "--name", NAME,
                     "--deliver", "null")
    wait_port(smtps_port, server.proc)
    with socket.create_connection(("127.0.0.1", smtps_port), timeout=10) as s:
        s.settimeout(1.0)
        with pytest.raises(socket.timeout):
            s.recv(1)  # no plaintext banner: the server waits for a ClientHello
        s.settimeout(10)
        tls = client_context(cafile=cert).wrap_socket(s, server_hostname=NAME)
        raw = Raw(None, sock=tls)
        assert raw.greeting[0] == 220 and NAME in raw.greeting[1][0], raw.greeting
        assert raw.cmd("QUIT")[0] == 221


@needs_openssl
def test_a_silent_smtps_client_is_closed_after_the_handshake_timeout(samotop, tmp_path):
    """Implicit TLS: a client that connects and sends no ClientHello is closed once
    --handshake-timeout has passed, and other clients are served meanwhile and after."""
    cert, key = make_cert(tmp_path)
    smtps_port = free_port()
    server = samotop("--smtp", f"127.0.0.1:{free_port()}", "--smtps", f"127.0.0.1:{smtps_port}",
                     "--tls-cert", str(cert), "--tls-key", str(key), "--name", NAME,
                     "--handshake-timeout", "2", "--deliver", "null")
    wait_port(smtps_port, server.proc)
    silent = Raw(None, sock=socket.create_connection(("127.0.0.1", smtps_port), timeout=30),
                 greet=False)
    started = time.monotonic()
    # While it holds its connection, another client is served.
    with smtplib.SMTP_SSL("127.0.0.1", smtps_port, timeout=30,
                          context=client_context(cafile=cert)) as c:
        assert c.ehlo("client.test")[0] == 250
    assert silent.closed(timeout=30), "the silent client was never closed"
    # Generous: the bound is 2 s.
    assert time.monotonic() - started < 20
    assert silent.buf == b"", silent.buf  # no banner without a handshake
    silent.close()
    assert server.alive()
    with smtplib.SMTP_SSL("127.0.0.1", smtps_port, timeout=30,
                          context=client_context(cafile=cert)) as c:
        assert c.ehlo("again.test")[0] == 250


# --- STARTTLS state machine -------------------------------------------------------------------


@needs_openssl
def test_starttls_resets_the_session_and_is_not_offered_again(samotop, tmp_path):
    cert, key = make_cert(tmp_path)
    server = tls_server(samotop, cert, key)
    raw, tls = starttls_raw(server.port, client_context(cafile=cert))
    assert tls.version() in ("TLSv1.3", "TLSv1.2")
    # The HELO name is forgotten: MAIL needs a new EHLO.
    code, lines = raw.cmd("MAIL FROM:<a@example.com>")
    assert code == 503, (code, lines)
    code, lines = raw.cmd("EHLO client.test")
    assert code == 250 and "STARTTLS" not in lines, lines
    code, lines = raw.cmd("STARTTLS")
    assert code == 503 and lines[0].startswith("5.5.1"), (code, lines)
    assert raw.cmd("MAIL FROM:<a@example.com>")[0] == 250
    assert raw.cmd("RCPT TO:<b@example.org>")[0] == 250
    assert raw.cmd("DATA")[0] == 354
    raw.send(MESSAGE + b".\r\n")
    assert raw.reply()[0] == 250
    assert raw.cmd("QUIT")[0] == 221


@needs_openssl
def test_starttls_with_arguments_is_a_syntax_error(samotop, tmp_path):
    cert, key = make_cert(tmp_path)
    server = tls_server(samotop, cert, key)
    raw = Raw(server.port)
    assert raw.cmd("EHLO client.test")[0] == 250
    code, lines = raw.cmd("STARTTLS now")
    assert code == 501 and lines[0].startswith("5.5.4"), (code, lines)
    # Still plaintext, still offered.
    code, lines = raw.cmd("EHLO client.test")
    assert code == 250 and "STARTTLS" in lines, lines
    raw.close()


def test_no_certificate_no_starttls(samotop):
    server = samotop("--deliver", "null")
    raw = Raw(server.port)
    code, lines = raw.cmd("EHLO client.test")
    assert code == 250 and "STARTTLS" not in lines, lines
    code, lines = raw.cmd("STARTTLS")
    assert code == 454, (code, lines)
    raw.close()


@needs_openssl
@pytest.mark.parametrize("injected", [b"RSET\r\n", b"MAIL FROM:<evil@example.net>\r\nNOOP\r\n"])
def test_commands_pipelined_after_starttls_are_discarded(samotop, tmp_path, injected):
    """CVE-2011-0411: plaintext sent with STARTTLS must not be executed inside TLS."""
    cert, key = make_cert(tmp_path)
    server = tls_server(samotop, cert, key)
    raw = Raw(server.port)
    assert raw.cmd("EHLO client.test")[0] == 250
    raw.send(b"STARTTLS\r\n" + injected)
    code, lines = raw.reply()
    assert code == 220, (code, lines)
    assert raw.buf == b"", raw.buf  # nothing answered the injected commands in plaintext
    tls = client_context(cafile=cert).wrap_socket(raw.sock, server_hostname=NAME)
    inner = Raw(None, sock=tls, greet=False)
    code, lines = inner.cmd("EHLO client.test")
    # The first thing after the handshake is the reply to our EHLO, not a 250 for RSET/MAIL.
    assert code == 250 and lines[0].startswith(f"{NAME} greets"), (code, lines)
    # No transaction was opened by the injected MAIL.
    assert inner.cmd("MAIL FROM:<a@example.com>")[0] == 250
    assert inner.cmd("QUIT")[0] == 221
    wait_log(server, "discarding")


@needs_openssl
def test_a_failed_handshake_ends_only_that_connection(samotop, tmp_path):
    cert, key = make_cert(tmp_path)
    server = tls_server(samotop, cert, key)
    raw = Raw(server.port)
    assert raw.cmd("EHLO client.test")[0] == 250
    assert raw.cmd("STARTTLS")[0] == 220
    raw.send(b"this is not a TLS ClientHello\r\n" * 4)
    assert raw.closed(timeout=10), "server kept a connection with a broken handshake"
    wait_log(server, "TLS handshake failed")
    assert server.alive()
    (code, msg), _, _ = smtplib_starttls(server.port, client_context(cafile=cert))
    assert code == 250, (code, msg)


@needs_openssl
def test_a_client_that_leaves_mid_handshake_does_not_hurt(samotop, tmp_path):
    cert, key = make_cert(tmp_path)
    server = tls_server(samotop, cert, key)
    raw = Raw(server.port)
    assert raw.cmd("STARTTLS")[0] == 220
    raw.send(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))  # a ClientHello cut short
    raw.close()
    wait_log(server, "TLS handshake failed")
    (code, msg), _, _ = smtplib_starttls(server.port, client_context(cafile=cert))
    assert code == 250, (code, msg)


# --- versions ---------------------------------------------------------------------------------


def s_client(port, *flags, cafile=None):
    args = ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}", *flags]
    if cafile:
        args += ["-CAfile", str(cafile)]
    done = subprocess.run(args, input=b"QUIT\r\n", capture_output=True, timeout=60)
    return done.returncode, done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")


@needs_openssl
def test_tls_1_2_and_1_3_work_and_older_versions_are_refused(samotop, tmp_path):
    cert, key = make_cert(tmp_path, "rsa-pkcs8")
    server = tls_server(samotop, cert, key)
    port = server.port

    rc, out = s_client(port, "-tls1_3", cafile=cert)
    assert rc == 0 and "TLSv1.3" in out and "Verify return code: 0 (ok)" in out, out
    rc, out = s_client(port, "-tls1_2", cafile=cert)
    assert rc == 0 and "TLSv1.2" in out and "Verify return code: 0 (ok)" in out, out

    # TLS 1.1 / 1.0: SECLEVEL=0 lets OpenSSL 3 offer them at all; the server must say no.
    # Proof that it is the server refusing: the client did send a ClientHello and *read* a
    # fatal alert (ssl3_read_bytes ... alert), and the server logged the refusal.
    refusal = "TLS handshake failed: peer is incompatible"
    for flag in ("-tls1_1", "-tls1"):
        before = server.log.count(refusal)
        rc, out = s_client(port, flag, "-cipher", "DEFAULT@SECLEVEL=0", cafile=cert)
        assert rc != 0, out
        assert "ssl3_read_bytes" in out and ("alert handshake failure" in out
                                             or "alert protocol version" in out), out
        wait_log(server, refusal, count=before + 1)

    # The same with Python's ssl: a TLS 1.1-only client gets the server's alert.
    before = server.log.count(refusal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = client_context(minimum=ssl.TLSVersion.TLSv1_1, maximum=ssl.TLSVersion.TLSv1_1)
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")
    with pytest.raises(ssl.SSLError) as refused:
        starttls_raw(port, ctx)
    text = str(refused.value).upper()
    assert "ALERT_HANDSHAKE_FAILURE" in text or "ALERT_PROTOCOL_VERSION" in text, refused.value
    wait_log(server, refusal, count=before + 1)

    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        ctx = client_context(cafile=cert, minimum=version, maximum=version)
        (code, msg), _, negotiated = smtplib_starttls(port, ctx)
        assert code == 250 and negotiated == name, (code, msg, negotiated)
    assert server.alive()


@needs_openssl
def test_received_header_names_version_and_cipher(samotop, tmp_path):
    cert, key = make_cert(tmp_path)
    server = samotop("--tls-cert", str(cert), "--tls-key", str(key), "--name", NAME,
                     "--deliver", "stdout")
    for version, text in ((ssl.TLSVersion.TLSv1_3, "(using TLS1.3 with cipher TLS13_"),
                          (ssl.TLSVersion.TLSv1_2, "(using TLS1.2 with cipher TLS_ECDHE_")):
        ctx = client_context(cafile=cert, minimum=version, maximum=version)
        (code, msg), _, _ = smtplib_starttls(server.port, ctx)
        assert code == 250, (code, msg)
        wait_log(server, "tls=TLS1.", count=1 if version == ssl.TLSVersion.TLSv1_3 else 2)
        delivered = server.stdout.decode(errors="replace")
        assert text in delivered, delivered
    assert delivered.count("with ESMTPS") == 2, delivered


# --- --require-tls, --tls-self-signed ---------------------------------------------------------


@needs_openssl
def test_require_tls_refuses_mail_before_starttls(samotop, tmp_path):
    cert, key = make_cert(tmp_path)
    server = tls_server(samotop, cert, key, "--require-tls")
    raw = Raw(server.port)
    assert raw.cmd("EHLO client.test")[0] == 250
    code, lines = raw.cmd("MAIL FROM:<a@example.com>")
    assert code == 530 and lines[0] == "5.7.0 Must issue a STARTTLS command first", (code, lines)
    raw.close()
    (code, msg), _, _ = smtplib_starttls(server.port, client_context(cafile=cert))
    assert code == 250, (code, msg)


def test_require_tls_without_a_certificate_is_refused_at_start():
    done = subprocess.run([BIN, "--smtp", f"127.0.0.1:{free_port()}", "--deliver", "null",
                           "--require-tls"], capture_output=True, timeout=30)
    assert done.returncode == 2, done
    assert b"--require-tls" in done.stderr, done.stderr


@needs_openssl
def test_self_signed_certificate(samotop, tmp_path):
    name = "selfsigned.mx.test"
    server = samotop("--tls-self-signed", "--name", name, "--deliver", "null")
    assert "WARN" in server.log and "self-signed" in server.log, server.log
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as c:
        c.ehlo("client.test")
        c.starttls(context=client_context())
        der = c.sock.getpeercert(binary_form=True)
        c.ehlo("client.test")
        assert c.mail("a@example.com")[0] == 250
    # The certificate is for --name: trusting it, a client checking that name succeeds.
    pem = tmp_path / "served.pem"
    pem.write_text(ssl.DER_cert_to_PEM_cert(der))
    ctx = client_context(cafile=pem)
    raw = Raw(server.port)
    assert raw.cmd("STARTTLS")[0] == 220
    tls = ctx.wrap_socket(raw.sock, server_hostname=name)
    assert Raw(None, sock=tls, greet=False).cmd("EHLO client.test")[0] == 250
    tls.close()


# --- bad certificate files --------------------------------------------------------------------


def start_fails(cert, key):
    done = subprocess.run([BIN, "--smtp", f"127.0.0.1:{free_port()}", "--deliver", "null",
                           "--tls-cert", str(cert), "--tls-key", str(key)],
                          capture_output=True, timeout=30)
    return done.returncode, done.stderr.decode(errors="replace")


@needs_openssl
@pytest.mark.parametrize("case", ["missing-cert", "missing-key", "garbage-cert", "garbage-key",
                                  "key-as-cert", "cert-as-key", "directory-cert",
                                  "mismatched-rsa", "mismatched-ec", "mismatched-type"])
def test_bad_certificate_files_exit_2_naming_the_file(tmp_path, case):
    cert, key = make_cert(tmp_path / "a", "rsa-pkcs8")
    other_rsa_cert, other_rsa_key = make_cert(tmp_path / "b", "rsa-pkcs1")
    ec_cert, ec_key = make_cert(tmp_path / "c", "ec-p256-sec1")
    other_ec_cert, other_ec_key = make_cert(tmp_path / "d", "ec-p256-pkcs8")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all!!\n-----END CERTIFICATE-----\n"
                        if case == "garbage-cert" else b"hello, I am not a key\n")
    missing = tmp_path / "does-not-exist.pem"
    cert_arg, key_arg, named, problem = {
        "missing-cert": (missing, key, missing, "No such file"),
        "missing-key": (cert, missing, missing, "No such file"),
        "garbage-cert": (garbage, key, garbage, "PEM"),
        "garbage-key": (cert, garbage, garbage, "no private key"),
        "key-as-cert": (key, key, key, "no certificate"),
        "cert-as-key": (cert, cert, cert, "no private key"),
        "directory-cert": (tmp_path, key, tmp_path, "cannot read"),
        "mismatched-rsa": (cert, other_rsa_key, other_rsa_key, "does not match"),
        "mismatched-ec": (ec_cert, other_ec_key, other_ec_key, "does not match"),
        "mismatched-type": (cert, ec_key, ec_key, "does not match"),
    }[case]
    rc, err = start_fails(cert_arg, key_arg)
    assert rc == 2, (rc, err)
    assert str(named) in err and problem in err, err
    if case.startswith("mismatched"):
        assert str(cert_arg) in err, err


# --- reload on SIGHUP -------------------------------------------------------------------------


def served_fingerprint(port, cafile):
    raw, tls = starttls_raw(port, client_context(cafile=cafile))
    der = tls.getpeercert(binary_form=True)
    assert raw.cmd("QUIT")[0] == 221
    tls.close()
    return hashlib.sha256(der).hexdigest()


@needs_openssl
def test_sighup_reloads_the_certificate_without_dropping_sessions(samotop, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    cert_a, key_a = make_cert(tmp_path / "a", "rsa-pkcs8")
    cert_b, key_b = make_cert(tmp_path / "b", "ec-p256-sec1")
    cert, key = live / "cert.pem", live / "key.pem"
    shutil.copy(cert_a, cert)
    shutil.copy(key_a, key)
    server = samotop("--tls-cert", str(cert), "--tls-key", str(key), "--name", NAME,
                     "--deliver", "stdout")
    assert served_fingerprint(server.port, cert_a) == pem_fingerprint(cert_a)

    # A session open across the reload, mid-transaction.
    held, _ = starttls_raw(server.port, client_context(cafile=cert_a))
    assert held.cmd("EHLO client.test")[0] == 250
    assert held.cmd("MAIL FROM:<a@example.com>")[0] == 250
    assert held.cmd("RCPT TO:<b@example.org>")[0] == 250

    shutil.copy(cert_b, cert)
    shutil.copy(key_b, key)
    server.proc.send_signal(signal.SIGHUP)
    wait_log(server, "SIGHUP: TLS certificate reloaded")
    assert served_fingerprint(server.port, cert_b) == pem_fingerprint(cert_b)

    assert held.cmd("DATA")[0] == 354
    held.send(MESSAGE + b".\r\n")
    code, lines = held.reply()
    assert code == 250, (code, lines)
    assert held.cmd("QUIT")[0] == 221

    # A broken pair on disk: the reload fails loudly, the old (B) certificate stays.
    key.write_bytes(key_a.read_bytes())
    server.proc.send_signal(signal.SIGHUP)
    wait_log(server, "TLS reload failed")
    assert "does not match" in server.log, server.log
    assert server.alive()
    assert served_fingerprint(server.port, cert_b) == pem_fingerprint(cert_b)

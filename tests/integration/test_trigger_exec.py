"""`--deliver exec:...`: the real binary runs real programs (shell scripts that write files,
/bin/false, /bin/true reading nothing, one that sleeps past the limit, one that exits 75),
maps their exit codes, and leaves no zombie and no leftover process behind.
"""

import os
import pathlib
import smtplib
import time

from conftest import Raw, free_port, wait_until

MESSAGE = b"From: a@example.com\r\nSubject: run\r\nMessage-ID: <x1@example.com>\r\n\r\nGo\r\n"


def script(tmp_path, name, body):
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)
    return p


def send(port, rcpts=("b@example.org",), body=MESSAGE, lmtp=False):
    """Final reply (or replies, LMTP) as [(code, text)]."""
    if lmtp:
        with smtplib.LMTP("127.0.0.1", port, timeout=60) as c:
            c.ehlo("client.test")
            try:
                c.sendmail("a@example.com", list(rcpts), body)
                return [(250, "")] * len(rcpts)
            except smtplib.SMTPRecipientsRefused as e:
                return e.recipients
            except smtplib.SMTPDataError as e:
                return [(e.smtp_code, e.smtp_error.decode())]
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        c.ehlo("client.test")
        c.mail("a@example.com")
        for r in rcpts:
            code, msg = c.rcpt(r)
            assert code == 250, (r, code, msg)
        code, msg = c.data(body)
        return [(code, msg.decode())]


def children(pid):
    """Processes whose parent is `pid`: (pid, state)."""
    out = []
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        if int(rest[1]) == pid:
            out.append((int(d.name), rest[0]))
    return out


def no_leftovers(server, pids=()):
    wait_until(lambda: not children(server.proc.pid), timeout=10, what="no child of samotop")
    for p in pids:
        wait_until(lambda: not os.path.exists(f"/proc/{p}"), timeout=10, what=f"pid {p} gone")


def exec_server(samotop, cmd, *extra):
    return samotop("--deliver", "exec:" + cmd, "--spf", "off", *extra)


def test_a_script_gets_the_message_and_the_envelope(samotop, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    prog = script(tmp_path, "store.sh", 'cat > "$1/msg.$$" && env > "$1/env.$$"')
    s = exec_server(samotop, f"{prog} {out}")
    assert send(s.port, rcpts=["alerts+env=prod@example.org"])[0][0] == 250
    msgs = list(out.glob("msg.*"))
    assert len(msgs) == 1
    data = msgs[0].read_bytes()
    assert data.startswith(b"Received: from client.test") and data.endswith(MESSAGE)
    env = dict(l.split("=", 1) for l in next(out.glob("env.*")).read_text().splitlines() if "=" in l)
    assert env["SENDER"] == "a@example.com"
    assert env["RECIPIENT"] == "alerts+env=prod@example.org"
    assert env["EXT_ENV"] == "prod" and env["USER"] == "alerts" and env["EXTENSION"] == "env=prod"
    assert env["CLIENT_ADDRESS"] == "127.0.0.1" and env["HELO"] == "client.test"
    assert env["PROTOCOL"] == "ESMTP" and env["SIZE"] == str(len(data))
    assert len(env["DIGEST"]) == 64
    assert set(env) <= {"PATH", "SENDER", "RECIPIENT", "ORIGINAL_RECIPIENT", "LOCAL", "USER",
                        "EXTENSION", "DOMAIN", "EXT_ENV", "RECIPIENTS", "CLIENT_ADDRESS",
                        "CLIENT_PORT", "HELO", "PROTOCOL", "TLS", "QUEUE_ID", "DIGEST", "SIZE",
                        "SERVER_NAME", "QUARANTINE", "PWD", "SHLVL", "_", "OLDPWD"}, env
    no_leftovers(s)


def test_bin_false_is_554(samotop):
    s = exec_server(samotop, "/bin/false")
    code, text = send(s.port)[0]
    assert (code, text.split()[0]) == (554, "5.3.0"), text
    no_leftovers(s)


def test_a_program_that_reads_nothing(samotop):
    s = exec_server(samotop, "/bin/true")
    big = MESSAGE + b"x" * 998 + b"\r\n"
    big = big * 5000  # ~5 MB
    assert send(s.port, body=big)[0][0] == 250
    no_leftovers(s)


def test_past_the_limit_the_group_is_killed(samotop, tmp_path):
    pids = tmp_path / "pids"
    prog = script(tmp_path, "slow.sh", 'sleep 600 & echo $! >> "$1"; echo $$ >> "$1"; sleep 600')
    s = exec_server(samotop, f"{prog} {pids}", "--exec-timeout", "1")
    t0 = time.monotonic()
    code, text = send(s.port)[0]
    assert (code, text.split()[0]) == (451, "4.3.0"), text
    assert time.monotonic() - t0 < 15
    no_leftovers(s, pids.read_text().split())


def test_exit_75_is_451_and_the_retry_delivers_once(samotop, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    prog = script(tmp_path, "flaky.sh",
                  '[ -e "$1/tried" ] || { touch "$1/tried"; echo "db down" >&2; exit 75; }\n'
                  'cat > "$1/delivered.$$"')
    s = exec_server(samotop, f"{prog} {out}")
    code, text = send(s.port)[0]
    assert (code, text.split()[0]) == (451, "4.3.0"), text
    assert "db down" in s.log, "stderr goes to the log"
    assert send(s.port)[0][0] == 250
    assert len(list(out.glob("delivered.*"))) == 1
    no_leftovers(s)


def test_per_recipient_over_lmtp_one_reply_each(samotop, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    prog = script(tmp_path, "each.sh", '[ "$USER" = gone ] && exit 67\ncat > "$1/$USER"')
    port = free_port()
    s = samotop("--lmtp", f"127.0.0.1:{port}", "--deliver", f"exec:{prog} {out}",
                "--exec-per-recipient", "--spf", "off", wait=False)
    wait_until(lambda: _listening(port), what="LMTP listener")
    c = Raw(port)
    assert c.cmd("LHLO client.test")[0] == 250
    assert c.cmd("MAIL FROM:<a@example.com>")[0] == 250
    for r in ("x@example.org", "gone@example.org", "y@example.org"):
        assert c.cmd(f"RCPT TO:<{r}>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(MESSAGE + b".\r\n")
    codes = [c.reply()[0] for _ in range(3)]
    assert codes == [250, 550, 250]
    assert sorted(p.name for p in out.iterdir()) == ["x", "y"]
    c.close()
    no_leftovers(s)


def _listening(port):
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_hostile_recipients_reach_the_program_as_plain_values(samotop, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    prog = script(tmp_path, "env.sh", 'printf "%s\\n" "$RECIPIENT" >> "$1/seen"')
    s = exec_server(samotop, f"{prog} {out}", "--exec-per-recipient")
    hostile = [
        '"$(touch pwned)`touch pwned2`;|&"@example.org',
        '"../../../etc/passwd"@example.org',
        "a+" + "k=v+" * 14 + "kk=v@example.org",  # the longest local part SMTP allows (64)
        "x+$HOME=${PATH}@example.org",
    ]
    os.chdir(tmp_path)
    assert send(s.port, rcpts=hostile)[0][0] == 250
    seen = (out / "seen").read_text().splitlines()
    assert sorted(seen) == sorted(hostile)
    assert not any(tmp_path.rglob("pwned*"))
    no_leftovers(s)

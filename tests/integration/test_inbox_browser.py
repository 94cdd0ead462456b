"""The web inbox in a real browser and the `mailpit-api` npm client, against the real binary.

One samotop (SQLite + `--http`) for the module. Node.js, the npm packages and Chromium are
required (scripts/setup installs them): when they are missing the tests fail, never skip.
The browser part is headless Chromium (Debian's `chromium`) driven by `playwright-core` (tests/browser/inbox.mjs): a mail appears live in
`/inbox/{address}`, opens, shows its text and HTML, its attachment downloads, search and delete
work, and a hostile HTML mail (script, `onerror=`, remote image, stylesheet, meta refresh,
frame) runs no script and fetches nothing from a loopback server that counts requests, until
the reader clicks "Load remote content". Screenshots go to docs/.
"""

import http.server
import json
import os
import pathlib
import shutil
import subprocess
import threading

import pytest

from conftest import ROOT, Server, free_port, wait_port

BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def node_ready():
    return shutil.which("node") and (BROWSER_DIR / "node_modules" / "playwright-core").is_dir() and (
        BROWSER_DIR / "node_modules" / "mailpit-api"
    ).is_dir()


@pytest.fixture(scope="module")
def inbox_server(tmp_path_factory):
    if not node_ready():
        pytest.fail("node or tests/browser/node_modules (playwright-core, mailpit-api) missing: run scripts/setup")
    tmp = tmp_path_factory.mktemp("inbox-browser")
    http_port = free_port()
    s = Server(["--spf", "off", "--deliver", f"sqlite:{tmp / 'browser.db'}", "--http", f"127.0.0.1:{http_port}"], tmp)
    wait_port(http_port, s.proc)
    s.http = f"http://127.0.0.1:{http_port}"
    yield s
    s.stop()


class Counter(http.server.BaseHTTPRequestHandler):
    hits = []

    def do_GET(self):
        Counter.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def counter():
    Counter.hits = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", Counter.hits
    srv.shutdown()


def test_the_web_inbox_in_chromium(inbox_server, counter):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup (it installs Debian's chromium)")
    url, hits = counter
    docs = ROOT / "docs"
    proc = subprocess.Popen(
        ["node", "inbox.mjs", inbox_server.http, str(inbox_server.port), url, str(docs)],
        cwd=BROWSER_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=30)
            pytest.fail("the browser script ended early:\n" + proc.stderr.read().decode(errors="replace")[-3000:])
        blocked = json.loads(line)
        assert blocked["phase"] == "blocked"
        r = blocked["results"]
        assert r["live"] and r["search"] and r["deleted"]
        assert r["html"] == "Hello HTML"
        assert "your code is 4711" in r["text"]
        assert r["envelope"]["Recipients"] == ["web@example.org"]
        assert r["attachment"].replace("\r\n", "\n") == "item,price\ntea,3\n"
        assert r["attachmentName"] == "invoice.csv"
        assert r["hostileText"] == "hostile body text"
        assert r["pwned"] is False, "a script in the mail ran"
        assert r["frameSandbox"] == ""
        assert hits == [], f"the hostile mail fetched: {hits}"
        # The reader allows remote content: now the image loads (the counter works), still
        # no script.
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
        done = json.loads(out.decode().strip().splitlines()[-1])["results"]
        assert done["pwnedAfterRemote"] is False
        assert "/remote.png" in hits, hits
        assert not any(h.startswith(("/script", "/onerror", "/refresh", "/frame")) for h in hits), hits
        assert done["errors"] == [], done["errors"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    for name in ("inbox-list.png", "inbox-message.png", "inbox-phone.png"):
        assert (docs / name).stat().st_size > 1000


def test_the_mailpit_api_npm_client_works_unchanged(inbox_server):
    run = subprocess.run(
        ["node", "mailpit_client.mjs", inbox_server.http, str(inbox_server.port)],
        cwd=BROWSER_DIR, capture_output=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-3000:]
    out = json.loads(run.stdout.decode().strip().splitlines()[-1])
    assert out["info"]["Version"].startswith("samotop-inbox")
    assert out["waited"] == {"Subject": "Welcome via mailpit-api", "Text": out["waited"]["Text"], "Attachments": 1}
    assert "Your code is 2024." in out["waited"]["Text"]
    assert out["messages_count"] == 2
    assert out["list"]["total"] == 2
    assert [m["Subject"] for m in out["search"]["messages"]] == ["Welcome via mailpit-api"]
    assert out["summary"]["Subject"] == "second"
    assert out["headers"]["Subject"] == ["Welcome via mailpit-api"]
    assert "Your code is 2024." in out["source"]
    assert out["attachment"].strip() == "attached"
    assert "Your code is 2024." in out["text"]
    assert out["unreadAfterSet"] == 1
    assert out["unreadAfterAll"] == 0
    assert out["afterDeleteSearch"] == 1
    assert out["afterDelete"] == 0
    assert out["tags"] == []

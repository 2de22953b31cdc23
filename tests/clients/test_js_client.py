"""The JavaScript client (clients/js/streamrec.js) against the real API: Node's test runner
(``node --test``) with the API's URL in the environment, and headless Chromium for the
browser path (a page served from the API's origin, and the page-hide beacon)."""

from __future__ import annotations

import http.client
import http.server
import json
import shutil
import subprocess
import threading
import urllib.parse
import uuid
from pathlib import Path

import pytest

from tests.api.conftest import wait_for
from tests.clients.conftest import RETRY_AFTER, listed

JS = Path(__file__).resolve().parents[2] / "clients" / "js"


def node_test(script: str, **env: str) -> str:
    node = shutil.which("node")
    assert node, "node is missing: run `make system` (Debian: apt-get install nodejs)"
    result = subprocess.run([node, "--test", str(JS / "test" / script)], env=env,
                            capture_output=True, text=True, timeout=120)
    print(result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "# fail 0" in result.stdout and "# skipped 0" in result.stdout
    return result.stdout


def test_node_client_against_the_real_api(api_url):
    assert "# pass 5" in node_test("client.test.js", STREAMREC_URL=api_url)


def test_node_client_retries_a_503_after_retry_after(hung_api):
    url, hang_for = hung_api
    holding = hang_for(2.5)
    node_test("retry.test.js", STREAMREC_HUNG_URL=url, STREAMREC_RETRY_AFTER=str(RETRY_AFTER))
    holding.join()


class SameOrigin(http.server.ThreadingHTTPServer):
    """Serves the client and the test page under /client-test/ and passes every other
    request to the API, so the page and the API share an origin (as behind an app's own
    reverse proxy); notes what the page reports."""

    def __init__(self, api_url: str) -> None:
        self.api = urllib.parse.urlsplit(api_url)
        self.reports: list[dict] = []
        self.beacons = 0
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: SameOrigin
    FILES = {"streamrec.js": JS / "streamrec.js", "browser.html": JS / "test" / "browser.html",
             "browser-page.js": JS / "test" / "browser-page.js",
             "blank.html": JS / "test" / "blank.html"}

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        name = self.path.split("?")[0].removeprefix("/client-test/")
        if self.path.startswith("/client-test/") and name in self.FILES:
            kind = "text/javascript" if name.endswith(".js") else "text/html"
            self._answer(200, self.FILES[name].read_bytes(), kind)
        else:
            self._forward()

    def do_POST(self) -> None:
        if self.path == "/client-test/report":
            length = int(self.headers["Content-Length"])
            self.server.reports.append(json.loads(self.rfile.read(length)))
            self._answer(204, b"", "text/plain")
        elif self.path == "/client-test/beacon-used":
            self.server.beacons += 1
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer(204, b"", "text/plain")
        else:
            self._forward()

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        connection = http.client.HTTPConnection(self.server.api.hostname,
                                                self.server.api.port, timeout=30)
        headers = {name: value for name, value in self.headers.items()
                   if name.lower() in ("content-type", "x-api-key")}
        connection.request(self.command, self.path, body or None, headers)
        response = connection.getresponse()
        self._answer(response.status, response.read(),
                     response.getheader("Content-Type", "application/json"))
        connection.close()


@pytest.fixture
def same_origin(api_url):
    server = SameOrigin(api_url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_in_chromium_events_go_lists_come_and_the_page_hide_beacon_delivers(
        api_url, same_origin, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is missing: run `make system` (Debian: apt-get install chromium)"
    run = uuid.uuid4().hex[:8]
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}",
         f"{same_origin.url}/client-test/browser.html?run={run}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: same_origin.reports, timeout=60), "the page reported nothing"
        report = same_origin.reports[0]
        assert report["ok"], report
        assert report["rec"]["recommendation_id"] and report["rec"]["items"]
        assert report["buffered"] == 1  # left for the page-hide beacon
        assert wait_for(lambda: all(listed(api_url, f"{run}-item-{n}") for n in range(3)),
                        timeout=30)
        # Only the beacon sent on leaving the page could deliver this one.
        assert wait_for(lambda: listed(api_url, f"{run}-beacon"), timeout=30)
        assert same_origin.beacons >= 1
    finally:
        browser.terminate()
        browser.wait(20)

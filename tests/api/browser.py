"""Real headless Chromium (Debian's package) driven over the DevTools protocol: what the
dashboard and console tests load their pages in."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import aiohttp
import orjson

from streamrec.local.services import free_port
from tests.api.conftest import wait_for


@contextlib.contextmanager
def chromium(profile: Path):
    """A headless Chromium with its DevTools on a free port; yields the port."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "chromium is missing: run `make system` (Debian: apt-get install chromium)"
    port = free_port()
    browser = subprocess.Popen(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def devtools_up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=1):
                return True
        except OSError:
            return False

    try:
        assert wait_for(devtools_up, timeout=30), "Chromium's DevTools did not come up"
        yield port
    finally:
        browser.terminate()
        browser.wait(20)


class Tab:
    """One page of the browser: calls DevTools methods and evaluates script in it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.counter = 0
        self.errors: list[str] = []  # the page's uncaught exceptions (Runtime.enable)

    async def call(self, method: str, **params) -> dict:
        self.counter += 1
        mine = self.counter
        await self.ws.send_str(orjson.dumps({"id": mine, "method": method,
                                             "params": params}).decode())
        async for message in self.ws:
            data = orjson.loads(message.data)
            if data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description")
                                   or details.get("text", ""))
            if data.get("id") == mine:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
        raise RuntimeError("DevTools closed the connection")

    async def evaluate(self, expression: str):
        """The value of a script expression (awaited if it is a promise)."""
        result = await self.call("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait(self, expression: str, timeout: float = 30.0):
        """Evaluate ``expression`` until it is truthy (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = await self.evaluate(f"Boolean({expression})")
            except RuntimeError:  # the page is still loading: what it reads is not there yet
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                shown = await self.evaluate("location.hash + ' | ' + "
                                            "document.body.innerText.slice(0, 1500)")
                raise AssertionError(f"not within {timeout} s: {expression}; the page's "
                                     f"errors: {self.errors}; it shows: {shown}")
            await asyncio.sleep(0.1)

    async def navigate(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def type(self, text: str) -> None:
        """Types into the focused element, as a keyboard would."""
        await self.call("Input.insertText", text=text)

    async def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                            windowsVirtualKeyCode=13, nativeVirtualKeyCode=13,
                            **({"text": "\r"} if kind == "keyDown" else {}))

    async def screenshot(self, path: Path) -> bytes:
        shot = await self.call("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return png


@contextlib.asynccontextmanager
async def tab(port: int, width: int = 1280, height: int = 800):
    """A new tab of the browser on ``port``, at a laptop's screen size."""
    async with aiohttp.ClientSession() as session:
        async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as response:
            target = await response.json(content_type=None)
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Tab(ws)
            await page.call("Page.enable")
            await page.call("Runtime.enable")
            await page.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                            deviceScaleFactor=1, mobile=False)
            yield page

"""A small Chrome DevTools Protocol client over aiohttp's websocket, enough to drive headless Chromium.

Debian's `chromium` is all it needs: no driver binary, no browser download, no extra package.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

VIEWPORT = (1280, 800)


class CDPError(Exception):
    pass


class Page:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []  # uncaught page exceptions and console errors
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
            elif data.get("method") == "Runtime.consoleAPICalled" and data["params"]["type"] == "error":
                args = data["params"]["args"]
                self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in args))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CDPError("browser connection closed"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._ws.send_str(json.dumps({"id": message_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    async def goto(self, url: str) -> None:
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        await self.wait_for("document.readyState === 'complete'")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    async def wait_for(self, expression: str, within: float = 10.0) -> Any:
        """Poll a JS expression until it is truthy; survives the page navigating underneath.

        The value comes back as JSON, so a DOM node reads as `{}` (falsy here): test `!== null`.
        """
        deadline = time.monotonic() + within
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = await self.evaluate(expression)
            except CDPError as exc:  # e.g. the context went away mid-navigation
                last_error = exc
                value = None
            if value:
                return value
            await asyncio.sleep(0.05)
        url = await self.evaluate("location.href")
        raise AssertionError(f"timed out waiting for {expression!r} on {url} (last error: {last_error})")

    async def set_viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )

    async def screenshot(self, path: Path, width: int = VIEWPORT[0]) -> None:
        """The whole page, not only the viewport, as PNG; `width`: the viewport's, when it was changed."""
        metrics = await self.send("Page.getLayoutMetrics")
        height = max(
            math.ceil(metrics["cssContentSize"]["height"]), VIEWPORT[1] if width == VIEWPORT[0] else 0
        )
        shot = await self.send(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        )
        _write(path, base64.b64decode(shot["data"]))

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def chromium_executable() -> str:
    """The Chromium to drive; skips only on BRIDGE_SKIP_BROWSER=1, else fails saying how to get one."""
    if os.environ.get("BRIDGE_SKIP_BROWSER") == "1":
        pytest.skip("BRIDGE_SKIP_BROWSER=1")
    path = os.environ.get("BRIDGE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "The browser tests need Chromium: run `bash .ci/chromium.sh` (Debian's chromium package),\n"
            "point BRIDGE_CHROMIUM at a Chromium binary, or set BRIDGE_SKIP_BROWSER=1 to skip them.",
            pytrace=False,
        )
    return path


@contextlib.asynccontextmanager
async def browser_page(workdir: Path, extra_flags: Sequence[str] = ()) -> AsyncIterator[Page]:
    """The page of a fresh headless Chromium; the test fails if the page logged errors."""
    browser = await Browser.launch(chromium_executable(), workdir, extra_flags)
    try:
        page = await browser.first_page()
        yield page
        await page.close()
        assert page.errors == [], f"the page logged errors: {page.errors}"
    finally:
        await browser.close()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class Browser:
    def __init__(
        self, process: asyncio.subprocess.Process, port: int, session: aiohttp.ClientSession
    ) -> None:
        self.process = process
        self.port = port
        self.session = session

    @classmethod
    async def launch(cls, executable: str, workdir: Path, extra_flags: Sequence[str] = ()) -> Browser:
        profile = workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        log = (workdir / "chromium.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--lang=en-US",
            f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
            *extra_flags,
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=log,
            stderr=log,
            env={**os.environ, "TZ": "UTC", "LANG": "en_US.UTF-8"},
        )
        log.close()
        # Chromium writes the port it picked (and the browser target path) to this file.
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if process.returncode is not None or time.monotonic() > deadline:
                process.kill()
                output = (workdir / "chromium.log").read_text(errors="replace")[-2000:]
                raise CDPError(f"chromium did not start; its output:\n{output}")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        return cls(process, port, aiohttp.ClientSession())

    async def first_page(self) -> Page:
        async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as response:
            targets = await response.json(content_type=None)
        target = next(t for t in targets if t["type"] == "page")
        ws = await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(self.session, ws)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.set_viewport(*VIEWPORT)
        return page

    async def close(self) -> None:
        await self.session.close()
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

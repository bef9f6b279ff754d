"""The server half every loopback stand-in for a carrier's REST API shares: start on a free port, stop,
and read HTTP Basic credentials."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class LoopbackApi:
    """Subclasses are dataclasses that build their routes in `app()` and record what they were sent."""

    base_url: str | None = field(default=None, init=False)  # set by start()
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.base_url = f"http://{host}:{self._runner.addresses[0][1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self.base_url = None


def basic_auth(request: web.Request) -> tuple[str | None, str | None]:
    """User and password of an HTTP Basic `Authorization` header; (None, None) if there is none."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return (user, password) if sep else (None, None)

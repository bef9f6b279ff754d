"""The server half every loopback stand-in for a carrier's REST API shares: start on a free port, stop."""

from __future__ import annotations

from aiohttp import web


class LoopbackApi:
    """Subclasses are dataclasses that build their routes in `app()` and record what they were sent."""

    base_url: str | None
    _runner: web.AppRunner | None

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

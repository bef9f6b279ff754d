"""A placed call's progress, posted on to the `callback_url` its request named.

Each event is a JSON POST signed like the tools' requests (`X-Bridge-Signature` over the timestamp and
the body, with TOOLS_SECRET; `bridge.tools.webhook.verify_signature` checks it), sent from whichever
replica heard of the progress. A receiver that is down or slow costs the call nothing: each event is
tried a few times in the background, then given up with a warning. Events can arrive out of order
(they come from the carrier's callbacks, which can): `status` and `at` say where each one belongs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp

from bridge.logs import get_logger
from bridge.tools.webhook import signed_headers

log = get_logger("bridge.outbound")

TIMEOUT_S = 5.0
RETRY_DELAYS_S = (1.0, 4.0)  # after the first attempt fails: two more, then it is given up


class StatusEvents:
    def __init__(self, secret: str, *, retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S) -> None:
        self.secret = secret
        self.retry_delays_s = retry_delays_s
        self.sent = 0
        self.failed = 0
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, url: str, event: dict[str, Any]) -> None:
        """Post `event` to `url` in the background."""
        task = asyncio.get_running_loop().create_task(self._deliver(url, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, event: dict[str, Any]) -> None:
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        problem = ""
        for delay in (0.0, *self.retry_delays_s):
            await asyncio.sleep(delay)
            try:
                # Signed per attempt: a retry carries its own timestamp, inside the receiver's tolerance.
                headers = signed_headers(self.secret, body)
                post = self._session.post(url, data=body, headers=headers, allow_redirects=False)
                async with post as reply:
                    if 200 <= reply.status < 300:
                        self.sent += 1
                        return
                    problem = f"HTTP {reply.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                problem = type(exc).__name__
        self.failed += 1
        log.warning(
            "status event not delivered",
            call_id=event.get("call_id"),
            status=event.get("status"),
            error=problem,
            attempts=1 + len(self.retry_delays_s),
        )

    async def close(self, timeout_s: float = 2.0) -> None:
        """Let events on their way finish for a moment, then stop."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await asyncio.gather(*self._tasks, return_exceptions=True)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

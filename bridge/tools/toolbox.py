"""The tools a call's assistant may use, by name, and how each one runs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bridge.tools.builtin import failure
from bridge.tools.webhook import ToolResult, WebhookTool, call_webhook_tool, load_tools_file

# A tool that outlives this is reported to the model as failed; the call never waits on it.
TOOL_TIMEOUT_S = 30.0
# The caller is waiting in silence for the answer: the hook gets little time, then we answer anyway.
BEFORE_RESPONSE_TIMEOUT_S = 2.0


@dataclass
class Toolbox:
    webhooks: dict[str, WebhookTool] = field(default_factory=dict)
    secret: str = ""
    _session: aiohttp.ClientSession | None = None

    @classmethod
    def from_file(cls, path: Path | None, env: Mapping[str, str], secret: str = "") -> Toolbox:
        tools = load_tools_file(path, env) if path is not None else []
        return cls({tool.name: tool for tool in tools}, secret)

    def definitions(self) -> tuple[dict[str, Any], ...]:
        return tuple(tool.realtime_definition() for tool in self.webhooks.values())

    async def run(self, name: str, arguments: str, context: dict[str, Any]) -> ToolResult:
        tool = self.webhooks.get(name)
        if tool is None:
            return ToolResult(ok=False, output=failure(f"there is no tool called {name!r}"), duration_ms=0.0)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return await call_webhook_tool(self._session, tool, arguments, context, self.secret)

    async def before_response(self, url: str, turn: dict[str, Any], context: dict[str, Any]) -> str:
        """RESPONSE_MODE=manual: show the hook the caller's turn; the text it returns (if any) is added
        to the conversation before the answer. Same body, signature and limits as a tool call."""
        hook = WebhookTool(
            name="before_response",
            description="",
            parameters={"type": "object"},
            url=url,
            timeout_s=BEFORE_RESPONSE_TIMEOUT_S,
            headers={},
        )
        if self._session is None:
            self._session = aiohttp.ClientSession()
        result = await call_webhook_tool(self._session, hook, json.dumps(turn), context, self.secret)
        if not result.ok:
            return ""
        try:
            answer = json.loads(result.output)
        except ValueError:
            return ""
        added = answer.get("context") if isinstance(answer, dict) else None
        return added.strip() if isinstance(added, str) else ""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

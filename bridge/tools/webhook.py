"""HTTP webhook tools: functions the assistant may call, declared by ops in TOOLS_FILE.

The file is the contract between ops and the model, so loading is strict and reports every problem
at once, one line each, naming the file and the tool: a typo found at start-up is cheap, the same
typo found mid-call is a caller hearing an apology. Calling a tool never raises for tool or network
trouble: the model gets a small JSON error it can explain to the caller, and the call carries on.

Requests are signed (when a secret is configured) so tool servers can reject forged calls:
`X-Bridge-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{raw body}")>`, checked with
`verify_signature`.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ENV_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
DEFAULT_TIMEOUT_S = 5.0
MAX_TIMEOUT_S = 30.0
MAX_RESPONSE_BYTES = 64 * 1024
MAX_TEXT_RESULT_CHARS = 4000
# The bridge sets these itself; letting the file override them would break signing or the body format.
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "x-bridge-timestamp", "x-bridge-signature"}
)
_KNOWN_KEYS = frozenset({"name", "description", "parameters", "url", "timeout_s", "headers"})


class ToolsFileError(ValueError):
    """TOOLS_FILE is unreadable or declares invalid tools; the message has one line per problem."""


@dataclass(frozen=True)
class WebhookTool:
    name: str
    description: str
    parameters: dict[str, Any]
    url: str
    timeout_s: float
    headers: dict[str, str]

    def realtime_definition(self) -> dict[str, Any]:
        """The entry for `session.update` `tools`; a copy, so the session cannot alter the tool."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(self.parameters),
        }


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    # JSON text for `function_call_output.output`; on failure `{"error": "..."}`.
    output: str
    duration_ms: float


def load_tools_file(path: Path, env: Mapping[str, str]) -> list[WebhookTool]:
    """Read and validate TOOLS_FILE (.json, .yaml or .yml); header values expand `${VAR}` from `env`."""
    label = str(path)
    data = _parse_file(path, label)
    if isinstance(data, dict) and set(data) == {"tools"}:
        data = data["tools"]
    if not isinstance(data, list):
        raise ToolsFileError(f"{label}: expected a list of tools (or an object with a 'tools' list)")

    problems: list[str] = []
    tools: list[WebhookTool] = []
    seen: set[str] = set()
    for index, raw in enumerate(data, start=1):
        tool_problems: list[str] = []
        tool = _parse_tool(raw, env, tool_problems)
        where = _tool_label(raw, index)
        problems.extend(f"{label}: {where}: {problem}" for problem in tool_problems)
        if tool is None:
            continue
        if tool.name in seen:
            problems.append(f"{label}: {where}: duplicate name")
            continue
        seen.add(tool.name)
        tools.append(tool)
    if problems:
        raise ToolsFileError("\n".join(problems))
    return tools


def _parse_file(path: Path, label: str) -> Any:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ToolsFileError(
            f"{label}: unsupported extension {suffix or '(none)'!r}; use .json, .yaml or .yml"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolsFileError(f"{label}: cannot read: {exc}") from exc
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ToolsFileError(f"{label}: cannot parse JSON: {exc}") from exc
    try:
        import yaml
    except ImportError as exc:  # pyyaml is only needed by deployments that chose YAML
        raise ToolsFileError(f"{label}: YAML tools files need the 'pyyaml' package") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ToolsFileError(f"{label}: cannot parse YAML{at}: {first_line}") from exc


def _tool_label(raw: Any, index: int) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"]:
        return f"tool {raw['name']!r}"
    return f"tool #{index}"


def _parse_tool(raw: Any, env: Mapping[str, str], problems: list[str]) -> WebhookTool | None:
    if not isinstance(raw, dict):
        problems.append("must be an object")
        return None
    for key in sorted(set(raw) - _KNOWN_KEYS, key=str):
        problems.append(f"unknown key {key!r}")

    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append("name must match ^[a-zA-Z0-9_-]{1,64}$")

    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        problems.append("description must be a non-empty string")

    parameters = raw.get("parameters")
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        problems.append('parameters must be a JSON-schema object with "type": "object"')

    url = raw.get("url")
    if url is None:
        problems.append("url is missing")
    elif not isinstance(url, str) or not _is_http_url(url):
        problems.append("url must be http(s)")

    timeout_s = raw.get("timeout_s", DEFAULT_TIMEOUT_S)
    # bool is an int subclass; `timeout_s: yes` is a mistake, not one second.
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not (0 < timeout_s <= MAX_TIMEOUT_S)
    ):
        problems.append(f"timeout_s must be a number > 0 and <= {MAX_TIMEOUT_S:g}")

    headers = _parse_headers(raw.get("headers", {}), env, problems)

    if problems:
        return None
    assert isinstance(name, str) and isinstance(description, str) and isinstance(url, str)
    assert isinstance(parameters, dict) and headers is not None
    return WebhookTool(
        name=name,
        description=description,
        parameters=parameters,
        url=url,
        timeout_s=float(timeout_s),
        headers=headers,
    )


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _parse_headers(raw: Any, env: Mapping[str, str], problems: list[str]) -> dict[str, str] | None:
    if not isinstance(raw, dict):
        problems.append("headers must be an object of name -> value")
        return None
    headers: dict[str, str] = {}
    ok = True
    for key, value in raw.items():
        if not isinstance(key, str) or not HEADER_NAME_RE.match(key):
            problems.append(f"header name {key!r} is not a valid HTTP header name")
            ok = False
            continue
        if key.lower() in RESERVED_HEADERS:
            problems.append(f"header {key!r} is set by the bridge and cannot be overridden")
            ok = False
            continue
        if not isinstance(value, str):
            problems.append(f"header {key!r} must be a string")
            ok = False
            continue
        missing = [var for var in ENV_REF_RE.findall(value) if var not in env]
        if missing:
            problems.extend(f"header {key!r} uses ${{{var}}}, which is not set" for var in missing)
            ok = False
            continue
        expanded = ENV_REF_RE.sub(lambda m: env[m.group(1)], value)
        # A newline from an env value would let the value inject further headers.
        if "\r" in expanded or "\n" in expanded:
            problems.append(f"header {key!r} contains a line break after expansion")
            ok = False
            continue
        headers[key] = expanded
    return headers if ok else None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Bridge-Signature` value for `body` sent at `timestamp` (unix seconds, as text)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def signed_headers(secret: str, body: bytes) -> dict[str, str]:
    """What goes with every request the bridge sends to its users' systems (tools, the before-response
    hook, placed calls' status events): the JSON content type, the time it was sent, and (with a
    secret) our signature over both."""
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-Bridge-Timestamp": timestamp}
    if secret:
        headers["X-Bridge-Signature"] = sign(secret, timestamp, body)
    return headers


def verify_signature(
    secret: str, timestamp: str, body: bytes, header: str, now: float, tolerance_s: float = 300
) -> bool:
    """For tool servers: is `header` our signature of `body`, sent within `tolerance_s` of `now`?

    The tolerance bounds replay of a captured request.
    """
    if not secret:
        return False
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent_at) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), header.strip().encode())


def _error(message: str, started: float) -> ToolResult:
    return ToolResult(ok=False, output=json.dumps({"error": message}), duration_ms=_elapsed_ms(started))


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


class _TooLarge(Exception):
    pass


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    if response.content_length is not None and response.content_length > MAX_RESPONSE_BYTES:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def call_webhook_tool(
    session: aiohttp.ClientSession,
    tool: WebhookTool,
    arguments_json: str,
    context: dict[str, Any],
    secret: str,
) -> ToolResult:
    """POST the model's call to the tool; the result is always something the model can read."""
    started = time.perf_counter()
    try:
        arguments = json.loads(arguments_json) if arguments_json.strip() else {}
    except json.JSONDecodeError as exc:
        return _error(f"the arguments were not valid JSON ({exc.msg}); call the tool again", started)
    if not isinstance(arguments, dict):
        return _error("the arguments must be a JSON object; call the tool again", started)

    body = json.dumps(
        {"tool": tool.name, "arguments": arguments, "call": context},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    headers = {**tool.headers, **signed_headers(secret, body)}

    try:
        # One deadline over connect, send and read: the caller is waiting in silence meanwhile.
        async with asyncio.timeout(tool.timeout_s):
            # Redirects are not followed: they would carry the tool's credentials to another host.
            async with session.post(tool.url, data=body, headers=headers, allow_redirects=False) as response:
                if not 200 <= response.status < 300:
                    return _error(f"the tool failed (HTTP {response.status})", started)
                raw = await _read_capped(response)
    except TimeoutError:
        return _error("the tool did not answer in time", started)
    except _TooLarge:
        return _error("the tool's answer was too large", started)
    except (aiohttp.ClientError, OSError):
        return _error("the tool could not be reached", started)

    text = raw.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        output = json.dumps({"result": text[:MAX_TEXT_RESULT_CHARS]}, ensure_ascii=False)
    else:
        output = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False)
    return ToolResult(ok=True, output=output, duration_ms=_elapsed_ms(started))

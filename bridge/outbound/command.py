"""`bridge call`: place a call through a running bridge (`POST /api/calls`) and follow it to its end.

The admin token comes from --token, else ADMIN_TOKEN, else the file a bridge started without one keeps
for its user (`Settings.admin_token_file`), so on the machine running `make run` no token is needed.
Exit status: 0 the call was answered and has ended, 1 it ended unanswered (busy, no answer, failed,
canceled) or was still going at --timeout, 2 the bridge refused to place it or could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

from bridge.config import ConfigError, load_settings

DEFAULT_URL = "http://127.0.0.1:8080"
POLL_S = 0.5
UNANSWERED = ("busy", "no_answer", "failed", "canceled")


class Refused(Exception):
    """The bridge did not place the call; str() is what it said."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge call",
        description="Place a call through a running bridge and follow it: progress, who answered, what "
        "was said, how it ended. In demo mode the call goes to the simulated callee: +15550100 is a "
        "person, +15550101 an answering machine, +15550102 busy, +15550103 no answer.",
    )
    parser.add_argument("to", help="the number to call, E.164 (e.g. +15551234567)")
    parser.add_argument("--from", dest="from_", help="caller id (default: the bridge's TWILIO_FROM_NUMBER)")
    said = parser.add_mutually_exclusive_group()
    said.add_argument("--instructions", help="what the assistant is to do on this call")
    said.add_argument("--instructions-file", type=Path, help="the same, read from a file")
    parser.add_argument("--greeting", help="instructions for its first words ('' waits for the callee)")
    parser.add_argument(
        "--machine-detection",
        choices=("off", "hang_up", "leave_message"),
        help="when a machine answers (default: the bridge's OUTBOUND_MACHINE_DETECTION)",
    )
    parser.add_argument("--voicemail", help="the message to leave on a machine, word for word")
    parser.add_argument("--metadata", help="a JSON object kept with the call and given to tools")
    parser.add_argument("--callback-url", help="where the bridge posts the call's status events")
    parser.add_argument("--record", action="store_true", help="ask for the call to be recorded")
    parser.add_argument("--url", default=DEFAULT_URL, help="the bridge (%(default)s)")
    parser.add_argument("--token", help="the admin token (default: ADMIN_TOKEN, or the local bridge's)")
    parser.add_argument("--no-wait", action="store_true", help="print the call id and return")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to follow it (%(default)s)")
    return parser


def _request(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    body: dict[str, Any] = {"to": args.to}
    if args.from_:
        body["from"] = args.from_
    if args.instructions_file is not None:
        try:
            body["instructions"] = args.instructions_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            parser.error(f"--instructions-file: {exc.strerror}")
    elif args.instructions:
        body["instructions"] = args.instructions
    for name, value in (
        ("greeting", args.greeting),
        ("machine_detection", args.machine_detection),
        ("voicemail_message", args.voicemail),
        ("callback_url", args.callback_url),
    ):
        if value is not None:
            body[name] = value
    if args.record:
        body["record"] = True
    if args.metadata:
        try:
            body["metadata"] = json.loads(args.metadata)
        except json.JSONDecodeError as exc:
            parser.error(f"--metadata is not JSON: {exc.msg}")
    return body


def _token(given: str | None) -> str:
    if given:
        return given
    try:
        settings = load_settings()
    except ConfigError:
        return ""
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        return settings.admin_token.get_secret_value()
    try:
        return settings.admin_token_file.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def describe(event: dict[str, Any]) -> str | None:
    """One line for an event of the call's timeline, or None for those not worth a line here."""
    kind, data = event["kind"], event.get("data") or {}
    if kind == "call_progress":
        if "answered_by" in data:
            end = f", its greeting over ({data['message_end']})" if data.get("message_end") else ""
            return f"answered by: {data['answered_by']}{end}"
        if data.get("status") or data.get("carrier_status"):
            return f"status: {data.get('status') or data.get('carrier_status')}"
    if kind == "answering":
        action = {
            "converse": "the assistant speaks",
            "leave_message": "the assistant leaves its message",
            "await_message_end": "waiting for the machine's beep",
            "hang_up": "hanging up on the machine",
        }.get(data.get("action", ""))
        if action and data.get("assumed"):
            return f"no verdict in time: {action}, as to a person"
        return action
    if kind == "assistant_transcript":
        return f"assistant: {data.get('text', '')}" + (" [cut off]" if data.get("interrupted") else "")
    if kind == "caller_transcript":
        return f"callee: {data.get('text', '')}"
    if kind == "error":
        return f"error ({data.get('source', '')}): {data.get('code', '')} {data.get('message', '')}".rstrip()
    return None


async def place_and_follow(
    url: str, token: str, body: dict[str, Any], *, wait: bool, timeout_s: float
) -> int:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{url}/api/calls", json=body) as response:
            answer = await _json(response)
            if response.status != 201:
                raise Refused(f"HTTP {response.status}: {answer.get('error', answer)}")
        call_id = answer["call_id"]
        print(f"call {call_id} to {answer['to']} from {answer['from']} via {answer['carrier']}: queued")
        print(f"  follow it at {url}/calls/{call_id}")
        if not wait:
            return 0
        seen: set[tuple[int, str]] = set()
        call: dict[str, Any] = {}
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            async with http.get(f"{url}/api/calls/{call_id}") as response:
                if response.status == 200:
                    call = await _json(response)
                    for event in call.get("events", []):
                        key = (event["seq"], event["kind"])
                        if key not in seen:
                            seen.add(key)
                            if (line := describe(event)) is not None:
                                print(f"  {line}")
            if call.get("status") == "ended":
                break
            await asyncio.sleep(POLL_S)
        else:
            print(f"still in progress after {timeout_s:g} s (see {url}/calls/{call_id})")
            return 1
    reason = call.get("end_reason")
    duration = call.get("duration_s")
    answered_by = call.get("answered_by") or "not told"
    took = f" after {duration:.1f} s" if isinstance(duration, int | float) else ""
    print(f"ended: {reason}{took} (answered by: {answered_by})")
    return 1 if reason in UNANSWERED else 0


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        data = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {"error": (await response.text()).strip()[:200]}
    return data if isinstance(data, dict) else {"error": str(data)}


def main_call(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    body = _request(args, parser)
    token = _token(args.token)
    if not token:
        print(
            "bridge call: no admin token: give --token or set ADMIN_TOKEN (a bridge started without one "
            "prints the one it made)",
            file=sys.stderr,
        )
        return 2
    url = args.url.rstrip("/")
    try:
        return asyncio.run(place_and_follow(url, token, body, wait=not args.no_wait, timeout_s=args.timeout))
    except Refused as exc:
        print(f"bridge call: the bridge did not place the call: {exc}", file=sys.stderr)
        return 2
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        print(f"bridge call: cannot reach {url}: {exc or type(exc).__name__}", file=sys.stderr)
        return 2

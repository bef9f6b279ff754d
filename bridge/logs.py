"""Structured logs: JSON lines by default, the call's ids bound on every line, numbers masked."""

from __future__ import annotations

import logging
import re
import sys

import structlog

_DIGITS = re.compile(r"\d")


def mask_number(number: str | None) -> str:
    """Keep the last four digits of a phone number: '+14155550123' -> '+*******0123'."""
    if not number:
        return ""
    digits = sum(c.isdigit() for c in number)
    if digits <= 4:
        return number
    keep = digits - 4
    out = []
    for c in number:
        if c.isdigit() and keep > 0:
            out.append("*")
            keep -= 1
        else:
            out.append(c)
    return "".join(out)


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
    # aiohttp and websockets log through stdlib logging; keep their warnings, in the same stream.
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(name)s %(levelname)s %(message)s")


def get_logger(name: str = "bridge") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)

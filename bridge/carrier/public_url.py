"""The URL a carrier reached us at, and its websocket and http spellings.

Carriers sign the URL they requested, not what reached us: behind a TLS terminator the scheme, host
and port differ, and rebuilding the wrong URL is the usual reason a valid signature fails. The answer
documents name our other endpoints (the media socket, the after-stream URL) from the same base.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

_WS_SCHEME = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}
_HTTP_SCHEME = {"wss": "https", "https": "https", "ws": "http", "http": "http"}


def _first(header_value: str) -> str:
    # Each proxy hop appends its own value; the first is what the client (the carrier) used.
    return header_value.split(",")[0].strip()


def public_base(configured: str, scheme: str, host: str, headers: Mapping[str, str]) -> str:
    """Base URL the carrier reached us at: the configured PUBLIC_URL, else what the proxy reports, else Host.

    Without PUBLIC_URL the forwarded headers are client-controlled; a signature still needs the
    carrier's key, but only PUBLIC_URL pins the host, so production should set it.
    """
    if configured:
        return configured.rstrip("/")
    proto = _first(headers.get("X-Forwarded-Proto", "")) or scheme
    forwarded_host = _first(headers.get("X-Forwarded-Host", "")) or host
    return f"{proto}://{forwarded_host}"


def public_url(base: str, raw_path: str) -> str:
    """The full URL at `raw_path` under `base` (which may carry a path prefix).

    For a request's own URL, `raw_path` must be as received (percent-encoding and query intact), e.g.
    aiohttp's `request.raw_path`: that is what the carrier signed.
    """
    return base.rstrip("/") + raw_path


def _with_scheme(url: str, schemes: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=schemes.get(parts.scheme, parts.scheme)))


def websocket_url(url: str) -> str:
    """`wss://` form of an `https://` URL (`ws://` for `http://`), as a stream URL is written."""
    return _with_scheme(url, _WS_SCHEME)


def http_url(url: str) -> str:
    """`https://` form of a `wss://` URL (`http://` for `ws://`); http(s) URLs are kept."""
    return _with_scheme(url, _HTTP_SCHEME)

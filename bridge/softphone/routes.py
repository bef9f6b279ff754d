"""HTTP face of the softphone: the page at /phone, its assets, and the media socket it calls through.

The page speaks the Twilio Media Streams protocol over /phone/media, and that socket is handed to the
same handler as Twilio's, so a browser call is an ordinary call to the rest of the bridge. The page and
the socket need the admin sign-in (the call log's cookie, or a bearer token); the assets are public.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from bridge.logs import get_logger

log = get_logger("bridge.softphone")

STATIC_DIR = Path(__file__).with_name("static")
PAGE_PATH = "/phone"
MEDIA_PATH = "/phone/media"
ASSET_PREFIX = "/phone/static/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ASSET_TYPES = {".js": "text/javascript", ".css": "text/css"}
_NO_STORE = {"Cache-Control": "no-store"}
_PAGE_HEADERS = {
    **_NO_STORE,
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "Permissions-Policy": "microphone=(self)",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_SIGN_IN_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Softphone</title>
<link rel="stylesheet" href="/phone/static/phone.css">
</head>
<body>
<main class="card notice">
  <h1>Sign in first</h1>
  <p>The softphone calls your assistant through this bridge, so it needs an operator's sign-in.</p>
  <p><a class="sign-in" href="/calls/login?next=/phone">Sign in</a> with your token, and you are brought
  back here.</p>
</main>
</body>
</html>
"""


def setup_softphone_routes(
    app: web.Application,
    *,
    media_handler: Handler,
    is_authorized: Callable[[web.Request], bool],
) -> None:
    """Add GET /phone, /phone/static/<asset> and the websocket GET /phone/media to `app`.

    `media_handler` is the carrier media-stream handler; `is_authorized` says whether a request is signed in.
    """
    page_html = (STATIC_DIR / "phone.html").read_text(encoding="utf-8")
    # Only the page's scripts and styles, by name: phone.html is served at /phone, behind the sign-in.
    assets = {path.name: path for path in STATIC_DIR.iterdir() if path.suffix in _ASSET_TYPES}

    async def page(request: web.Request) -> web.StreamResponse:
        if not is_authorized(request):
            return web.Response(
                text=_SIGN_IN_PAGE, status=401, content_type="text/html", headers=_PAGE_HEADERS
            )
        return web.Response(text=page_html, content_type="text/html", headers=_PAGE_HEADERS)

    async def asset(request: web.Request) -> web.StreamResponse:
        path = assets.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        headers = {
            "Content-Type": f"{_ASSET_TYPES[path.suffix]}; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        }
        return web.FileResponse(path, headers=headers)

    async def media(request: web.Request) -> web.StreamResponse:
        if not is_authorized(request):
            return web.Response(text="sign in at /calls first\n", status=401, headers=_NO_STORE)
        if not _same_origin(request):
            # A signed-in browser visiting another site must not let that site open calls on its cookie.
            log.warning("softphone socket from another origin refused", origin=request.headers.get("Origin"))
            return web.Response(text="cross-origin request refused\n", status=403, headers=_NO_STORE)
        return await media_handler(request)

    app.router.add_get(PAGE_PATH, page)
    app.router.add_get(ASSET_PREFIX + "{name}", asset)
    app.router.add_get(MEDIA_PATH, media)


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (browsers always send Origin on a websocket handshake)
    host = urlsplit(origin).netloc.lower()
    forwarded = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip().lower()
    return host in (request.host.lower(), forwarded) and host != ""

"""Admin authentication of the call-log API and pages: a bearer token, or the login form's session cookie.

The cookie holds an HMAC derived from the token rather than the token itself, so the browser never
stores the admin token (which may open other admin endpoints too). Changing the token logs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

COOKIE_NAME = "bridge_calllog_session"
COOKIE_MAX_AGE_S = 12 * 3600


class AdminAuth:
    def __init__(self, admin_token: str) -> None:
        if not admin_token:
            raise ValueError("the call log needs a non-empty admin token")
        self._token = admin_token.encode()
        self._cookie = hmac.new(self._token, b"bridge-calllog-session-v1", hashlib.sha256).hexdigest()

    def token_ok(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    def authenticated(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials and self.token_ok(credentials.strip()):
            return True
        cookie = request.cookies.get(COOKIE_NAME, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self._cookie.encode())

    def set_session(self, request: web.Request, response: web.StreamResponse) -> None:
        response.set_cookie(
            COOKIE_NAME,
            self._cookie,
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=_is_https(request),
        )

    @staticmethod
    def clear_session(response: web.StreamResponse) -> None:
        response.del_cookie(COOKIE_NAME, path="/")


def _is_https(request: web.Request) -> bool:
    # Behind a TLS-terminating proxy the bridge itself sees plain HTTP.
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"

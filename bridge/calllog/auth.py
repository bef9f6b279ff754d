"""Who may use the call log, the control API and the softphone: operators, each a label and a token.

ADMIN_TOKEN is the operator labelled "admin"; OPERATOR_TOKENS adds others ("alice:<token>,bob:<token>").
A request signs in with a bearer token or the session cookie the login form sets, and either way the
bridge knows which operator it is: that label (never the token) is what their actions are recorded by.

Tokens are compared in constant time. Each is kept only as its HMAC-SHA256 under a key made at
start-up; a candidate is hashed the same way and compared with every one of them, so the time taken
says neither which token matched nor how long any of them is.

The cookie holds the operator's label and an HMAC derived from their token, never the token itself
(which may open other admin endpoints too). Changing an operator's token signs them out.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping

from aiohttp import web

COOKIE_NAME = "bridge_calllog_session"
COOKIE_MAX_AGE_S = 12 * 3600
ADMIN = "admin"  # the label of ADMIN_TOKEN
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
MIN_TOKEN_CHARS = 16
_SESSION = b"bridge-calllog-session-v2:"


def parse_operator_tokens(text: str, admin_token: str = "") -> dict[str, str]:
    """OPERATOR_TOKENS ("alice:<token>,bob:<token>") as {label: token}. ValueError says what is wrong
    by the entry's position and label, never with a token in it."""
    operators: dict[str, str] = {}
    tokens = {admin_token} if admin_token else set()
    for position, entry in enumerate((e.strip() for e in text.split(",")), start=1):
        if not entry:
            continue
        label, sep, token = entry.partition(":")
        label, token = label.strip(), token.strip()
        where = f'entry {position} ("{label}")'
        if not sep or not LABEL.fullmatch(label):
            raise ValueError(
                f"entry {position} must be label:token, the label 1-32 letters, digits, - or _ "
                "(e.g. alice:<token>)"
            )
        if label == ADMIN:
            raise ValueError(f'{where}: "{ADMIN}" is the label of ADMIN_TOKEN; choose another')
        if label in operators:
            raise ValueError(f"{where}: that label is given twice")
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"{where}: the token needs {MIN_TOKEN_CHARS} characters or more")
        if token in tokens:
            raise ValueError(f"{where}: that token is already another operator's")
        tokens.add(token)
        operators[label] = token
    return operators


class OperatorAuth:
    def __init__(self, admin_token: str, operators: Mapping[str, str] | None = None) -> None:
        """`operators`: {label: token} besides the admin (`parse_operator_tokens`)."""
        if not admin_token:
            raise ValueError("the call log needs a non-empty admin token")
        tokens = {ADMIN: admin_token, **(operators or {})}
        self._key = secrets.token_bytes(32)
        self._digests = [(label, self._digest(token)) for label, token in tokens.items()]
        self._sessions = {
            label: hmac.new(token.encode(), _SESSION + label.encode(), hashlib.sha256).hexdigest()
            for label, token in tokens.items()
        }

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self._digests]

    def _digest(self, token: str) -> bytes:
        return hmac.new(self._key, token.encode(), hashlib.sha256).digest()

    def operator_for_token(self, candidate: str) -> str | None:
        """The label of the operator whose token this is, or None."""
        digest = self._digest(candidate)
        found = None
        for label, expected in self._digests:  # every one, matched or not: the same work either way
            if hmac.compare_digest(digest, expected):
                found = label
        return found

    def operator(self, request: web.Request) -> str | None:
        """The label of the operator this request is signed in as (bearer token or cookie), or None."""
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        bearer = credentials.strip() if scheme.lower() == "bearer" else ""
        if bearer and (operator := self.operator_for_token(bearer)) is not None:
            return operator
        label, _, mac = request.cookies.get(COOKIE_NAME, "").rpartition(".")
        expected = self._sessions.get(label)
        if expected is None or not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        return label

    def authenticated(self, request: web.Request) -> bool:
        return self.operator(request) is not None

    def set_session(self, request: web.Request, response: web.StreamResponse, operator: str) -> None:
        response.set_cookie(
            COOKIE_NAME,
            f"{operator}.{self._sessions[operator]}",
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

"""SIP messages (RFC 3261 §7): parse a datagram, build and serialise requests and responses.

Header names are kept in their full form whatever the wire used (compact forms expanded), looked up
case-insensitively; headers that may be comma-joined on one line (Via, Route, Record-Route) are split.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "r": "Refer-To",
    "b": "Referred-By",
    "o": "Event",
    "u": "Allow-Events",
    "x": "Session-Expires",
}
_CANONICAL = {
    name.lower(): name
    for name in (
        *COMPACT.values(),
        "CSeq",
        "Max-Forwards",
        "Allow",
        "Accept",
        "Authorization",
        "WWW-Authenticate",
        "Record-Route",
        "Route",
        "Server",
        "User-Agent",
        "Subscription-State",
        "Expires",
        "Warning",
    )
}
_SPLIT_COMMAS = {"via", "route", "record-route"}
MAX_DATAGRAM = 65535
MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 branch prefix
REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    405: "Method Not Allowed",
    408: "Request Timeout",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}
_REQUEST_LINE = re.compile(r"^([A-Za-z]+) (\S+) SIP/2\.0$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 (\d{3}) ?(.*)$")


class SipParseError(ValueError):
    """Not a SIP message we can use; the text says why (never the message itself)."""


def canonical(name: str) -> str:
    low = name.strip().lower()
    if low in COMPACT:
        return COMPACT[low]
    return _CANONICAL.get(low) or "-".join(part.capitalize() for part in low.split("-"))


@dataclass(slots=True)
class SipMessage:
    method: str = ""  # a request's method; "" for a response
    uri: str = ""
    status: int = 0  # a response's status code; 0 for a request
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str, default: str = "") -> str:
        key = canonical(name).lower()
        return next((v for n, v in self.headers if n.lower() == key), default)

    def get_all(self, name: str) -> list[str]:
        key = canonical(name).lower()
        return [v for n, v in self.headers if n.lower() == key]

    def set(self, name: str, value: str) -> None:
        """Replace every `name` header with one, where the first was (or at the end)."""
        key = canonical(name).lower()
        index = next((i for i, (n, _) in enumerate(self.headers) if n.lower() == key), len(self.headers))
        self.headers = [(n, v) for n, v in self.headers if n.lower() != key]
        self.headers.insert(min(index, len(self.headers)), (canonical(name), value))

    def add(self, name: str, value: str) -> None:
        self.headers.append((canonical(name), value))

    @property
    def call_id(self) -> str:
        return self.get("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = self.get("CSeq").partition(" ")
        return int(number), method.strip().upper()

    @property
    def branch(self) -> str:
        vias = self.get_all("Via")
        return header_param(vias[0], "branch") if vias else ""

    @property
    def from_tag(self) -> str:
        return header_param(self.get("From"), "tag")

    @property
    def to_tag(self) -> str:
        return header_param(self.get("To"), "tag")

    def serialise(self) -> bytes:
        start = f"{self.method} {self.uri} SIP/2.0" if self.method else f"SIP/2.0 {self.status} {self.reason}"
        lines = [start]
        lines += [f"{n}: {v}" for n, v in self.headers if n.lower() != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def parse(data: bytes) -> SipMessage:
    """One datagram as a SIP message. Raises SipParseError for anything we cannot trust."""
    if len(data) > MAX_DATAGRAM:
        raise SipParseError("datagram too large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")  # bare LF line ends are tolerated (RFC 3261 §7.5)
        if not sep:
            raise SipParseError("no end of headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    raw_lines = text.replace("\r\n", "\n").split("\n")
    while raw_lines and not raw_lines[0].strip():
        raw_lines.pop(0)  # keep-alive CRLFs before a message
    if not raw_lines:
        raise SipParseError("empty message")
    message = SipMessage()
    if match := _REQUEST_LINE.match(raw_lines[0].strip()):
        message.method, message.uri = match.group(1).upper(), match.group(2)
    elif match := _STATUS_LINE.match(raw_lines[0].strip()):
        message.status, message.reason = int(match.group(1)), match.group(2)
    else:
        raise SipParseError("bad start line")
    lines: list[str] = []
    for line in raw_lines[1:]:
        if line[:1] in (" ", "\t") and lines:  # header folding
            lines[-1] += " " + line.strip()
        elif line.strip():
            lines.append(line)
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or " " in name.strip():
            raise SipParseError("bad header line")
        full = canonical(name)
        values = split_commas(value) if full.lower() in _SPLIT_COMMAS else [value.strip()]
        message.headers += [(full, v) for v in values]
    for required in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not message.get(required):
            raise SipParseError(f"missing {required}")
    try:
        number, method = message.cseq
    except ValueError:
        raise SipParseError("bad CSeq") from None
    if not method or number < 0 or (message.method and method != message.method):
        raise SipParseError("CSeq method does not match the request")
    length = message.get("Content-Length")
    if length:
        if not length.isdigit() or int(length) > len(body):
            raise SipParseError("Content-Length beyond the datagram")
        body = body[: int(length)]
    message.body = body
    return message


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and angle brackets."""
    parts, current, quoted, angle = [], [], False, 0
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle += 1
        elif not quoted and ch == ">":
            angle = max(0, angle - 1)
        if ch == "," and not quoted and not angle:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def header_param(value: str, name: str) -> str:
    """A ;name=value parameter of a header (outside its <uri>), "" if absent."""
    tail = value.rsplit(">", 1)[1] if ">" in value else value
    for param in tail.split(";")[1:]:
        key, _, val = param.partition("=")
        if key.strip().lower() == name:
            return val.strip().strip('"')
    return ""


def header_uri(value: str) -> str:
    """The URI of a name-addr (`"Bob" <sip:bob@host>;tag=1`) or addr-spec (`sip:bob@host;tag=1`)."""
    if "<" in value:
        return value.split("<", 1)[1].split(">", 1)[0].strip()
    return value.split(";", 1)[0].strip()


def uri_user(uri: str) -> str:
    """The user part of a sip:/sips:/tel: URI, "" when there is none."""
    scheme, _, rest = uri.partition(":")
    if scheme.lower() == "tel":
        return rest.split(";", 1)[0]
    user, at, _ = rest.partition("@")
    return user.split(";", 1)[0] if at else ""


def uri_host_port(uri: str, default_port: int = 5060) -> tuple[str, int]:
    """Host and port of a sip: URI (IPv4 or a name; IPv6 in brackets)."""
    rest = uri.partition(":")[2]
    hostport = rest.rpartition("@")[2].split(";", 1)[0].split("?", 1)[0]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = tail.removeprefix(":")
    else:
        host, _, port = hostport.partition(":")
    return host, int(port) if port.isdigit() else default_port


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def response(request: SipMessage, status: int, to_tag: str = "", reason: str = "") -> SipMessage:
    """A response copying the request's Via, From, To (adding our tag), Call-ID and CSeq (§8.2.6)."""
    out = SipMessage(status=status, reason=reason or REASONS.get(status, "Unknown"))
    out.headers += [("Via", v) for v in request.get_all("Via")]
    out.add("From", request.get("From"))
    to = request.get("To")
    if to_tag and status != 100 and not header_param(to, "tag"):
        to = f"{to};tag={to_tag}"
    out.add("To", to)
    out.add("Call-ID", request.call_id)
    out.add("CSeq", request.get("CSeq"))
    return out

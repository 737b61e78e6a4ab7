"""Who may call the status server: the listen address, the bearer token and the cross-origin
rules, as pure functions of the request's facts (no sockets, no framework).

The rules (docs/operating.md says the same for operators):
- A loopback `listen` only answers requests whose Host is a loopback name: a web page whose
  domain is re-pointed at 127.0.0.1 (DNS rebinding) gets 403, not the gateway's data.
- A state-changing call (any method but GET/HEAD/OPTIONS) is refused when it comes from another
  origin (`Origin` or `Sec-Fetch-Site` says so), has a form's content type, or carries a body
  that is not JSON: an HTML form can only send the three "simple" content types, and anything
  else from another origin needs a CORS preflight that this server never grants.
- With a token, a state-changing call needs `Authorization: Bearer <token>`; on a non-loopback
  `listen` every path but /healthz and the static page (which holds no data) needs it too.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Open without a token even on a non-loopback listen: the orchestrator's health probe, and the
# page's static HTML and its charting library (its data comes from /api/*, which the token
# guards).
OPEN_PATHS = frozenset({"/healthz", "/", "/index.html", "/static/uplot.js",
                        "/static/uplot.css"})
# What an HTML form (or a fetch without a CORS preflight) can send from any other site.
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
TOKEN_MIN_LENGTH = 16
MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Refusal:
    """Why a request is not served: its HTTP status and a one-line reason."""

    status: int
    reason: str


@dataclass(frozen=True)
class RequestFacts:
    """The parts of a request the access rules look at (header values as sent, or None)."""

    method: str
    path: str
    host: str | None = None
    origin: str | None = None
    fetch_site: str | None = None
    authorization: str | None = None
    content_type: str | None = None
    has_body: bool = False


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port`; an empty host is 127.0.0.1) -> (host, port), or ValueError."""
    host, colon, port = listen.strip().rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} is not host:port (e.g. 127.0.0.1:8080)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{listen!r}: write an IPv6 address in brackets, e.g. [::1]:8080")
    if any(c.isspace() or c in "/[]" for c in host):
        raise ValueError(f"{listen!r}: {host!r} is not a host name or address")
    return host or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost` reach this machine only; anything else (0.0.0.0, a LAN
    address, a host name) may be reachable from the network."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_problem(token: str) -> str | None:
    """Why a configured token is unusable, or None."""
    if len(token) < TOKEN_MIN_LENGTH:
        return f"at least {TOKEN_MIN_LENGTH} characters (a guessable token guards nothing)"
    if not token.isascii() or not token.isprintable() or " " in token:
        return "printable ASCII without spaces (it travels in an HTTP header)"
    return None


def bearer_matches(authorization: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


def _host_and_port(netloc: str, default_port: int | None) -> tuple[str, int | None]:
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").rstrip("."), port if port is not None else default_port


def same_origin(origin: str, host_header: str) -> bool:
    """Whether `Origin` names the host:port the request was sent to (its Host header)."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (a sandboxed frame, a file:// page) or garbage
    default = 443 if parts.scheme == "https" else 80
    return _host_and_port(parts.netloc, default) == _host_and_port(host_header.lower(), default)


class AccessPolicy:
    """The rules above for one server: its listen host and its token (None: no token)."""

    def __init__(self, listen_host: str, token: str | None) -> None:
        self.loopback = is_loopback(listen_host)
        self.token = token

    def check(self, request: RequestFacts) -> Refusal | None:
        """None when the request may be served, else why not."""
        return (self._host_refusal(request) or self._origin_refusal(request)
                or self._token_refusal(request) or self._body_refusal(request))

    def _host_refusal(self, request: RequestFacts) -> Refusal | None:
        if not self.loopback or request.host is None:
            return None
        if is_loopback(_host_and_port(request.host.lower(), None)[0]):
            return None
        return Refusal(403, f"Host {request.host!r} is not a loopback name: this gateway "
                            "listens on loopback only")

    def _origin_refusal(self, request: RequestFacts) -> Refusal | None:
        if request.method in SAFE_METHODS:
            return None
        if request.fetch_site is not None and request.fetch_site not in ("same-origin", "none"):
            return Refusal(403, f"cross-origin request refused (Sec-Fetch-Site: "
                                f"{request.fetch_site})")
        if request.origin is not None and not same_origin(request.origin, request.host or ""):
            return Refusal(403, f"cross-origin request refused (Origin: {request.origin})")
        return None

    def _token_refusal(self, request: RequestFacts) -> Refusal | None:
        if self.token is None or bearer_matches(request.authorization, self.token):
            return None
        if request.method in SAFE_METHODS and (self.loopback or request.path in OPEN_PATHS):
            return None
        return Refusal(401, "this call needs the gateway's token: Authorization: Bearer <token>")

    def _body_refusal(self, request: RequestFacts) -> Refusal | None:
        if request.method in SAFE_METHODS:
            return None
        media_type = (request.content_type or "").partition(";")[0].strip().lower()
        if media_type not in FORM_TYPES and (media_type == "application/json"
                                             or not request.has_body):
            return None
        return Refusal(415, "a state-changing call takes no body or Content-Type: "
                            "application/json")

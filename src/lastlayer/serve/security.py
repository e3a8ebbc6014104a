"""Who may use the server: the access token, CSRF protection and the Host check, as one ASGI middleware (and the
security headers every response carries, as another).

Rules (see :class:`AccessGuard`):

* With a token, every request (page, static files, API, stream, downloads) must carry it: in the
  ``X-Lastlayer-Token`` header, the ``token`` query parameter, or the cookie the page's first
  ``GET /?token=...`` sets. Missing: 401; wrong: 403. The cookie holds not the token but a value derived
  from it and this server's port (:func:`cookie_value`): browsers send a host's cookies to every port
  of it, so another program on another port of this host only ever sees a value it cannot use.
* A state-changing request (any method but GET/HEAD/OPTIONS) must carry the ``X-Lastlayer-Token``
  header, also without a token (its value is then ignored). A cookie or query parameter alone never
  authorises a change: a cross-site form or ``fetch`` cannot add a custom header without a CORS
  preflight, which this server never grants, so the header defeats CSRF.
* Without a token (loopback only), the ``Host`` header must name this machine (``localhost``,
  ``127.x.x.x``, ``[::1]``): a DNS-rebinding page on another name is refused (403).

The token is compared in constant time. Nothing here imports Starlette, so it is cheap to test.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import stat
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable, MutableMapping
from urllib.parse import parse_qs

TOKEN_HEADER = "x-lastlayer-token"
TOKEN_QUERY = "token"
COOKIE_PREFIX = "lastlayer_token_"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def new_token() -> str:
    """A fresh random access token (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.1``, ``::1``); False for ``0.0.0.0`` and names."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8765`` -> ``::1``, ``example:80`` -> ``example``)."""
    header = header.strip()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def cookie_name(port: int | None) -> str:
    """The token cookie's name: per port, since browsers share cookies between ports of one host."""
    return f"{COOKIE_PREFIX}{port or 0}"


def cookie_value(token: str, port: int | None) -> str:
    """What the token cookie holds: an HMAC of this server's port keyed by the token (valid on this port only)."""
    return hmac.new(token.encode("utf-8"), f"lastlayer-cookie:{port or 0}".encode(), hashlib.sha256).hexdigest()


TOKEN_ENV = "LASTLAYER_TOKEN"


def read_token_file(path: str) -> str:
    """The token in the first line of the file ``path``; :class:`~lastlayer.errors.LastLayerError` when the file is
    missing, empty, or readable by other users (a secret: ``chmod 600`` it)."""
    from lastlayer.errors import LastLayerError

    try:
        with open(path, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            lines = handle.read(4096).splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise LastLayerError(f"cannot read the token file {path}: {getattr(error, 'strerror', None) or error}", subject="token") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LastLayerError(f"the token file {path} is readable by other users; run: chmod 600 {path}", subject="token")
    token = lines[0].strip() if lines else ""
    if not token:
        raise LastLayerError(f"the token file {path} is empty; write the token on its first line", subject="token")
    return token


def write_token_file(path: str, token: str) -> None:
    """Write ``token`` to ``path`` readable by its owner only (0600, whatever the umask), replacing it at once."""
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison (False for a missing token)."""
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


class AccessGuard:
    """ASGI middleware enforcing the module's rules before any route runs.

    Args:
        app: the wrapped application.
        token: the access token, or ``None`` for none (loopback only: the caller checks that).
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan; the app has no WebSocket route
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
        method = scope.get("method", "GET").upper()
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        port = (scope.get("server") or (None, None))[1]
        header_token = headers.get(TOKEN_HEADER)
        refusal = self._refusal(method, headers, query, port, header_token)
        if refusal is not None:
            await _send_json(send, *refusal)
            return
        query_token = (query.get(TOKEN_QUERY) or [None])[0]
        if self.token is not None and method == "GET" and token_matches(query_token, self.token):
            await self.app(scope, receive, _setting_cookie(send, cookie_name(port), cookie_value(self.token, port)))
            return
        await self.app(scope, receive, send)

    def _refusal(self, method: str, headers: dict[str, str], query: dict[str, list[str]], port: int | None,
                 header_token: str | None) -> tuple[int, str] | None:
        """``(status, message)`` when the request must be refused, else None."""
        unsafe = method not in SAFE_METHODS
        if self.token is None:
            if not is_loopback(host_name(headers.get("host", "localhost"))):
                return 403, "this server only answers to localhost; open it as http://127.0.0.1:<port>/"
            if unsafe and header_token is None:
                return 403, "a change needs the X-Lastlayer-Token header (sent by the page); reload the page"
            return None
        if unsafe:
            if header_token is None:
                return 403, "a change needs the access token in the X-Lastlayer-Token header; reload the page from the URL the server printed"
            return None if token_matches(header_token, self.token) else (403, "wrong access token; open the URL the server printed")
        given = header_token or (query.get(TOKEN_QUERY) or [None])[0]
        if given is not None:
            return None if token_matches(given, self.token) else (403, "wrong access token; open the URL the server printed")
        cookie = _cookie(headers.get("cookie", ""), cookie_name(port))
        if cookie is None:
            return 401, "this server needs an access token; open the URL with ?token=... that the server printed"
        return None if token_matches(cookie, cookie_value(self.token, port)) else (403, "wrong access token; open the URL the server printed")


def _cookie(header: str, name: str) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed Cookie header is just no cookie
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _setting_cookie(send: Send, name: str, value: str) -> Send:
    """``send`` that adds the token cookie (HttpOnly, SameSite=Strict) to the response start."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            cookie = f"{name}={value}; Path=/; HttpOnly; SameSite=Strict"
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode("latin-1"))]}
        await send(message)

    return wrapped


async def _send_json(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


# Sent with every response: no sniffing, no referrer, no framing, and a page that loads only its own files.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; connect-src 'self'; "
     b"script-src 'self'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
]


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, wrapped)

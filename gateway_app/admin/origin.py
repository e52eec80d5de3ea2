"""Same-origin checks for browser (cookie) sessions, shared by the admin API and the admin UI.

A browser attaches the session cookie to any request to this host, including ones a
foreign page makes it send. Such requests carry the foreign page's ``Origin`` (browsers
send it on every POST, PUT, PATCH and DELETE); bearer tokens are never sent implicitly,
so only cookie-authenticated writes need this check.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway_app.http import Scope, header


def served_over_tls(scope: Scope) -> bool:
    """True for direct TLS and behind a trusted proxy's ``X-Forwarded-Proto: https``.

    uvicorn's proxy-headers middleware rewrites the scheme for trusted proxies only.
    """
    return scope.get("scheme") == "https"


def own_origin(scope: Scope) -> str | None:
    """This server's origin as the client addressed it (scheme and Host), or None without Host."""
    host = header(scope, b"host")
    if not host:
        return None
    return _normalized(scope.get("scheme", "http"), host.decode("latin-1").strip())


_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _normalized(scheme: str, netloc: str) -> str:
    scheme, netloc = scheme.lower(), netloc.lower()
    return f"{scheme}://{netloc.removesuffix(_DEFAULT_PORTS.get(scheme, ''))}"


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        return None
    return _normalized(parts.scheme, parts.netloc)


def request_origin(scope: Scope) -> str | None:
    """The origin the browser says the request comes from: ``Origin``, else the ``Referer``'s."""
    origin = header(scope, b"origin")
    if origin is not None:
        value = origin.decode("latin-1").strip()
        # "null" (sandboxed frames, some redirects) is never same-origin.
        return None if value == "null" else _origin_of(value)
    referer = header(scope, b"referer")
    return _origin_of(referer.decode("latin-1")) if referer else None


def is_json(scope: Scope) -> bool:
    content_type = header(scope, b"content-type") or b""
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def cross_origin_reason(scope: Scope) -> str | None:
    """Why the request is not provably same-origin, or None when it is."""
    claimed = request_origin(scope)
    if claimed is None:
        return "the request has no Origin or Referer header"
    own = own_origin(scope)
    if claimed != own:
        return f"its origin {claimed} is not this server's origin {own}"
    return None

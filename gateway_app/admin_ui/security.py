"""What every admin UI response carries and every form post must prove.

CSRF: a form carries a token derived from the session token (HMAC), so it is
per session, needs no storage, works on every replica, and changes when the
session does (login, password change). The login form, which has no session
yet, uses a double-submit cookie. On top, a POST must come from this origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

CSRF_FIELD = "csrf_token"
LOGIN_CSRF_COOKIE = "gw_login_csrf"
_CSRF_PURPOSE = b"gateway admin ui form"

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


def session_csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def new_login_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def tokens_match(expected: str | None, sent: str | None) -> bool:
    return bool(expected) and bool(sent) and hmac.compare_digest(expected.encode(), sent.encode())

"""Split a PostgreSQL URL so the password never lands on a command line.

``url | pg_url_without_password`` goes in argv (``-d``); ``url | pg_password_env``
is the task's ``environment`` (PGPASSWORD, or nothing when the URL has no password).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit


def pg_url_without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))


def pg_password_env(url: str) -> dict[str, str]:
    password = urlsplit(url).password
    return {"PGPASSWORD": unquote(password)} if password is not None else {}


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"pg_url_without_password": pg_url_without_password, "pg_password_env": pg_password_env}

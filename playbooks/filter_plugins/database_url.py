"""Split a PostgreSQL URL so the password never lands on a command line.

``url | pg_url_without_password`` goes in argv (``-d``); ``url | pg_passfile_entry``
is the line of a 0600 password file that PGPASSFILE names. (A task's
``environment`` would not do: Ansible puts it on the command line of the shell
that starts the module.)
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


def pg_passfile_entry(url: str) -> str:
    """A pgpass line for any host, port, database and user ('' without a password)."""
    password = urlsplit(url).password
    if password is None:
        return ""
    escaped = unquote(password).replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"pg_url_without_password": pg_url_without_password, "pg_passfile_entry": pg_passfile_entry}

"""The control plane's domain errors and their one mapping to HTTP answers.

Storage operations (keys, accounts, reports, provider_control) raise these; the CLI
prints them, the admin API answers them as JSON errors and the admin UI shows them on
the page, both with the status and code ``as_http_error`` gives.
"""

from __future__ import annotations

from gateway_app.http import HTTPError, invalid_request


class NotFound(LookupError):
    """The named thing does not exist (or is not in the state asked for)."""

    code = "not_found"
    param: str | None = None


class Conflict(Exception):
    """The change contradicts what exists (a name already taken, nothing to act on)."""

    code = "conflict"


class Invalid(ValueError):
    """A bad argument, named by ``param``; any other ValueError is answered the same, unnamed."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


# What as_http_error maps; anything else is a bug and stays a 500.
DOMAIN_ERRORS = (NotFound, Conflict, ValueError)


def as_http_error(exc: NotFound | Conflict | ValueError) -> HTTPError:
    """404 (NotFound), 409 (Conflict) or 400 (ValueError), with the error's code and param."""
    if isinstance(exc, NotFound):
        return HTTPError(404, str(exc), exc.code, param=exc.param)
    if isinstance(exc, Conflict):
        return HTTPError(409, str(exc), exc.code)
    return invalid_request(str(exc), exc.param if isinstance(exc, Invalid) else None)

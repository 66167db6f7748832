"""Domain errors: what went wrong, in the words of the domain, with no HTTP in them.

Services raise these; the workers, the command line and the web all catch them. Only the HTTP layer
(app/core/errors.py) turns them into statuses, so the code that workers import knows nothing of 404s.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """An error a user can act on. `errors` points at the offending inputs: [{loc, msg}]."""

    def __init__(self, error: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.errors = errors or []


class InvalidInput(DomainError):
    """A value the request gave cannot be used; `loc` says where it was."""

    def __init__(self, loc: list[str | int], msg: str) -> None:
        super().__init__(msg, [{"loc": loc, "msg": msg}])


class UnknownItems(DomainError):
    """Several given values name nothing known (e.g. dataset slugs); `errors` lists each one."""


class NotFound(DomainError):
    """Nothing with this id or name."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")


class NotAllowed(DomainError):
    """The caller may not do this (e.g. change a selection through its read-only link)."""


class Conflict(DomainError):
    """The thing is in a state that does not allow this now (e.g. download a bundle that is still running)."""


class Gone(DomainError):
    """The thing existed but its content is no longer available (e.g. a bundle removed from the store)."""


class NotOffered(DomainError):
    """This server does not offer the feature (a missing optional part, an unsupported store)."""


__all__ = [
    "Conflict",
    "DomainError",
    "Gone",
    "InvalidInput",
    "NotAllowed",
    "NotFound",
    "NotOffered",
    "UnknownItems",
]

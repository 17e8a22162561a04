"""The PEP 249 exception hierarchy of the Hrana driver.

Besides the standard classes, every error says what the caller may assume
about the request that failed, because a remote write can fail *after* the
server applied it:

* ``executed is False``: the server certainly did not run it (the connection
  was refused, or the server rejected the stream before running anything),
  so sending it again is safe;
* ``executed is None``: unknown (the connection broke after the request was
  sent); only an idempotent operation may be retried;
* ``executed is True``: the server ran it and answered with this error.

``connection_lost`` tells SQLAlchemy to drop the connection from its pool.
"""

from __future__ import annotations


class Warning(Exception):
    pass


class Error(Exception):
    """Base class of every driver error."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        executed: bool | None = True,
        connection_lost: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.executed = executed
        self.connection_lost = connection_lost


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class DataError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    pass


class InternalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    pass


class NotSupportedError(DatabaseError):
    pass


class AuthenticationError(OperationalError):
    """The server refused the auth token (HTTP 401/403)."""

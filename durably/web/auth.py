"""Who may do what through the HTTP API: the hooks of Durably-TS's ``AuthConfig``.

Every hook may be a plain function or a coroutine function, and rejects a
request by raising :class:`~durably.web.HTTPError`. ``authenticate`` runs
first on every request (the dashboard's page too) and returns a context,
whatever the application needs (a user, a tenant); the other hooks get it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ValidationError


@dataclass(frozen=True)
class TriggerRequest:
    """What ``POST /trigger`` asked for, as ``on_trigger`` sees it (after validation)."""

    job_name: str
    input: Any
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    labels: Mapping[str, str] | None = None
    coalesce: str | None = None
    delay: float | None = None
    priority: int | None = None
    queue: str | None = None


@dataclass(frozen=True)
class RunFilter:
    """The runs ``GET /runs`` (and ``/runs/subscribe``, which ignores ``statuses``) asks for.

    ``scope_runs(ctx, filter)`` returns the filter to use instead: add a
    label to keep a tenant to its own runs.
    """

    job_names: Sequence[str] = ()
    statuses: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


RUN_OPERATIONS = frozenset(
    {
        "read",
        "subscribe",
        "steps",
        "retrigger",
        "cancel",
        "delete",
        "waits",
        "signal",
        "retry",
        "attempts",
        "logs",
    }
)
"""The ``operation`` passed to ``on_run_access``: TS's eight, and durably's retry, attempts, logs."""


@dataclass(frozen=True)
class SignalRequest:
    """What ``POST /signal`` asked for, as ``on_signal`` sees it (after validation)."""

    signal_id: str
    payload: Any


@dataclass(frozen=True)
class Auth:
    """The auth hooks (TS's ``AuthConfig``); only ``authenticate`` is required.

    * ``authenticate(request)`` → context: runs first on every request.
    * ``on_trigger(ctx, trigger_request)``: before ``POST /trigger`` creates a run.
    * ``on_run_access(ctx, run, operation)``: before any route reads or changes one run.
    * ``scope_runs(ctx, run_filter)`` → ``RunFilter``: narrows ``GET /runs`` and ``/runs/subscribe``.
    * ``on_signal(ctx, run, wait, signal_request)``: before ``POST /signal`` signals a wait.

    The wait routes (``/waits``, ``/wait``, ``/signal``) need ``on_run_access``
    when there is an ``auth``: a wait id alone grants nothing.
    """

    authenticate: Callable[..., Any]
    on_trigger: Callable[..., Any] | None = None
    on_run_access: Callable[..., Any] | None = None
    scope_runs: Callable[..., Any] | None = None
    on_signal: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if not callable(self.authenticate):
            raise ValidationError("Auth(authenticate=...) must be a function of the request")
        for name in ("on_trigger", "on_run_access", "scope_runs", "on_signal"):
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise ValidationError(f"Auth({name}=...) must be a function or None")

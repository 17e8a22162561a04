"""A trigger's options, validated completely before anything touches the database.

:func:`build_request` turns what ``job.trigger(...)`` (or a
:class:`~durably.jobs.TriggerItem`) was given into an
:class:`~durably.core.enqueue.EnqueueRequest`; every way of creating a run
goes through it, so every one checks the same things and says so the same
way (:class:`~durably.errors.ValidationError`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from . import serialization
from .clock import to_ms
from .core.enqueue import EnqueueRequest
from .errors import ValidationError
from .serialization import DEFAULT_SERIALIZER, Serializer

_LABEL_KEY = re.compile(r"^[a-zA-Z0-9\-_./]+$")
_MAX_KEY_LENGTH = 255
COALESCE_VALUES = ("skip",)
DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0
_PRIORITY_RANGE = (-(2**31), 2**31 - 1)


def validate_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise ValidationError("labels must be a mapping of str to str")
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.match(key):
            raise ValidationError(
                f"Invalid label key {key!r}: must contain only alphanumeric characters, "
                "dashes, underscores, dots, and slashes"
            )
        if not isinstance(value, str):
            raise ValidationError(
                f"Label {key!r} must have a str value, got {type(value).__name__}"
            )
    return dict(labels)


def _validate_key(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_KEY_LENGTH:
        raise ValidationError(
            f"{name} must be a non-empty string of at most {_MAX_KEY_LENGTH} characters"
        )
    return value


def check_queue(queue: object) -> str:
    """A queue name: a non-empty string of at most 255 characters."""
    if not isinstance(queue, str) or not queue or len(queue) > _MAX_KEY_LENGTH:
        raise ValidationError(
            f"A queue name must be a non-empty string of at most {_MAX_KEY_LENGTH} characters, "
            f"got {queue!r}"
        )
    return queue


def check_priority(priority: object) -> int:
    """A priority: an integer (a 32-bit one), higher runs first."""
    low, high = _PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or not low <= priority <= high:
        raise ValidationError(f"priority must be an integer from {low} to {high}, got {priority!r}")
    return priority


def _timing(delay: float | timedelta | None, run_at: datetime | None) -> tuple[int | None, int]:
    """``run_at`` in ms since the epoch (None: not given) and ``delay`` in ms (0: none).

    A delay is kept relative: it counts from the moment the run is written,
    read from the same clock as every lease (``durably.testing`` can fake it).
    """
    if delay is not None and run_at is not None:
        raise ValidationError("Pass delay or run_at, not both")
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise ValidationError(f"run_at must be a datetime, got {type(run_at).__name__}")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise ValidationError(
                "run_at must be an aware datetime (e.g. datetime.now(timezone.utc)); "
                "a naive one has no time zone to say when it is"
            )
        return to_ms(run_at), 0
    if delay is None:
        return None, 0
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise ValidationError(
            f"delay must be a non-negative number of seconds or a timedelta, got {delay!r}"
        )
    return None, round(seconds * 1000)


def plain_request(
    job_name: str, input: Any, queue: str, priority: int, serializer: Serializer
) -> EnqueueRequest:
    """A trigger without options, into a queue and priority already checked (its job's).

    Most triggers, and every plain item of a batch: only the input to check
    (stored by the instance's ``serializer``).
    """
    return {
        "job_name": job_name,
        "input_json": serialization.store(serializer, input, what="The job input"),
        "labels": None,
        "labels_json": "{}",
        "idempotency_key": None,
        "concurrency_key": None,
        "coalesce": False,
        "queue": queue,
        "priority": priority,
        "run_at": None,
        "delay_ms": 0,
    }


def build_request(
    job_name: str,
    input: Any,
    *,
    idempotency_key: str | None = None,
    concurrency_key: str | None = None,
    coalesce: str | None = None,
    labels: Mapping[str, str] | None = None,
    queue: str = DEFAULT_QUEUE,
    priority: int = DEFAULT_PRIORITY,
    delay: float | timedelta | None = None,
    run_at: datetime | None = None,
    serializer: Serializer = DEFAULT_SERIALIZER,
) -> EnqueueRequest:
    """Validate one trigger completely, before anything touches the database.

    ``serializer`` stores the input: the ``Durably``'s own, which its callers pass.
    """
    if coalesce is not None:
        if coalesce not in COALESCE_VALUES:
            raise ValidationError(f"Invalid coalesce value: {coalesce!r}. Valid values: 'skip'")
        if concurrency_key is None:
            raise ValidationError("coalesce requires concurrency_key")
    checked_queue = check_queue(queue)
    checked_priority = check_priority(priority)
    due, delay_ms = _timing(delay, run_at)
    if labels is None and idempotency_key is None and concurrency_key is None and due is None:
        request = plain_request(job_name, input, checked_queue, checked_priority, serializer)
        request["delay_ms"] = delay_ms
        return request
    checked_labels = validate_labels(labels)
    return {
        "job_name": job_name,
        "input_json": serialization.store(serializer, input, what="The job input"),
        "labels": checked_labels or None,
        "labels_json": serialization.dumps(checked_labels, what="labels")
        if checked_labels
        else "{}",
        "idempotency_key": _validate_key("idempotency_key", idempotency_key),
        "concurrency_key": _validate_key("concurrency_key", concurrency_key),
        "coalesce": coalesce == "skip",
        "queue": checked_queue,
        "priority": checked_priority,
        "run_at": due,
        "delay_ms": delay_ms,
    }

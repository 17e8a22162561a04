"""Which retry policy covers a failed attempt, and how long the run waits before the next.

A step's own policy (``step.run(..., retry=...)``) covers the failures of
that step, counted over the run's life; the job's policy covers everything
else, counted by the run's ``attempt``. A failure that no policy retries
fails the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..retry import Retry


@dataclass(frozen=True)
class StepFailure:
    """The last step of the run that failed under a policy of its own."""

    error: BaseException
    policy: Retry
    failures: int
    """How many times this step has failed in the run, this failure included."""


def _raised_by(exc: BaseException, cause: BaseException) -> bool:
    """``exc`` is ``cause``, or was raised while handling it (``raise X from cause``)."""
    return exc is cause or exc.__cause__ is cause or exc.__context__ is cause


def retry_delay(
    exc: BaseException, job_policy: Retry | None, attempt: int, step: StepFailure | None
) -> float | None:
    """Seconds before the next attempt, or None if the run fails now.

    ``attempt`` is the run's attempt that raised ``exc``; ``step`` the last
    failure of a step with its own policy, which covers ``exc`` if the job
    raised that failure (or raised from it).
    """
    if step is not None and _raised_by(exc, step.error):
        policy, number = step.policy, step.failures
    elif job_policy is not None:
        policy, number = job_policy, attempt
    else:
        return None
    return policy.delay(number) if policy.retries(exc, number) else None

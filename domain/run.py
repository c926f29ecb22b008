"""The Run aggregate: one execution of an action, through its attempts.

pending -> running -> success | failed, with a failed attempt going back to pending (due after the
retry delay) while retries remain. A running attempt holds a lease; an executor that dies lets it
expire, and another executor takes the run over as a new attempt, so a run is never stuck.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec

from domain.errors import CONTROL_CHARACTERS, Conflict
from domain.events import AggregateType, DomainEvent, EventMeta


class RunState(msgspec.Struct):
    run_id: str
    action_id: str
    workspace_id: str
    app_id: str
    endpoint_id: str
    org_id: str
    execution_id: str
    status: str
    attempt: int
    trigger_type: str
    triggered_at: datetime
    resolved_payload: dict[str, Any]
    resolved_thread_id: str | None
    max_retries: int
    retry_delay_seconds: int
    due_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_seconds: float | None = None
    error_message: str | None = None
    error_code: str | None = None
    lease_until: datetime | None = None
    missed_slots: int = 0
    stages_completed: int | None = None
    total_stages: int | None = None
    token_usage: dict[str, int] | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("success", "failed")


# What an endpoint may report about an execution. Its numbers end in sums that every org's rows share a
# type with (activity's hourly token totals are bigint), so one report past these bounds could overflow
# a sum and leave a view unable to store anything; a value out of bounds is not reported at all.
MAX_REPORTED = 2**31 - 1
MAX_TOKEN_KINDS = 32
MAX_TOKEN_KIND_LENGTH = 100


def reported_count(value: Any) -> int | None:
    """`value` if it is a count a report may hold (an int, not a bool, within 0..MAX_REPORTED), else None."""
    if type(value) is int and 0 <= value <= MAX_REPORTED:
        return value
    return None


def reported_usage(usage: Any) -> dict[str, int] | None:
    """The token counts of `usage` that a report may hold: at most MAX_TOKEN_KINDS, with short, printable
    names."""
    if not isinstance(usage, dict):
        return None
    kept: dict[str, int] = {}
    for kind, count in usage.items():
        if (
            isinstance(kind, str)
            and len(kind) <= MAX_TOKEN_KIND_LENGTH
            and not CONTROL_CHARACTERS.search(kind)  # the store's JSON (jsonb) refuses a NUL
            and reported_count(count) is not None
        ):
            kept[kind] = count
            if len(kept) == MAX_TOKEN_KINDS:
                break
    return kept


def execution_id(run_id: str) -> str:
    """The id an endpoint knows a run's execution by: the run's own, under its own prefix."""
    return "exe_" + run_id.removeprefix("run_")


class AttemptOutcome(msgspec.Struct, frozen=True):
    """What one attempt came to, as its executor saw it: a success (no error code) or a coded failure with its
    fixed message, and what the endpoint reported (stages, token usage)."""

    error_code: str | None = None  # None: success
    error_message: str | None = None
    stages_completed: int | None = None
    total_stages: int | None = None
    token_usage: dict[str, int] | None = None

    @property
    def succeeded(self) -> bool:
        return self.error_code is None


class RequestRun(msgspec.Struct, frozen=True):
    run_id: str
    execution_id: str
    action_id: str
    workspace_id: str
    app_id: str
    endpoint_id: str
    trigger_type: str
    resolved_payload: dict[str, Any]
    resolved_thread_id: str | None
    max_retries: int
    retry_delay_seconds: int
    now: datetime
    missed_slots: int = 0


class StartAttempt(msgspec.Struct, frozen=True):
    now: datetime
    lease_seconds: float


class FinishAttempt(msgspec.Struct, frozen=True):
    attempt: int
    now: datetime
    outcome: AttemptOutcome = AttemptOutcome()


class RunRequested(DomainEvent, frozen=True):
    run_id: str
    execution_id: str
    action_id: str
    workspace_id: str
    app_id: str
    endpoint_id: str
    trigger_type: str
    resolved_payload: dict[str, Any]
    resolved_thread_id: str | None
    max_retries: int
    retry_delay_seconds: int
    missed_slots: int


class AttemptStarted(DomainEvent, frozen=True):
    attempt: int
    lease_until: datetime
    taken_over: bool


class RunSucceeded(DomainEvent, frozen=True):
    attempt: int
    duration_seconds: float
    stages_completed: int | None
    total_stages: int | None
    token_usage: dict[str, int] | None


class AttemptFailed(DomainEvent, frozen=True):
    attempt: int
    error_code: str
    error_message: str
    duration_seconds: float
    retry_at: datetime | None  # None: no retries left, the run has failed
    stages_completed: int | None = None
    total_stages: int | None = None
    token_usage: dict[str, int] | None = None


EVENTS = (RunRequested, AttemptStarted, RunSucceeded, AttemptFailed)

RunCommand = RequestRun | StartAttempt | FinishAttempt


def decide(state: RunState | None, command: RunCommand) -> list[DomainEvent]:
    if isinstance(command, RequestRun):
        if state is not None:
            raise Conflict("Run already exists", run_id=command.run_id)
        return [RunRequested(**{f: getattr(command, f) for f in RunRequested.__struct_fields__})]
    assert state is not None
    match command:
        case StartAttempt():
            lease_until = command.now + timedelta(seconds=command.lease_seconds)
            if state.status == "pending" and state.due_at <= command.now:
                attempt = state.attempt if state.started_at is None else state.attempt + 1
                return [AttemptStarted(attempt=attempt, lease_until=lease_until, taken_over=False)]
            if state.status == "running" and state.lease_until is not None and state.lease_until < command.now:
                # The executor of the running attempt died: that attempt failed, try again if allowed.
                lost = AttemptFailed(
                    attempt=state.attempt,
                    error_code="EXECUTOR_LOST",
                    error_message="The executor running this attempt stopped responding",
                    duration_seconds=_elapsed(state, command.now),
                    retry_at=command.now if state.attempt <= state.max_retries else None,
                )
                if lost.retry_at is None:
                    return [lost]
                return [lost, AttemptStarted(attempt=state.attempt + 1, lease_until=lease_until, taken_over=True)]
            raise Conflict("The run is not ready for an attempt", status=state.status)
        case FinishAttempt():
            if state.status != "running" or state.attempt != command.attempt:
                raise Conflict("This attempt is no longer the run's current attempt", attempt=command.attempt)
            duration = _elapsed(state, command.now)
            outcome = command.outcome
            if outcome.error_code is None:
                return [RunSucceeded(attempt=command.attempt, duration_seconds=duration, **_report(outcome))]
            retries_left = state.attempt <= state.max_retries
            retry_at = command.now + timedelta(seconds=state.retry_delay_seconds) if retries_left else None
            return [
                AttemptFailed(
                    attempt=command.attempt,
                    error_code=outcome.error_code,
                    error_message=outcome.error_message or outcome.error_code,
                    duration_seconds=duration,
                    retry_at=retry_at,
                    **_report(outcome),
                )
            ]
    raise TypeError(f"not a run command: {command!r}")


def _report(outcome: AttemptOutcome) -> dict[str, Any]:
    return {
        "stages_completed": reported_count(outcome.stages_completed),
        "total_stages": reported_count(outcome.total_stages),
        "token_usage": reported_usage(outcome.token_usage),
    }


def _elapsed(state: RunState, now: datetime) -> float:
    return round((now - (state.started_at or now)).total_seconds(), 3)


def evolve(state: RunState | None, event: DomainEvent, meta: EventMeta) -> RunState:
    at = meta.occurred_at
    if isinstance(event, RunRequested):
        fields = {f: getattr(event, f) for f in RunRequested.__struct_fields__}
        return RunState(**fields, org_id=meta.org_id, status="pending", attempt=1, triggered_at=at, due_at=at)
    assert state is not None
    replace = msgspec.structs.replace
    match event:
        case AttemptStarted():
            return replace(
                state,
                status="running",
                attempt=event.attempt,
                started_at=at,
                lease_until=event.lease_until,
                completed_at=None,
            )
        case RunSucceeded():
            return replace(
                state,
                status="success",
                completed_at=at,
                duration_seconds=event.duration_seconds,
                error_code=None,
                error_message=None,
                lease_until=None,
                stages_completed=event.stages_completed,
                total_stages=event.total_stages,
                token_usage=event.token_usage,
            )
        case AttemptFailed():
            failed = event.retry_at is None
            return replace(
                state,
                status="failed" if failed else "pending",
                due_at=event.retry_at or state.due_at,
                completed_at=at if failed else None,
                duration_seconds=event.duration_seconds,
                error_code=event.error_code,
                error_message=event.error_message,
                lease_until=None,
                stages_completed=event.stages_completed,
                total_stages=event.total_stages,
                token_usage=event.token_usage,
            )
    raise TypeError(f"not a run event: {event!r}")


RUN = AggregateType("run", decide, evolve, creates=(RequestRun,), events=EVENTS)

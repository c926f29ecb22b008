"""The Action aggregate: what to call (an endpoint), with what (payload, thread), and when."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from domain.errors import Conflict, FieldError, NotFound, Rules, ValidationFailed
from domain.events import AggregateType, DomainEvent, EventMeta
from domain.run import RequestRun, RunState, execution_id
from domain.schedule import next_slot, previous_slot, slots_between, valid_cron, valid_timezone

THREAD_MODES = ("new_each_run", "fixed", "template")
ACTION_TYPES = ("trigger", "scheduled")
SCHEDULE_TYPES = ("cron", "once")
TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_PAYLOAD_DEPTH = 10
# A run's thread id keys an index of the analytics view, and PostgreSQL refuses an index entry past about
# 2.7 kB: one longer id would fail every batch of the views after it, for every org.
MAX_THREAD_ID_LENGTH = 200
# Ids as long as any this system makes (`act_` + 32 hex digits), to size a template's thread id ahead.
_SAMPLE_ACTION_ID, _SAMPLE_RUN_ID = "act_" + "0" * 32, "run_" + "0" * 32


class ActionConfig(msgspec.Struct, frozen=True):
    """Everything a client sets on an action."""

    name: str
    endpoint_id: str
    namespace_id: str
    description: str | None = None
    thread_mode: str = "new_each_run"
    thread_id: str | None = None
    thread_id_template: str | None = None
    payload: dict[str, Any] = {}
    action_type: str = "trigger"
    schedule_type: str | None = None
    cron_expression: str | None = None
    scheduled_at: datetime | None = None
    timezone: str = "UTC"
    max_retries: int = 0
    retry_delay_seconds: int = 60
    is_enabled: bool = True


class ActionState(msgspec.Struct):
    action_id: str
    workspace_id: str
    app_id: str
    org_id: str
    config: ActionConfig
    next_run_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    last_run_id: str | None = None
    once_fired: bool = False
    deleted: bool = False


# Commands (time is passed in: the scheduler and the tests control it)
class CreateAction(msgspec.Struct, frozen=True):
    action_id: str
    workspace_id: str
    app_id: str
    config: ActionConfig
    now: datetime


class UpdateAction(msgspec.Struct, frozen=True):
    changes: dict[str, Any]
    now: datetime


class SetEnabled(msgspec.Struct, frozen=True):
    enabled: bool
    now: datetime


class DeleteAction(msgspec.Struct, frozen=True):
    pass


class TriggerAction(msgspec.Struct, frozen=True):
    run_id: str


class FireSchedule(msgspec.Struct, frozen=True):
    """The scheduler's tick: fire the due slot (coalescing missed ones), or skip it while the previous run is
    busy; an orphaned action (its workspace or app is gone) is deleted instead. `schedule_tick` makes one from
    the streams the tick read."""

    now: datetime
    previous_run_busy: bool
    orphaned: bool = False


# Events
class ActionCreated(DomainEvent, frozen=True):
    action_id: str
    workspace_id: str
    app_id: str
    config: ActionConfig
    next_run_at: datetime | None


class ActionUpdated(DomainEvent, frozen=True):
    config: ActionConfig
    next_run_at: datetime | None


class ActionEnabled(DomainEvent, frozen=True):
    next_run_at: datetime | None


class ActionDisabled(DomainEvent, frozen=True):
    pass


class ActionDeleted(DomainEvent, frozen=True):
    pass


class ActionTriggered(DomainEvent, frozen=True):
    run_id: str


class ScheduledRunFired(DomainEvent, frozen=True):
    run_id: str
    slot: datetime
    missed_slots: int
    next_run_at: datetime | None


class ScheduledSlotSkipped(DomainEvent, frozen=True):
    slot: datetime
    reason: str
    next_run_at: datetime | None


EVENTS = (
    ActionCreated,
    ActionUpdated,
    ActionEnabled,
    ActionDisabled,
    ActionDeleted,
    ActionTriggered,
    ScheduledRunFired,
    ScheduledSlotSkipped,
)

ActionCommand = CreateAction | UpdateAction | SetEnabled | DeleteAction | TriggerAction | FireSchedule


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def check_payload(rules: Rules, field: str, payload: Any) -> None:
    if _depth(payload) > MAX_PAYLOAD_DEPTH:
        rules.fail(field, f"Payload nests deeper than {MAX_PAYLOAD_DEPTH} levels", "value_error", None)
    elif len(msgspec.json.encode(payload)) > MAX_PAYLOAD_BYTES:
        rules.fail(field, f"Payload is larger than {MAX_PAYLOAD_BYTES} bytes", "value_error", None)
    elif _holds_nul(payload):  # the store's JSON (jsonb) cannot hold \u0000
        rules.fail(field, "Payload must not contain NUL characters (\\u0000)", "value_error", None)


def check_config(config: ActionConfig, now: datetime, *, new_schedule: bool) -> None:
    """Every rule about an action's settings and their combinations, all reported at once."""
    r = Rules()
    r.text("name", config.name, min_length=1, max_length=100)
    r.text("description", config.description, min_length=0, max_length=2000)
    # Both are checked whenever they are given, whatever the mode: a mode that does not use them still stores them
    # (and the store cannot hold a NUL).
    if config.thread_id:
        r.text("thread_id", config.thread_id, min_length=1, max_length=MAX_THREAD_ID_LENGTH)
    if config.thread_id_template:
        r.text("thread_id_template", config.thread_id_template, min_length=1, max_length=200)
    if config.thread_mode not in THREAD_MODES:
        r.fail("thread_mode", f"Input should be one of: {', '.join(THREAD_MODES)}", "enum", config.thread_mode)
    elif config.thread_mode == "fixed" and not config.thread_id:
        r.fail("thread_id", "thread_id is required when thread_mode is 'fixed'", "missing", config.thread_id)
    elif config.thread_mode == "template":
        template = config.thread_id_template
        if not template:
            r.fail(
                "thread_id_template",
                "thread_id_template is required when thread_mode is 'template'",
                "missing",
                template,
            )
        else:
            for placeholder in TEMPLATE_FIELD.findall(template):
                if placeholder not in ("action_id", "run_id", "date") and not (
                    placeholder.startswith("payload.") and len(placeholder) > 8
                ):
                    r.fail(
                        "thread_id_template",
                        f"Unknown placeholder {{{placeholder}}}: use {{action_id}}, "
                        "{run_id}, {date} or {payload.KEY}",
                        "value_error",
                        template,
                    )
            sample = _filled(template, _SAMPLE_ACTION_ID, _SAMPLE_RUN_ID, now, config.payload)
            if len(sample) > MAX_THREAD_ID_LENGTH:
                r.fail(
                    "thread_id_template",
                    f"With the action's payload, the template makes a thread id longer than {MAX_THREAD_ID_LENGTH} "
                    "characters",
                    "value_error",
                    template,
                )
    check_payload(r, "payload", config.payload)
    if config.action_type not in ACTION_TYPES:
        r.fail("action_type", f"Input should be one of: {', '.join(ACTION_TYPES)}", "enum", config.action_type)
    elif config.action_type == "trigger":
        for field in ("schedule_type", "cron_expression", "scheduled_at"):
            if getattr(config, field) is not None:
                r.fail(field, f"{field} is only for scheduled actions", "value_error", str(getattr(config, field)))
    elif config.schedule_type not in SCHEDULE_TYPES:
        r.fail(
            "schedule_type",
            "A scheduled action needs schedule_type 'cron' or 'once'",
            "missing" if config.schedule_type is None else "enum",
            config.schedule_type,
        )
    elif config.schedule_type == "cron":
        if not config.cron_expression or not valid_cron(config.cron_expression):
            r.fail(
                "cron_expression",
                "A 5-field cron expression is required (minute hour day month weekday)",
                "value_error",
                config.cron_expression,
            )
        if config.scheduled_at is not None:
            r.fail(
                "scheduled_at",
                "scheduled_at is only for schedule_type 'once'",
                "value_error",
                config.scheduled_at.isoformat(),
            )
    else:
        if config.scheduled_at is None:
            r.fail("scheduled_at", "scheduled_at is required for schedule_type 'once'", "missing", None)
        elif config.scheduled_at.tzinfo is None:
            r.fail(
                "scheduled_at",
                "scheduled_at needs a time zone offset",
                "timezone_aware",
                config.scheduled_at.isoformat(),
            )
        elif not _within_utc(config.scheduled_at):
            r.fail(
                "scheduled_at",
                "scheduled_at must be within years 1-9999 in UTC",
                "datetime_range",
                config.scheduled_at.isoformat(),
            )
        elif new_schedule and config.scheduled_at <= now:
            r.fail("scheduled_at", "scheduled_at must be in the future", "value_error", config.scheduled_at.isoformat())
        if config.cron_expression is not None:
            r.fail(
                "cron_expression",
                "cron_expression is only for schedule_type 'cron'",
                "value_error",
                config.cron_expression,
            )
    if not valid_timezone(config.timezone):
        r.fail(
            "timezone", "Unknown time zone: use an IANA name such as 'Europe/London'", "value_error", config.timezone
        )
    if not 0 <= config.max_retries <= 10:
        r.fail("max_retries", "Input should be between 0 and 10", "range", config.max_retries, ge=0, le=10)
    if not 0 <= config.retry_delay_seconds <= 86400:
        r.fail(
            "retry_delay_seconds",
            "Input should be between 0 and 86400",
            "range",
            config.retry_delay_seconds,
            ge=0,
            le=86400,
        )
    r.check()


def _within_utc(moment: datetime) -> bool:
    """next_run_at is kept in UTC: 9999-12-31T23:59:59-14:00 has no UTC time Python can hold."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def scheduled_run_id(action_id: str, slot: datetime) -> str:
    """The run of a slot has an id derived from the action and the slot: firing a slot twice is a no-op."""
    return _derived_run_id(action_id, slot.isoformat())


def triggered_run_id(org_id: str, action_id: str, idempotency_key: str) -> str:
    """A manual run under an Idempotency-Key has an id derived from it: a repeat names the same run."""
    return _derived_run_id(org_id, action_id, idempotency_key)


def _derived_run_id(*parts: str) -> str:
    return "run_" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def previous_run_busy(previous: RunState | None) -> bool:
    """The busy-run rule's question: a slot whose previous run has not finished is skipped."""
    return previous is not None and not previous.finished


def orphaned(workspace: Any, app: Any) -> bool:
    """An action lives in its workspace and its app (their states, None when absent): without either it is an
    orphan, deleted at its next tick."""
    return workspace is None or workspace.deleted or app is None or app.deleted


def schedule_tick(now: datetime, *, workspace: Any, app: Any, previous_run: RunState | None) -> FireSchedule:
    """The scheduler's tick for an action, from the states of the streams it depends on."""
    return FireSchedule(now=now, previous_run_busy=previous_run_busy(previous_run), orphaned=orphaned(workspace, app))


def check_trigger(payload: dict[str, Any], thread_id: str | None) -> None:
    """What a manual trigger may add to the action's run: a thread id and payload keys within bounds."""
    rules = Rules()
    rules.text("thread_id", thread_id, min_length=1, max_length=MAX_THREAD_ID_LENGTH)
    check_payload(rules, "payload", payload)
    rules.check()


def run_request(
    action: ActionState,
    run_id: str,
    trigger_type: str,
    now: datetime,
    payload: dict[str, Any],
    thread_id: str | None,
    missed_slots: int = 0,
) -> RequestRun:
    """The run an action starts: its endpoint and retry settings, the trigger's payload over the action's, and
    the thread it talks in."""
    resolved_payload = {**action.config.payload, **payload}
    return RequestRun(
        run_id=run_id,
        execution_id=execution_id(run_id),
        action_id=action.action_id,
        workspace_id=action.workspace_id,
        app_id=action.app_id,
        endpoint_id=action.config.endpoint_id,
        trigger_type=trigger_type,
        resolved_payload=resolved_payload,
        resolved_thread_id=resolve_thread(action.config, action.action_id, run_id, now, resolved_payload, thread_id),
        max_retries=action.config.max_retries,
        retry_delay_seconds=action.config.retry_delay_seconds,
        now=now,
        missed_slots=missed_slots,
    )


def next_run(config: ActionConfig, now: datetime, *, fired_once: bool = False) -> datetime | None:
    if not config.is_enabled or config.action_type != "scheduled":
        return None
    if config.schedule_type == "once":
        return None if fired_once or config.scheduled_at is None else config.scheduled_at.astimezone(UTC)
    assert config.cron_expression is not None
    return next_slot(config.cron_expression, config.timezone, now)


def decide(state: ActionState | None, command: ActionCommand) -> list[DomainEvent]:
    if isinstance(command, CreateAction):
        if state is not None:
            raise Conflict("Action already exists", action_id=command.action_id)
        check_config(command.config, command.now, new_schedule=True)
        return [
            ActionCreated(
                action_id=command.action_id,
                workspace_id=command.workspace_id,
                app_id=command.app_id,
                config=command.config,
                next_run_at=next_run(command.config, command.now),
            )
        ]
    assert state is not None
    if state.deleted:
        raise NotFound("action", state.action_id)
    config = state.config
    match command:
        case UpdateAction():
            updated = msgspec.convert({**msgspec.structs.asdict(config), **command.changes}, ActionConfig)
            schedule_changed = any(k in command.changes for k in ("scheduled_at", "schedule_type", "action_type"))
            check_config(updated, command.now, new_schedule=schedule_changed)
            fired = state.once_fired and not schedule_changed
            return [ActionUpdated(config=updated, next_run_at=next_run(updated, command.now, fired_once=fired))]
        case SetEnabled(enabled=True):
            if config.is_enabled:
                return []
            enabled = msgspec.structs.replace(config, is_enabled=True)
            return [ActionEnabled(next_run_at=next_run(enabled, command.now, fired_once=state.once_fired))]
        case SetEnabled(enabled=False):
            return [ActionDisabled()] if config.is_enabled else []
        case DeleteAction():
            return [ActionDeleted()]
        case TriggerAction():
            if not config.is_enabled:
                raise Conflict("The action is disabled; enable it to trigger it", action_id=state.action_id)
            # Nothing to record on the action: the run is the record. Concurrent triggers then only read
            # the action and never race each other for it.
            return []
        case FireSchedule(orphaned=True):
            return [ActionDeleted()]
        case FireSchedule():
            slot = state.next_run_at
            if slot is None or slot > command.now or not config.is_enabled:
                return []
            if config.schedule_type == "cron":
                assert config.cron_expression is not None
                due = slots_between(
                    config.cron_expression, config.timezone, slot - timedelta(microseconds=1), command.now
                )
                following = next_slot(config.cron_expression, config.timezone, command.now)
                # The slot list is capped; the slot to fire is the last one before `following`.
                latest = previous_slot(config.cron_expression, config.timezone, following)
            else:
                due, following, latest = [slot], None, slot
            if command.previous_run_busy:
                return [ScheduledSlotSkipped(slot=latest, reason="previous run still running", next_run_at=following)]
            return [
                ScheduledRunFired(
                    run_id=scheduled_run_id(state.action_id, latest),
                    slot=latest,
                    missed_slots=len(due) - 1,
                    next_run_at=following,
                )
            ]
    raise TypeError(f"not an action command: {command!r}")


def evolve(state: ActionState | None, event: DomainEvent, meta: EventMeta) -> ActionState:
    at = meta.occurred_at
    if isinstance(event, ActionCreated):
        return ActionState(
            action_id=event.action_id,
            workspace_id=event.workspace_id,
            app_id=event.app_id,
            org_id=meta.org_id,
            config=event.config,
            next_run_at=event.next_run_at,
            created_by=meta.actor.user_id or meta.actor.principal_id,
            created_at=at,
            updated_at=at,
        )
    assert state is not None
    replace = msgspec.structs.replace
    match event:
        case ActionUpdated():
            return replace(state, config=event.config, next_run_at=event.next_run_at, updated_at=at)
        case ActionEnabled():
            return replace(
                state, config=replace(state.config, is_enabled=True), next_run_at=event.next_run_at, updated_at=at
            )
        case ActionDisabled():
            return replace(state, config=replace(state.config, is_enabled=False), next_run_at=None, updated_at=at)
        case ActionDeleted():
            return replace(state, deleted=True, next_run_at=None, updated_at=at)
        case ActionTriggered():
            return replace(state, last_run_id=event.run_id)
        case ScheduledRunFired():
            return replace(
                state,
                last_run_id=event.run_id,
                next_run_at=event.next_run_at,
                once_fired=state.once_fired or state.config.schedule_type == "once",
            )
        case ScheduledSlotSkipped():
            return replace(
                state,
                next_run_at=event.next_run_at,
                once_fired=state.once_fired or state.config.schedule_type == "once",
            )
    raise TypeError(f"not an action event: {event!r}")


ACTION = AggregateType("action", decide, evolve, creates=(CreateAction,), events=EVENTS)


def resolve_thread(
    config: ActionConfig, action_id: str, run_id: str, now: datetime, payload: dict[str, Any], requested: str | None
) -> str:
    """The thread a run talks in: the trigger's choice, else the action's mode."""
    if requested:
        return requested
    if config.thread_mode == "fixed" and config.thread_id:
        return config.thread_id
    if config.thread_mode == "template" and config.thread_id_template:
        thread_id = _filled(config.thread_id_template, action_id, run_id, now, payload)
        if len(thread_id) > MAX_THREAD_ID_LENGTH:
            message = f"The payload makes the thread id longer than {MAX_THREAD_ID_LENGTH} characters"
            raise ValidationFailed([FieldError(("payload",), message, "value_error", None)])
        return thread_id
    return "thread_" + run_id.removeprefix("run_")  # new_each_run: a thread of its own


def _filled(template: str, action_id: str, run_id: str, now: datetime, payload: dict[str, Any]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("payload."):
            return str(payload.get(name.removeprefix("payload."), ""))
        return {"action_id": action_id, "run_id": run_id, "date": now.date().isoformat()}.get(name, "")

    return TEMPLATE_FIELD.sub(fill, template)

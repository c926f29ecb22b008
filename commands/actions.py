"""Action and run use cases: for the API, the scheduler and the executor."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

import msgspec

from commands.catalog import require_item, require_workspace
from commands.unit_of_work import CommandRunner, Context, Outcome, UnitOfWork, new_id
from domain.action import (
    ACTION,
    ActionConfig,
    ActionState,
    CreateAction,
    DeleteAction,
    ScheduledRunFired,
    SetEnabled,
    TriggerAction,
    UpdateAction,
    check_trigger,
    run_request,
    schedule_tick,
    triggered_run_id,
)
from domain.catalog import CATALOG
from domain.errors import Conflict, FieldError, NotFound, ValidationFailed
from domain.events import SYSTEM_ACTOR
from domain.run import RUN, AttemptOutcome, FinishAttempt, RunState, StartAttempt
from domain.workspace import WORKSPACE
from eventstore import EventStore


def _config(fields: dict[str, Any]) -> ActionConfig:
    try:
        return msgspec.convert(fields, ActionConfig)
    except msgspec.ValidationError as error:  # types the wire layer let through (e.g. from the CLI)
        raise ValidationFailed(
            [FieldError((str(error).rpartition("$.")[2] or "body",), str(error), "type_error")]
        ) from None


def _require_targets(uow: UnitOfWork, workspace_id: str, app_id: str, config: ActionConfig) -> None:
    endpoint = require_item(uow, "endpoints", config.endpoint_id, workspace_id)
    if endpoint.fields["app_id"] != app_id:
        raise NotFound("endpoint", config.endpoint_id)  # an endpoint of another app is not in this app
    require_item(uow, "namespaces", config.namespace_id, workspace_id)


def require_action(uow: UnitOfWork, workspace_id: str, app_id: str, action_id: str) -> ActionState:
    require_workspace(uow, workspace_id)
    require_item(uow, "apps", app_id, workspace_id)
    action = uow.load(ACTION, action_id)
    if action is None or action.deleted or action.workspace_id != workspace_id or action.app_id != app_id:
        raise NotFound("action", action_id)
    return action


def create_action(
    commands: CommandRunner, ctx: Context, workspace_id: str, app_id: str, fields: dict[str, Any]
) -> Outcome:
    action_id = new_id("act")
    config = _config(fields)

    def use_case(uow: UnitOfWork) -> ActionState:
        require_workspace(uow, workspace_id)
        require_item(uow, "apps", app_id, workspace_id)
        state = uow.create(ACTION, action_id, CreateAction(action_id, workspace_id, app_id, config, commands.clock()))
        _require_targets(uow, workspace_id, app_id, config)
        return state

    return Outcome(*commands.run(ctx, use_case))


def update_action(
    commands: CommandRunner, ctx: Context, workspace_id: str, app_id: str, action_id: str, changes: dict[str, Any]
) -> Outcome:
    def use_case(uow: UnitOfWork) -> ActionState:
        require_action(uow, workspace_id, app_id, action_id)
        state = uow.decide(ACTION, action_id, UpdateAction(changes, commands.clock()))
        if "endpoint_id" in changes or "namespace_id" in changes:
            _require_targets(uow, workspace_id, app_id, state.config)
        return state

    return Outcome(*commands.run(ctx, use_case))


def set_enabled(
    commands: CommandRunner, ctx: Context, workspace_id: str, app_id: str, action_id: str, enabled: bool
) -> Outcome:
    def use_case(uow: UnitOfWork) -> ActionState:
        require_action(uow, workspace_id, app_id, action_id)
        return uow.decide(ACTION, action_id, SetEnabled(enabled, commands.clock()))

    return Outcome(*commands.run(ctx, use_case))


def delete_action(commands: CommandRunner, ctx: Context, workspace_id: str, app_id: str, action_id: str) -> Outcome:
    def use_case(uow: UnitOfWork) -> ActionState:
        require_action(uow, workspace_id, app_id, action_id)
        return uow.decide(ACTION, action_id, DeleteAction())

    return Outcome(*commands.run(ctx, use_case))


def trigger_action(
    commands: CommandRunner,
    ctx: Context,
    workspace_id: str,
    app_id: str,
    action_id: str,
    payload: dict[str, Any],
    thread_id: str | None,
    idempotency_key: str | None,
) -> Outcome:
    """A manual run. With an idempotency key the run id derives from it, so a repeat answers the same run."""
    run_id = triggered_run_id(ctx.org_id, action_id, idempotency_key) if idempotency_key else new_id("run")
    check_trigger(payload, thread_id)

    def use_case(uow: UnitOfWork) -> RunState:
        action = require_action(uow, workspace_id, app_id, action_id)
        existing = uow.load(RUN, run_id)
        if existing is not None:
            return existing  # the same Idempotency-Key again: the same run, nothing new
        uow.decide(ACTION, action_id, TriggerAction(run_id))
        request = run_request(action, run_id, "manual", commands.clock(), payload, thread_id)
        return uow.decide(RUN, run_id, request)

    return Outcome(*commands.run(ctx, use_case))


# The scheduler
def fire_schedule(commands: CommandRunner, org_id: str, action_id: str, trace_id: str) -> RunState | None:
    """Fires the action's due slot (or records why not). Safe to call twice: the second finds nothing due."""
    ctx = Context(org_id=org_id, actor=SYSTEM_ACTOR, trace_id=trace_id)

    def use_case(uow: UnitOfWork) -> RunState | None:
        action = uow.load(ACTION, action_id)
        if action is None or action.deleted:
            return None
        workspace, app = uow.load(WORKSPACE, action.workspace_id), uow.load(CATALOG, action.app_id)
        previous = uow.load(RUN, action.last_run_id) if action.last_run_id else None
        now = commands.clock()
        after = uow.decide(ACTION, action_id, schedule_tick(now, workspace=workspace, app=app, previous_run=previous))
        fired = [e for e in uow.pending(action_id) if isinstance(e, ScheduledRunFired)]
        if not fired:
            return None
        request = run_request(after, fired[0].run_id, "scheduled", now, {}, None, fired[0].missed_slots)
        return uow.decide(RUN, fired[0].run_id, request)

    try:
        return commands.run(ctx, use_case)[0]
    except Conflict:
        return None  # fired meanwhile by another scheduler: nothing to do


def fire_schedule_on(
    on_command: Callable[[float], None] | None = None,
) -> Callable[[EventStore, Callable[[], datetime]], Callable[[str, str, str], RunState | None]]:
    """`fire_schedule` in the shape the scheduler calls it (scheduler.scheduler.FireOn): against the store and at
    the time it names, the live one or a rehearsal ahead of a slot."""

    def fire_on(store: EventStore, clock: Callable[[], datetime]) -> Callable[[str, str, str], RunState | None]:
        return partial(fire_schedule, CommandRunner(store, clock, on_command))

    return fire_on


# The executor
def start_attempt(
    commands: CommandRunner, org_id: str, run_id: str, lease_seconds: float, trace_id: str
) -> RunState | None:
    """Claims the run's next attempt for this executor; None when another executor has it."""
    ctx = Context(org_id=org_id, actor=SYSTEM_ACTOR, trace_id=trace_id)
    try:
        state, _ = commands.run(ctx, lambda uow: uow.decide(RUN, run_id, StartAttempt(commands.clock(), lease_seconds)))
    except Conflict:
        return None
    return state if state.status == "running" else None


def finish_attempt(
    commands: CommandRunner, org_id: str, run_id: str, trace_id: str, attempt: int, outcome: AttemptOutcome
) -> RunState | None:
    ctx = Context(org_id=org_id, actor=SYSTEM_ACTOR, trace_id=trace_id)
    try:
        state, _ = commands.run(
            ctx, lambda uow: uow.decide(RUN, run_id, FinishAttempt(attempt, commands.clock(), outcome))
        )
    except Conflict:
        return None  # the lease expired and another executor took the run over
    return state

"""Action and run use cases: for the API, the scheduler and the executor."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import msgspec

from commands.aggregates import Aggregates, Context, Outcome, Transaction, load_stored, new_id
from commands.catalog import require_item, require_workspace
from domain.action import (
    ACTION,
    ActionConfig,
    ActionState,
    CreateAction,
    DeleteAction,
    FireSchedule,
    ScheduledRunFired,
    SetEnabled,
    TriggerAction,
    UpdateAction,
    check_payload,
    resolve_thread,
)
from domain.catalog import CATALOG
from domain.errors import Conflict, FieldError, NotFound, Rules, ValidationFailed
from domain.events import SYSTEM_ACTOR
from domain.run import RUN, FinishAttempt, RequestRun, RunState, StartAttempt
from domain.workspace import WORKSPACE


def _config(fields: dict[str, Any]) -> ActionConfig:
    try:
        return msgspec.convert(fields, ActionConfig)
    except msgspec.ValidationError as error:  # types the wire layer let through (e.g. from the CLI)
        raise ValidationFailed(
            [FieldError((str(error).rpartition("$.")[2] or "body",), str(error), "type_error")]
        ) from None


def _require_targets(tx: Transaction, workspace_id: str, app_id: str, config: ActionConfig) -> None:
    endpoint = require_item(tx, "endpoints", config.endpoint_id, workspace_id)
    if endpoint.fields["app_id"] != app_id:
        raise NotFound("endpoint", config.endpoint_id)  # an endpoint of another app is not in this app
    require_item(tx, "namespaces", config.namespace_id, workspace_id)


def require_action(tx: Transaction, workspace_id: str, app_id: str, action_id: str) -> ActionState:
    require_workspace(tx, workspace_id)
    require_item(tx, "apps", app_id, workspace_id)
    action = tx.load(ACTION, action_id)
    if action is None or action.deleted or action.workspace_id != workspace_id or action.app_id != app_id:
        raise NotFound("action", action_id)
    return action


async def stored_action(conn, org_id: str, workspace_id: str, app_id: str, action_id: str) -> ActionState | None:
    """The live action as the event store holds it, for a read its view cannot answer yet."""
    action = await load_stored(conn, ACTION, action_id, org_id)
    return action if action is not None and (action.workspace_id, action.app_id) == (workspace_id, app_id) else None


async def stored_run(conn, org_id: str, action_id: str, run_id: str) -> RunState | None:
    run = await load_stored(conn, RUN, run_id, org_id)
    return run if run is not None and run.action_id == action_id else None


def create_action(
    aggregates: Aggregates, ctx: Context, workspace_id: str, app_id: str, fields: dict[str, Any]
) -> Outcome:
    action_id = new_id("act")
    config = _config(fields)

    def use_case(tx: Transaction) -> ActionState:
        require_workspace(tx, workspace_id)
        require_item(tx, "apps", app_id, workspace_id)
        state = tx.create(ACTION, action_id, CreateAction(action_id, workspace_id, app_id, config, aggregates.clock()))
        _require_targets(tx, workspace_id, app_id, config)
        return state

    return Outcome(*aggregates.run(ctx, use_case))


def update_action(
    aggregates: Aggregates, ctx: Context, workspace_id: str, app_id: str, action_id: str, changes: dict[str, Any]
) -> Outcome:
    def use_case(tx: Transaction) -> ActionState:
        require_action(tx, workspace_id, app_id, action_id)
        state = tx.decide(ACTION, action_id, UpdateAction(changes, aggregates.clock()))
        if "endpoint_id" in changes or "namespace_id" in changes:
            _require_targets(tx, workspace_id, app_id, state.config)
        return state

    return Outcome(*aggregates.run(ctx, use_case))


def set_enabled(
    aggregates: Aggregates, ctx: Context, workspace_id: str, app_id: str, action_id: str, enabled: bool
) -> Outcome:
    def use_case(tx: Transaction) -> ActionState:
        require_action(tx, workspace_id, app_id, action_id)
        return tx.decide(ACTION, action_id, SetEnabled(enabled, aggregates.clock()))

    return Outcome(*aggregates.run(ctx, use_case))


def delete_action(aggregates: Aggregates, ctx: Context, workspace_id: str, app_id: str, action_id: str) -> Outcome:
    def use_case(tx: Transaction) -> ActionState:
        require_action(tx, workspace_id, app_id, action_id)
        return tx.decide(ACTION, action_id, DeleteAction())

    return Outcome(*aggregates.run(ctx, use_case))


def _request_run(
    tx: Transaction,
    action: ActionState,
    run_id: str,
    trigger_type: str,
    now: datetime,
    payload: dict[str, Any],
    thread_id: str | None,
    missed_slots: int = 0,
) -> RunState:
    resolved_payload = {**action.config.payload, **payload}
    return tx.decide(
        RUN,
        run_id,
        RequestRun(
            run_id=run_id,
            execution_id="exe_" + run_id.removeprefix("run_"),
            action_id=action.action_id,
            workspace_id=action.workspace_id,
            app_id=action.app_id,
            endpoint_id=action.config.endpoint_id,
            trigger_type=trigger_type,
            resolved_payload=resolved_payload,
            resolved_thread_id=resolve_thread(
                action.config, action.action_id, run_id, now, resolved_payload, thread_id
            ),
            max_retries=action.config.max_retries,
            retry_delay_seconds=action.config.retry_delay_seconds,
            now=now,
            missed_slots=missed_slots,
        ),
    )


def trigger_action(
    aggregates: Aggregates,
    ctx: Context,
    workspace_id: str,
    app_id: str,
    action_id: str,
    payload: dict[str, Any],
    thread_id: str | None,
    idempotency_key: str | None,
) -> Outcome:
    """A manual run. With an idempotency key the run id derives from it, so a repeat answers the same run."""
    if idempotency_key:
        digest = hashlib.sha256(f"{ctx.org_id}|{action_id}|{idempotency_key}".encode()).hexdigest()[:32]
        run_id = f"run_{digest}"
    else:
        run_id = new_id("run")
    rules = Rules()
    rules.text("thread_id", thread_id, min_length=1, max_length=200)
    check_payload(rules, "payload", payload)
    rules.check()

    def use_case(tx: Transaction) -> RunState:
        action = require_action(tx, workspace_id, app_id, action_id)
        existing = tx.load(RUN, run_id)
        if existing is not None:
            return existing  # the same Idempotency-Key again: the same run, nothing new
        tx.decide(ACTION, action_id, TriggerAction(run_id))
        return _request_run(tx, action, run_id, "manual", aggregates.clock(), payload, thread_id)

    return Outcome(*aggregates.run(ctx, use_case))


# The scheduler
def fire_schedule(aggregates: Aggregates, org_id: str, action_id: str, trace_id: str) -> RunState | None:
    """Fires the action's due slot (or records why not). Safe to call twice: the second finds nothing due."""
    ctx = Context(org_id=org_id, actor=SYSTEM_ACTOR, trace_id=trace_id)

    def use_case(tx: Transaction) -> RunState | None:
        action = tx.load(ACTION, action_id)
        if action is None or action.deleted:
            return None
        workspace = tx.load(WORKSPACE, action.workspace_id)
        app = tx.load(CATALOG, action.app_id)
        if workspace is None or workspace.deleted or app is None or app.deleted:
            tx.decide(ACTION, action_id, DeleteAction())  # its workspace or app is gone: so is the action
            return None
        previous = tx.load(RUN, action.last_run_id) if action.last_run_id else None
        now = aggregates.clock()
        busy = previous is not None and not previous.finished
        after = tx.decide(ACTION, action_id, FireSchedule(now=now, previous_run_busy=busy))
        fired = [e for e in tx.pending(action_id) if isinstance(e, ScheduledRunFired)]
        if not fired:
            return None
        return _request_run(tx, after, fired[0].run_id, "scheduled", now, {}, None, fired[0].missed_slots)

    try:
        return aggregates.run(ctx, use_case)[0]
    except Conflict:
        return None  # fired meanwhile by another scheduler: nothing to do


# The executor
def start_attempt(
    aggregates: Aggregates, org_id: str, run_id: str, lease_seconds: float, trace_id: str
) -> RunState | None:
    """Claims the run's next attempt for this executor; None when another executor has it."""
    ctx = Context(org_id=org_id, actor=SYSTEM_ACTOR, trace_id=trace_id)
    try:
        state, _ = aggregates.run(
            ctx, lambda tx: tx.decide(RUN, run_id, StartAttempt(aggregates.clock(), lease_seconds))
        )
    except Conflict:
        return None
    return state if state.status == "running" else None


def finish_attempt(aggregates: Aggregates, org_id: str, run_id: str, trace_id: str, **outcome: Any) -> RunState | None:
    ctx = Context(org_id=org_id, actor=SYSTEM_ACTOR, trace_id=trace_id)
    try:
        state, _ = aggregates.run(
            ctx, lambda tx: tx.decide(RUN, run_id, FinishAttempt(now=aggregates.clock(), **outcome))
        )
    except Conflict:
        return None  # the lease expired and another executor took the run over
    return state

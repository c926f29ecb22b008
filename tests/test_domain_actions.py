"""Actions, runs and schedules: pure rules, time passed in. No I/O, no sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import msgspec
import pytest

from domain.action import (
    ACTION,
    ActionConfig,
    ActionDeleted,
    ActionDisabled,
    CreateAction,
    FireSchedule,
    ScheduledRunFired,
    ScheduledSlotSkipped,
    SetEnabled,
    TriggerAction,
    UpdateAction,
    check_trigger,
    previous_run_busy,
    resolve_thread,
    run_request,
    schedule_tick,
    scheduled_run_id,
    triggered_run_id,
)
from domain.errors import Conflict, ValidationFailed
from domain.run import (
    MAX_REPORTED,
    MAX_TOKEN_KINDS,
    RUN,
    AttemptFailed,
    AttemptOutcome,
    AttemptStarted,
    FinishAttempt,
    RequestRun,
    RunSucceeded,
    StartAttempt,
    execution_id,
)
from domain.schedule import next_slot, previous_slot
from tests.specification import at, specification

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


given_action = specification(ACTION, time=T0)
given_run = specification(RUN, time=T0)


def config(**fields) -> ActionConfig:
    return ActionConfig(**{"name": "nightly", "endpoint_id": "endpoint_1", "namespace_id": "namespace_1", **fields})


def create(cfg: ActionConfig, now: datetime = T0) -> CreateAction:
    return CreateAction("act_1", "ws_1", "app_1", cfg, now)


def created(cfg: ActionConfig, now: datetime = T0):
    """The story of an action created at `now`, and the event that created it."""
    [event] = given_action().when(create(cfg, now)).events
    return given_action(at(now, event)), event


def rejected(cfg: ActionConfig, now: datetime = T0) -> list[str]:
    return [e.field[0] for e in given_action().when(create(cfg, now)).raises(ValidationFailed).errors]


# Schedules across daylight-saving changes (answers in UTC)
def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_new_york_spring_forward_fires_after_the_gap_and_keeps_local_time_after():
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
    first = next_slot("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12))
    assert first == utc(2026, 3, 8, 7, 0)  # 03:00 EDT, the first moment after the gap
    assert next_slot("30 2 * * *", "America/New_York", first) == utc(2026, 3, 9, 6, 30)  # 02:30 EDT
    assert next_slot("0 9 * * *", "America/New_York", utc(2026, 3, 7, 15)) == utc(2026, 3, 8, 13, 0)


def test_new_york_fall_back_fires_a_fixed_hour_once_and_hourly_every_real_hour():
    # 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
    first = next_slot("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12))
    assert first == utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    assert next_slot("30 1 * * *", "America/New_York", first) == utc(2026, 11, 2, 6, 30)  # next day, EST
    hourly = [utc(2026, 11, 1, 4, 30)]
    for _ in range(3):
        hourly.append(next_slot("0 * * * *", "America/New_York", hourly[-1]))
    assert hourly[1:] == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6), utc(2026, 11, 1, 7)]  # 01:00 EDT, 01:00 EST, 02:00


def test_a_fall_back_fire_is_labelled_with_the_first_occurrence():
    """The fire of 01:30 on the night 01:30 happens twice: firing at its first occurrence, the slot it records
    is that occurrence, not the repeat an hour later."""
    london = config(
        action_type="scheduled", schedule_type="cron", cron_expression="30 1 * * *", timezone="Europe/London"
    )
    first = utc(2026, 10, 25, 0, 30)  # 01:30 BST; 01:30 GMT is 01:30 UTC
    assert previous_slot("30 1 * * *", "Europe/London", utc(2026, 10, 26, 1, 30)) == first
    action, _ = created(london, utc(2026, 10, 24, 12))
    assert action.state.next_run_at == first
    [fired] = action.when(FireSchedule(now=first, previous_run_busy=False)).events
    assert (fired.slot, fired.next_run_at) == (first, utc(2026, 10, 26, 1, 30))


def test_london_summer_time():
    # 2026-03-29: 01:00 GMT jumps to 02:00 BST; 2026-10-25: back.
    assert next_slot("0 9 * * *", "Europe/London", utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 8)
    assert next_slot("0 9 * * *", "Europe/London", utc(2026, 10, 24, 12)) == utc(2026, 10, 25, 9)
    assert next_slot("30 1 * * *", "Europe/London", utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)


# Settings and their combinations
DEEP_PAYLOAD = {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": 1}}}}}}}}}}}


@pytest.mark.parametrize(
    "settings, named",
    [
        pytest.param({"action_type": "scheduled"}, ["schedule_type"], id="scheduled without a schedule type"),
        pytest.param(
            {"action_type": "scheduled", "schedule_type": "cron", "cron_expression": "61 * * * *"},
            ["cron_expression"],
            id="cron minute out of range",
        ),
        pytest.param(
            {"action_type": "scheduled", "schedule_type": "cron", "cron_expression": "* * * * * *"},
            ["cron_expression"],
            id="cron with six fields",
        ),
        pytest.param(
            {"action_type": "scheduled", "schedule_type": "once", "scheduled_at": T0 - timedelta(1)},
            ["scheduled_at"],
            id="once in the past",
        ),
        pytest.param({"cron_expression": "* * * * *"}, ["cron_expression"], id="cron on a trigger action"),
        pytest.param({"timezone": "Mars/Olympus"}, ["timezone"], id="unknown timezone"),
        pytest.param(
            {"max_retries": 11, "retry_delay_seconds": -1},
            ["max_retries", "retry_delay_seconds"],
            id="retries out of range",
        ),
        pytest.param({"thread_mode": "fixed"}, ["thread_id"], id="fixed thread without a thread id"),
        pytest.param(
            {"thread_mode": "template", "thread_id_template": "t-{secret}"},
            ["thread_id_template"],
            id="template with an unknown field",
        ),
        pytest.param({"payload": DEEP_PAYLOAD}, ["payload"], id="payload nested too deep"),
        # A mode that does not use them still stores them: checked whatever the mode (PostgreSQL refused the NUL).
        *(
            pytest.param({"thread_mode": mode, field: value}, [field], id=f"{field} {what} in mode {mode}")
            for mode, field in (
                ("new_each_run", "thread_id"), ("template", "thread_id"),
                ("new_each_run", "thread_id_template"), ("fixed", "thread_id_template"),
            )
            for what, value in (("with NUL", "t\x00"), ("with a control character", "t\x01"), ("too long", "t" * 201))
            if not (mode == "template" and field == "thread_id_template")
        ),
    ],
)
def test_every_invalid_setting_is_named(settings, named):
    cfg = config(**settings)
    if cfg.thread_mode == "fixed" and not cfg.thread_id and "thread_id" not in named:
        cfg = msgspec.structs.replace(cfg, thread_id="t")
    if cfg.thread_mode == "template" and not cfg.thread_id_template:
        cfg = msgspec.structs.replace(cfg, thread_id_template="t-{run_id}")
    assert rejected(cfg) == named


@pytest.mark.parametrize("field", ["thread_id", "thread_id_template"])
def test_an_update_checks_an_unused_thread_field_too(field):
    created = given_action().when(create(config())).events
    refused = given_action(*created).when(UpdateAction({field: "t\x00"}, T0)).raises(ValidationFailed)
    assert [error.field for error in refused.errors] == [(field,)]


LONDON_NINE = config(
    action_type="scheduled", schedule_type="cron", cron_expression="0 9 * * *", timezone="Europe/London"
)


def test_the_next_run_is_the_next_slot_in_utc():
    _, event = created(LONDON_NINE)
    assert event.next_run_at == utc(2030, 1, 2, 9)


def test_a_disabled_action_has_no_next_run():
    action, _ = created(LONDON_NINE)
    assert action.when(SetEnabled(False, T0)).state.next_run_at is None


def test_changing_the_cron_expression_moves_the_next_run():
    action, _ = created(LONDON_NINE)
    [update] = action.when(UpdateAction({"cron_expression": "0 10 * * *"}, T0)).events
    assert update.next_run_at == utc(2030, 1, 2, 10)


def test_a_disabled_action_cannot_be_triggered():
    action, _ = created(config(is_enabled=False))
    action.when(TriggerAction("run_1")).raises(Conflict)


def test_missed_slots_are_coalesced_into_one_run():
    action, _ = created(config(action_type="scheduled", schedule_type="cron", cron_expression="* * * * *"))
    now = T0 + timedelta(minutes=5, seconds=30)  # slots 12:01 .. 12:05 came and went
    fired = action.when(FireSchedule(now=now, previous_run_busy=False), at=now).then(
        ScheduledRunFired(
            run_id=scheduled_run_id("act_1", utc(2030, 1, 1, 12, 5)),
            slot=utc(2030, 1, 1, 12, 5),
            missed_slots=4,
            next_run_at=utc(2030, 1, 1, 12, 6),
        )
    )
    fired.when(FireSchedule(now=now, previous_run_busy=False)).then()  # a slot fires once


def test_a_slot_is_skipped_while_the_previous_run_is_busy():
    action, _ = created(config(action_type="scheduled", schedule_type="cron", cron_expression="* * * * *"))
    [skipped] = action.when(FireSchedule(now=T0 + timedelta(minutes=1), previous_run_busy=True)).events
    assert isinstance(skipped, ScheduledSlotSkipped) and skipped.next_run_at == utc(2030, 1, 1, 12, 2)


def test_a_once_action_fires_once_then_has_no_next_run():
    due = T0 + timedelta(hours=1)
    action, event = created(config(action_type="scheduled", schedule_type="once", scheduled_at=due))
    assert event.next_run_at == due
    fired = action.when(FireSchedule(now=due, previous_run_busy=False), at=due)
    assert fired.state.next_run_at is None
    disabled = fired.recorded.when(SetEnabled(False, due), at=due).then(ActionDisabled())
    [enabled] = disabled.when(SetEnabled(True, due)).events
    assert enabled.next_run_at is None


@pytest.mark.parametrize(
    "cfg, payload, requested, thread",
    [
        pytest.param(config(), {}, None, "thread_abc", id="new each run: a thread named after the run"),
        pytest.param(config(thread_mode="fixed", thread_id="t1"), {}, None, "t1", id="fixed: the given thread"),
        pytest.param(
            config(thread_mode="template", thread_id_template="{action_id}-{date}-{payload.user}-{run_id}"),
            {"user": "ann"},
            None,
            "act_1-2030-01-01-ann-run_abc",
            id="template: filled from the action, the date, the payload and the run",
        ),
        pytest.param(
            config(thread_mode="template", thread_id_template="{action_id}-{date}-{payload.user}-{run_id}"),
            {},
            "chosen",
            "chosen",
            id="the trigger's choice wins",
        ),
    ],
)
def test_a_run_talks_in_the_thread_its_action_resolves(cfg, payload, requested, thread):
    assert resolve_thread(cfg, "act_1", "run_abc", T0, payload, requested) == thread


# Runs
def request(max_retries: int = 1) -> RequestRun:
    return RequestRun(
        run_id="run_1",
        execution_id="exe_1",
        action_id="act_1",
        workspace_id="ws_1",
        app_id="app_1",
        endpoint_id="endpoint_1",
        trigger_type="manual",
        resolved_payload={},
        resolved_thread_id="t",
        max_retries=max_retries,
        retry_delay_seconds=60,
        now=T0,
    )


def running(max_retries: int):
    """The story of a run requested and started at T0."""
    return given_run().when(request(max_retries)).recorded.when(StartAttempt(T0, 60)).recorded


def test_a_new_run_is_pending_its_first_attempt():
    state = given_run().when(request(max_retries=1)).state
    assert (state.status, state.attempt) == ("pending", 1)


def test_a_failed_attempt_is_retried_after_the_delay_then_succeeds():
    failed_at = T0 + timedelta(seconds=2)
    failure = running(max_retries=1).when(
        FinishAttempt(1, failed_at, AttemptOutcome(error_code="HTTP_502")), at=failed_at
    )
    [failed] = failure.events
    assert isinstance(failed, AttemptFailed) and failed.retry_at == T0 + timedelta(seconds=62)
    waiting = failure.recorded
    assert waiting.state.status == "pending"
    waiting.when(StartAttempt(T0 + timedelta(seconds=10), 60)).raises(Conflict)  # not due yet
    later = T0 + timedelta(seconds=62)
    retried = waiting.when(StartAttempt(later, 60), at=later).then(
        AttemptStarted(attempt=2, lease_until=later + timedelta(seconds=60), taken_over=False)
    )
    done_at = later + timedelta(seconds=1)
    success = retried.when(FinishAttempt(2, done_at, AttemptOutcome(token_usage={"total": 5})), at=done_at)
    [ok] = success.events
    assert isinstance(ok, RunSucceeded) and success.state.status == "success" and success.state.duration_seconds == 1.0


def test_a_report_keeps_only_counts_within_bounds():
    """An endpoint's numbers are summed into shared bigint rollups: one past the bounds could overflow a sum."""
    many = {f"kind{i}": 1 for i in range(MAX_TOKEN_KINDS + 5)}
    usage = {"input": MAX_REPORTED, "huge": 2**63, "negative": -1, "flag": True, "x" * 101: 1, "nul\x00": 1, **many}
    finish = FinishAttempt(1, T0, AttemptOutcome(stages_completed=10**30, total_stages=3, token_usage=usage))
    [ok] = running(max_retries=0).when(finish).events
    assert (ok.stages_completed, ok.total_stages) == (None, 3)
    assert ok.token_usage == {"input": MAX_REPORTED, **dict(list(many.items())[: MAX_TOKEN_KINDS - 1])}


def test_retries_used_up_fail_the_run():
    state = running(max_retries=0).when(FinishAttempt(1, T0, AttemptOutcome(error_code="TIMEOUT"))).state
    assert (state.status, state.error_code, state.completed_at) == ("failed", "TIMEOUT", T0)


def test_a_second_executor_cannot_start_an_attempt_while_its_lease_holds():
    running(max_retries=2).when(StartAttempt(T0 + timedelta(seconds=30), 60)).raises(Conflict)


def test_an_expired_lease_is_taken_over_and_one_attempt_never_runs_twice():
    late = T0 + timedelta(seconds=61)
    taken_over = running(max_retries=2).when(StartAttempt(late, 60), at=late)
    assert [type(e) for e in taken_over.events] == [AttemptFailed, AttemptStarted] and taken_over.state.attempt == 2
    # The first executor's result comes too late to count.
    taken_over.recorded.when(FinishAttempt(attempt=1, now=late)).raises(Conflict)


# The rules a scheduler's tick and a trigger decide by, and the ids they derive
LIVE, DELETED = SimpleNamespace(deleted=False), SimpleNamespace(deleted=True)  # a workspace's or an app's state
EVERY_MINUTE = config(action_type="scheduled", schedule_type="cron", cron_expression="* * * * *")
SLOT = T0 + timedelta(minutes=1)


def finished(error_code: str | None = None):
    return running(max_retries=0).when(FinishAttempt(1, T0, AttemptOutcome(error_code=error_code))).state


@pytest.mark.parametrize(
    "workspace, app",
    [
        pytest.param(None, LIVE, id="workspace never existed"),
        pytest.param(DELETED, LIVE, id="workspace deleted"),
        pytest.param(LIVE, None, id="app never existed"),
        pytest.param(LIVE, DELETED, id="app deleted"),
    ],
)
def test_an_action_whose_workspace_or_app_is_gone_is_deleted_at_its_tick(workspace, app):
    action, _ = created(EVERY_MINUTE)
    tick = schedule_tick(SLOT, workspace=workspace, app=app, previous_run=None)
    assert tick.orphaned
    action.when(tick).then(ActionDeleted())


def test_an_orphaned_action_is_deleted_even_before_its_slot_and_while_its_previous_run_is_busy():
    action, _ = created(EVERY_MINUTE)
    action.when(FireSchedule(now=T0, previous_run_busy=True, orphaned=True)).then(ActionDeleted())


def test_an_action_in_a_live_workspace_and_app_fires_its_slot():
    action, _ = created(EVERY_MINUTE)
    tick = schedule_tick(SLOT, workspace=LIVE, app=LIVE, previous_run=finished())
    assert not tick.orphaned and not tick.previous_run_busy
    following = utc(2030, 1, 1, 12, 2)
    fired = ScheduledRunFired(run_id=scheduled_run_id("act_1", SLOT), slot=SLOT, missed_slots=0, next_run_at=following)
    action.when(tick).then(fired)


@pytest.mark.parametrize(
    "previous, busy",
    [
        pytest.param(lambda: None, False, id="no previous run"),
        pytest.param(lambda: given_run().when(request()).state, True, id="previous run pending"),
        pytest.param(lambda: running(max_retries=0).state, True, id="previous run running"),
        pytest.param(finished, False, id="previous run succeeded"),
        pytest.param(lambda: finished("TIMEOUT"), False, id="previous run failed"),
    ],
)
def test_a_slot_is_skipped_while_the_previous_run_has_not_finished(previous, busy):
    action, _ = created(EVERY_MINUTE)
    tick = schedule_tick(SLOT, workspace=LIVE, app=LIVE, previous_run=previous())
    assert previous_run_busy(previous()) is busy and tick.previous_run_busy is busy
    skipped = ScheduledSlotSkipped(slot=SLOT, reason="previous run still running", next_run_at=utc(2030, 1, 1, 12, 2))
    if busy:
        action.when(tick).then(skipped)
    else:
        assert [type(e) for e in action.when(tick).events] == [ScheduledRunFired]


def test_a_slots_run_id_derives_from_the_action_and_the_slot():
    run_id = scheduled_run_id("act_1", SLOT)
    assert run_id == scheduled_run_id("act_1", SLOT) and len(run_id) == len("run_") + 32 and run_id.startswith("run_")
    assert run_id not in {scheduled_run_id("act_2", SLOT), scheduled_run_id("act_1", SLOT + timedelta(minutes=1))}


def test_a_triggers_run_id_derives_from_its_idempotency_key_per_org_and_action():
    run_id = triggered_run_id("acme", "act_1", "key-1")
    assert run_id == triggered_run_id("acme", "act_1", "key-1") and run_id.startswith("run_")
    others = {triggered_run_id("other", "act_1", "key-1"), triggered_run_id("acme", "act_2", "key-1")}
    assert run_id not in others | {triggered_run_id("acme", "act_1", "key-2")}


def test_a_run_request_carries_the_action_settings_the_trigger_payload_over_the_actions_and_its_execution_id():
    cfg = config(payload={"model": "small", "k": 1}, max_retries=3, retry_delay_seconds=5)
    action = created(cfg)[0].state
    assert run_request(action, "run_abc", "manual", T0, {"k": 2}, None) == msgspec.structs.replace(
        request(max_retries=3),
        run_id="run_abc",
        execution_id="exe_abc",
        resolved_payload={"model": "small", "k": 2},
        resolved_thread_id="thread_abc",
        retry_delay_seconds=5,
    )
    assert execution_id("run_abc") == "exe_abc"


@pytest.mark.parametrize(
    "payload, thread_id, field",
    [
        pytest.param({}, "t" * 201, "thread_id", id="thread id too long"),
        pytest.param({}, "", "thread_id", id="thread id empty"),
        pytest.param({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": 1}}}}}}}}}}}, None, "payload",
                     id="payload nested too deep"),  # fmt: skip
        pytest.param({"text": "nul\x00"}, None, "payload", id="payload holding a NUL"),
    ],
)
def test_a_trigger_may_add_only_a_bounded_thread_id_and_payload(payload, thread_id, field):
    with pytest.raises(ValidationFailed) as failure:
        check_trigger(payload, thread_id)
    assert [e.field[0] for e in failure.value.errors] == [field]
    check_trigger({"k": 1}, "t" * 200)  # within bounds: no complaint

"""Actions, runs and schedules: pure rules, time passed in. No I/O, no sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.action import (
    ACTION,
    ActionConfig,
    CreateAction,
    FireSchedule,
    ScheduledRunFired,
    ScheduledSlotSkipped,
    SetEnabled,
    TriggerAction,
    UpdateAction,
    resolve_thread,
    scheduled_run_id,
)
from domain.errors import Conflict, ValidationFailed
from domain.events import SYSTEM_ACTOR, EventMeta
from domain.run import (
    MAX_REPORTED,
    MAX_TOKEN_KINDS,
    RUN,
    AttemptFailed,
    AttemptStarted,
    FinishAttempt,
    RequestRun,
    RunSucceeded,
    StartAttempt,
)
from domain.schedule import next_slot, previous_slot

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def meta(at: datetime = T0) -> EventMeta:
    return EventMeta("acme", SYSTEM_ACTOR, "t" * 32, at)


def fold(kind, events_with_times):
    state = None
    for event, at in events_with_times:
        state = kind.evolve(state, event, meta(at))
    return state


def config(**fields) -> ActionConfig:
    return ActionConfig(**{"name": "nightly", "endpoint_id": "endpoint_1", "namespace_id": "namespace_1", **fields})


def created(cfg: ActionConfig, now: datetime = T0):
    [event] = ACTION.decide(None, CreateAction("act_1", "ws_1", "app_1", cfg, now))
    return ACTION.evolve(None, event, meta(now)), event


def rejected(cfg: ActionConfig, now: datetime = T0) -> list[str]:
    with pytest.raises(ValidationFailed) as failure:
        ACTION.decide(None, CreateAction("act_1", "ws_1", "app_1", cfg, now))
    return [e.field[0] for e in failure.value.errors]


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
    state, _ = created(london, utc(2026, 10, 24, 12))
    assert state.next_run_at == first
    [fired] = ACTION.decide(state, FireSchedule(now=first, previous_run_busy=False))
    assert (fired.slot, fired.next_run_at) == (first, utc(2026, 10, 26, 1, 30))


def test_london_summer_time():
    # 2026-03-29: 01:00 GMT jumps to 02:00 BST; 2026-10-25: back.
    assert next_slot("0 9 * * *", "Europe/London", utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 8)
    assert next_slot("0 9 * * *", "Europe/London", utc(2026, 10, 24, 12)) == utc(2026, 10, 25, 9)
    assert next_slot("30 1 * * *", "Europe/London", utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)


# Settings and their combinations
def test_every_invalid_setting_is_named():
    assert rejected(config(action_type="scheduled")) == ["schedule_type"]
    assert rejected(config(action_type="scheduled", schedule_type="cron", cron_expression="61 * * * *")) == [
        "cron_expression"
    ]
    assert rejected(config(action_type="scheduled", schedule_type="cron", cron_expression="* * * * * *")) == [
        "cron_expression"
    ]
    assert rejected(config(action_type="scheduled", schedule_type="once", scheduled_at=T0 - timedelta(1))) == [
        "scheduled_at"
    ]
    assert rejected(config(cron_expression="* * * * *")) == ["cron_expression"]
    assert rejected(config(timezone="Mars/Olympus")) == ["timezone"]
    assert rejected(config(max_retries=11, retry_delay_seconds=-1)) == ["max_retries", "retry_delay_seconds"]
    assert rejected(config(thread_mode="fixed")) == ["thread_id"]
    assert rejected(config(thread_mode="template", thread_id_template="t-{secret}")) == ["thread_id_template"]
    assert rejected(config(payload={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": 1}}}}}}}}}}})) == [
        "payload"
    ]


def test_next_run_in_utc_and_null_when_disabled():
    state, event = created(
        config(action_type="scheduled", schedule_type="cron", cron_expression="0 9 * * *", timezone="Europe/London")
    )
    assert event.next_run_at == utc(2030, 1, 2, 9)
    [disabled] = ACTION.decide(state, SetEnabled(False, T0))
    assert ACTION.evolve(state, disabled, meta()).next_run_at is None
    [update] = ACTION.decide(state, UpdateAction({"cron_expression": "0 10 * * *"}, T0))
    assert update.next_run_at == utc(2030, 1, 2, 10)


def test_a_disabled_action_cannot_be_triggered():
    state, _ = created(config(is_enabled=False))
    with pytest.raises(Conflict):
        ACTION.decide(state, TriggerAction("run_1"))


def test_missed_slots_are_coalesced_into_one_run():
    state, _ = created(config(action_type="scheduled", schedule_type="cron", cron_expression="* * * * *"))
    now = T0 + timedelta(minutes=5, seconds=30)  # slots 12:01 .. 12:05 came and went
    [fired] = ACTION.decide(state, FireSchedule(now=now, previous_run_busy=False))
    assert fired == ScheduledRunFired(
        run_id=scheduled_run_id("act_1", utc(2030, 1, 1, 12, 5)),
        slot=utc(2030, 1, 1, 12, 5),
        missed_slots=4,
        next_run_at=utc(2030, 1, 1, 12, 6),
    )
    after = ACTION.evolve(state, fired, meta(now))
    assert ACTION.decide(after, FireSchedule(now=now, previous_run_busy=False)) == []  # a slot fires once


def test_a_slot_is_skipped_while_the_previous_run_is_busy():
    state, _ = created(config(action_type="scheduled", schedule_type="cron", cron_expression="* * * * *"))
    [skipped] = ACTION.decide(state, FireSchedule(now=T0 + timedelta(minutes=1), previous_run_busy=True))
    assert isinstance(skipped, ScheduledSlotSkipped) and skipped.next_run_at == utc(2030, 1, 1, 12, 2)


def test_a_once_action_fires_once_then_has_no_next_run():
    at = T0 + timedelta(hours=1)
    state, event = created(config(action_type="scheduled", schedule_type="once", scheduled_at=at))
    assert event.next_run_at == at
    [fired] = ACTION.decide(state, FireSchedule(now=at, previous_run_busy=False))
    after = ACTION.evolve(state, fired, meta(at))
    assert after.next_run_at is None
    [disabled] = ACTION.decide(after, SetEnabled(False, at))
    [enabled] = ACTION.decide(ACTION.evolve(after, disabled, meta(at)), SetEnabled(True, at))
    assert enabled.next_run_at is None


def test_thread_resolution():
    now = T0
    assert resolve_thread(config(), "act_1", "run_abc", now, {}, None) == "thread_abc"
    assert resolve_thread(config(thread_mode="fixed", thread_id="t1"), "act_1", "run_abc", now, {}, None) == "t1"
    template = config(thread_mode="template", thread_id_template="{action_id}-{date}-{payload.user}-{run_id}")
    assert resolve_thread(template, "act_1", "run_abc", now, {"user": "ann"}, None) == "act_1-2030-01-01-ann-run_abc"
    assert resolve_thread(template, "act_1", "run_abc", now, {}, "chosen") == "chosen"


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


def step(state, command, at):
    events = RUN.decide(state, command)
    for event in events:
        state = RUN.evolve(state, event, meta(at))
    return state, events


def test_a_failed_attempt_is_retried_after_the_delay_then_succeeds():
    state, _ = step(None, request(max_retries=1), T0)
    assert (state.status, state.attempt) == ("pending", 1)
    state, _ = step(state, StartAttempt(T0, 60), T0)
    state, [failed] = step(
        state, FinishAttempt(attempt=1, now=T0 + timedelta(seconds=2), error_code="HTTP_502"), T0 + timedelta(seconds=2)
    )
    assert isinstance(failed, AttemptFailed) and failed.retry_at == T0 + timedelta(seconds=62)
    assert state.status == "pending"
    with pytest.raises(Conflict):  # not due yet
        RUN.decide(state, StartAttempt(T0 + timedelta(seconds=10), 60))
    later = T0 + timedelta(seconds=62)
    state, [started] = step(state, StartAttempt(later, 60), later)
    assert started == AttemptStarted(attempt=2, lease_until=later + timedelta(seconds=60), taken_over=False)
    state, [ok] = step(
        state,
        FinishAttempt(attempt=2, now=later + timedelta(seconds=1), token_usage={"total": 5}),
        later + timedelta(seconds=1),
    )
    assert isinstance(ok, RunSucceeded) and state.status == "success" and state.duration_seconds == 1.0


def test_a_report_keeps_only_counts_within_bounds():
    """An endpoint's numbers are summed into shared bigint rollups: one past the bounds could overflow a sum."""
    state, _ = step(None, request(max_retries=0), T0)
    state, _ = step(state, StartAttempt(T0, 60), T0)
    many = {f"kind{i}": 1 for i in range(MAX_TOKEN_KINDS + 5)}
    usage = {"input": MAX_REPORTED, "huge": 2**63, "negative": -1, "flag": True, "x" * 101: 1, "nul\x00": 1, **many}
    finish = FinishAttempt(attempt=1, now=T0, stages_completed=10**30, total_stages=3, token_usage=usage)
    [ok] = RUN.decide(state, finish)
    assert (ok.stages_completed, ok.total_stages) == (None, 3)
    assert ok.token_usage == {"input": MAX_REPORTED, **dict(list(many.items())[: MAX_TOKEN_KINDS - 1])}


def test_retries_used_up_fail_the_run():
    state, _ = step(None, request(max_retries=0), T0)
    state, _ = step(state, StartAttempt(T0, 60), T0)
    state, _ = step(state, FinishAttempt(attempt=1, now=T0, error_code="TIMEOUT"), T0)
    assert (state.status, state.error_code, state.completed_at) == ("failed", "TIMEOUT", T0)


def test_an_expired_lease_is_taken_over_and_one_attempt_never_runs_twice():
    state, _ = step(None, request(max_retries=2), T0)
    state, _ = step(state, StartAttempt(T0, 60), T0)
    with pytest.raises(Conflict):  # a second executor while the lease holds
        RUN.decide(state, StartAttempt(T0 + timedelta(seconds=30), 60))
    late = T0 + timedelta(seconds=61)
    state, events = step(state, StartAttempt(late, 60), late)
    assert [type(e) for e in events] == [AttemptFailed, AttemptStarted] and state.attempt == 2
    with pytest.raises(Conflict):  # the first executor's result comes too late to count
        RUN.decide(state, FinishAttempt(attempt=1, now=late))

"""Given past events, when a command, then new events or an error: specifications for the deciders of
`domain/` (after Emmett's `DeciderSpecification`).

    given = specification(WORKSPACE)
    given(CREATED).when(UpdateWorkspace(name="beta")).then(WorkspaceUpdated(name="beta"))
    given(CREATED, WorkspaceDeleted()).when(DeleteWorkspace()).raises(NotFound)

`given` folds its events with the aggregate's `evolve`, `when` runs `decide` on that state, `then` compares
the new events with the expected ones (in order, all of them; none expected: `then()`), `raises` expects
the error instead and returns it for a closer look. Events are recorded at the specification's time unless
wrapped with `at(time, event)`; `when(command, at=time)` records the new events at `time`. `then` returns
the story so far as a new `given`, so a test can go on: `.then(...).when(next).then(...)`; `.events`,
`.state` and `.recorded` give the new events, the state after them and the story with them, for a test
that looks at only part of them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

import pytest

from domain.events import SYSTEM_ACTOR, AggregateType, DomainEvent, EventMeta

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class At(NamedTuple):
    """An event recorded at a given time (its `EventMeta.occurred_at`)."""

    time: datetime
    event: DomainEvent


def at(time: datetime, *events: DomainEvent) -> list[At]:
    return [At(time, event) for event in events]


def meta(time: datetime = T0, org_id: str = "acme") -> EventMeta:
    return EventMeta(org_id=org_id, actor=SYSTEM_ACTOR, trace_id="t" * 32, occurred_at=time)


def _flat(events) -> list[At]:
    flat: list[At] = []
    for item in events:
        if isinstance(item, At):
            flat.append(item)
        elif isinstance(item, list | tuple):
            flat.extend(_flat(item))
        else:
            flat.append(At(None, item))  # type: ignore[arg-type] - stamped with the default time
    return flat


class Given:
    def __init__(self, aggregate: AggregateType, history: list[At], time: datetime, org_id: str) -> None:
        self.aggregate, self.history, self.time, self.org_id = aggregate, history, time, org_id

    @property
    def state(self) -> Any:
        state = None
        for time, event in self.history:
            state = self.aggregate.evolve(state, event, meta(time or self.time, self.org_id))
        return state

    def when(self, command: Any, *, at: datetime | None = None) -> When:
        return When(self, command, at)


class When:
    def __init__(self, given: Given, command: Any, time: datetime | None) -> None:
        self.given, self.command, self.time = given, command, time

    def _decide(self) -> list[DomainEvent]:
        return self.given.aggregate.decide(self.given.state, self.command)

    @property
    def events(self) -> list[DomainEvent]:
        return self._decide()

    def _after(self, events: list[DomainEvent]) -> Given:
        g = self.given
        return Given(g.aggregate, [*g.history, *(At(self.time, e) for e in events)], g.time, g.org_id)

    @property
    def recorded(self) -> Given:
        """The story with the new events recorded, whatever they are."""
        return self._after(self._decide())

    @property
    def state(self) -> Any:
        return self.recorded.state

    def then(self, *expected: DomainEvent) -> Given:
        events = self._decide()
        assert events == list(expected), f"when {self.command!r}\n  decided: {events!r}\n  expected: {list(expected)!r}"
        return self._after(events)

    def raises(self, error: type[BaseException], match: str | None = None) -> BaseException:
        with pytest.raises(error, match=match) as raised:
            self._decide()
        return raised.value


def specification(aggregate: AggregateType, *, time: datetime = T0, org_id: str = "acme"):
    """`given(*events)` for one aggregate: events, lists of them, or `at(time, ...)` lists."""

    def given(*events) -> Given:
        return Given(aggregate, _flat(events), time, org_id)

    return given

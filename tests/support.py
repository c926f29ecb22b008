"""Waiting in tests: for something that will be true, never for a guessed number of seconds.

`eventually(condition)` asks `condition()` again every `interval` seconds until its answer satisfies `until`
(truthy, unless told otherwise) and returns that answer; after `timeout` seconds it fails, saying what it
waited for and the last answer it saw. `eventually_async` does the same inside an event loop, and also
awaits a condition that returns an awaitable. Exceptions listed in `ignoring` count as "not yet" (a server
still starting); any other exception, an assertion among them, fails at once.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_UNSEEN = object()


class ManualClock:
    """A monotonic clock that moves only when told to: `advance(seconds)`. Passed where a class takes `clock`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _described(condition: Callable, what: str | None) -> str:
    if what is not None:
        return what
    name = getattr(condition, "__name__", repr(condition))
    if name != "<lambda>":
        return name
    try:
        return inspect.getsource(condition).strip()
    except (OSError, TypeError):
        return repr(condition)


def _timed_out(condition: Callable, what: str | None, timeout: float, last: Any) -> AssertionError:
    seen = "nothing (never answered)" if last is _UNSEEN else repr(last)
    if len(seen) > 2000:
        seen = seen[:2000] + "..."
    return AssertionError(f"waited {timeout} s for {_described(condition, what)}; last seen: {seen}")


def eventually(
    condition: Callable[[], T],
    *,
    until: Callable[[T], Any] = bool,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str | None = None,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    deadline = time.monotonic() + timeout
    last: Any = _UNSEEN
    while True:
        try:
            last = condition()
        except ignoring as error:
            last = error
        else:
            if until(last):
                return last
        if time.monotonic() >= deadline:
            raise _timed_out(condition, what, timeout, last)
        time.sleep(interval)


async def eventually_async(
    condition: Callable[[], Any],
    *,
    until: Callable[[Any], Any] = bool,
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str | None = None,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = _UNSEEN
    while True:
        try:
            last = condition()
            if inspect.isawaitable(last):
                last = await last
        except ignoring as error:
            last = error
        else:
            if until(last):
                return last
        if time.monotonic() >= deadline:
            raise _timed_out(condition, what, timeout, last)
        await asyncio.sleep(interval)

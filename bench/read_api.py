"""The api role as production runs it, plus one route for the read benchmark's baseline: a bare Litestar
handler answering a constant msgspec Struct (`GET /bench/constant`), on the same server, behind the same
middleware. It exists only here, never in the product API.

Activity recording follows a switch file (MECHAMENTAL_BENCH_RECORDING_SWITCH: "on", "off", or "discard":
make each record and throw it away), read every 50 ms, so the benchmark can alternate recording on and off
on one running API and compare them over the same moments of a noisy machine.

    python -m bench.read_api      (configured by the same MECHAMENTAL_* variables as `mechamental api`)
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import msgspec
from litestar import Litestar, get

import activity.recording
import api.app
from mechamental import cli


class Constant(msgspec.Struct, frozen=True):
    status: str
    version: int


CONSTANT = Constant(status="ok", version=1)


@get("/bench/constant", include_in_schema=False)
async def constant() -> Constant:
    return CONSTANT


_create_app = api.app.create_app


def create_app_with_baseline(services) -> Litestar:
    app = _create_app(services)
    app.register(constant)
    return app


class Discard:
    """A publisher that drops what it is given: what making a record costs, without sending or storing it."""

    def record(self, record) -> None:
        pass


class SwitchedActivity(activity.recording.ActivityMiddleware):
    """Records activity while the switch file says so: the publisher keeps running (flushing what it has) either
    way; only the middleware's access to it comes and goes."""

    def __init__(self, app, publisher, metrics) -> None:
        super().__init__(app, publisher, metrics)
        switch = os.environ.get("MECHAMENTAL_BENCH_RECORDING_SWITCH")
        if switch and publisher is not None:
            self.modes = {"on": publisher, "off": None, "discard": Discard()}
            # Made inside the running roles, so the task lives on their event loop.
            self.following = asyncio.get_running_loop().create_task(self.follow(Path(switch)))

    async def follow(self, switch: Path) -> None:
        while True:
            try:
                mode = switch.read_text().strip()
            except OSError:
                mode = "on"
            self.publisher = self.modes.get(mode, self.modes["on"])
            await asyncio.sleep(0.05)


# The roles build the app and its middleware through these names when they start, also in API worker processes,
# which import this module again (as their __main__'s module) before they start.
api.app.create_app = create_app_with_baseline
activity.recording.ActivityMiddleware = SwitchedActivity

if __name__ == "__main__":
    sys.exit(cli.main(["api"]))

"""The api role as production runs it, plus one route for the read benchmark's baseline: a bare Litestar
handler answering a constant msgspec Struct (`GET /bench/constant`), on the same server, behind the same
middleware. It exists only here, never in the product API.

    python -m bench.read_api      (configured by the same MECHAMENTAL_* variables as `mechamental api`)
"""

from __future__ import annotations

import sys

import msgspec
from litestar import Litestar, get

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


def create_app_with_baseline(system) -> Litestar:
    app = _create_app(system)
    app.register(constant)
    return app


# The roles build the app through this name when they start, also in API worker processes, which import
# this module again (as their __main__'s module) before they start.
api.app.create_app = create_app_with_baseline

if __name__ == "__main__":
    sys.exit(cli.main(["api"]))

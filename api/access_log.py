"""The access log: one line per HTTP request, when `MECHAMENTAL_ACCESS_LOG` turns it on.

A line names the client, method, path, status, duration and trace id; never a header (tokens travel in
`Authorization`) nor the query string. It is logged at INFO on its own logger, so it shows whatever
`MECHAMENTAL_LOG_LEVEL` says: whoever turned it on wants to see it.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("mechamental.access")


class AccessLog:
    def __init__(self, app) -> None:
        self.app = app
        logger.setLevel(logging.INFO)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}  # what the client sees when the app fails before answering

        async def send_noting_status(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            client = scope.get("client") or ("-", 0)
            # As it came on the wire, still percent-encoded: a decoded path could carry a line break into the log.
            path = (scope.get("raw_path") or scope["path"].encode()).decode("ascii", "backslashreplace")
            logger.info(
                '%s:%s "%s %s" %d %.1fms trace=%s',
                client[0],
                client[1],
                scope["method"],
                path,
                status["code"],
                (time.perf_counter() - started) * 1000,
                scope.get("state", {}).get("trace_id", "-"),
            )

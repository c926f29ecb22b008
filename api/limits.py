"""Per-token request rate limit: a token bucket per caller, in this API process (off when the rate is 0)."""

from __future__ import annotations

import math
import threading
import time


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class RateLimiter:
    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, caller: str) -> None:
        if self.per_second <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(caller, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - at) * self.per_second)
            if tokens < 1:
                self._buckets[caller] = (tokens, now)
                raise RateLimited((1 - tokens) / self.per_second)
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            self._buckets[caller] = (tokens - 1, now)


def retry_after_header(error: RateLimited) -> str:
    return str(max(1, math.ceil(error.retry_after)))

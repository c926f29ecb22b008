"""Request rate limits, in this API process: a token bucket per token (off when the rate is 0), the same
general limit per client address for requests that fail authentication, and, always on, a bound per client
address on failed authentications that had to look a token up in the store."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

# A failed authentication of an unknown token id costs a read of the event store: a client address may fail
# so this often, after a burst, before its further lookups answer 429 (missing, malformed, revoked and cached
# tokens cost no read, and only the general limit counts them). Generous, so that a misconfigured client
# or many users behind one proxy are not shut out; low enough that guessing token ids is no way to load the
# store. Secrets have 256 random bits, so this is not what stops guessing them.
FAILURES_PER_SECOND = 10.0
FAILURE_BURST = 100
# Buckets each kind of caller keeps at most; past it the least recently used goes (it is as good as full again).
# Tokens and addresses are kept apart, so addresses an attacker rotates through evict only addresses.
MAX_BUCKETS = 100_000


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class _Buckets:
    def __init__(self, per_second: float, burst: int, max_keys: int = MAX_BUCKETS) -> None:
        self.per_second = per_second
        self.burst = max(1, burst)
        self.max_keys = max(1, max_keys)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, at), LRU first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def _put(self, caller: str, bucket: tuple[float, float]) -> None:
        self._buckets[caller] = bucket
        self._buckets.move_to_end(caller)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)  # the least recently used caller starts afresh, nobody else

    def take(self, caller: str, *, spend: bool = True) -> None:
        if self.per_second <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(caller, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - at) * self.per_second)
            if tokens < 1:
                self._put(caller, (tokens, now))
                raise RateLimited((1 - tokens) / self.per_second)
            if not spend:
                return
            self._put(caller, (tokens - 1, now))


class RateLimiter:
    def __init__(
        self,
        per_second: float,
        burst: int,
        failures_per_second: float = FAILURES_PER_SECOND,
        failure_burst: int = FAILURE_BURST,
        max_keys: int = MAX_BUCKETS,
    ) -> None:
        self.per_second = per_second
        self._requests = _Buckets(per_second, burst, max_keys)  # per token
        self._addresses = _Buckets(per_second, burst, max_keys)  # per address, for requests with no valid token
        self._failures = _Buckets(failures_per_second, failure_burst, max_keys)

    def take(self, caller: str) -> None:
        """An authenticated request of `caller` (a token)."""
        self._requests.take(caller)

    def take_unauthenticated(self, address: str) -> None:
        """A request from `address` that failed authentication: it has no token, so the general limit applies
        to its address."""
        self._addresses.take(address)

    def take_failed_lookup(self, address: str) -> None:
        """A presented token from `address` that had to be looked up in the store and was not found or did
        not match: what the always-on bound counts."""
        self._failures.take(address)

    def check_lookup(self, address: str) -> None:
        """Raises when `address` has used up what the two above spend, without spending: asked before a token
        is looked up in the store, so an address that only fails costs no more reads."""
        self._addresses.take(address, spend=False)
        self._failures.take(address, spend=False)


def retry_after_header(error: RateLimited) -> str:
    return str(max(1, math.ceil(error.retry_after)))

"""What `/metrics` exposes, in Prometheus' text format (prometheus_client writes it, escaping label values):

- `mm_commands_total`, `mm_command_seconds` (histogram): committed commands and how long each took, retries
  included, from the first decision to the commit;
- `mm_http_requests_total{method,status}` and `mm_http_request_seconds{method}` (histogram): answered HTTP
  requests, timed from their first byte in to their last byte out (a mutating request's durable activity
  record included);
- `mm_activity_unrecorded_total{reason}`: `/v1/orgs` requests left out of activity (`unauthenticated`,
  `other_org`);
- `mm_view_cache_hits_total{view}`, `mm_view_cache_serving{view}`, `mm_view_cache_entries{view}`;
- `mm_log_head`, `mm_consumer_position{consumer}`, `mm_consumer_lag_events{consumer}`,
  `mm_consumer_lag_seconds{consumer}`: read from PostgreSQL at each scrape.

Each registry belongs to one `Metrics` (one per process, or per app in the tests), never to the library's
global default.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.cache import ViewCache

# Commands take a group-committed PostgreSQL transaction (milliseconds); requests range from a cached read
# (well under a millisecond) to a read that waited for `X-Min-Position` (seconds).
COMMAND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Any other method a client sends is counted as OTHER: a label value per invented method would grow without end.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNRECORDED_REASONS = ("unauthenticated", "other_org")

Lag = Sequence[tuple[str, int, int, int, float]]  # (consumer, position, head, lag in events, lag in seconds)


class Metrics:
    def __init__(self, caches: Iterable[ViewCache] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._commands = Counter("mm_commands", "Committed commands", registry=self.registry)
        self._command_seconds = Histogram(
            "mm_command_seconds",
            "Seconds from a command's first decision to its commit",
            buckets=COMMAND_BUCKETS,
            registry=self.registry,
        )
        self._requests = Counter(
            "mm_http_requests", "Answered HTTP requests", ["method", "status"], registry=self.registry
        )
        self._request_seconds = Histogram(
            "mm_http_request_seconds",
            "Seconds an HTTP request took",
            ["method"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self._unrecorded = Counter(
            "mm_activity_unrecorded",
            "/v1/orgs requests not recorded in the org's activity",
            ["reason"],
            registry=self.registry,
        )
        for reason in UNRECORDED_REASONS:
            self._unrecorded.labels(reason)
        self._scraped = _Scraped(list(caches))
        self.registry.register(self._scraped)
        # The children by label values, so a request costs a dict lookup, not prometheus_client's label checks.
        self._by_request: dict[tuple[str, int], tuple] = {}

    def command(self, seconds: float) -> None:
        self._commands.inc()
        self._command_seconds.observe(seconds)

    def request(self, method: str, status: int, seconds: float) -> None:
        children = self._by_request.get((method, status))
        if children is None:
            shown = method if method in METHODS else "OTHER"
            children = self._requests.labels(shown, str(status)), self._request_seconds.labels(shown)
            if method in METHODS:
                self._by_request[(method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def unrecorded(self, reason: str) -> None:
        self._unrecorded.labels(reason).inc()

    def exposition(self, lag: Lag) -> bytes:
        """The text format, with the consumers' positions as just read (nothing awaits between setting them
        and writing them out, so concurrent scrapes cannot mix theirs)."""
        self._scraped.lag = lag
        return generate_latest(self.registry)


class _Scraped(Collector):
    """Values read when scraped: the caches' counters, which their readers keep as plain integers, and the
    consumers' positions."""

    def __init__(self, caches: list[ViewCache]) -> None:
        self.caches = caches
        self.lag: Lag = ()

    def collect(self) -> Iterable[Metric]:
        head = GaugeMetricFamily("mm_log_head", "Position of the newest event in the log")
        head.add_metric([], self.lag[0][2] if self.lag else 0)
        position = GaugeMetricFamily("mm_consumer_position", "Last position a consumer applied", labels=["consumer"])
        events = GaugeMetricFamily("mm_consumer_lag_events", "Events a consumer has yet to apply", labels=["consumer"])
        seconds = GaugeMetricFamily(
            "mm_consumer_lag_seconds", "Age of the oldest event a consumer has yet to apply", labels=["consumer"]
        )
        for name, at, _, behind, late in self.lag:
            position.add_metric([name], at)
            events.add_metric([name], behind)
            seconds.add_metric([name], late)
        hits = CounterMetricFamily("mm_view_cache_hits", "Reads a view cache answered", labels=["view"])
        serving = GaugeMetricFamily(
            "mm_view_cache_serving", "1 while a view cache serves (its listener is up)", labels=["view"]
        )
        entries = GaugeMetricFamily("mm_view_cache_entries", "Rows a view cache holds", labels=["view"])
        for cache in self.caches:
            hits.add_metric([cache.view], cache.hits)
            serving.add_metric([cache.view], int(cache.listening))
            entries.add_metric([cache.view], cache.size)
        return [head, position, events, seconds, hits, serving, entries]

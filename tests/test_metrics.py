"""What /metrics says, from `api.metrics` alone: no server, no storage."""

from __future__ import annotations

from api.cache import ViewCache
from api.metrics import Metrics


def test_commands_and_requests_are_timed_in_histograms():
    metrics = Metrics()
    metrics.command(0.004)
    metrics.command(0.2)
    metrics.request("GET", 200, 0.0007)
    text = metrics.exposition([]).decode()
    assert "mm_commands_total 2.0" in text
    assert 'mm_command_seconds_bucket{le="0.005"} 1.0' in text and "mm_command_seconds_count 2.0" in text
    assert 'mm_http_requests_total{method="GET",status="200"} 1.0' in text
    assert 'mm_http_request_seconds_bucket{le="0.001",method="GET"} 1.0' in text


def test_label_values_are_escaped_and_invented_methods_share_one_label():
    metrics = Metrics()
    metrics.request('BREW"\n', 418, 0.01)
    text = metrics.exposition([('odd"name\n', 1, 3, 2, 0.5)]).decode()
    assert 'mm_http_requests_total{method="OTHER",status="418"} 1.0' in text
    assert 'mm_consumer_lag_events{consumer="odd\\"name\\n"} 2.0' in text and "mm_log_head 3.0" in text


def test_the_cache_and_the_unrecorded_requests_are_counted():
    cache: ViewCache[str] = ViewCache("workspaces", 10)
    cache.listen(True)
    cache.put("org", "ws", "row", cache.ticket())
    assert cache.get("org", "ws") == "row"
    metrics = Metrics([cache])
    metrics.unrecorded("other_org")
    text = metrics.exposition([]).decode()
    assert 'mm_view_cache_hits_total{view="workspaces"} 1.0' in text
    assert (
        'mm_view_cache_serving{view="workspaces"} 1.0' in text
        and 'mm_view_cache_entries{view="workspaces"} 1.0' in text
    )
    assert 'mm_activity_unrecorded_total{reason="other_org"} 1.0' in text
    assert 'mm_activity_unrecorded_total{reason="unauthenticated"} 0.0' in text

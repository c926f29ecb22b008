"""Actions, triggers and runs through HTTP, executed against a local HTTP target."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from domain.aggregates import AGGREGATES
from eventstore import Codec
from eventstore.postgres import EVENTS_TABLE
from tests.conftest import assert_422, assert_envelope, position_of
from tests.support import eventually

ACTION_KEYS = {
    "action_id",
    "workspace_id",
    "app_id",
    "endpoint_id",
    "name",
    "description",
    "namespace_id",
    "thread_mode",
    "thread_id",
    "thread_id_template",
    "payload",
    "action_type",
    "schedule_type",
    "cron_expression",
    "scheduled_at",
    "timezone",
    "max_retries",
    "retry_delay_seconds",
    "is_enabled",
    "is_running",
    "next_run_at",
    "last_run_at",
    "last_run_status",
    "last_execution_id",
    "total_runs",
    "successful_runs",
    "failed_runs",
    "created_by",
    "created_at",
    "updated_at",
}
RUN_KEYS = {
    "run_id",
    "action_id",
    "workspace_id",
    "execution_id",
    "status",
    "attempt",
    "trigger_type",
    "triggered_at",
    "started_at",
    "completed_at",
    "duration_seconds",
    "resolved_payload",
    "resolved_thread_id",
    "error_message",
    "error_code",
}


class Target:
    """A local HTTP endpoint whose answers the test scripts: a list of (status, body, delay) per path."""

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[int, dict, float]]] = {}
        self.calls: list[tuple[str, dict]] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                target.calls.append((self.path, body))
                answers = target.script.get(self.path) or [(200, {}, 0)]
                status, answer, delay = answers.pop(0) if len(answers) > 1 else answers[0]
                time.sleep(delay)  # the scripted slowness of this endpoint: what the test is about
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the executor gave up waiting

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture(scope="module")
def target():
    target = Target()
    yield target
    target.server.shutdown()


@pytest.fixture()
def app(api, org):
    workspace = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "actions"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{workspace}"
    app_id = api.post(f"{base}/apps", json={"name": "bot"}).json()["app_id"]
    namespace = api.post(f"{base}/namespaces", json={"name": "ns"}).json()["namespace_id"]
    echo = api.post(f"{base}/endpoints", json={"app_id": app_id, "name": "echo", "total_stages": 2}).json()
    return {
        "base": base,
        "actions": f"{base}/apps/{app_id}/actions",
        "app_id": app_id,
        "namespace_id": namespace,
        "echo": echo["endpoint_id"],
    }


def endpoint(api, app, url: str) -> str:
    response = api.post(f"{app['base']}/endpoints", json={"app_id": app["app_id"], "name": "remote", "url": url})
    return response.json()["endpoint_id"]


def last_event(settings, stream_id: str):
    """The stream's latest event, from the event store."""
    with psycopg.connect(settings.database_url) as conn:
        topic, state = conn.execute(
            f"SELECT topic, state FROM {EVENTS_TABLE} WHERE originator_id = %s ORDER BY originator_version DESC",
            (stream_id,),
        ).fetchone()
    return Codec(AGGREGATES).decode(topic, bytes(state))[1]


def create(api, app, **fields) -> dict:
    body = {"name": "act", "endpoint_id": app["echo"], "namespace_id": app["namespace_id"], **fields}
    response = api.post(app["actions"], json=body)
    assert response.status_code == 201, response.text
    return response.json()


def wait_for_run(api, app, action_id: str, run_id: str, statuses=("success", "failed"), timeout: float = 30) -> dict:
    def answer() -> tuple[int, dict | str]:
        response = api.get(f"{app['actions']}/{action_id}/runs/{run_id}")
        return response.status_code, response.json() if response.status_code == 200 else response.text

    _, run = eventually(
        answer,
        until=lambda answer: answer[0] == 200 and answer[1]["status"] in statuses,
        timeout=timeout,
        what=f"run {run_id} to reach {statuses}",
    )
    return run


def test_create_get_list_search_update_delete(api, app):
    action = create(api, app, name="Nightly report", description="Summarise the day")
    assert set(action) == ACTION_KEYS
    assert (
        action["thread_mode"],
        action["action_type"],
        action["timezone"],
        action["max_retries"],
        action["retry_delay_seconds"],
        action["is_enabled"],
        action["next_run_at"],
    ) == ("new_each_run", "trigger", "UTC", 0, 60, True, None)
    other = create(api, app, name="Cleanup")
    listed = api.get(
        app["actions"], params={"search": "REPORT"}, headers={"X-Min-Position": str(_head(api, app, other))}
    ).json()
    assert [a["action_id"] for a in listed["actions"]] == [action["action_id"]] and listed["total"] == 1
    assert api.get(app["actions"], params={"search": "summarise"}).json()["total"] == 1
    updated = api.put(f"{app['actions']}/{action['action_id']}", json={"description": "Weekly now", "max_retries": 3})
    assert (
        updated.status_code == 200 and updated.json()["max_retries"] == 3 and updated.json()["name"] == "Nightly report"
    )
    deleted = api.delete(f"{app['actions']}/{action['action_id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    after = {"X-Min-Position": position_of(deleted)}
    assert_envelope(api.get(f"{app['actions']}/{action['action_id']}", headers=after), 404, "RESOURCE_NOT_FOUND")
    assert_envelope(api.get(f"{app['actions']}/{action['action_id']}/runs", headers=after), 404, "RESOURCE_NOT_FOUND")


def _head(api, app, action) -> int:
    response = api.put(f"{app['actions']}/{action['action_id']}", json={})
    return int(position_of(response))


def test_cron_action_answers_next_run_in_utc(api, app):
    action = create(
        api,
        app,
        action_type="scheduled",
        schedule_type="cron",
        cron_expression="0 9 * * *",
        timezone="America/New_York",
    )
    next_run = datetime.fromisoformat(action["next_run_at"])
    assert next_run.tzinfo is not None and next_run.utcoffset() == timedelta(0)
    assert next_run.hour in (13, 14) and next_run > datetime.now(UTC)  # 09:00 New York, EDT or EST
    disabled = api.post(f"{app['actions']}/{action['action_id']}/disable")
    assert disabled.json()["next_run_at"] is None and disabled.json()["is_enabled"] is False
    enabled = api.post(f"{app['actions']}/{action['action_id']}/enable")
    assert enabled.json()["next_run_at"] == action["next_run_at"]


def test_invalid_settings_answer_422_naming_the_field(api, app):
    base = {"name": "a", "endpoint_id": app["echo"], "namespace_id": app["namespace_id"]}
    cases = [
        ({"action_type": "scheduled", "schedule_type": "cron", "cron_expression": "not cron"}, "cron_expression"),
        (
            {
                "action_type": "scheduled",
                "schedule_type": "cron",
                "cron_expression": "* * * * *",
                "timezone": "Nowhere/Land",
            },
            "timezone",
        ),
        # A random field (`R`) or the host's own zone would make slots depend on when or where they are read.
        *(
            ({"action_type": "scheduled", "schedule_type": "cron", "cron_expression": random}, "cron_expression")
            for random in ("R * * * *", "0 R(0-23) * * *")
        ),
        (
            {
                "action_type": "scheduled",
                "schedule_type": "cron",
                "cron_expression": "* * * * *",
                "timezone": "localtime",
            },
            "timezone",
        ),
        ({"action_type": "scheduled", "schedule_type": "once", "scheduled_at": "2001-01-01T00:00:00Z"}, "scheduled_at"),
        ({"action_type": "scheduled"}, "schedule_type"),
        ({"cron_expression": "* * * * *"}, "cron_expression"),
        ({"thread_mode": "fixed"}, "thread_id"),
        ({"thread_mode": "sometimes"}, "thread_mode"),
        ({"max_retries": 11}, "max_retries"),
        ({"retry_delay_seconds": 86401}, "retry_delay_seconds"),
        ({"payload": [1, 2]}, "payload"),
        # What ends in an index or in the store's JSON is bounded here: a thread id past an index entry's size,
        # or a NUL in the JSON, failed later, in a view every org shares or as a 500.
        ({"thread_mode": "fixed", "thread_id": "t" * 201}, "thread_id"),
        ({"thread_mode": "template", "thread_id_template": "{payload.k}", "payload": {"k": "x" * 201}},
         "thread_id_template"),
        ({"payload": {"k": ["fine", "not\u0000fine"]}}, ("payload", "k", 1)),
        ({"payload": {"k\u0000": 1}}, ("payload", "k\u0000")),
    ]  # fmt: skip
    for extra, field in cases:
        loc = ["body", field] if isinstance(field, str) else ["body", *field]
        assert_422(api.post(app["actions"], json={**base, **extra}), loc)
    assert_422(api.post(app["actions"], json={"name": "a"}), ["body", "endpoint_id"])
    template = api.post(
        app["actions"], json={**base, "thread_mode": "template", "thread_id_template": "t-{payload.k}"}
    ).json()
    trigger = f"{app['actions']}/{template['action_id']}/trigger"
    assert_422(api.post(trigger, json={"payload": {"k": "x" * 200}}), ["body", "payload"])
    assert_422(api.post(trigger, json={"payload": {"k": "\u0000"}}), ["body", "payload", "k"])
    assert api.post(trigger, json={"payload": {"k": "x" * 198}}).status_code == 202


def test_targets_must_exist_in_this_app(api, app):
    body = assert_envelope(
        api.post(app["actions"], json={"name": "a", "endpoint_id": "endpoint_x", "namespace_id": app["namespace_id"]}),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert body["details"] == {"resource_type": "endpoint", "resource_id": "endpoint_x"}
    body = assert_envelope(
        api.post(app["actions"], json={"name": "a", "endpoint_id": app["echo"], "namespace_id": "namespace_x"}),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert body["details"]["resource_type"] == "namespace"


def test_trigger_runs_the_echo_executor_and_counts(api, app):
    action = create(api, app, payload={"greeting": "hi"})
    answer = api.post(f"{app['actions']}/{action['action_id']}/trigger", json={"payload": {"name": "ann"}})
    assert answer.status_code == 202
    body = answer.json()
    assert set(body) == {"action_id", "run_id", "execution_id", "status", "message"} and body["status"] == "pending"
    run = wait_for_run(api, app, action["action_id"], body["run_id"])
    assert set(run) == RUN_KEYS
    assert (run["status"], run["attempt"], run["trigger_type"]) == ("success", 1, "manual")
    assert run["resolved_payload"] == {"greeting": "hi", "name": "ann"} and run["resolved_thread_id"]
    assert run["started_at"] and run["completed_at"] and run["duration_seconds"] is not None
    got = eventually(
        lambda: api.get(f"{app['actions']}/{action['action_id']}").json(),
        until=lambda got: got["successful_runs"] == 1,
        what="the action to count its successful run",
    )
    assert (
        got["total_runs"],
        got["successful_runs"],
        got["failed_runs"],
        got["last_run_status"],
        got["last_execution_id"],
        got["is_running"],
    ) == (1, 1, 0, "success", body["execution_id"], False)


def test_idempotency_key_answers_the_same_run(api, app):
    action = create(api, app)
    headers = {"Idempotency-Key": "abc-123"}
    first = api.post(f"{app['actions']}/{action['action_id']}/trigger", json={}, headers=headers).json()
    second = api.post(f"{app['actions']}/{action['action_id']}/trigger", json={}, headers=headers).json()
    third = api.post(f"{app['actions']}/{action['action_id']}/trigger").json()
    assert first["run_id"] == second["run_id"] != third["run_id"]


def test_a_disabled_action_answers_409_on_trigger(api, app):
    action = create(api, app, is_enabled=False)
    assert_envelope(api.post(f"{app['actions']}/{action['action_id']}/trigger", json={}), 409, "CONFLICT")


def test_remote_endpoint_success_failure_retry_and_timeout(api, app, target, settings):
    ok = endpoint(api, app, target.url("/ok"))
    flaky = endpoint(api, app, target.url("/flaky"))
    slow = endpoint(api, app, target.url("/slow"))
    target.script["/ok"] = [(200, {"stages_completed": 3, "total_stages": 3, "token_usage": {"input": 5}}, 0)]
    target.script["/flaky"] = [(502, {}, 0), (200, {}, 0)]
    target.script["/slow"] = [(200, {}, 5)]
    # An answer too long to be a report still counts by its status; what it says is not read.
    target.script["/long"] = [(200, {"stages_completed": 2, "padding": "x" * (1 << 20)}, 0)]
    target.script["/short"] = [(200, {"stages_completed": 2, "padding": "x" * 1000}, 0)]
    # Counts past what a report may hold are left out, not stored to overflow a rollup later.
    target.script["/huge"] = [(200, {"stages_completed": 10**30, "token_usage": {"input": 2**63, "output": 7}}, 0)]

    def trigger(endpoint_id: str, **fields) -> tuple[str, str]:
        action = create(api, app, endpoint_id=endpoint_id, **fields)
        run = api.post(f"{app['actions']}/{action['action_id']}/trigger", json={"payload": {"k": 1}}).json()
        return action["action_id"], run["run_id"]

    succeeded = wait_for_run(api, app, *trigger(ok))
    assert succeeded["status"] == "success"
    path, sent = next(c for c in target.calls if c[0] == "/ok")
    assert set(sent) == {"execution_id", "run_id", "action_id", "thread_id", "payload"} and sent["payload"] == {"k": 1}

    retried = wait_for_run(api, app, *trigger(flaky, max_retries=2, retry_delay_seconds=0))
    assert (retried["status"], retried["attempt"]) == ("success", 2)

    for path, stages, usage in (("/long", None, None), ("/short", 2, None), ("/huge", None, {"output": 7})):
        run = wait_for_run(api, app, *trigger(endpoint(api, app, target.url(path))))
        event = last_event(settings, run["run_id"])
        assert (run["status"], event.stages_completed, event.token_usage) == ("success", stages, usage), path

    timed_out = wait_for_run(api, app, *trigger(slow, max_retries=0))
    assert (timed_out["status"], timed_out["error_code"], timed_out["attempt"]) == ("failed", "TIMEOUT", 1), timed_out


def test_an_answer_nested_too_deep_is_no_report_and_proxies_come_from_the_environment(monkeypatch):
    from executor.http import EndpointClient, _report

    assert _report(b"[" * 100_000 + b"]" * 100_000) == {}  # a RecursionError left the attempt to its lease
    assert _report(b'{"stages_completed": 2}') == {"stages_completed": 2}
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "skip.example")
    endpoints = EndpointClient()
    assert endpoints._proxy_for("http://api.example/run") == "http://proxy.internal:3128"
    assert endpoints._proxy_for("http://skip.example/run") is None
    assert endpoints._proxy_for("https://api.example/run") is None  # no HTTPS_PROXY given


def test_failures_are_coded_and_runs_filter_by_status(api, app, target):
    target.script["/down"] = [(503, {}, 0)]
    down = endpoint(api, app, target.url("/down"))
    refused = endpoint(api, app, "http://127.0.0.1:9/nothing-listens-here")
    metadata = endpoint(api, app, "http://169.254.169.254/latest/meta-data")
    codes = {}
    for endpoint_id, name in ((down, "down"), (refused, "refused"), (metadata, "metadata")):
        action = create(api, app, endpoint_id=endpoint_id, name=name)
        run = api.post(f"{app['actions']}/{action['action_id']}/trigger", json={}).json()
        codes[name] = wait_for_run(api, app, action["action_id"], run["run_id"])["error_code"]
        if name == "down":
            down_action = action["action_id"]
    assert codes == {"down": "HTTP_503", "refused": "CONNECTION_ERROR", "metadata": "DESTINATION_DENIED"}
    assert not any(path.startswith("/latest") for path, _ in target.calls)
    runs = api.get(f"{app['actions']}/{down_action}/runs", params={"status": "failed"}).json()
    assert runs["total"] == 1 and runs["runs"][0]["status"] == "failed"
    assert api.get(f"{app['actions']}/{down_action}/runs", params={"status": "success"}).json()["total"] == 0
    assert_422(api.get(f"{app['actions']}/{down_action}/runs", params={"status": "done"}), ["query", "status"])


def test_concurrent_triggers_of_one_action_are_all_accepted_and_counted(api, app):
    action = create(api, app)
    trigger = f"{app['actions']}/{action['action_id']}/trigger"
    answers = []
    threads = [
        threading.Thread(target=lambda: answers.append(api.post(trigger, json={}).status_code)) for _ in range(24)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [202] * 24  # triggers only read the action: they never race each other
    eventually(
        lambda: api.get(f"{app['actions']}/{action['action_id']}").json()["successful_runs"],
        until=lambda count: count >= 24,
        interval=0.1,
        what="24 successful runs",
    )
    updated = api.put(f"{app['actions']}/{action['action_id']}", json={"description": "changed"}).json()
    assert (updated["total_runs"], updated["successful_runs"], updated["is_running"]) == (24, 24, False)


def test_a_cron_expression_that_never_fires_is_refused(api, app):
    base = {"name": "a", "endpoint_id": app["echo"], "namespace_id": app["namespace_id"]}
    assert_422(
        api.post(
            app["actions"],
            json={**base, "action_type": "scheduled", "schedule_type": "cron", "cron_expression": "0 0 31 2 *"},
        ),
        ["body", "cron_expression"],
    )


def test_an_endpoint_id_with_a_nul_is_refused_as_input(api, app):
    # No id can hold a NUL (PostgreSQL text cannot): refused with the rest of the body's undecodable input.
    base = {"name": "a", "endpoint_id": app["echo"], "namespace_id": app["namespace_id"]}
    assert_422(api.post(app["actions"], json={**base, "endpoint_id": "endpoint_\u0000"}), ["body", "endpoint_id"])


@pytest.mark.parametrize("field", ["thread_id", "thread_id_template"])
def test_a_thread_field_the_mode_does_not_use_is_checked_on_create_and_update(api, app, field):
    # Stored all the same, so checked all the same: a NUL failed the store's chain trigger (500).
    mode = "template" if field == "thread_id" else "fixed"
    base = {"name": "a", "endpoint_id": app["echo"], "namespace_id": app["namespace_id"]}
    valid = {"thread_mode": "template", "thread_id_template": "t-{run_id}"} if mode == "template" else {
        "thread_mode": "fixed", "thread_id": "t"}  # fmt: skip
    action = create(api, app, **valid)
    for value in ("t\u0000", "t\u0001", "t" * 201):
        assert_422(api.post(app["actions"], json={**base, **valid, field: value}), ["body", field])
        assert_422(api.post(app["actions"], json={**base, field: value}), ["body", field])  # new_each_run
        assert_422(api.put(f"{app['actions']}/{action['action_id']}", json={field: value}), ["body", field])


def test_an_action_search_with_a_nul_is_refused(api, app):
    assert_422(api.get(app["actions"], params={"search": "a\u0000b"}), ["query", "search"])


def test_a_once_time_given_with_an_offset_is_answered_in_utc(api, app):
    soon = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    once = create(
        api,
        app,
        action_type="scheduled",
        schedule_type="once",
        scheduled_at=soon.astimezone(timezone(timedelta(hours=5))).isoformat(),
    )
    assert once["next_run_at"].endswith("Z") and datetime.fromisoformat(once["next_run_at"]) == soon


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999/x"], ids=["unclosed host", "port past 65535"])
def test_an_endpoint_url_that_cannot_be_called_is_refused(api, app, url):
    assert_422(
        api.post(f"{app['base']}/endpoints", json={"app_id": app["app_id"], "name": "e", "url": url}),
        ["body", "url"],
    )


def test_a_run_to_a_metadata_address_behind_an_ipv4_mapped_ipv6_literal_is_denied(api, app):
    mapped = endpoint(api, app, "http://[::ffff:169.254.169.254]:9/latest")
    sneaky = create(api, app, endpoint_id=mapped, name="sneaky")
    run = api.post(f"{app['actions']}/{sneaky['action_id']}/trigger", json={}).json()
    assert wait_for_run(api, app, sneaky["action_id"], run["run_id"])["error_code"] == "DESTINATION_DENIED"


def test_the_actions_of_a_missing_app_are_not_found(api, app):
    assert_envelope(api.get(f"{app['base']}/apps/app_missing/actions"), 404, "RESOURCE_NOT_FOUND")


def test_an_environment_slug_of_a_dash_alone_is_refused(api, app):
    assert_422(api.post(f"{app['base']}/environments", json={"name": "x", "slug": "-"}), ["body", "slug"])

"""Credentials in endpoint URLs: masked in every answer, kept when a client sends the mask back."""

from __future__ import annotations

import psycopg
import pytest

from domain.secrets import carries_mask, masked_text, masked_url, redacted
from tests.conftest import as_token, assert_422, issue_token, position_of


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://user:pass@h.example/p?api_key=k&x=1#t", "https://***@h.example/p?api_key=***&x=***#***"),
        ("https://ghp_token@h.example/p", "https://***@h.example/p"),
        ("https://h.example/p?X-Amz-Signature=abc&sv=1", "https://h.example/p?X-Amz-Signature=***&sv=***"),
        ("https://h.example:8443/plain/path", "https://h.example:8443/plain/path"),
        ("https://h.example/p?flag&empty=", "https://h.example/p?flag&empty="),
    ],
)  # fmt: skip
def test_a_url_is_masked_where_credentials_go(url, masked):
    assert masked_url(url) == masked
    assert carries_mask(masked) == (masked != url) and not carries_mask(url)


def test_urls_inside_text_and_event_data_are_masked():
    assert masked_text("cannot reach https://a:b@h/x?token=t now") == "cannot reach https://***@h/x?token=*** now"
    assert redacted({"secret_hash": "ab12", "fields": {"url": "http://u:p@h/"}, "n": [1]}) == {
        "secret_hash": "***",
        "fields": {"url": "http://***@h/"},
        "n": [1],
    }


URL = "https://robot:hunter2@api.example.com/run?api_key=sk-live-123"
MASKED = "https://***@api.example.com/run?api_key=***"


def test_endpoint_urls_are_masked_in_every_answer_and_kept_on_a_round_trip(api, system, org, settings):
    ws = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "w"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{ws}"
    app = api.post(f"{base}/apps", json={"name": "a"}).json()["app_id"]
    created = api.post(f"{base}/endpoints", json={"app_id": app, "name": "e", "url": URL})
    assert created.status_code == 201 and created.json()["url"] == MASKED
    endpoint = created.json()["endpoint_id"]
    wait = {"X-Min-Position": position_of(created)}
    with as_token(system, issue_token(api, org, "viewer")) as viewer:
        got = viewer.get(f"{base}/endpoints/{endpoint}", headers=wait)
        listed = viewer.get(f"{base}/endpoints", headers=wait)
    assert got.json()["url"] == MASKED and listed.json()["endpoints"][0]["url"] == MASKED
    assert "hunter2" not in got.text + listed.text and "sk-live" not in got.text + listed.text

    # A client that PUTs back what it read keeps the stored URL; the rest of its change applies.
    back = {k: v for k, v in got.json().items() if k in ("name", "url", "total_stages")}
    updated = api.put(f"{base}/endpoints/{endpoint}", json={**back, "name": "renamed"})
    assert updated.status_code == 200 and updated.json()["url"] == MASKED and updated.json()["name"] == "renamed"
    with psycopg.connect(settings.database_url) as conn:
        states = [
            row[0]
            for row in conn.execute(
                "SELECT convert_from(state, 'UTF8') FROM stored_events WHERE originator_id = %s "
                "ORDER BY originator_version",
                (endpoint,),
            )
        ]
    assert len(states) == 2 and "hunter2" in states[0] and "***" not in states[1]

    # A mask that is not this endpoint's stored URL would store an uncallable URL: refused.
    for url in ("https://***@other.example.com/run", "https://api.example.com/run?api_key=***"):
        assert_422(api.put(f"{base}/endpoints/{endpoint}", json={"url": url}), ["body", "url"])
        assert_422(api.post(f"{base}/endpoints", json={"app_id": app, "name": "x", "url": url}), ["body", "url"])
    # A new URL replaces the stored one as ever.
    fresh = api.put(f"{base}/endpoints/{endpoint}", json={"url": "https://api.example.com/v2"})
    assert fresh.json()["url"] == "https://api.example.com/v2"

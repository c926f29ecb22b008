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
        # A bare query token (no `=`) is a value too: README promises every query value masked.
        ("https://h.example/p?TOKENXYZ", "https://h.example/p?***"),
        ("https://h.example/p?flag&empty=", "https://h.example/p?***&empty="),
        ("https://h.example/p?empty=&", "https://h.example/p?empty=&"),
        # User info may hold characters that end a URL in text for some readers: the whole netloc's is masked.
        ("https://bob:hunter2'x@example.com/p?k=v", "https://***@example.com/p?k=***"),
        ('https://bob:hunter2"x<y>@example.com/p', "https://***@example.com/p"),
    ],
)  # fmt: skip
def test_a_url_is_masked_where_credentials_go(url, masked):
    assert masked_url(url) == masked
    assert carries_mask(masked) == (masked != url) and not carries_mask(url)


def test_a_url_field_is_masked_whole_and_a_url_in_text_runs_to_whitespace():
    quoted = "https://bob:hunter2'x@example.com/p?k=v"
    odd = 'https://bob:hunter2"x y@example.com/p?TOKENXYZ'  # stored before URLs were checked for such characters
    data = {
        "fields": {"url": quoted, "name": "e"},
        "changes": {"url": odd},
        "error_message": f"cannot reach {quoted} or <{quoted}> now",
    }
    shown = redacted(data)
    assert shown["fields"] == {"url": "https://***@example.com/p?k=***", "name": "e"}
    assert "hunter2" not in shown["changes"]["url"] and "TOKENXYZ" not in shown["changes"]["url"]
    assert "hunter2" not in shown["error_message"] and "k=v" not in shown["error_message"]
    assert shown["error_message"].startswith("cannot reach https://***@example.com/p?k=*** or <https://***@")
    assert masked_text("see http://h/x?TOKENXYZ") == "see http://h/x?***"


@pytest.mark.parametrize(
    "url",
    ['https://h.example/a"b', "https://h.example/<p>", "https://h.example/a b", "https://h.example/\\x",
     "https://h.example/a\u0001", "https://h.example/a\u007f", "https://h.example/a{b}", "https://h.example/a|b",
     "https://h.example/a\u0085"],
)  # fmt: skip
def test_a_url_with_characters_rfc_3986_does_not_allow_unencoded_is_refused(api, org, url):
    ws = api.post(f"/v1/orgs/{org}/workspaces", json={"name": "w"}).json()["workspace_id"]
    base = f"/v1/orgs/{org}/workspaces/{ws}"
    app = api.post(f"{base}/apps", json={"name": "a"}).json()["app_id"]
    assert_422(api.post(f"{base}/endpoints", json={"app_id": app, "name": "e", "url": url}), ["body", "url"])
    endpoint = api.post(f"{base}/endpoints", json={"app_id": app, "name": "e", "url": "https://h.example/"}).json()
    assert_422(api.put(f"{base}/endpoints/{endpoint['endpoint_id']}", json={"url": url}), ["body", "url"])


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

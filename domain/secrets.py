"""Credential material and what readers see of it: a URL's credentials masked, a token's verifier withheld.

What is stored stays as it was (the executor calls the real URL, the hash chain covers the stored bytes); every
answer, export and log line shows the masked form. One place, so the API, the audit stream and the executor's
logs mask alike.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# Fields whose value is a verifier of a credential (a token's secret hash): never shown, whatever the role.
SECRET_FIELDS = frozenset({"secret_hash"})
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


def masked_url(url: str) -> str:
    """The URL with its user info and every query value and fragment replaced by MASK. Every query value, not
    only those named like credentials: `?k=`, `?sig=`, `?X-Amz-Signature=` and whatever a service invents all
    carry them, and a list of names would miss the next one."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK  # not parseable, so not known to be free of credentials
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(_masked_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, MASK if parts.fragment else ""))


def _masked_pair(pair: str) -> str:
    name, equals, value = pair.partition("=")
    return f"{name}={MASK}" if equals and value else pair


def masked_text(text: str) -> str:
    """Free text (an error message, a log line) with every URL in it masked."""
    return _URL_IN_TEXT.sub(lambda match: masked_url(match.group(0)), text) if "://" in text else text


def carries_mask(url: str) -> bool:
    """Whether the URL has MASK where `masked_url` puts it: a masked URL sent back, not a callable one."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    values = [pair.partition("=")[2] for pair in parts.query.split("&")]
    return MASK in (parts.username, parts.password, parts.fragment, *values)


def redacted(data: Any) -> Any:
    """Event data as a reader may see it: secret fields withheld, URLs in any text masked."""
    if isinstance(data, dict):
        return {key: MASK if key in SECRET_FIELDS else redacted(value) for key, value in data.items()}
    if isinstance(data, list):
        return [redacted(value) for value in data]
    if isinstance(data, str):
        return masked_text(data)
    return data


def may_need_redaction(raw: bytes) -> bool:
    """A cheap test on stored bytes: False means `redacted` would change nothing (nearly every event)."""
    return b"://" in raw or any(name.encode() in raw for name in SECRET_FIELDS)

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
# Fields whose whole value is a URL (the catalog's url-typed fields: `domain.catalog` checks it names no other),
# masked as one URL wherever they appear in event data (an item's `fields`, a change's `changes`), whatever the
# characters in it: a URL stored before its characters were checked may hold a quote or a space.
URL_FIELDS = frozenset({"url"})
# A URL in free text runs to the next whitespace: a quote or an angle bracket may be part of its user info
# (`https://bob:hunter2'x@host`), and stopping there would leave the credential unmasked.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


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
    """A query pair with its value masked; a bare token (`?TOKENXYZ`, no `=`) is all value."""
    name, equals, value = pair.partition("=")
    if not equals:
        return MASK if name else pair
    return f"{name}={MASK}" if value else pair


def masked_text(text: str) -> str:
    """Free text (an error message, a log line) with every URL in it masked."""
    return _URL_IN_TEXT.sub(lambda match: masked_url(match.group(0)), text) if "://" in text else text


def carries_mask(url: str) -> bool:
    """Whether the URL has MASK where `masked_url` puts it: a masked URL sent back, not a callable one."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    values = [value if equals else name for name, equals, value in (p.partition("=") for p in parts.query.split("&"))]
    return MASK in (parts.username, parts.password, parts.fragment, *values)


def redacted(data: Any) -> Any:
    """Event data as a reader may see it: secret fields withheld, URL fields masked whole, URLs in any text masked."""
    if isinstance(data, dict):
        return {key: _redacted_field(key, value) for key, value in data.items()}
    if isinstance(data, list):
        return [redacted(value) for value in data]
    if isinstance(data, str):
        return masked_text(data)
    return data


def _redacted_field(key: Any, value: Any) -> Any:
    if key in SECRET_FIELDS:
        return MASK
    if key in URL_FIELDS and isinstance(value, str) and value:
        return masked_url(value)
    return redacted(value)


def may_need_redaction(raw: bytes) -> bool:
    """A cheap test on stored bytes: False means `redacted` would change nothing (nearly every event)."""
    return b"://" in raw or any(name.encode() in raw for name in SECRET_FIELDS)

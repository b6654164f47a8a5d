"""What both wire formats share: their paths, JSON as the APIs write it, ids, rendered streams."""

from __future__ import annotations

import http
import json
import secrets
import string
from dataclasses import dataclass
from typing import Literal

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
DEFAULT_MODEL = "termchat-local"

Provider = Literal["openai", "anthropic"]
Kind = Literal["event", "content", "end"]
"""A stream step: an event sent as it comes, a content delta (paced, counted, cut after), or
the point after the last delta where a cut-off beyond the deltas applies."""

_ALNUM = string.ascii_letters + string.digits


@dataclass
class Plan:
    """A rendered stream: headers, then events, with content deltas marked for pacing."""

    headers: list[tuple[str, str]]
    steps: list[tuple[Kind, bytes]]
    error_event: bytes
    keepalive: bytes


def rand(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def dumps(obj: object) -> str:
    # Compact and with raw UTF-8, like the real APIs: a multi-byte character split across
    # bytes would corrupt the JSON, which is why deltas are cut on code points.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def status_phrase(status: int) -> str:
    if status == 529:
        return "Overloaded"
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"

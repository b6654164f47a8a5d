"""The trust boundary: text from outside termchat, repaired to valid Unicode and made safe to
show on a terminal.

Model text and reasoning, server error messages, stored history, tool results and file names
all pass `safe` (whole strings) or `SafeStream` (streamed text) before any widget, renderable
or line of stderr is built from them. Neither Rich nor Textual removes ESC: an OSC 52 sequence
in a reply would otherwise write the user's clipboard, and `ESC ] 0 ;` set the window title.

What is removed: escape sequences (CSI, OSC and the other string sequences, up to their
terminator or the end of the line, and every other escape), C0 and C1 control characters but
tab and newline, and the bidirectional formatting characters that can make text read in
another order than it is stored (Trojan Source). A carriage return becomes a newline (CRLF one
newline), as Markdown reads it; the Unicode line and paragraph separators do too. UTF-16
surrogate pairs are joined and lone surrogates replaced, so the text can always be encoded.

`Safe` marks a string that went through here; the front ends' widgets take only `Safe`.
"""

from __future__ import annotations

import json
import re
from typing import Any, NewType

Safe = NewType("Safe", str)
"""Text that cannot drive a terminal: no escape sequences, no controls but tab and newline."""

# Parameters are bounded so a stream can hold back an unfinished sequence without holding
# an unbounded amount of text; a longer one is not a sequence any terminal would obey.
# The 8-bit introducers (CSI U+009B; DCS, SOS, OSC, PM, APC) count like their ESC forms.
_CSI = r"(?:\x1b\[|\x9b)[0-?]{0,64}[ -/]{0,8}"
_STRING = r"(?:\x1b[\]PX^_]|[\x90\x98\x9d-\x9f])[^\x07\x1b\x9c\n]*"
_OTHER = r"\x1b[ -/]{0,8}"
_SEQUENCE = re.compile(rf"{_CSI}[@-~]|{_STRING}[\x07\x9c]?|{_OTHER}[0-~]")
# A sequence the text ends in the middle of; the next chunk may complete it.
_UNFINISHED = re.compile(rf"(?:{_CSI}|{_STRING}|{_OTHER})\Z")
_STRING_START = re.compile(r"\x1b[\]PX^_]|[\x90\x98\x9d-\x9f]")
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"
    # Bidirectional embeddings, overrides, isolates and marks.
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NEWLINES = re.compile("\r\n?|[\u2028\u2029]")
# Any character the sanitiser might change: text without one passes as it is.
_SUSPECT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                      "\u2066-\u2069\u2028\u2029\ud800-\udfff]")
_HIGH = ("\ud800", "\udbff")


def repair(text: str) -> str:
    """`text` as encodable Unicode: UTF-16 surrogate pairs joined, lone surrogates replaced.

    JSON allows `\\ud83c\\udf89` escapes, and a server that cuts strings by UTF-16 index sends
    an emoji's two halves in two events; Python decodes each to a lone surrogate, which no
    file, socket or SQLite column will take.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class SurrogateJoiner:
    """`repair` for streamed text: holds back a trailing high surrogate until the chunk with
    its other half arrives."""

    def __init__(self) -> None:
        self._held = ""

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def feed(self, text: str) -> str:
        text = self._held + text
        self._held = text[-1] if text and _HIGH[0] <= text[-1] <= _HIGH[1] else ""
        return repair(text[:-1] if self._held else text)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return repair(held)


def _clean(text: str) -> str:
    """Newlines normalised, controls and bidi characters removed (sequences already gone)."""
    return _CONTROL.sub("", _NEWLINES.sub("\n", text))


def safe(text: str) -> Safe:
    """`text` made safe to show on a terminal (see the module docstring)."""
    if _SUSPECT.search(text) is None:
        return Safe(text)  # nearly all text: nothing to remove, in one scan
    return Safe(_clean(_SEQUENCE.sub("", repair(text))))


def safe_line(text: str) -> Safe:
    """`text` on one line: `safe`, with every run of whitespace (newlines too) one space."""
    return Safe(" ".join(safe(text).split()))


class SafeStream:
    """`safe` for text that arrives in pieces: a sequence, a CRLF or a surrogate pair split
    across two pieces is treated as if it had arrived whole, so the pieces' results joined
    equal `safe` of the whole text."""

    def __init__(self) -> None:
        self._joiner = SurrogateJoiner()
        self._held = ""
        # The last piece out ended with a carriage return, already given out as a newline: a
        # line feed right after it belongs to the same line break.
        self._after_cr = False

    def feed(self, text: str) -> Safe:
        if not (self._held or self._joiner.holding or self._after_cr) \
                and _SUSPECT.search(text) is None:
            # Nearly every piece of a reply: nothing to remove, hold or join.
            if text:
                self._after_cr = False
            return Safe(text)
        text = self._held + self._joiner.feed(text)
        unfinished = _UNFINISHED.search(text)
        if unfinished is None:
            self._held = ""
        else:
            held = unfinished.group()
            # A string sequence's body is removed whatever follows: keep only its start.
            start = _STRING_START.match(held)
            self._held = start.group() if start else held
            text = text[:unfinished.start()]
        return self._out(_SEQUENCE.sub("", text))

    def flush(self) -> Safe:
        """The end of the text: whatever was held back, made safe."""
        text = self._held + self._joiner.flush()
        self._held = ""
        return self._out(_SEQUENCE.sub("", text))

    def _out(self, text: str) -> Safe:
        if not text:
            return Safe("")
        if self._after_cr and text[0] == "\n":
            text = text[1:]
        self._after_cr = text.endswith("\r")
        return Safe(_clean(text))


# Characters a terminal may obey that `json.dumps(..., ensure_ascii=False)` leaves raw: C1
# controls (U+009B is CSI to some terminals) and the bidi characters.
_JSON_RAW = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def json_text(value: Any, *, indent: int | None = None) -> str:
    """`value` as JSON that is safe on a terminal and still exactly the same data: strings keep
    every character, those a terminal could obey written as `\\uXXXX` escapes."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    return _JSON_RAW.sub(lambda match: f"\\u{ord(match.group()):04x}", repair(text))

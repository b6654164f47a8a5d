"""What a hostile server puts in text, and what must never reach a terminal."""

from __future__ import annotations

# Everything a terminal could obey rather than show, besides tab and newline.
FORBIDDEN = {chr(c) for c in [*range(0x00, 0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0)]} | {
    "\u061c", "\u200e", "\u200f", *map(chr, range(0x202a, 0x202f)),
    *map(chr, range(0x2066, 0x206a)), "\u2028", "\u2029"}

HOSTILE = [
    "\x1b]52;c;aGVsbG8=\x07",          # OSC 52: write the clipboard
    "\x1b]52;c;aGVsbG8=\x1b\\",        # ... terminated by ST
    "\x1b]0;pwned\x07",                # set the window title
    "\x1b[2J\x1b[H",                   # clear the screen, cursor home
    "\x1b[31;1m", "\x1b[?1049h", "\x1b[6n",
    "\x1bP+q544e\x1b\\",               # DCS (XTGETTCAP)
    "\x9b2J", "\x9d0;title\x07",       # 8-bit CSI and OSC
    "\u202e", "\u2066", "\u200f",      # bidi override, isolate, mark
    "\r", "\r\n", "\x08", "\x00", "\x7f", "\x1b", "\x1b[", "\x1b]",
]

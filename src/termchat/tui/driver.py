"""Textual's Linux terminal driver, made to let go of a terminal that has hung up.

When the terminal goes away (the SSH connection drops, tmux's server is killed) the kernel
sends SIGHUP and then SIGCONT. Textual's driver takes the SIGCONT for a resume after Ctrl+Z
and starts a second output thread, which dies on its first write to the dead terminal; the
queue in front of it fills, and the app blocks forever on its next write, long before the
SIGHUP can end it. Here a terminal that is gone is not resumed, and nothing more is written
to it, so the SIGHUP ends the app as it should: reply saved, exit 129.

Keys typed while termchat starts, before the driver leaves line mode, have been through the
terminal's line discipline: its ICRNL made each Enter a line feed, which Textual reads as
Ctrl+J (a new line in the prompt). The driver counts those bytes as it takes the terminal
over, and the line feeds among them are Enter again, however late the input thread reads
them (an app-level rule, "Ctrl+J before the screen is up", lost the race on a busy machine).
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import termios

from textual import events
from textual.drivers.linux_driver import LinuxDriver
from textual.message import Message


def typed_in_line_mode(fd: int) -> int:
    """How many bytes of whole lines typed in line mode wait to be read from terminal `fd`
    (in canonical mode the kernel counts complete lines only: a partial one has no Enter)."""
    try:
        count: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    except OSError:
        return 0
    return count


class LineModeKeys:
    """Turns the line feeds among the first `pending` bytes of input back into Enter."""

    def __init__(self, pending: int) -> None:
        self.pending = pending

    def key(self, event: events.Key) -> events.Key:
        if self.pending <= 0:
            return event
        # A key of an escape sequence is counted as one byte: at worst a few keys more are
        # looked at, and only a line feed among them is changed.
        self.pending -= len((event.character or " ").encode())
        if event.key == "ctrl+j":
            return events.Key("enter", "\r")
        return event


class HangupSafeDriver(LinuxDriver):
    """LinuxDriver that stops writing, and does not resume, once its terminal is gone, and
    reads Enters typed before it took the terminal over as Enter."""

    _gone = False
    _line_mode = LineModeKeys(0)

    def start_application_mode(self) -> None:
        # Counted before the switch to raw mode: what arrives after it has no ICRNL.
        self._line_mode = LineModeKeys(typed_in_line_mode(self.fileno))
        super().start_application_mode()  # type: ignore[no-untyped-call]

    def process_message(self, message: Message) -> None:
        if isinstance(message, events.Key):
            message = self._line_mode.key(message)
        super().process_message(message)

    def _terminal_gone(self) -> bool:
        if not self._gone:
            stream = sys.__stderr__
            self._gone = stream is None or not os.isatty(stream.fileno())
        return self._gone

    def write(self, data: str) -> None:
        if not self._terminal_gone():
            super().write(data)

    def resume_application_mode(self) -> None:
        if not self._terminal_gone():
            super().resume_application_mode()

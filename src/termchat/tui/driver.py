"""Textual's Linux terminal driver, made to let go of a terminal that has hung up.

When the terminal goes away (the SSH connection drops, tmux's server is killed) the kernel
sends SIGHUP and then SIGCONT. Textual's driver takes the SIGCONT for a resume after Ctrl+Z
and starts a second output thread, which dies on its first write to the dead terminal; the
queue in front of it fills, and the app blocks forever on its next write, long before the
SIGHUP can end it. Here a terminal that is gone is not resumed, and nothing more is written
to it, so the SIGHUP ends the app as it should: reply saved, exit 129.
"""

from __future__ import annotations

import os
import sys

from textual.drivers.linux_driver import LinuxDriver


class HangupSafeDriver(LinuxDriver):
    """LinuxDriver that stops writing, and does not resume, once its terminal is gone."""

    _gone = False

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

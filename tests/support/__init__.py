"""Helpers the test modules share: models for the local server, the installed command, tmux,
and driving the TUI. Test modules import from here, never from each other."""

"""termchat: chat with large language models from the terminal."""

__version__ = "0.1.0"

"""The OpenAI provider behind an import that takes a second, as a cold SDK import can."""

import time

time.sleep(1.0)

from termchat.providers.openai_chat import create  # noqa: E402

__all__ = ["create"]

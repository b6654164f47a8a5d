"""The stock Textual baseline for the real-terminal benchmark: a chat app as the docs teach it.

An `Input` at the bottom, a `VerticalScroll` of `Markdown` widgets above it (the prompt, then
the reply), each reply streamed through `Markdown.get_stream()` from the real `openai` SDK,
and a one-line status that says `done · out N` when a reply has ended. The SDK is imported at
the top, as a plain app would, so a first send pays no import (its first frame does).
Configured by `OPENAI_BASE_URL` and `OPENAI_API_KEY`, like the SDK.

    OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 OPENAI_API_KEY=x .venv/bin/python bench/stock_app.py
"""

from __future__ import annotations

import openai
from textual import on, work
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Input, Markdown, Static

MODEL = "gpt-4.1-mini"


class StockChat(App[None]):
    CSS = """
    #view { height: 1fr; }
    .prompt { background: $boost; }
    #status { height: 1; padding: 0 1; background: $panel; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.client = openai.AsyncOpenAI(max_retries=0)
        self.messages: list[dict[str, str]] = []

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="view")
        yield Input(placeholder="Message", id="input")
        yield Static(f"stock:{MODEL}  ready", id="status")

    def on_mount(self) -> None:
        self.query_one("#view", VerticalScroll).anchor()
        self.query_one(Input).focus()

    @on(Input.Submitted)
    async def send(self, event: Input.Submitted) -> None:
        prompt = event.value
        event.input.clear()
        view = self.query_one("#view", VerticalScroll)
        reply = Markdown()
        await view.mount_all([Markdown(prompt, classes="prompt"), reply])
        self.messages.append({"role": "user", "content": prompt})
        self.stream_reply(reply)

    @work(exclusive=True)
    async def stream_reply(self, reply: Markdown) -> None:
        status = self.query_one("#status", Static)
        status.update(f"stock:{MODEL}  streaming")
        stream = Markdown.get_stream(reply)
        parts: list[str] = []
        out = None
        try:
            response = await self.client.chat.completions.create(
                model=MODEL, messages=self.messages, stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True})
            async with response:
                async for chunk in response:
                    if chunk.usage is not None:
                        out = chunk.usage.completion_tokens
                    if chunk.choices and chunk.choices[0].delta.content:
                        parts.append(chunk.choices[0].delta.content)
                        await stream.write(chunk.choices[0].delta.content)
        finally:
            await stream.stop()
        self.messages.append({"role": "assistant", "content": "".join(parts)})
        status.update(f"stock:{MODEL}  done · out {out}")


if __name__ == "__main__":
    StockChat().run()

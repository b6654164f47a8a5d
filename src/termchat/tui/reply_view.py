"""One reply on screen as it streams: its text in `AssistantMessage` segments, each tool call
a `ToolBlock` between them (a segment per round of text), fed by the turn's events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.widget import Widget

from termchat.content import Text, ToolCall, ToolResult
from termchat.events import (
    Event,
    ReasoningDelta,
    TextDelta,
    ToolCallArguments,
    ToolCallReady,
    ToolCallStarted,
    ToolFinished,
    ToolRunning,
)
from termchat.tui.conversation import ConversationView
from termchat.tui.messages import AssistantMessage, NoteLine, status_mark
from termchat.turn import Reply, Status
from termchat.untrusted import Safe, SafeStream, safe

if TYPE_CHECKING:
    from termchat.tui.tool_block import ToolBlock


@dataclass(frozen=True)
class ToolNames:
    """What the reply view asks of the tools about a call, by the name the model used."""

    where: Callable[[str], tuple[str, str] | None]
    """(server, tool), when a ready server has it."""
    allowed_because: Callable[[str], str | None]
    """Why it runs unasked, when it does."""


NO_TOOLS = ToolNames(lambda name: None, lambda name: None)


class ReplyView:
    """The widgets of one reply in the conversation view, and the events that grow them."""

    def __init__(self, view: ConversationView, reply: Reply, *, cursor_blink: bool = True,
                 timings: bool = True, names: ToolNames = NO_TOOLS) -> None:
        self.view = view
        self.reply = reply
        self.names = names
        self._cursor_blink = cursor_blink
        self._timings = timings
        self.segments: list[AssistantMessage] = []
        self.blocks: list[ToolBlock] = []
        self._segment: AssistantMessage | None = None
        self._round_blocks: dict[int, ToolBlock] = {}
        self._round = 0
        # The model's words pass the sanitiser on their way to the widget.
        self._text = SafeStream()
        self._thought = SafeStream()

    @property
    def widgets(self) -> list[Widget]:
        return [w for w in self.view.children if w in self.segments or w in self.blocks]

    @property
    def last_segment(self) -> AssistantMessage | None:
        return self._segment

    async def start(self) -> None:
        """Show the reply's first segment, empty, with its cursor."""
        await self._new_segment()

    def _make_segment(self) -> AssistantMessage:
        segment = AssistantMessage(streaming=True, cursor_blink=self._cursor_blink)
        self.segments.append(segment)
        self._segment = segment
        return segment

    async def _new_segment(self) -> None:
        await self.view.mount(self._make_segment())
        self.view.content_grew()

    def block_for(self, call_id: str) -> ToolBlock | None:
        return next((b for b in self.blocks if b.call_id == call_id), None)

    def position(self, call_id: str) -> tuple[int, int] | None:
        """(which, of how many) call `call_id` is among its round's calls."""
        ordered = [self._round_blocks[index] for index in sorted(self._round_blocks)]
        block = self.block_for(call_id)
        if block is None or block not in ordered:
            return None
        return ordered.index(block) + 1, len(ordered)

    def on_event(self, event: Event) -> Awaitable[None] | None:
        """Show `event`; an awaitable when a widget has to be mounted first."""
        if isinstance(event, TextDelta | ReasoningDelta):
            if self._segment is None:
                return self._then_segment(event)
            self._feed(self._segment, event)
        elif isinstance(event, ToolCallStarted):
            return self._start_call(event)
        elif isinstance(event, ToolCallArguments):
            if (block := self._round_blocks.get(event.index)) is not None:
                block.add_arguments(event.fragment)
        elif isinstance(event, ToolCallReady):
            block = self._round_blocks.get(event.index)
            if block is None:
                return self._start_call(ToolCallStarted(event.index, event.call.id,
                                                        event.call.name), event.call)
            block.ready(event.call)
        elif isinstance(event, ToolRunning):
            if (block := self.block_for(event.call_id)) is not None:
                if block.call.approval is None:
                    why = self.names.allowed_because(event.name)
                    if why is not None:
                        block.approved(why)
                block.running()
        elif isinstance(event, ToolFinished):
            if (block := self.block_for(event.result.call_id)) is not None:
                block.finished(event.result)
            if self.blocks and all(b.final for b in self._round_blocks.values()):
                # The round's calls have all run: the model is asked again, and its answer
                # goes below them.
                return self._new_segment()
        return None

    def _feed(self, segment: AssistantMessage, event: TextDelta | ReasoningDelta) -> None:
        # The segment tells the view when it grows (once per render, not per piece).
        if isinstance(event, TextDelta):
            if piece := self._text.feed(event.text):
                segment.append(piece)
        elif piece := self._thought.feed(event.text):
            segment.append_reasoning(piece)

    async def _then_segment(self, event: TextDelta | ReasoningDelta) -> None:
        await self._new_segment()
        assert self._segment is not None
        self._feed(self._segment, event)

    def _flush(self) -> None:
        if self._segment is None:
            return
        if tail := self._text.flush():
            self._segment.append(tail)
        if tail := self._thought.flush():
            self._segment.append_reasoning(tail)

    def show_now(self) -> None:
        """The text so far on screen in the next frame (see `AssistantMessage.show_now`)."""
        if self._segment is not None:
            self._segment.show_now()

    def _close_segment(self) -> list[Widget]:
        """The text before a call is complete: its segment ends (an empty one goes)."""
        self._flush()
        segment, self._segment = self._segment, None
        if segment is None:
            return []
        if not segment.text and not segment.has_reasoning:
            self.segments.remove(segment)
            return [segment]
        segment.finish(Status.COMPLETE)
        return []

    async def _start_call(self, event: ToolCallStarted, call: ToolCall | None = None) -> None:
        if self.reply.rounds != self._round:
            self._round = self.reply.rounds
            self._round_blocks = {}
        gone = self._close_segment()
        where = self.names.where(event.name)
        # Tool blocks load with the first tool call, not before the first frame.
        from termchat.tui.tool_block import ToolBlock

        block = ToolBlock.started(event.name, *(where or (None, None)), timings=self._timings)
        block.call_id = event.id or None
        self.blocks.append(block)
        self._round_blocks[event.index] = block
        await self.view.mount(block)
        if gone:
            await self.view.remove_children(gone)
        if call is not None:
            block.ready(call)
        self.view.content_grew()

    async def finish(self, status: Status) -> None:
        """The reply ended (`reply.status`): every call gets its ending, the last segment
        its mark, and a segment left empty goes (its mark on a line of its own)."""
        self._flush()
        results = {p.call_id: p for p in self.reply.parts if isinstance(p, ToolResult)}
        for block in self.blocks:
            if block.final:
                continue
            result = results.get(block.call_id or "")
            if result is not None:
                block.finished(result)
            else:
                block.not_run(self._why_not_run(block, status))
        segment = self._segment
        if segment is not None and (segment.text or segment.has_reasoning or not self.blocks):
            segment.finish(status)
        else:
            # The reply ends with its calls: the mark goes on a line below them.
            if segment is not None:
                self.segments.remove(segment)
                self._segment = None
                await segment.remove()
            if (mark := status_mark(status)) is not None:
                await self.view.mount(NoteLine(Safe(mark)))
        self.view.content_grew()

    def _why_not_run(self, block: ToolBlock, status: Status) -> str:
        if self.reply.round_limit:
            return "the round limit ended the turn"
        from termchat.tui.tool_block import Phase

        streaming = block.call.phase is Phase.STREAMING
        if status is Status.CANCELLED:
            return "cancelled while the model wrote it" if streaming else "cancelled"
        if status is Status.INTERRUPTED:
            return "the reply was cut off"
        if status is Status.ERROR:
            return "the reply failed"
        return "the turn ended"

    async def remove(self) -> None:
        """Take the whole reply off the screen (nothing of it is kept)."""
        gone = self.widgets
        self.segments, self.blocks, self._segment = [], [], None
        if gone:
            await self.view.remove_children(gone)


# About the rows a finished tool block takes, collapsed (header, arguments, result, hint).
CALL_ROWS = 7


def stored_widgets(reply: Reply) -> list[Widget]:
    """A finished reply with tool calls as it looked: its text in segments, each call a
    block with its result (collapsed), the reply's mark at the end."""
    results = {part.call_id: part for part in reply.parts if isinstance(part, ToolResult)}
    widgets: list[Widget] = []
    text: list[str] = []

    def segment() -> None:
        if text:
            widgets.append(AssistantMessage(safe("".join(text))))
            text.clear()

    for part in reply.parts:
        if isinstance(part, Text):
            text.append(part.text)
        elif isinstance(part, ToolCall):
            segment()
            from termchat.tui.tool_block import ToolBlock

            block = ToolBlock.started(part.name, None, None, timings=False)
            block.ready(part)
            result = results.get(part.id)
            if result is not None:
                block.finished(result)
            else:
                block.not_run("the turn ended first")
            widgets.append(block)
    if text:
        widgets.append(AssistantMessage(safe("".join(text)), status=reply.status))
    elif (mark := status_mark(reply.status)) is not None:
        widgets.append(NoteLine(Safe(mark)))
    return widgets

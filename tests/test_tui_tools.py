"""Tool calls in the TUI: each call a block inside the reply while it streams, approved in a
dialog, run with a running indicator, its result collapsed; cancel, limits, hostile output;
against the real SDKs over real sockets and real MCP servers."""

from __future__ import annotations

from termchat.content import ToolCall, ToolOutcome, ToolResult
from termchat.turn import Exchange, Reply, Status


def test_a_cancelled_reply_whose_calls_ran_stays_context_without_any_text() -> None:
    reply = Reply(status=Status.CANCELLED)
    reply.add(ToolCall("c1", "t__echo", '{"text": "x"}'))
    reply.add(ToolResult("c1", "x"))
    reply.add(ToolCall("c2", "t__sleep", '{"seconds": 30}'))
    reply.add(ToolResult("c2", "The user cancelled this call.", True, ToolOutcome.CANCELLED))
    assert Exchange("do it", reply).in_context
    assert not Exchange("do it", Reply(status=Status.CANCELLED)).in_context
    streamed_only = Reply(status=Status.CANCELLED)
    streamed_only.add(ToolCall("c1", "t__echo", "{"))
    assert not Exchange("do it", streamed_only).in_context

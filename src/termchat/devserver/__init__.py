"""A faithful local LLM provider server, for tests and for trying termchat without a key.

It speaks the OpenAI Chat Completions and the Anthropic Messages wire formats (SSE streams
and plain JSON) over real HTTP/1.1 sockets, so the real ``openai`` and ``anthropic`` SDKs run
against it unmodified. Replies are scripted with :class:`Script` (chunking, delays, errors,
cut-offs, stalls, tool calls), or as exact bytes (``Script.raw``, composed with the event
helpers ``openai_chunk`` & co.) for hostile-input tests; every request is recorded as a
:class:`Request`, including when the client hung up mid-reply.

The asyncio loop runs in a daemon thread, so sync tests, async tests on their own loop and
child processes can all talk to it. Standard library only, and no SDK is ever imported.

By hand::

    python -m termchat.devserver [--port N] [--delay S]

Layout: ``scripts`` (what to reply), ``openai_wire`` / ``anthropic_wire`` (how each format
writes it, and the public event helpers), ``wire`` (what both formats share), ``transport``
(HTTP/1.1 on one connection), ``server`` (thread, queue, records, routing, ``main``).
"""

from termchat.devserver.anthropic_wire import anthropic_event, anthropic_stream_events
from termchat.devserver.openai_wire import openai_chunk, openai_done, openai_stream_events
from termchat.devserver.scripts import Script, ToolCall
from termchat.devserver.server import ProviderServer, main
from termchat.devserver.transport import Request

__all__ = ["ProviderServer", "Request", "Script", "ToolCall", "anthropic_event",
           "anthropic_stream_events", "main", "openai_chunk", "openai_done",
           "openai_stream_events"]

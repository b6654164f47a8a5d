"""The local provider server, driven by the real OpenAI and Anthropic SDKs over its socket."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from termchat import devserver
from termchat.devserver import (
    ProviderServer,
    Script,
    ToolCall,
    anthropic_event,
    anthropic_stream_events,
    openai_chunk,
    openai_done,
    openai_stream_events,
)

MESSAGES: list[Any] = [{"role": "user", "content": "Hello there"}]


def oai(server: ProviderServer, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="test", base_url=server.openai_base_url, max_retries=0, **kwargs
    )


def ant(server: ProviderServer, **kwargs: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key="test", base_url=server.anthropic_base_url, max_retries=0, **kwargs
    )


async def oai_chunks(
    server: ProviderServer, *, include_usage: bool = True, **kwargs: Any
) -> list[ChatCompletionChunk]:
    async with oai(server, **kwargs) as client:
        stream = await client.chat.completions.create(
            model="gpt-test",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True} if include_usage else openai.omit,
        )
        async with stream:
            return [chunk async for chunk in stream]


def contents(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def cut(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def tool_calls_by_index(chunks: list[ChatCompletionChunk]) -> dict[int, dict[str, Any]]:
    """Accumulate ``delta.tool_calls`` by index, as a client must."""
    calls: dict[int, dict[str, Any]] = {}
    for c in chunks:
        for part in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            call = calls.setdefault(part.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = part.id or call["id"]
            if part.function:
                call["name"] += part.function.name or ""
                call["arguments"] += part.function.arguments or ""
    return calls


def fragments(chunks: list[ChatCompletionChunk]) -> list[tuple[int, str]]:
    """(index, arguments) of every tool-call delta that carries argument text."""
    return [(p.index, p.function.arguments) for c in chunks if c.choices
            for p in c.choices[0].delta.tool_calls or []
            if p.function and p.function.arguments]


def raw_post(
    server: ProviderServer, path: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", path, body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# --- OpenAI Chat Completions -------------------------------------------------------------


@pytest.mark.asyncio
async def test_openai_stream_arrives_in_the_scripted_chunks_with_usage(
    srv: ProviderServer,
) -> None:
    pieces = ["Hel", "lo ", "w", "é", "rld ", "🎉", "!"]
    srv.queue(
        Script(
            chunks=pieces,
            input_tokens=11,
            output_tokens=7,
            cached_tokens=3,
            reasoning_tokens=2,
        )
    )
    chunks = await oai_chunks(srv)

    first = chunks[0].choices[0].delta
    assert (first.role, first.content, first.refusal) == ("assistant", "", None)
    assert contents(chunks) == pieces
    assert all(c.model == "gpt-test" and c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    finish = chunks[-2]
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    usage = usage_chunk.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 7, 18)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 3
    assert usage.completion_tokens_details
    assert usage.completion_tokens_details.reasoning_tokens == 2
    assert all(c.usage is None for c in chunks[:-1])

    (req,) = srv.requests
    assert req.path == "/v1/chat/completions"
    assert req.body["messages"] == MESSAGES
    assert req.body["stream_options"] == {"include_usage": True}
    assert req.headers["authorization"] == "Bearer test"
    assert req.completed and req.chunks_sent == len(pieces) and req.disconnected_at is None
    assert req.received_at <= (req.first_chunk_at or 0) <= (req.last_chunk_at or 0)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("usage", "include_usage", "sent"),
    [
        ("auto", False, False),
        ("never", True, False),
        ("always", False, True),
    ],
)
async def test_openai_usage_modes(
    srv: ProviderServer, usage: Any, include_usage: bool, sent: bool
) -> None:
    srv.queue(Script(text="hi", usage=usage))
    chunks = await oai_chunks(srv, include_usage=include_usage)
    assert contents(chunks) == ["hi"]
    assert (chunks[-1].usage is not None) is sent
    assert (chunks[-1].choices == []) is sent


@pytest.mark.asyncio
async def test_openai_text_is_cut_on_code_points_and_estimates_usage(
    srv: ProviderServer,
) -> None:
    srv.queue(Script(text="ééé🎉🎉日本", chunk_size=2))
    chunks = await oai_chunks(srv)
    assert contents(chunks) == ["éé", "é🎉", "🎉日", "本"]
    usage = chunks[-1].usage
    assert usage is not None
    # "Hello there" is 11 characters -> 11 // 4 + 1; the reply is 7 -> 7 // 4 + 1.
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 2)


@pytest.mark.asyncio
async def test_openai_finish_reason_and_refusal(srv: ProviderServer) -> None:
    srv.queue(
        Script(text="truncat", finish="length"),
        Script(refusal="I can't help with that.", chunk_size=8),
    )
    chunks = await oai_chunks(srv)
    assert chunks[-2].choices[0].finish_reason == "length"

    chunks = await oai_chunks(srv)
    first = chunks[0].choices[0].delta
    assert (first.role, first.content, first.refusal) == ("assistant", None, "")
    refusals = [c.choices[0].delta.refusal for c in chunks[1:] if c.choices]
    assert "".join(r for r in refusals if r) == "I can't help with that."
    assert contents(chunks) == []
    assert chunks[-2].choices[0].finish_reason == "stop"


@pytest.mark.asyncio
async def test_openai_non_streaming(srv: ProviderServer) -> None:
    srv.queue(Script(text="plain answer", input_tokens=5, output_tokens=2, finish="length"))
    async with oai(srv) as client:
        completion = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert completion.choices[0].message.content == "plain answer"
    assert completion.choices[0].finish_reason == "length"
    assert completion.model == "gpt-test"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 2)
    assert srv.requests[0].completed


@pytest.mark.asyncio
async def test_openai_stream_helper_accumulates(srv: ProviderServer) -> None:
    srv.queue(Script(text="accumulated text", chunk_size=3))
    async with (
        oai(srv) as client,
        client.chat.completions.stream(
            model="gpt-test", messages=MESSAGES, stream_options={"include_usage": True}
        ) as stream,
    ):
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == "accumulated text"
    assert final.usage is not None


# --- Anthropic Messages ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_anthropic_stream_text_thinking_and_usage(srv: ProviderServer) -> None:
    srv.queue(
        Script(
            chunks=["Bon", "jour ", "é", "🎉"],
            thinking="Let me think.",
            chunk_size=5,
            input_tokens=20,
            output_tokens=9,
            cached_tokens=4,
            reasoning_tokens=5,
        )
    )
    texts: list[str] = []
    thinking: list[str] = []
    async with (
        ant(srv) as client,
        client.messages.stream(model="claude-test", max_tokens=100, messages=MESSAGES) as stream,
    ):
        async for event in stream:
            if event.type == "text":
                texts.append(event.text)
            elif event.type == "thinking":
                thinking.append(event.thinking)
        message = await stream.get_final_message()

    assert texts == ["Bon", "jour ", "é", "🎉"]
    assert thinking == ["Let m", "e thi", "nk."]
    assert message.model == "claude-test"
    assert message.stop_reason == "end_turn"
    assert [block.type for block in message.content] == ["thinking", "text"]
    thinking_block = message.content[0]
    assert thinking_block.type == "thinking" and thinking_block.signature
    assert message.usage.input_tokens == 20
    assert message.usage.output_tokens == 9
    assert message.usage.cache_read_input_tokens == 4
    assert message.usage.output_tokens_details
    assert message.usage.output_tokens_details.thinking_tokens == 5
    req = srv.requests[0]
    assert req.path == "/v1/messages" and req.body["max_tokens"] == 100
    assert req.completed and req.chunks_sent == 7


@pytest.mark.asyncio
async def test_anthropic_raw_event_sequence_and_stop_reason(srv: ProviderServer) -> None:
    srv.queue(Script(text="abcdef", chunk_size=3, finish="max_tokens"))
    async with ant(srv) as client:
        stream = await client.messages.create(
            model="claude-test", max_tokens=10, messages=MESSAGES, stream=True
        )
        async with stream:
            events = [event async for event in stream]
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and start.message.stop_reason is None
    assert start.message.usage.output_tokens == 1
    assert delta.type == "message_delta" and delta.delta.stop_reason == "max_tokens"
    assert delta.usage.output_tokens == 6 // 4 + 1


@pytest.mark.asyncio
async def test_anthropic_non_streaming(srv: ProviderServer) -> None:
    srv.queue(Script(text="plain", thinking="hmm", output_tokens=3))
    async with ant(srv) as client:
        message = await client.messages.create(
            model="claude-test", max_tokens=10, messages=MESSAGES
        )
    assert [b.type for b in message.content] == ["thinking", "text"]
    text_block = message.content[1]
    assert text_block.type == "text" and text_block.text == "plain"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 3


@pytest.mark.asyncio
async def test_keepalives_are_ignored_by_both_sdks(srv: ProviderServer) -> None:
    srv.queue(Script(text="abcd", chunk_size=1, keepalive=True))
    assert contents(await oai_chunks(srv)) == list("abcd")
    srv.queue(Script(text="abcd", chunk_size=1, keepalive=True))
    async with (
        ant(srv) as client,
        client.messages.stream(model="claude-test", max_tokens=10, messages=MESSAGES) as stream,
    ):
        assert [t async for t in stream.text_stream] == list("abcd")


# --- Tool calls --------------------------------------------------------------------------

WEATHER = '{"location": "Paris", "unit": "celsius"}'
OPENAI_ID = re.compile(r"call_[A-Za-z0-9]{24}")
ANTHROPIC_ID = re.compile(r"toolu_01[A-Za-z0-9]{22}")


@pytest.mark.asyncio
async def test_openai_tool_calls_stream_after_the_text_by_index(srv: ProviderServer) -> None:
    srv.queue(Script(text="Let me check.", chunk_size=5, tool_calls=[
        ToolCall("get_weather", WEATHER, id="call_given"),
        ToolCall("get_time", '{"tz": "Europe/Paris"}', chunk_size=6)]))
    chunks = await oai_chunks(srv)

    assert chunks[0].choices[0].delta.content == ""
    assert "".join(contents(chunks)) == "Let me check."
    calls = tool_calls_by_index(chunks)
    assert calls[0] == {"id": "call_given", "name": "get_weather", "arguments": WEATHER}
    assert calls[1]["name"] == "get_time" and calls[1]["arguments"] == '{"tz": "Europe/Paris"}'
    assert OPENAI_ID.fullmatch(calls[1]["id"])
    assert fragments(chunks) == [(0, f) for f in cut(WEATHER, 8)] + [
        (1, f) for f in cut('{"tz": "Europe/Paris"}', 6)]
    parts = [p for c in chunks if c.choices for p in c.choices[0].delta.tool_calls or []]
    headers = [p for p in parts if p.id]
    # The id, type and name come once per call, with empty arguments; fragments carry neither.
    assert [(p.index, p.type, p.function and p.function.arguments) for p in headers] == [
        (0, "function", ""), (1, "function", "")]
    assert all(p.function and p.function.name is None for p in parts if not p.id)
    text_at = max(i for i, c in enumerate(chunks) if contents([c]))
    assert all(not (c.choices and c.choices[0].delta.tool_calls) for c in chunks[:text_at])
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None
    assert srv.requests[0].chunks_sent == 3 + len(cut(WEATHER, 8)) + 4


@pytest.mark.asyncio
async def test_openai_parallel_calls_without_text_open_the_stream_and_can_interleave(
    srv: ProviderServer,
) -> None:
    srv.queue(Script(interleave=True, tool_calls=[
        ToolCall("a", '{"x": 1234567}', chunk_size=4), ToolCall("b", '{"y": 2}', chunk_size=4)]))
    chunks = await oai_chunks(srv)

    first = chunks[0].choices[0].delta
    assert (first.role, first.content, first.refusal) == ("assistant", None, None)
    assert first.tool_calls and first.tool_calls[0].id and first.tool_calls[0].index == 0
    assert contents(chunks) == []
    assert [i for i, _ in fragments(chunks)] == [0, 1, 0, 1, 0, 0]
    calls = tool_calls_by_index(chunks)
    assert [calls[0]["arguments"], calls[1]["arguments"]] == ['{"x": 1234567}', '{"y": 2}']
    assert calls[0]["id"] != calls[1]["id"]
    assert chunks[-2].choices[0].finish_reason == "tool_calls"


@pytest.mark.asyncio
async def test_anthropic_tool_use_blocks_stream_after_thinking_and_text(
    srv: ProviderServer,
) -> None:
    srv.queue(Script(text="Checking.", thinking="Weather?", tool_calls=[
        ToolCall("get_weather", WEATHER), ToolCall("get_time", "{}", id="toolu_given")]))
    async with (
        ant(srv) as client,
        client.messages.stream(model="claude-test", max_tokens=100, messages=MESSAGES) as stream,
    ):
        partials = [e.partial_json async for e in stream if e.type == "input_json"]
        message = await stream.get_final_message()

    assert [b.type for b in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    weather, clock = message.content[2], message.content[3]
    assert weather.type == "tool_use" and clock.type == "tool_use"
    assert ANTHROPIC_ID.fullmatch(weather.id) and weather.name == "get_weather"
    assert weather.input == {"location": "Paris", "unit": "celsius"}
    assert (clock.id, clock.name, clock.input) == ("toolu_given", "get_time", {})
    # Each block's input starts with an empty fragment, as the real API sends.
    assert partials == ["", *cut(WEATHER, 8), "", "{}"]
    assert message.stop_reason == "tool_use"


@pytest.mark.asyncio
async def test_anthropic_raw_tool_use_events(srv: ProviderServer) -> None:
    srv.queue(Script(tool_calls=[ToolCall("get_weather", WEATHER, chunk_size=10)]))
    async with ant(srv) as client:
        stream = await client.messages.create(
            model="claude-test", max_tokens=10, messages=MESSAGES, stream=True)
        async with stream:
            events = [event async for event in stream]
    start = events[1]
    assert start.type == "content_block_start" and start.index == 0
    assert start.content_block.type == "tool_use" and start.content_block.input == {}
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert [d.type for d in deltas] == ["input_json_delta"] * 5
    assert [d.partial_json for d in deltas if d.type == "input_json_delta"] == [
        "", *cut(WEATHER, 10)]
    assert [e.type for e in events[-3:]] == ["content_block_stop", "message_delta", "message_stop"]
    final = events[-2]
    assert final.type == "message_delta" and final.delta.stop_reason == "tool_use"


@pytest.mark.asyncio
async def test_invalid_json_arguments_arrive_verbatim(srv: ProviderServer) -> None:
    broken = '{"location": "Par'
    srv.queue(Script(tool_calls=[ToolCall("get_weather", broken, chunk_size=5)]))
    calls = tool_calls_by_index(await oai_chunks(srv))
    assert calls[0]["arguments"] == broken

    srv.queue(Script(tool_calls=[ToolCall("get_weather", "{nope", chunk_size=2)]))
    async with ant(srv) as client:
        stream = await client.messages.create(
            model="claude-test", max_tokens=10, messages=MESSAGES, stream=True)
        async with stream:
            partial = [e.delta.partial_json async for e in stream if e.type == "content_block_delta"
                       and e.delta.type == "input_json_delta"]
    assert "".join(partial) == "{nope"

    # The SDK's stream helper parses as it goes and gives up on JSON that can never be valid.
    srv.queue(Script(tool_calls=[ToolCall("get_weather", "{nope", chunk_size=2)]))
    async with ant(srv) as client:
        with pytest.raises(ValueError, match="Unable to parse tool parameter JSON"):
            async with client.messages.stream(
                model="claude-test", max_tokens=10, messages=MESSAGES
            ) as helper:
                await helper.get_final_message()


@pytest.mark.asyncio
async def test_non_streamed_tool_calls(srv: ProviderServer) -> None:
    srv.queue(Script(tool_calls=[ToolCall("get_weather", WEATHER), ToolCall("f", "[oops")]))
    async with oai(srv) as client:
        completion = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    choice = completion.choices[0]
    assert choice.message.content is None and choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    assert [(c.type, c.function.name, c.function.arguments)
            for c in choice.message.tool_calls if c.type == "function"] == [
        ("function", "get_weather", WEATHER), ("function", "f", "[oops")]
    assert all(OPENAI_ID.fullmatch(c.id) for c in choice.message.tool_calls)

    srv.queue(Script(text="Sure.", tool_calls=[
        ToolCall("get_weather", WEATHER), ToolCall("f", "[oops"), ToolCall("g", "[1]")]))
    async with ant(srv) as client:
        message = await client.messages.create(
            model="claude-test", max_tokens=10, messages=MESSAGES)
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use", "tool_use"]
    inputs = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    # `input` is always an object: what is not a JSON object arrives as {}.
    assert inputs == [("get_weather", {"location": "Paris", "unit": "celsius"}), ("f", {}),
                      ("g", {})]
    assert message.stop_reason == "tool_use"


@pytest.mark.asyncio
async def test_a_stream_can_be_cut_in_the_middle_of_a_calls_arguments(
    srv: ProviderServer,
) -> None:
    # Two text deltas, then the arguments: cut after their second fragment.
    srv.queue(Script(text="abcd", chunk_size=2, error_after=4,
                     tool_calls=[ToolCall("get_weather", WEATHER)]))
    chunks: list[ChatCompletionChunk] = []
    async with oai(srv) as client:
        stream = await client.chat.completions.create(
            model="gpt-test", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError):
            async with stream:
                async for chunk in stream:
                    chunks.append(chunk)
    assert tool_calls_by_index(chunks)[0]["arguments"] == WEATHER[:16]
    assert srv.requests[-1].chunks_sent == 4

    srv.queue(Script(disconnect_after=3, tool_calls=[ToolCall("get_weather", WEATHER)]))
    async with ant(srv) as client:
        with pytest.raises(httpx2.TransportError):
            async with client.messages.stream(
                model="claude-test", max_tokens=10, messages=MESSAGES
            ) as helper:
                async for _ in helper:
                    pass
    block = helper.current_message_snapshot.content[0]
    # 24 characters: '{"location": "Paris", "u', which parses partially to the first key.
    assert block.type == "tool_use" and block.input == {"location": "Paris"}
    assert srv.requests[-1].chunks_sent == 3 and not srv.requests[-1].completed


@pytest.mark.asyncio
async def test_argument_fragments_are_paced_like_text(srv: ProviderServer) -> None:
    srv.queue(Script(delay=0.1, tool_calls=[ToolCall("f", '{"a": 1}', chunk_size=3)]))
    arrivals: list[float] = []
    async with oai(srv) as client:
        stream = await client.chat.completions.create(
            model="gpt-test", messages=MESSAGES, stream=True)
        async with stream:
            async for chunk in stream:
                if fragments([chunk]):
                    arrivals.append(time.monotonic())
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] >= 0.09 and arrivals[2] - arrivals[1] >= 0.09


@pytest.mark.asyncio
async def test_follow_ups_with_tool_results_are_recorded_and_quoted_as_such(
    srv: ProviderServer,
) -> None:
    srv.default = Script()
    followup: list[Any] = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": WEATHER}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 °C"}]
    async with oai(srv) as client:
        completion = await client.chat.completions.create(model="gpt-test", messages=followup)
    assert "> (tool results)" in (completion.choices[0].message.content or "")
    assert srv.requests[-1].body["messages"][-1] == {
        "role": "tool", "tool_call_id": "call_1", "content": "18 °C"}

    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 °C"}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}
    async with ant(srv) as client:
        for content, quoted in (([result], "> (tool results)"),
                                ([image, {"type": "text", "text": "What is it?"}],
                                 "> What is it?")):
            message = await client.messages.create(
                model="claude-test", max_tokens=10,
                messages=[*MESSAGES, {"role": "assistant", "content": [tool_use]},
                          {"role": "user", "content": content}])
            assert message.content[0].type == "text" and quoted in message.content[0].text
            assert "Hello there" not in message.content[0].text
    assert srv.requests[-2].body["messages"][-1]["content"] == [result]


# --- Errors ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_openai_error_statuses_map_to_sdk_exceptions(srv: ProviderServer) -> None:
    srv.queue(
        Script(status=429, retry_after="7"),
        Script(status=404),
        Script(status=401),
        Script(status=500),
        Script(status=400, error_code="context_length_exceeded", error_message="Too long."),
    )
    async with oai(srv) as client:

        async def call() -> None:
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)

        with pytest.raises(openai.RateLimitError) as rate:
            await call()
        assert rate.value.response.headers["retry-after"] == "7"
        assert rate.value.response.headers["x-should-retry"] == "false"
        assert rate.value.code == "rate_limit_exceeded"
        assert rate.value.response.headers["x-request-id"].startswith("req_")
        with pytest.raises(openai.NotFoundError) as missing:
            await call()
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.AuthenticationError):
            await call()
        with pytest.raises(openai.InternalServerError) as server_error:
            await call()
        assert server_error.value.type == "server_error"
        with pytest.raises(openai.BadRequestError) as bad:
            await call()
        assert bad.value.code == "context_length_exceeded"
        assert bad.value.message == "Error code: 400 - Too long."


@pytest.mark.asyncio
async def test_anthropic_error_statuses_map_to_sdk_exceptions(srv: ProviderServer) -> None:
    srv.queue(
        Script(status=429, retry_after="3"),
        Script(status=529),
        Script(status=404, error_message="model: claude-nope"),
        Script(status=401),
        Script(status=500),
    )
    async with ant(srv) as client:

        async def call() -> None:
            async with client.messages.stream(
                model="claude-test", max_tokens=10, messages=MESSAGES
            ) as stream:
                await stream.get_final_text()

        with pytest.raises(anthropic.RateLimitError) as rate:
            await call()
        assert rate.value.response.headers["retry-after"] == "3"
        assert rate.value.type == "rate_limit_error"
        assert rate.value.request_id and rate.value.request_id.startswith("req_")
        with pytest.raises(anthropic.OverloadedError) as overloaded:
            await call()
        assert overloaded.value.status_code == 529 and overloaded.value.type == "overloaded_error"
        assert isinstance(overloaded.value, anthropic.InternalServerError)
        with pytest.raises(anthropic.NotFoundError) as missing:
            await call()
        assert missing.value.api_message == "model: claude-nope"
        with pytest.raises(anthropic.AuthenticationError):
            await call()
        with pytest.raises(anthropic.InternalServerError) as api_error:
            await call()
        assert api_error.value.type == "api_error"


@pytest.mark.asyncio
async def test_mid_stream_error_events_raise(srv: ProviderServer) -> None:
    srv.queue(Script(text="abcdef", chunk_size=2, error_after=2))
    got: list[str] = []
    async with oai(srv) as client:
        stream = await client.chat.completions.create(
            model="gpt-test", messages=MESSAGES, stream=True
        )
        with pytest.raises(openai.APIError) as caught:
            async with stream:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        got.append(chunk.choices[0].delta.content)
    assert got == ["ab", "cd"]
    assert not isinstance(caught.value, openai.APIStatusError)
    assert caught.value.type == "server_error"

    srv.queue(Script(text="abcdef", chunk_size=2, error_after=1))
    texts: list[str] = []
    async with ant(srv) as client:
        with pytest.raises(anthropic.APIStatusError) as status:
            async with client.messages.stream(
                model="claude-test", max_tokens=10, messages=MESSAGES
            ) as stream:
                async for text in stream.text_stream:
                    texts.append(text)
    assert texts == ["ab"]
    assert status.value.status_code == 200 and status.value.type == "overloaded_error"
    assert not isinstance(status.value, anthropic.OverloadedError)
    assert all(r.completed for r in srv.requests)


@pytest.mark.asyncio
async def test_abrupt_disconnect_is_a_transport_error(srv: ProviderServer) -> None:
    srv.queue(Script(text="abcdef", chunk_size=2, disconnect_after=2))
    got: list[str] = []
    async with oai(srv) as client:
        stream = await client.chat.completions.create(
            model="gpt-test", messages=MESSAGES, stream=True
        )
        # openai wraps transport errors inside a stream; anthropic (below) does not.
        with pytest.raises(openai.APIConnectionError) as caught:
            async with stream:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        got.append(chunk.choices[0].delta.content)
    assert got == ["ab", "cd"]
    assert isinstance(caught.value.__cause__, httpx2.TransportError)

    srv.queue(Script(text="abcdef", chunk_size=2, disconnect_after=1))
    texts: list[str] = []
    async with ant(srv) as client:
        with pytest.raises(httpx2.TransportError):
            async with client.messages.stream(
                model="claude-test", max_tokens=10, messages=MESSAGES
            ) as stream:
                async for text in stream.text_stream:
                    texts.append(text)
    assert texts == ["ab"]
    first, second = srv.requests
    assert not first.completed and first.chunks_sent == 2 and first.disconnected_at is None
    assert not second.completed and second.chunks_sent == 1
    assert srv.disconnects == []


@pytest.mark.asyncio
async def test_stall_trips_the_read_timeout_and_the_server_sees_the_client_go(
    srv: ProviderServer,
) -> None:
    srv.queue(Script(text="abcdef", chunk_size=2, stall_after=1))
    async with oai(srv, timeout=0.5) as client:
        stream = await client.chat.completions.create(
            model="gpt-test", messages=MESSAGES, stream=True
        )
        with pytest.raises(openai.APITimeoutError):
            async with stream:
                async for _ in stream:
                    pass
    rec = await asyncio.to_thread(srv.wait_for_disconnect, 2)
    assert rec.chunks_sent == 1 and not rec.completed

    srv.queue(Script(text="abcdef", chunk_size=2, stall_after=0))
    async with ant(srv, timeout=0.5) as client:
        with pytest.raises(httpx2.ReadTimeout):
            async with client.messages.stream(
                model="claude-test", max_tokens=10, messages=MESSAGES
            ) as stream:
                await stream.get_final_text()
    rec = await asyncio.to_thread(srv.wait_for_disconnect, 2)
    assert rec.chunks_sent == 0 and rec.path == "/v1/messages"


@pytest.mark.asyncio
async def test_end_without_finish_ends_silently(srv: ProviderServer) -> None:
    srv.queue(Script(text="abcdef", chunk_size=2, end_without_finish_after=2))
    chunks = await oai_chunks(srv)
    assert contents(chunks) == ["ab", "cd"]
    assert all(c.choices[0].finish_reason is None for c in chunks)
    assert all(c.usage is None for c in chunks)

    srv.queue(Script(text="abcdef", chunk_size=2, end_without_finish_after=1))
    async with ant(srv) as client:
        stream = await client.messages.create(
            model="claude-test", max_tokens=10, messages=MESSAGES, stream=True
        )
        async with stream:
            events = [e.type async for e in stream]
    assert events == ["message_start", "content_block_start", "content_block_delta"]


@pytest.mark.asyncio
async def test_cancelling_a_stream_is_seen_as_a_disconnect_within_a_second(
    srv: ProviderServer,
) -> None:
    got: list[str] = []

    async def consume_openai() -> None:
        async with oai(srv) as client:
            stream = await client.chat.completions.create(
                model="gpt-test", messages=MESSAGES, stream=True
            )
            async with stream:
                async for chunk in stream:
                    got.append(chunk.id)
                    # Busy with something other than the network, like a UI update.
                    await asyncio.sleep(0.05)

    async def consume_anthropic() -> None:
        async with (
            ant(srv) as client,
            client.messages.stream(model="claude-test", max_tokens=10, messages=MESSAGES) as stream,
        ):
            async for text in stream.text_stream:
                got.append(text)
                await asyncio.sleep(0.05)

    for path, consume in (
        ("/v1/chat/completions", consume_openai),
        ("/v1/messages", consume_anthropic),
    ):
        got.clear()
        srv.queue(Script(text="x" * 500, chunk_size=1, delay=0.01))
        task = asyncio.create_task(consume())
        while len(got) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        rec = await asyncio.to_thread(srv.wait_for_disconnect, 2)
        assert rec.path == path and not rec.completed
        assert rec.disconnected_at is not None
        assert rec.disconnected_at - cancelled_at < 1.0
        assert 3 <= rec.chunks_sent < 500


@pytest.mark.asyncio
async def test_disconnect_during_a_delay_is_noticed_before_the_next_write(
    srv: ProviderServer,
) -> None:
    srv.queue(Script(text="abc", chunk_size=1, first_delay=30))
    async with oai(srv) as client:
        stream = await client.chat.completions.create(
            model="gpt-test", messages=MESSAGES, stream=True
        )
        await stream.__anext__()
        await stream.close()
        closed_at = time.monotonic()
    rec = await asyncio.to_thread(srv.wait_for_disconnect, 2)
    assert rec.disconnected_at is not None and rec.disconnected_at - closed_at < 1.0
    assert rec.chunks_sent == 0


# --- Raw scripting and the event helpers -------------------------------------------------

OPENAI_STREAM = {"model": "gpt-test", "messages": MESSAGES, "stream": True}


def socket_reads(server: ProviderServer, body: dict[str, Any]) -> tuple[str, list[bytes]]:
    """POST over a bare socket and read to EOF: the response head, and the body as it came,
    one item per successful recv()."""
    data = json.dumps(body).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: local\r\n"
               f"Authorization: Bearer k\r\nContent-Length: {len(data)}\r\n"
               "Connection: close\r\n\r\n").encode()
    reads: list[bytes] = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request + data)
        while piece := sock.recv(1 << 16):
            reads.append(piece)
    received = b"".join(reads)
    end = received.index(b"\r\n\r\n") + 4
    body_reads, offset = [], 0
    for piece in reads:
        body_reads.append(piece[max(0, end - offset):])
        offset += len(piece)
    return received[:end].decode("latin-1"), [r for r in body_reads if r]


def chunk_frame(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def test_raw_items_arrive_as_separate_reads_and_http_chunks(srv: ProviderServer) -> None:
    items = [b"data: 1\n\n", b"data: 22\n\n", b"", b"data: 333\n\n"]
    srv.queue(Script(raw=items, raw_gap=0.2))
    head, reads = socket_reads(srv, OPENAI_STREAM)

    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert "content-type: text/event-stream; charset=utf-8\r\n" in head
    assert "transfer-encoding: chunked\r\n" in head and "x-request-id: req_" in head
    # The empty item writes nothing (as a chunk it would end the body); the last item and the
    # terminating chunk may share a read, having no gap between them.
    assert reads[:2] == [chunk_frame(items[0]), chunk_frame(items[1])]
    assert b"".join(reads[2:]) == chunk_frame(items[3]) + b"0\r\n\r\n"
    rec = srv.requests[0]
    assert rec.completed and rec.chunks_sent == 3
    assert rec.first_chunk_at is not None and rec.last_chunk_at is not None
    assert rec.last_chunk_at - rec.first_chunk_at >= 0.35


def test_raw_close_framing_ends_the_body_with_the_socket(srv: ProviderServer) -> None:
    items = [b"data: {\"partial", b"\": tru"]
    srv.queue(Script(raw=items, raw_framing="close", raw_status=201,
                     raw_headers=[("content-type", "application/x-weird")]))
    head, reads = socket_reads(srv, OPENAI_STREAM)
    assert head.startswith("HTTP/1.1 201 Created\r\n")
    assert "content-type: application/x-weird\r\n" in head and "connection: close" in head
    assert "transfer-encoding" not in head and "content-length" not in head
    assert "text/event-stream" not in head
    assert b"".join(reads) == b"".join(items)
    assert srv.requests[0].completed and srv.requests[0].chunks_sent == 2


@pytest.mark.asyncio
async def test_a_body_cut_mid_event_ends_both_sdk_streams_silently(srv: ProviderServer) -> None:
    events = openai_stream_events(["Hel", "lo"])
    srv.queue(Script(raw=[*events[:2], events[2][:30]], raw_framing="close"))
    chunks = await oai_chunks(srv)
    assert contents(chunks) == ["Hel"]
    assert all(c.choices[0].finish_reason is None for c in chunks)

    events = anthropic_stream_events(["Hel", "lo"])
    srv.queue(Script(raw=[*events[:4], events[4][:30]], raw_framing="close"))
    async with (
        ant(srv) as client,
        client.messages.stream(model="claude-test", max_tokens=10, messages=MESSAGES) as stream,
    ):
        assert [t async for t in stream.text_stream] == ["Hel"]
        assert stream.current_message_snapshot.stop_reason is None


def test_raw_length_framing_and_a_script_lying_about_its_framing(srv: ProviderServer) -> None:
    srv.queue(Script(raw=[b"abc", b"def"], raw_framing="length"), Script(text="next"),
              Script(raw=[chunk_frame(b"hello"), b"5\r\nwor"], raw_framing="close",
                     raw_headers=[("content-type", "text/event-stream"),
                                  ("transfer-encoding", "chunked")]))
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", json.dumps(OPENAI_STREAM),
                 {"Authorization": "Bearer k"})
    resp = conn.getresponse()
    assert resp.getheader("content-length") == "6" and resp.getheader("transfer-encoding") is None
    assert resp.read() == b"abcdef"
    sock = conn.sock
    conn.request("POST", "/v1/chat/completions", json.dumps(OPENAI_STREAM),
                 {"Authorization": "Bearer k"})
    resp = conn.getresponse()
    assert conn.sock is sock and b'"content":"next"' in resp.read()

    conn.request("POST", "/v1/chat/completions", json.dumps(OPENAI_STREAM),
                 {"Authorization": "Bearer k"})
    resp = conn.getresponse()
    assert resp.getheader("transfer-encoding") == "chunked"
    assert resp.getheader("connection") == "close"
    with pytest.raises(http.client.IncompleteRead) as cut_short:
        resp.read()
    assert cut_short.value.partial == b"hello"
    conn.close()


@pytest.mark.asyncio
async def test_a_gzip_header_over_a_plain_body_is_a_decoding_error(srv: ProviderServer) -> None:
    lie = [("content-type", "text/event-stream"), ("content-encoding", "gzip")]
    srv.queue(Script(raw=openai_stream_events(["hi"]), raw_headers=lie))
    with pytest.raises(openai.APIConnectionError) as caught:
        await oai_chunks(srv)
    assert isinstance(caught.value.__cause__, httpx2.DecodingError)

    srv.queue(Script(raw=anthropic_stream_events(["hi"]), raw_headers=lie))
    async with ant(srv) as client:
        with pytest.raises(httpx2.DecodingError):
            async with client.messages.stream(
                model="claude-test", max_tokens=10, messages=MESSAGES
            ) as stream:
                await stream.get_final_text()
    assert len(srv.requests) == 2


@pytest.mark.asyncio
async def test_an_html_200_gives_no_events_to_either_sdk(srv: ProviderServer) -> None:
    page = b"<!doctype html><title>Captive portal</title><p>Log in first.</p>"
    html = Script(raw=[page], raw_framing="length",
                  raw_headers=[("content-type", "text/html; charset=utf-8")])
    srv.queue(html, html, html)
    assert await oai_chunks(srv) == []
    async with oai(srv) as client:
        # Not JSON, so the SDK hands back the body text in place of a ChatCompletion.
        completion: Any = await client.chat.completions.create(
            model="gpt-test", messages=MESSAGES)
    assert completion == page.decode()
    async with ant(srv) as client:
        stream = await client.messages.create(
            model="claude-test", max_tokens=10, messages=MESSAGES, stream=True)
        async with stream:
            assert [e async for e in stream] == []
    assert [r.completed for r in srv.requests] == [True, True, True]


@pytest.mark.asyncio
async def test_raw_status_with_a_custom_error_body(srv: ProviderServer) -> None:
    body = json.dumps({"error": {"message": "upstream down", "type": "proxy_error"}}).encode()
    srv.queue(Script(raw=[body], raw_status=502, raw_framing="length",
                     raw_headers=[("content-type", "application/json")]))
    with pytest.raises(openai.InternalServerError) as caught:
        await oai_chunks(srv)
    assert caught.value.status_code == 502 and caught.value.message.endswith("upstream down")


def test_a_client_leaving_during_raw_gaps_is_a_disconnect(srv: ProviderServer) -> None:
    srv.queue(Script(raw=[b"data: 1\n\n", b"data: 2\n\n"], raw_gap=30))
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", json.dumps(OPENAI_STREAM),
                 {"Authorization": "Bearer k"})
    resp = conn.getresponse()
    assert resp.read1() == b"data: 1\n\n"
    left_at = time.monotonic()
    conn.close()
    rec = srv.wait_for_disconnect(timeout=2)
    assert rec.chunks_sent == 1 and not rec.completed
    assert rec.disconnected_at is not None and rec.disconnected_at - left_at < 1.0


@pytest.mark.asyncio
async def test_composed_events_parse_in_both_sdks_and_a_corrupt_one_raises(
    srv: ProviderServer,
) -> None:
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    srv.queue(Script(raw=[
        openai_chunk({"role": "assistant", "content": ""}, model="gpt-test"),
        openai_chunk({"content": "Hi"}), b": keep-alive\n\n", openai_chunk({"content": "!"}),
        openai_chunk({}, "length"), openai_chunk(None, usage=usage), openai_done()]))
    chunks = await oai_chunks(srv)
    assert contents(chunks) == ["Hi", "!"] and chunks[0].model == "gpt-test"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 6

    events = anthropic_stream_events(["Bon", "jour"],
                                     tool_calls=[ToolCall("f", '{"a": [1, 2]}', chunk_size=4)])
    srv.queue(Script(raw=[*events[:3], anthropic_event({"type": "ping"}), *events[3:]]))
    async with (
        ant(srv) as client,
        client.messages.stream(model="claude-test", max_tokens=10, messages=MESSAGES) as stream,
    ):
        message = await stream.get_final_message()
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[0].type == "text" and message.content[0].text == "Bonjour"
    assert message.content[1].type == "tool_use" and message.content[1].input == {"a": [1, 2]}
    assert message.stop_reason == "tool_use"

    events = openai_stream_events(["Hel", "lo"])
    srv.queue(Script(raw=[*events[:2], b"data: {not json}\n\n", *events[2:]]))
    with pytest.raises(json.JSONDecodeError):
        await oai_chunks(srv)


def test_the_stream_helpers_send_what_the_server_streams(srv: ProviderServer) -> None:
    def shape(body: bytes) -> list[Any]:
        """The events' JSON without what differs per response (ids, time, fingerprint)."""
        objs = [json.loads(line[6:]) for line in body.decode().split("\n")
                if line.startswith("data: {")]
        for obj in objs:
            for key in ("id", "created", "system_fingerprint"):
                obj.pop(key, None)
            if obj.get("type") == "message_start":
                obj["message"].pop("id")
        return objs

    calls = [ToolCall("f", '{"a": 1}', id="call_1", chunk_size=3)]
    for path, helper in (("/v1/chat/completions", openai_stream_events),
                         ("/v1/messages", anthropic_stream_events)):
        for deltas, tools in ((["Hel", "lo"], []), ([], calls), (["x"], calls)):
            srv.queue(Script(chunks=deltas, tool_calls=tools, usage="never"))
            _, _, scripted = raw_post(srv, path, {"model": "termchat-local", "stream": True},
                                      {"Authorization": "Bearer k"})
            assert shape(scripted) == shape(b"".join(helper(deltas, tool_calls=tools)))
            assert shape(scripted)


# --- Timing, size, volume ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_delays_pace_the_stream(srv: ProviderServer) -> None:
    srv.queue(Script(text="abc", chunk_size=1, header_delay=0.2, first_delay=0.2, delay=0.1))
    arrivals: list[float] = []
    async with oai(srv) as client:
        start = time.monotonic()
        stream = await client.chat.completions.create(
            model="gpt-test", messages=MESSAGES, stream=True
        )
        headers_at = time.monotonic() - start
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    arrivals.append(time.monotonic() - start)
    assert headers_at >= 0.19
    assert arrivals[0] >= 0.39
    assert arrivals[1] - arrivals[0] >= 0.09 and arrivals[2] - arrivals[1] >= 0.09
    req = srv.requests[0]
    assert req.first_chunk_at is not None and req.first_chunk_at - req.received_at >= 0.39


@pytest.mark.asyncio
async def test_a_5_mb_body_is_accepted_and_recorded(srv: ProviderServer) -> None:
    big = "y" * (5 * 1024 * 1024)
    srv.queue(Script(text="ok", input_tokens=1))
    async with oai(srv) as client:
        completion = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": big}]
        )
    assert completion.choices[0].message.content == "ok"
    assert srv.requests[0].body["messages"][0]["content"] == big


@pytest.mark.asyncio
async def test_ten_thousand_chunks_go_through_quickly(srv: ProviderServer) -> None:
    srv.queue(Script(text="z" * 10_000, chunk_size=1))
    # A raw reader keeps up with any server, so this times the server alone.
    status, _, body = await asyncio.to_thread(
        raw_post,
        srv,
        "/v1/chat/completions",
        {"model": "m", "messages": MESSAGES, "stream": True},
        {"Authorization": "Bearer k"},
    )
    assert status == 200 and body.count(b'"content":"z"') == 10_000
    req = srv.requests[0]
    assert req.chunks_sent == 10_000 and req.completed
    assert req.last_chunk_at is not None and req.last_chunk_at - req.received_at < 0.5

    srv.queue(Script(text="z" * 10_000, chunk_size=1))
    assert len(contents(await oai_chunks(srv))) == 10_000


# --- The server itself -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_queue_is_fifo_across_endpoints_then_the_default(srv: ProviderServer) -> None:
    srv.default = Script(text="default reply")
    srv.queue(Script(text="first"), Script(text="second"))
    async with oai(srv) as client:
        completion = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert completion.choices[0].message.content == "first"
    async with ant(srv) as client:
        message = await client.messages.create(model="claude-test", max_tokens=5, messages=MESSAGES)
        assert message.content[0].type == "text" and message.content[0].text == "second"
    assert contents(await oai_chunks(srv)) == ["default repl", "y"]
    assert len(srv.wait_for_requests(3, timeout=1)) == 3
    srv.queue(Script(text="dropped"))
    srv.reset()
    assert srv.requests == []
    assert contents(await oai_chunks(srv)) == ["default repl", "y"]


def test_demo_reply_echoes_the_last_user_message() -> None:
    with ProviderServer() as server:
        status, _, body = raw_post(
            server,
            "/v1/chat/completions",
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "old"},
                    {"role": "assistant", "content": "x"},
                    {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
                ],
            },
            {"Authorization": "Bearer k"},
        )
    text = json.loads(body)["choices"][0]["message"]["content"]
    assert status == 200
    assert "> What is 2+2?" in text and "old" not in text
    assert "# " in text and "\n- " in text and "| --- |" in text and "```python" in text


def test_raw_wire_format_and_keep_alive_on_one_connection(srv: ProviderServer) -> None:
    srv.queue(Script(text="hi"), Script(text="yo"))
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    body = {"model": "m", "messages": MESSAGES, "stream": True}

    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Authorization": "Bearer k"})
    resp = conn.getresponse()
    sock = conn.sock
    assert resp.status == 200
    assert resp.getheader("content-type") == "text/event-stream; charset=utf-8"
    assert resp.getheader("transfer-encoding") == "chunked"
    assert resp.getheader("x-request-id", "").startswith("req_")
    events = resp.read().decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert json.loads(events[0][6:])["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "",
        "refusal": None,
    }

    conn.request("POST", "/v1/messages", json.dumps(body), {"x-api-key": "k"})
    resp = conn.getresponse()
    assert conn.sock is sock
    assert resp.getheader("content-type") == "text/event-stream"
    assert resp.getheader("request-id", "").startswith("req_")
    events = [e for e in resp.read().decode().split("\n\n") if e]
    for event in events:
        name, data = event.split("\n")
        assert name == f"event: {json.loads(data.removeprefix('data: '))['type']}"

    conn.request("GET", "/v1/models", headers={"Authorization": "Bearer k"})
    resp = conn.getresponse()
    assert resp.status == 404
    assert json.loads(resp.read())["error"]["message"] == "Invalid URL (GET /v1/models)"

    conn.request("POST", "/v1/messages", json.dumps(body), {"anthropic-version": "2023-06-01"})
    resp = conn.getresponse()
    assert resp.status == 401
    assert json.loads(resp.read())["error"]["type"] == "authentication_error"
    assert conn.sock is sock
    conn.close()
    assert [r.path for r in srv.requests] == [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/models",
        "/v1/messages",
    ]


def test_invalid_json_is_a_400_in_the_providers_format(srv: ProviderServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("POST", "/v1/messages", b"{not json", {"x-api-key": "k"})
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    conn.close()
    assert resp.status == 400
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert payload["request_id"] == resp.getheader("request-id")


def test_wait_for_disconnect_times_out_when_nobody_left(srv: ProviderServer) -> None:
    with pytest.raises(TimeoutError):
        srv.wait_for_disconnect(timeout=0.1)
    with pytest.raises(TimeoutError):
        srv.wait_for_requests(1, timeout=0.1)


def test_cli_prints_exports_falls_back_when_the_port_is_taken_and_exits_quietly() -> None:
    src = Path(devserver.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(src)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "termchat.devserver", "--port", str(port), "--delay", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(5)]
            assert f"Port {port} is taken" in lines[0]
            match = re.match(
                r"termchat local provider server on (http://127\.0\.0\.1:(\d+))", lines[1]
            )
            assert match and int(match[2]) != port
            url = match[1]
            assert f"export OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY=local" in lines[2]
            assert f"export ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY=local" in lines[3]
            assert lines[4].strip() == "Ctrl+C to stop."

            request = urllib.request.Request(
                f"{url}/v1/messages",
                data=json.dumps({"model": "m", "max_tokens": 9, "messages": MESSAGES}).encode(),
                headers={"x-api-key": "local", "content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=5) as resp:
                message = json.load(resp)
            assert "> Hello there" in message["content"][0]["text"]
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err

"""The parts of the tools runtime that need no server: the names tools are offered under, how
results become text, the environment a stdio server gets, the listing, the stdio
transport's message framing, and that `mcp` stays out of termchat's start-up."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import mcp_types
import pytest
from hypothesis import given
from hypothesis import strategies as st

from termchat.tools.box import ServerStatus, ToolSpec, exposed_names, listing
from termchat.tools.config import ServerConfig, ToolsConfig
from termchat.tools.policy import ApprovalPolicy
from termchat.tools.results import capped, flatten
from termchat.tools.servers import RemoteTool, ServerState, server_environment
from termchat.tools.stdio import MESSAGE_TOO_LARGE, _Lines

# --- Names offered to the model ----------------------------------------------------------

VALID = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def remote(name: str) -> RemoteTool:
    return RemoteTool(name=name, description="", input_schema={"type": "object"})


def test_names_are_server_prefixed_and_made_valid_and_unique() -> None:
    specs = exposed_names([("files", [remote("read_file"), remote("dotted.name"),
                                      remote("dotted_name"), remote("x" * 80)]),
                           ("time", [remote("read_file")])])
    names = list(specs)
    assert names[:2] == ["files__read_file", "files__dotted_name"]
    assert re.fullmatch(r"files__dotted_name_[0-9a-f]{8}", names[2])
    assert len(names[3]) == 64 and names[3].startswith("files__xxx")
    assert names[4] == "time__read_file"
    assert [(s.server, s.tool) for s in specs.values()] == [
        ("files", "read_file"), ("files", "dotted.name"), ("files", "dotted_name"),
        ("files", "x" * 80), ("time", "read_file")]


@pytest.mark.fuzz
@given(st.lists(st.tuples(st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True),
                          st.lists(st.text(min_size=1, max_size=90), max_size=6)),
                max_size=4, unique_by=lambda server: server[0]))
def test_every_name_is_valid_for_both_providers_and_maps_back(
        servers: list[tuple[str, list[str]]]) -> None:
    given_tools = [(server, [remote(t) for t in dict.fromkeys(tools)])
                   for server, tools in servers]
    specs = exposed_names(given_tools)
    assert all(VALID.fullmatch(name) for name in specs)
    assert sorted((s.server, s.tool) for s in specs.values()) == \
        sorted((server, t.name) for server, tools in given_tools for t in tools)
    # The same tools give the same names, whatever else is running.
    assert exposed_names(given_tools) == specs


# --- Results as text ---------------------------------------------------------------------


def test_content_is_flattened_to_text_and_the_rest_described() -> None:
    content: list[mcp_types.ContentBlock] = [
        mcp_types.TextContent(type="text", text="first"),
        mcp_types.ImageContent(type="image", data="iVBORw0KGgo=", mime_type="image/png"),
        mcp_types.AudioContent(type="audio", data="AAAA", mime_type="audio/wav"),
        mcp_types.ResourceLink(type="resource_link", name="notes", uri="file:///notes.md",
                               mime_type="text/markdown"),
        mcp_types.EmbeddedResource(type="resource", resource=mcp_types.TextResourceContents(
            uri="file:///a.txt", text="inside", mime_type="text/plain")),
        mcp_types.EmbeddedResource(type="resource", resource=mcp_types.BlobResourceContents(
            uri="file:///b.bin", blob="AAECAwQ=")),
    ]
    assert flatten(content).split("\n") == [
        "first", "[image/png, 8 bytes]", "[audio/wav, 3 bytes]",
        "[resource link: notes <file:///notes.md>, text/markdown]",
        "[resource <file:///a.txt>, text/plain]", "inside", "[resource <file:///b.bin>, 5 bytes]"]


def test_structured_content_stands_in_for_missing_content() -> None:
    assert json.loads(flatten([], {"ok": True, "n": 2})) == {"ok": True, "n": 2}
    assert flatten([]) == ""


def test_capped_keeps_short_text_and_states_any_cut() -> None:
    assert capped("short", 10) == "short"
    assert capped("x" * 12_345, 100) == \
        "x" * 100 + "\n[termchat: the result was 12,345 characters; only the first 100 are shown]"


# --- The environment of a stdio server ---------------------------------------------------


def test_the_server_environment_keeps_secrets_out_unless_passed() -> None:
    environ = {"PATH": "/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "LC_TIME": "en_GB",
               "TZ": "UTC", "OPENAI_API_KEY": "sk", "AWS_SECRET_ACCESS_KEY": "a",
               "GITHUB_TOKEN": "g", "BASH_FUNC_x%%": "() { :; }", "TERM": "() { evil; }"}
    config = ServerConfig("s", command="x", env={"PATH": "/opt/bin", "MODE": "1"},
                          pass_env=("GITHUB_TOKEN", "NOT_SET"))
    assert server_environment(config, environ) == {
        "PATH": "/opt/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "LC_TIME": "en_GB",
        "TZ": "UTC", "GITHUB_TOKEN": "g", "MODE": "1"}


# --- The listing -------------------------------------------------------------------------


def test_the_listing_shows_each_server_its_state_and_tools() -> None:
    spec = ToolSpec(name="time__get_current_time", server="time", tool="get_current_time",
                    description="Get the time.\n\nLonger text.", input_schema={})
    other = ToolSpec(name="time__convert_time", server="time", tool="convert_time",
                     description="", input_schema={})
    statuses = [
        ServerStatus("time", "stdio", "mcp-server-time", ServerState.READY, None, (spec, other),
                     Path("/l/mcp-time.log"), startup_seconds=0.61),
        ServerStatus("docs", "http", "https://h/mcp", ServerState.FAILED,
                     "failed to start: cannot connect to https://h/mcp", (), Path("/l/d.log")),
        ServerStatus("off", "stdio", "x", ServerState.DISABLED, "is disabled in the config", (),
                     Path("/l/o.log")),
    ]
    policy = ApprovalPolicy(ToolsConfig(servers={"time": ServerConfig(
        "time", command="t", allow=frozenset({"get_current_time"}))}))
    assert listing(statuses, policy).split("\n") == [
        "time (stdio: mcp-server-time): ready in 0.61 s",
        "  time__get_current_time  Get the time. [runs unasked]",
        "  time__convert_time",
        "docs (http: https://h/mcp): failed to start: cannot connect to https://h/mcp",
        "  log: /l/d.log",
        "off (stdio: x): disabled",
    ]
    assert listing([]) == "No MCP servers are configured ([mcp.NAME] tables)."


# --- Framing on stdio --------------------------------------------------------------------

RESPONSE = b'{"jsonrpc":"2.0","id":3,"result":{"content":[]}}'


def test_lines_split_anywhere_give_the_same_messages() -> None:
    stream = RESPONSE + b"\n\n" + b'{"jsonrpc":"2.0","method":"notifications/ping"}\n'
    for size in (1, 3, 7, len(stream)):
        lines = _Lines(1 << 20)
        messages = [m for i in range(0, len(stream), size)
                    for m in lines.feed(stream[i:i + size])]
        assert [type(m.message).__name__ for m in messages] == \
            ["JSONRPCResponse", "JSONRPCNotification"]


def test_garbage_lines_are_skipped() -> None:
    messages = _Lines(1 << 20).feed(b"Starting server...\n" + RESPONSE + b"\n")
    assert [type(m.message).__name__ for m in messages] == ["JSONRPCResponse"]


@pytest.mark.parametrize("big", [
    b'{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"' + b"x" * 5000
    + b'"}]}}',
    b'{"result":{"content":[{"type":"text","text":"' + b"x" * 5000
    + b'"}]},"jsonrpc":"2.0","id":"req-7"}',
])
def test_a_message_over_the_limit_becomes_an_error_for_its_request(big: bytes) -> None:
    lines = _Lines(1000)
    messages = [m for i in range(0, len(big), 700) for m in lines.feed(big[i:i + 700])]
    messages += lines.feed(b"\n" + RESPONSE + b"\n")
    error, after = (m.message for m in messages)
    assert isinstance(error, mcp_types.JSONRPCError)
    assert error.id in (7, "req-7") and error.error.code == MESSAGE_TOO_LARGE
    assert "over 1,000 bytes" in error.error.message
    assert isinstance(after, mcp_types.JSONRPCResponse) and after.id == 3


# --- Import cost ---------------------------------------------------------------------------


def test_importing_termchat_and_its_tools_package_does_not_import_mcp() -> None:
    code = ("import sys, termchat.config, termchat.tools, termchat.tools.box, "
            "termchat.tools.policy, termchat.tools.servers, termchat.tools.results\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('mcp', 'mcp_types', 'httpx2', 'anyio', 'pydantic')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"

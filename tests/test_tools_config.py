"""The `[mcp.NAME]`, `[tools]` and `models.NAME.tools` configuration: what a good file gives,
and the one-line error each mistake gets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from termchat.config import load_config
from termchat.errors import ConfigError
from termchat.tools import config as tools_config
from termchat.tools.config import ALL_TOOLS, NO_TOOLS, ServerConfig, ToolSelection

ROOT = Path(__file__).resolve().parent.parent


def load(tmp_path: Path, text: str) -> tools_config.ToolsConfig:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return load_config(str(path), env={}).tools


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path))
    assert info.value.exit_code == 2
    return message


def test_the_example_config_documents_every_tools_key() -> None:
    example = ROOT / "config.example.toml"
    config = load_config(str(example), env={})
    assert config.tools.servers, "config.example.toml has no [mcp.NAME] example"
    text = example.read_text()
    keys = [*tools_config._SERVER_KEYS, *tools_config._TOOLS_KEYS]
    for key in keys:
        assert f"{key} =" in text, f"config.example.toml does not show {key}"
    assert "[tools]" in text
    assert "\ntools = [" in text and "tools = false" in text, "no model's tools choice shown"


def test_no_tools_configuration_is_an_empty_one(tmp_path: Path) -> None:
    tools = load(tmp_path, "history = true\n")
    assert (dict(tools.servers), tools.max_rounds, dict(tools.models)) == ({}, 10, {})
    assert tools.selection_for("anything") is ALL_TOOLS


def test_stdio_and_http_servers_with_their_settings_and_the_tools_defaults(
        tmp_path: Path) -> None:
    tools = load(tmp_path, """
[tools]
max_rounds = 4
timeout = 30

[mcp.files]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]
env = { DEBUG = "1" }
pass_env = ["GITHUB_TOKEN"]
cwd = "/tmp"
allow = ["read_file", "list_directory"]
max_result_chars = 5000

[mcp.web]
url = "https://example.com/mcp"
headers = { "X-Team" = "blue" }
token_cmd = "pass show mcp/web"
trust = true
timeout = 120
startup_timeout = 3

[mcp.off]
command = "something"
enabled = false
""")
    assert tools.max_rounds == 4
    files, web, off = tools.servers["files"], tools.servers["web"], tools.servers["off"]
    assert files == ServerConfig(
        name="files", command="npx",
        args=("-y", "@modelcontextprotocol/server-filesystem", "/tmp"), env={"DEBUG": "1"},
        pass_env=("GITHUB_TOKEN",), cwd="/tmp", allow=frozenset({"read_file", "list_directory"}),
        timeout=30, max_result_chars=5000)
    assert (files.transport, files.target) == \
        ("stdio", "npx -y @modelcontextprotocol/server-filesystem /tmp")
    assert (web.transport, web.url, dict(web.headers), web.token_cmd, web.trust) == \
        ("http", "https://example.com/mcp", {"X-Team": "blue"}, "pass show mcp/web", True)
    assert (web.timeout, web.startup_timeout, web.max_result_chars) == (120, 3, 20_000)
    assert off.enabled is False and off.startup_timeout == 10


def test_a_model_chooses_servers_and_tools_or_none(tmp_path: Path) -> None:
    tools = load(tmp_path, """
[mcp.files]
command = "x"
[mcp.time]
command = "y"
[models.some]
provider = "openai"
tools = ["time", "files.read_file"]
[models.none]
provider = "anthropic"
tools = false
[models.all]
provider = "openai"
tools = true
[models.unsaid]
provider = "openai"
""")
    some = tools.selection_for("some")
    assert some == ToolSelection(servers=frozenset({"time"}),
                                 tools=frozenset({("files", "read_file")}))
    assert some.allows("time", "anything") and some.allows("files", "read_file")
    assert not some.allows("files", "write_file")
    assert tools.selection_for("none") is NO_TOOLS and NO_TOOLS.none
    assert not NO_TOOLS.allows("time", "x")
    assert tools.selection_for("all") is ALL_TOOLS
    assert tools.selection_for("unsaid") is ALL_TOOLS
    config = load_config(str(tmp_path / "config.toml"), env={})
    assert config.resolve_model("none").provider == "anthropic"


@pytest.mark.parametrize(("text", "expected"), [
    ('[mcp.x]\ncomand = "y"\n', "unknown key 'mcp.x.comand' (line 2); did you mean 'command'"),
    ('[mcp.x]\ncommand = ["y"]\n', "wrong type for 'mcp.x.command' (line 2); it must be a string"),
    ('[mcp.x]\ncommand = "y"\nargs = "-v"\n', "'mcp.x.args' (line 3); it must be a list of "
                                               "strings"),
    ('[mcp.x]\ncommand = "y"\nargs = [1]\n', "it must be a list of strings"),
    ('[mcp.x]\ncommand = "y"\nenv = { A = 1 }\n', "'mcp.x.env' (line 3); it must be a table "
                                                  "of strings"),
    ('[mcp.x]\ncommand = "y"\nenabled = "yes"\n', "'mcp.x.enabled' (line 3); it must be true "
                                                   "or false"),
    ('[mcp.x]\ncommand = "y"\ntimeout = true\n', "'mcp.x.timeout' (line 3); it must be a number"),
    ('[mcp.x]\ncommand = "y"\ntimeout = 0\n', "non-positive value for 'mcp.x.timeout'"),
    ('[mcp.x]\ncommand = "y"\nmax_result_chars = 1.5\n', "it must be an integer"),
    ('[mcp.x]\nenabled = true\n', "no command or url in 'mcp.x'; set command = \"...\" for a "
                                  "stdio server or url = \"https://...\""),
    ('[mcp.x]\ncommand = "y"\nurl = "http://h/mcp"\n', "both command and url in 'mcp.x'"),
    ('[mcp.x]\ncommand = "y"\nheaders = { A = "b" }\n', "misplaced key 'mcp.x.headers' (line 3)"
                                                        "; it applies only to an HTTP server"),
    ('[mcp.x]\nurl = "http://h/mcp"\nargs = ["a"]\n', "misplaced key 'mcp.x.args' (line 3); it "
                                                      "applies only to a stdio server"),
    ('[mcp.x]\nurl = "ftp://h/mcp"\n', "not an http:// or https:// URL in 'mcp.x.url'"),
    ('[mcp.x]\ncommand = "  "\n', "empty 'mcp.x.command'"),
    ('[mcp.x]\nurl = "http://h/mcp"\ntoken_env = "A"\ntoken_cmd = "b"\n',
     "both token_env and 'mcp.x.token_cmd'"),
    ('[mcp.x]\nurl = "http://h/mcp"\ntoken_env = "A"\nheaders = { Authorization = "B" }\n',
     "an Authorization header and a token in 'mcp.x.headers'"),
    ('[mcp."my.server"]\ncommand = "y"\n', "bad server name 'mcp.my.server'"),
    ('[mcp]\nx = "y"\n', "'mcp.x' (line 2); each server must be a [mcp.NAME] table"),
    ('mcp = 3\n', "wrong type for 'mcp' (line 1); it must be a table"),
    ('[tools]\nmax_round = 3\n', "unknown key 'tools.max_round' (line 2); did you mean "
                                 "'max_rounds'"),
    ('[tools]\nmax_rounds = 0\n', "non-positive value for 'tools.max_rounds'"),
    ('[tools]\nstartup_timeout = -1\n', "non-positive value for 'tools.startup_timeout'"),
    ('[mcp.time]\ncommand = "y"\n[models.m]\nprovider = "openai"\ntools = ["tiem"]\n',
     "unknown server 'tiem' in 'models.m.tools' (line 5); did you mean 'time'"),
    ('[models.m]\nprovider = "openai"\ntools = "all"\n',
     "'models.m.tools' (line 3); it must be a list of \"server\" or \"server.tool\", or false"),
    ('[mcp.time]\ncommand = "y"\n[models.m]\nprovider = "openai"\ntools = ["time."]\n',
     "no tool after 'time.' in 'models.m.tools'"),
    ('[models.m]\nprovider = "openai"\ntool = ["x"]\n', "unknown key 'models.m.tool' (line 3); "
                                                      "did you mean 'tools'"),
])
def test_each_mistake_is_one_line_naming_the_key_and_the_fix(tmp_path: Path, text: str,
                                                             expected: str) -> None:
    assert expected in error(tmp_path, text)


_values = st.one_of(st.booleans(), st.integers(-3, 100_000), st.floats(allow_nan=False),
                    st.text(max_size=12), st.lists(st.text(max_size=5), max_size=3),
                    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
_keys = st.sampled_from([*tools_config._SERVER_KEYS, "comand", "tools", ""])


@pytest.mark.fuzz
@given(st.dictionaries(st.sampled_from(["a", "b-c", "d.e", "x" * 40]),
                       st.dictionaries(_keys, _values, max_size=6), max_size=3),
       st.one_of(st.none(), st.booleans(), st.lists(st.text(max_size=8), max_size=3)))
def test_any_mcp_table_is_accepted_or_one_config_error(servers: dict[str, dict[str, object]],
                                                       model_tools: object) -> None:
    data: dict[str, object] = {"mcp": servers}
    if model_tools is not None:
        data["models"] = {"m": {"provider": "openai", "tools": model_tools}}
    from termchat.config import _validate

    try:
        config = _validate(Path("/c.toml"), "", data, {})
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("/c.toml: ")
        return
    for name, server in config.tools.servers.items():
        assert tools_config.SERVER_NAME.fullmatch(name)
        assert (server.command is None) != (server.url is None)
        assert server.timeout > 0 and server.max_result_chars > 0


"""Approval: which calls run unasked (config, command line, session choices), and what a
denied call tells the model."""

from __future__ import annotations

import pytest

from termchat.content import ToolOutcome
from termchat.tools.config import ServerConfig, ToolsConfig
from termchat.tools.policy import ApprovalPolicy, Choice, SessionRule

CONFIG = ToolsConfig(servers={
    "files": ServerConfig("files", command="x", allow=frozenset({"read_file"})),
    "time": ServerConfig("time", command="y", trust=True),
    "shell": ServerConfig("shell", command="z"),
})


def test_config_allow_and_trust_pre_approve_and_everything_else_asks() -> None:
    policy = ApprovalPolicy(CONFIG)
    assert policy.decide("files", "read_file").allowed
    assert policy.decide("files", "read_file").why == "allowed in [mcp.files] of the config"
    assert policy.decide("time", "convert_time").allowed
    assert policy.decide("time", "anything").why == "server 'time' is trusted in the config"
    ask = policy.decide("files", "write_file")
    assert (ask.allowed, ask.why) == (False, "needs approval")
    assert not policy.decide("shell", "run").allowed
    assert not policy.decide("unknown", "run").allowed


def test_yes_allows_every_call() -> None:
    policy = ApprovalPolicy(CONFIG, yes=True)
    assert policy.decide("shell", "run").allowed and policy.decide("shell", "run").why == "--yes"


@pytest.mark.parametrize("name", ["shell.run", "shell.*", "shell__run", "run"])
def test_allow_tool_names_a_tool_in_any_of_its_spellings(name: str) -> None:
    policy = ApprovalPolicy(CONFIG, allow_tools=[name])
    verdict = policy.decide("shell", "run")
    assert (verdict.allowed, verdict.why) == (True, "--allow-tool")
    assert not policy.decide("files", "write_file").allowed


def test_allow_tool_for_one_tool_leaves_the_others_asking() -> None:
    policy = ApprovalPolicy(CONFIG, allow_tools=["shell.run"])
    assert not policy.decide("shell", "rm").allowed
    assert not policy.decide("files", "run").allowed


def test_always_choices_last_the_session_and_can_be_listed_and_revoked() -> None:
    policy = ApprovalPolicy(CONFIG)
    assert policy.choose("shell", "run", Choice.ONCE) is True
    assert policy.rules() == [] and not policy.decide("shell", "run").allowed
    assert policy.choose("shell", "run", Choice.ALWAYS_TOOL) is True
    assert policy.decide("shell", "run").allowed and not policy.decide("shell", "rm").allowed
    assert policy.decide("shell", "run").why == \
        "always allowed this session (tool 'run' of MCP server 'shell')"
    assert policy.choose("files", "write_file", Choice.ALWAYS_SERVER) is True
    assert policy.decide("files", "delete").allowed
    assert policy.rules() == [SessionRule("shell", "run"), SessionRule("files")]
    assert [rule.label for rule in policy.rules()] == \
        ["tool 'run' of MCP server 'shell'", "every tool of MCP server 'files'"]
    assert policy.choose("shell", "run", Choice.ALWAYS_TOOL) and len(policy.rules()) == 2
    assert policy.revoke(SessionRule("shell", "run")) is True
    assert not policy.decide("shell", "run").allowed
    assert policy.revoke(SessionRule("shell", "run")) is False
    assert policy.rules() == [SessionRule("files")]


def test_deny_runs_nothing_and_tells_the_model_the_user_declined() -> None:
    policy = ApprovalPolicy(CONFIG)
    assert policy.choose("shell", "rm", Choice.DENY) is False
    assert policy.rules() == []
    result = policy.denied("call_7")
    assert (result.call_id, result.is_error, result.outcome) == ("call_7", True,
                                                                 ToolOutcome.DENIED)
    assert result.content.startswith("The user declined to run this tool call.")


def test_how_to_allow_names_the_flag_and_the_config_line() -> None:
    hint = ApprovalPolicy(CONFIG).how_to_allow("shell", "run")
    assert hint == ('to allow it, run with --allow-tool shell.run (or --yes), or add "run" to '
                    'allow in [mcp.shell] of the config')

"""What a one-shot reply cost and how full the context window is, end to end: the `-u` line
and `--json` against genai-prices' own figures (computed here from the package), "cost
unknown" when nothing prices the model, config prices and windows, the 80% warning, and a
request refused before it is sent when it clearly cannot fit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage as Counts
from genai_prices import calc_price

from termchat.devserver import ProviderServer, Request, Script, ToolCall
from termchat.pricing import Cost, format_cost
from tests.support.cli import TERMCHAT, Run, environment, lines_of, run_concurrently
from tests.support.oneshot import config, detached, script_server_toml

ECHO = ToolCall("t__echo", '{"text": "ping"}')


def model_table(name: str, provider: str, model: str, **keys: str) -> str:
    lines = [f"[models.{name}]", f'provider = "{provider}"', f'model = "{model}"']
    lines += [f"{key} = {value}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Rounds:
    """Token counts as each round's request reports them on the wire."""

    input: int
    output: int
    cached: int = 0


@dataclass
class Case:
    rounds: list[Rounds]
    models: str = ""
    args: list[str] = field(default_factory=lambda: ["-u", "--json", "hi"])
    provider: str = "openai"
    python_flags: tuple[str, ...] = ()


def scripts(rounds: list[Rounds]) -> list[Script]:
    """A tool round for every round but the last, which answers."""
    return [Script(text="" if n < len(rounds) - 1 else "answer",
                   tool_calls=[ECHO] if n < len(rounds) - 1 else [],
                   input_tokens=r.input, output_tokens=r.output, cached_tokens=r.cached)
            for n, r in enumerate(rounds)]


OPENAI_ROUNDS = [Rounds(1000, 50, 200), Rounds(1300, 500, 1000)]
# Each round under Sonnet 4.5's 200k tier, both together over it: priced round by round.
ANTHROPIC_ROUNDS = [Rounds(110_000, 300, 10_000), Rounds(120_000, 700, 10_000)]

CASES: dict[str, Case] = {
    "priced-openai": Case(OPENAI_ROUNDS, model_table("m", "openai", "gpt-4.1-mini",
                                                     price='"openai"'),
                          args=["-m", "m", "-u", "--json", "--yes", "hi"]),
    "priced-anthropic": Case(ANTHROPIC_ROUNDS,
                             model_table("c", "anthropic", "claude-sonnet-4-5",
                                         price='"anthropic"'),
                             args=["-m", "c", "-u", "--json", "--yes", "hi"],
                             provider="anthropic"),
    "unpriced": Case([Rounds(100, 20)]),
    "unpriced-anthropic": Case([Rounds(100, 20)], provider="anthropic"),
    "override": Case([Rounds(2000, 1000, 500)],
                     model_table("own", "openai", "llama",
                                 price="{ input = 1.5, output = 3, cached = 0.5 }"),
                     args=["-m", "own", "-u", "--json", "hi"]),
    "override-beats-data": Case([Rounds(2000, 1000)],
                                model_table("cheap", "openai", "gpt-4.1-mini",
                                            price="{ input = 0, output = 0 }"),
                                args=["-m", "cheap", "-u", "hi"]),
    "price-false": Case([Rounds(100, 20)], model_table("free", "openai", "x", price="false"),
                        args=["-m", "free", "-u", "--json", "hi"]),
    "near-full": Case([Rounds(850_000, 20)],
                      model_table("m", "openai", "gpt-4.1-mini", price='"openai"'),
                      args=["-m", "m", "hi"]),
    "near-full-config": Case([Rounds(900, 20)],
                             model_table("small", "openai", "local", context_window="1000"),
                             args=["-m", "small", "-u", "hi"]),
    "short-run": Case([Rounds(500, 20)],
                      model_table("m", "openai", "gpt-4.1-mini", price='"openai"'),
                      args=["-m", "m", "hi"], python_flags=("-X", "importtime")),
    "too-big": Case([Rounds(1, 1)], model_table("small", "openai", "local",
                                                context_window="1000"),
                    args=["-m", "small", "x" * 6000]),
    "nearly-too-big": Case([Rounds(950, 1)], model_table("small", "openai", "local",
                                                         context_window="1000"),
                           args=["-m", "small", "x" * 4500]),
}


@dataclass
class Result:
    run: Run
    requests: list[Request]

    @property
    def stderr(self) -> list[str]:
        return lines_of(self.run.stderr)

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.run.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    servers: list[ProviderServer] = []
    tmps = {name: tmp_path_factory.mktemp(name) for name in CASES}

    def run(name: str) -> Result:
        case = CASES[name]
        servers.append(srv := ProviderServer().start())
        srv.queue(*scripts(case.rounds))
        tables = script_server_toml("t") if len(case.rounds) > 1 else ""
        env = environment(tmps[name], srv, case.provider, config=config(tables) + case.models)
        return Result(detached(case.args, env, python_flags=case.python_flags), srv.requests)

    with run_concurrently(CASES, run, servers) as results:
        yield results


def genai_price(model: str, provider: str, rounds: list[Rounds]) -> Decimal:
    """genai-prices' figure, request by request, for the counts the server reported: its
    input is the whole input, which Anthropic reports as input plus cache reads."""
    total = Decimal(0)
    for r in rounds:
        whole = r.input + r.cached if provider == "anthropic" else r.input
        counts = Counts(input_tokens=whole, cache_read_tokens=r.cached, output_tokens=r.output)
        total += calc_price(counts, model, provider_id=provider).total_price
    return total


USAGE_END = re.compile(r" · context (\S+) · (.+?)(?: · (\d+) rounds)?$")


def usage_end(line: str) -> tuple[str, str, str | None]:
    match = USAGE_END.search(line)
    assert match and line.startswith("finish "), line
    return match.group(1), match.group(2), match.group(3)


# --- known prices -------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "model", "provider", "rounds"), [
    ("priced-openai", "gpt-4.1-mini", "openai", OPENAI_ROUNDS),
    ("priced-anthropic", "claude-sonnet-4-5", "anthropic", ANTHROPIC_ROUNDS)])
def test_a_known_models_cost_is_genai_prices_own_figure_summed_over_tool_rounds(
        results: dict[str, Result], case: str, model: str, provider: str,
        rounds: list[Rounds]) -> None:
    result = results[case]
    assert result.run.returncode == 0, result.run.stderr
    expected = genai_price(model, provider, rounds)
    assert expected > 0
    output = result.json
    assert Decimal(output["cost"]["usd"]) == expected
    assert output["cost"]["unknown"] == []
    assert output["cost"]["shown"] == format_cost(Cost.of(expected))
    assert len(output["round_usage"]) == 2 and output["tool_calls"][0]["status"] == "ok"
    share, cost, count = usage_end(result.stderr[-1])
    assert (cost, count) == (format_cost(Cost.of(expected)), "2")
    # The share of the window the last request used, rounded down.
    last = rounds[-1].input + (rounds[-1].cached if provider == "anthropic" else 0)
    window = 1_000_000 if provider == "openai" else 200_000
    assert share == (f"{100 * last // window}%" if last * 100 >= window else "<1%")
    assert output["context"] == {"window": window, "input_tokens": last,
                                 "share": round(last / window, 4)}


def test_a_short_request_is_not_estimated_at_all() -> None:
    from termchat.oneshot import QUICK_FIT_CHARS, SMALLEST_WINDOW
    from termchat.pricing import NEAR_FULL

    # The low estimate never has more tokens than characters: below this, nothing is near.
    assert QUICK_FIT_CHARS <= NEAR_FULL * SMALLEST_WINDOW


def test_each_round_is_priced_as_the_request_it_was() -> None:
    # Priced as one request, the rounds together would cross Sonnet 4.5's 200k tier.
    whole = Counts(input_tokens=sum(r.input + r.cached for r in ANTHROPIC_ROUNDS),
                   cache_read_tokens=sum(r.cached for r in ANTHROPIC_ROUNDS),
                   output_tokens=sum(r.output for r in ANTHROPIC_ROUNDS))
    assert calc_price(whole, "claude-sonnet-4-5", provider_id="anthropic").total_price != \
        genai_price("claude-sonnet-4-5", "anthropic", ANTHROPIC_ROUNDS)


# --- unknown, overridden, hidden ----------------------------------------------------------


@pytest.mark.parametrize("case", ["unpriced", "unpriced-anthropic"])
def test_a_model_nothing_prices_shows_cost_unknown_never_zero(results: dict[str, Result],
                                                              case: str) -> None:
    result = results[case]
    assert result.run.returncode == 0, result.run.stderr
    assert usage_end(result.stderr[-1]) == ("unknown", "cost unknown", None)
    assert result.json["cost"] == {"usd": None, "at_least_usd": None, "unknown": ["server"],
                                   "shown": "cost unknown"}
    assert result.json["context"] == {"window": None, "share": None,
                                      "input_tokens": 100}
    assert "$0" not in result.run.stderr.decode()


def test_a_config_price_is_used(results: dict[str, Result]) -> None:
    result = results["override"]
    assert result.run.returncode == 0, result.run.stderr
    expected = (Decimal(1500) * Decimal("1.5") + Decimal(500) * Decimal("0.5")
                + Decimal(1000) * 3) / 1_000_000
    assert Decimal(result.json["cost"]["usd"]) == expected == Decimal("0.0055")
    assert usage_end(result.stderr[-1])[1] == "$0.0055"


def test_a_config_price_overrides_genai_prices_data(results: dict[str, Result]) -> None:
    assert usage_end(results["override-beats-data"].stderr[-1])[1] == "$0.00"


def test_price_false_shows_no_cost(results: dict[str, Result]) -> None:
    result = results["price-false"]
    line = result.stderr[-1]
    assert line.endswith(" · context unknown"), line
    assert "cost" not in line
    assert result.json["cost"] == {"usd": None, "at_least_usd": None, "unknown": ["off"],
                                   "shown": None}


# --- the context window -------------------------------------------------------------------


def test_a_last_request_at_80_percent_of_the_window_warns_in_one_line(
        results: dict[str, Result]) -> None:
    result = results["near-full"]
    assert result.run.returncode == 0
    assert result.stderr == [
        "termchat: warning: the last request used 85% of the 1,000,000-token context window "
        "of openai:gpt-4.1-mini (850,000 tokens); the next may not fit: start a new "
        "conversation (leave out -c), or send less."]


def test_a_window_from_the_config_counts_too(results: dict[str, Result]) -> None:
    result = results["near-full-config"]
    assert result.stderr[0].startswith("termchat: warning: the last request used 90% of the "
                                       "1,000-token context window of openai:local (900 ")
    assert usage_end(result.stderr[1])[:2] == ("90%", "cost unknown")


def test_a_short_run_never_loads_genai_prices(results: dict[str, Result]) -> None:
    result = results["short-run"]
    assert result.run.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in result.stderr if line.startswith("import time:")}
    assert "openai" in imported and "genai_prices" not in imported
    assert [line for line in result.stderr if not line.startswith("import time:")] == []


def test_a_request_that_clearly_cannot_fit_is_refused_before_it_is_sent(
        results: dict[str, Result]) -> None:
    result = results["too-big"]
    assert result.run.returncode == 2
    assert result.stderr == [
        "termchat: not sent: this request is at least 1,200 tokens by a low estimate, 120% of "
        "the 1,000-token context window of openai:local, so it cannot fit; shorten the prompt "
        "or attach less. If the window is larger, set context_window for this model in the "
        "config."]
    assert result.requests == []


def test_a_request_that_may_not_fit_is_sent_with_a_warning(results: dict[str, Result]) -> None:
    result = results["nearly-too-big"]
    assert result.run.returncode == 0
    assert result.stderr[0] == (
        "termchat: warning: this request is at least 900 tokens by a low estimate, 90% of the "
        "1,000-token context window of openai:local; it may not fit.")
    assert len(result.requests) == 1


def test_prices_are_looked_up_only_after_the_reply_is_out(provider_server: ProviderServer,
                                                          tmp_path: Path) -> None:
    provider_server.queue(Script(text="THE-REPLY", input_tokens=10, output_tokens=2))
    env = environment(tmp_path, provider_server, config=config() + model_table(
        "m", "openai", "gpt-4.1-mini", price='"openai"'))
    # stdout and stderr in one pipe: the order things happened in.
    run = subprocess.run([sys.executable, "-X", "importtime", TERMCHAT, "-m", "m", "-u", "hi"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                         timeout=60, check=False, start_new_session=True)
    assert run.returncode == 0, run.stdout
    both = run.stdout.decode()
    reply = both.index("THE-REPLY")
    for module in ("genai_prices", "termchat.pricing"):
        assert reply < both.index(module), f"{module} was imported before the reply arrived"
    assert "termchat.attachments" not in both
    assert re.search(r"· context <1% · <?\$0\.\d+$", both.rstrip().splitlines()[-1])

"""Cost and context window: genai-prices' own figures, config prices and windows, unknown never
shown as $0, sums with unknown parts, the 80% and clearly-too-big rules, offline and lazy."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage as Counts
from genai_prices import calc_price
from hypothesis import given
from hypothesis import strategies as st

from termchat.config import ModelConfig, Rates, load_config
from termchat.errors import ConfigError
from termchat.events import Usage
from termchat.pricing import (
    Cost,
    DocumentSize,
    ImageSize,
    Why,
    context_share,
    context_window,
    estimate_tokens,
    explain,
    format_cost,
    format_share,
    near_full,
    price,
    total,
    will_not_fit,
)

GPT = ModelConfig("gpt", "openai", "gpt-4.1-mini")
CLAUDE = ModelConfig("claude", "anthropic", "claude-sonnet-4-5")
LOCAL = "http://127.0.0.1:11434/v1"


def model(name: str = "gpt-4o", provider: str = "openai", **settings: object) -> ModelConfig:
    return ModelConfig("m", provider, name, **settings)  # type: ignore[arg-type]


def package_figure(name: str, provider: str, **counts: int) -> Decimal:
    return calc_price(Counts(**counts), name, provider_id=provider).total_price


# Cost from genai-prices' data

@pytest.mark.parametrize("config", [GPT, CLAUDE], ids=["openai", "anthropic"])
@pytest.mark.parametrize("cached", [None, 0, 200])
def test_cost_of_a_known_model_is_genai_prices_own_figure(config: ModelConfig,
                                                          cached: int | None) -> None:
    cost = price(config, Usage(input_tokens=1000, output_tokens=500, cached_tokens=cached))
    expected = package_figure(config.model, config.provider, input_tokens=1000,
                              cache_read_tokens=cached or 0, output_tokens=500)
    assert cost == Cost.of(expected)
    assert cost.usd == expected and cost.complete


@pytest.mark.parametrize("config", [GPT, CLAUDE], ids=["openai", "anthropic"])
def test_cached_tokens_are_charged_at_the_cache_rate(config: ModelConfig) -> None:
    uncached = price(config, Usage(input_tokens=1000, output_tokens=500))
    cached = price(config, Usage(input_tokens=1000, output_tokens=500, cached_tokens=800))
    assert cached.known < uncached.known


def test_reasoning_tokens_are_passed_as_genai_prices_counts_them() -> None:
    config = model("gpt-5")
    cost = price(config, Usage(input_tokens=1000, output_tokens=500, reasoning_tokens=300))
    assert cost.usd == package_figure("gpt-5", "openai", input_tokens=1000, output_tokens=500,
                                      output_reasoning_tokens=300)


def test_a_long_anthropic_request_is_priced_at_its_tier() -> None:
    usage = Usage(input_tokens=250_000, output_tokens=1000)
    assert price(CLAUDE, usage).usd == package_figure(
        "claude-sonnet-4-5", "anthropic", input_tokens=250_000, output_tokens=1000)


@pytest.mark.parametrize(("base_url", "name", "provider_id"), [
    ("https://api.openai.com/v1", "gpt-4o", "openai"),
    ("https://api.anthropic.com", "claude-sonnet-4-5", "anthropic"),
    ("https://openrouter.ai/api/v1", "anthropic/claude-sonnet-4.5", "openrouter"),
])
def test_a_base_url_the_data_knows_is_priced_as_that_provider(base_url: str, name: str,
                                                              provider_id: str) -> None:
    config = model(name, base_url=base_url)
    cost = price(config, Usage(input_tokens=1000, output_tokens=500))
    assert cost.usd == package_figure(name, provider_id, input_tokens=1000, output_tokens=500)


def test_a_local_model_name_has_no_price() -> None:
    cost = price(model("llama3.2"), Usage(input_tokens=1000, output_tokens=500))
    assert cost.why == {Why.NO_PRICE} and cost.usd is None
    assert format_cost(cost) == "cost unknown"
    assert "set price" in explain(cost)


@pytest.mark.parametrize("base_url", [
    LOCAL, "http://localhost:8000/v1", "http://[::1]:8080/v1", "http://192.168.1.20:8000/v1",
    "http://10.0.0.2/v1", "http://172.20.0.3/v1", "http://100.101.102.103/v1",
    "http://169.254.1.1/v1", "http://gpu-box:8000/v1", "http://llm.lan/v1",
    "http://host.docker.internal:1234/v1", "http://box.local/v1", "localhost:8000/v1",
    "https://llm.example.com/v1",
])
def test_a_real_model_name_behind_another_server_is_not_priced_as_openai(base_url: str) -> None:
    config = model("gpt-4o", base_url=base_url)
    cost = price(config, Usage(input_tokens=1000, output_tokens=500))
    assert cost.why == {Why.SERVER}
    assert format_cost(cost) == "cost unknown"
    assert context_window(config) is None


def test_the_config_can_price_a_server_as_a_provider_in_the_data() -> None:
    usage = Usage(input_tokens=1000, output_tokens=500, cached_tokens=100)
    expected = package_figure("gpt-4o", "openai", input_tokens=1000, cache_read_tokens=100,
                              output_tokens=500)
    assert price(model("gpt-4o", base_url=LOCAL, price="openai"), usage).usd == expected
    renamed = model("my-gateway-alias", base_url=LOCAL, price="openai:gpt-4o")
    assert price(renamed, usage).usd == expected
    assert context_window(renamed) == 128_000


def test_a_provider_the_data_does_not_have_is_unknown() -> None:
    cost = price(model("gpt-4o", price="nonesuch"), Usage(input_tokens=1, output_tokens=1))
    assert cost.why == {Why.NO_PRICE}


def test_config_rates_override_the_data() -> None:
    rates = Rates(Decimal("0.15"), Decimal("0.60"), Decimal("0.075"))
    usage = Usage(input_tokens=1000, output_tokens=500, cached_tokens=200)
    cost = price(model("gpt-4.1-mini", price=rates), usage)
    # (800 × 0.15 + 200 × 0.075 + 500 × 0.60) / 1e6
    assert cost.usd == Decimal("0.000435")
    assert cost.usd != price(GPT, usage).usd
    local = price(model("llama3.2", base_url=LOCAL, price=rates), usage)
    assert local == cost


def test_cached_rate_defaults_to_the_input_rate() -> None:
    rates = Rates(Decimal(1), Decimal(2))
    usage = Usage(input_tokens=1000, output_tokens=500, cached_tokens=400)
    assert price(model(price=rates), usage).usd == Decimal("0.002")


def test_a_free_model_costs_zero_dollars() -> None:
    cost = price(model("llama3.2", base_url=LOCAL, price=Rates(Decimal(0), Decimal(0))),
                 Usage(input_tokens=1000, output_tokens=500))
    assert cost.usd == 0 and format_cost(cost) == "$0.00"


def test_price_false_shows_no_price() -> None:
    cost = price(model(price=False), Usage(input_tokens=1000, output_tokens=500))
    assert cost.hidden and cost.usd is None
    assert format_cost(cost) == ""
    assert format_cost(total([cost, cost])) == ""
    assert format_cost(cost + price(GPT, Usage(input_tokens=10, output_tokens=10))) \
        .endswith("(some unknown)")


@pytest.mark.parametrize("usage", [
    Usage(),
    Usage(input_tokens=1000),
    Usage(output_tokens=500),
    Usage(input_tokens=100, output_tokens=5, cached_tokens=200),
], ids=["none", "no-output", "no-input", "cached-above-input"])
@pytest.mark.parametrize("config", [GPT, model(price=Rates(Decimal(1), Decimal(1)))],
                         ids=["data", "rates"])
def test_a_price_with_unknown_usage_is_unknown_never_zero(config: ModelConfig,
                                                          usage: Usage) -> None:
    cost = price(config, usage)
    assert cost.why == {Why.NO_USAGE} and cost.usd is None
    assert format_cost(cost) == "cost unknown"


def test_bundled_data_is_used_even_if_a_snapshot_is_installed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from genai_prices import data_snapshot

    # What UpdatePrices does after a download; termchat must not read it.
    empty = data_snapshot.DataSnapshot(providers=[], from_auto_update=True)
    monkeypatch.setattr(data_snapshot, "_custom_snapshot", empty)
    assert price(GPT, Usage(input_tokens=10, output_tokens=10)).complete
    assert context_window(GPT) == 1_000_000


# Sums and formatting

def test_a_turns_rounds_and_a_conversation_add_up() -> None:
    rounds = [price(GPT, Usage(input_tokens=n, output_tokens=50)) for n in (1000, 1200, 1500)]
    turn = total(rounds)
    assert turn.usd == sum(r.known for r in rounds) and turn.priced == 3
    conversation = total([turn, price(CLAUDE, Usage(input_tokens=900, output_tokens=80))])
    assert conversation.complete and conversation.priced == 4


def test_an_unknown_part_makes_the_sum_a_lower_bound() -> None:
    known = Cost.of(Decimal("0.011996"))
    partial = total([known, Cost.unknown(Why.NO_USAGE), Cost.unknown(Why.SERVER)])
    assert partial.usd is None and partial.known == Decimal("0.011996")
    assert (partial.priced, partial.unpriced) == (1, 2)
    assert partial.why == {Why.NO_USAGE, Why.SERVER}
    assert format_cost(partial) == "≥ $0.0119 (some unknown)"
    assert explain(partial).count(";") >= 1
    assert format_cost(total([Cost.unknown(Why.NO_USAGE)] * 3)) == "cost unknown"


def test_nothing_costs_nothing() -> None:
    assert total([]) == Cost() and format_cost(total([])) == "$0.00"


@pytest.mark.parametrize(("cost", "shown"), [
    (Cost.of(Decimal("0.0123")), "$0.0123"),
    (Cost.of(Decimal("0.00114")), "$0.0011"),
    (Cost.of(Decimal("0.00996")), "$0.0100"),
    (Cost.of(Decimal("0.00004")), "<$0.0001"),
    (Cost.of(Decimal("0.00005")), "$0.0001"),
    (Cost.of(Decimal("0.99996")), "$1.00"),
    (Cost.of(Decimal("1.234")), "$1.23"),
    (Cost.of(Decimal("1234.567")), "$1,234.57"),
    (Cost.of(Decimal(0)), "$0.00"),
    (Cost.unknown(Why.NO_PRICE), "cost unknown"),
    (Cost.of(Decimal("0.00004")) + Cost.unknown(Why.SERVER), "≥ $0.00 (some unknown)"),
    (Cost.of(Decimal("2.999")) + Cost.unknown(Why.SERVER), "≥ $2.99 (some unknown)"),
    (Cost.unknown(Why.OFF), ""),
])
def test_format_cost(cost: Cost, shown: str) -> None:
    assert format_cost(cost) == shown


def test_json_form_keeps_every_digit_and_says_what_is_unknown() -> None:
    assert Cost.of(Decimal("0.00114")).as_dict() == \
        {"usd": "0.00114", "at_least_usd": "0.00114", "unknown": []}
    assert Cost.of(Decimal("1E-7")).as_dict()["usd"] == "0.0000001"
    assert (Cost.of(Decimal("0.5")) + Cost.unknown(Why.SERVER)).as_dict() == \
        {"usd": None, "at_least_usd": "0.5", "unknown": ["server"]}
    assert Cost.unknown(Why.NO_USAGE).as_dict() == \
        {"usd": None, "at_least_usd": None, "unknown": ["no_usage"]}


# Property tests for the cost arithmetic

amounts = st.decimals(min_value=0, max_value=200, places=4)
rates = st.builds(Rates, amounts, amounts, st.none() | amounts)


@st.composite
def usages(draw: st.DrawFn, top: int = 10**8) -> Usage:
    input_tokens = draw(st.integers(0, top))
    cached = draw(st.none() | st.integers(0, input_tokens))
    return Usage(input_tokens=input_tokens, output_tokens=draw(st.integers(0, top)),
                 cached_tokens=cached)


parts = st.one_of(
    st.builds(lambda r, u: price(model(price=r), u), rates, usages()),
    st.sampled_from(list(Why)).map(Cost.unknown),
)


@given(parts, parts, parts)
def test_sums_are_associative_and_commutative_with_nothing_as_identity(
        a: Cost, b: Cost, c: Cost) -> None:
    assert (a + b) + c == a + (b + c)
    assert a + b == b + a
    assert a + Cost() == a


@given(st.lists(parts, max_size=8))
def test_a_sum_is_never_negative_and_unknown_is_never_shown_as_a_price(costs: list[Cost]) -> None:
    whole = total(costs)
    assert whole.known >= 0
    assert whole.known == sum((c.known for c in costs), Decimal(0))
    assert whole.priced + whole.unpriced == len(costs)
    shown = format_cost(whole)
    if any(not c.complete for c in costs):
        assert whole.usd is None
        assert not shown.startswith(("$", "<$"))
        if whole.priced == 0:
            assert shown in ("cost unknown", "")
        else:
            bound = Decimal(shown.removeprefix("≥ $").split()[0].replace(",", ""))
            assert bound <= whole.known
    else:
        assert whole.usd == whole.known
        assert shown.startswith(("$", "<$"))


@given(st.decimals(min_value=0, max_value=10**6, places=9))
def test_a_shown_price_is_the_amount_rounded(usd: Decimal) -> None:
    shown = format_cost(Cost.of(usd))
    if shown == "<$0.0001":
        assert 0 < usd < Decimal("0.00005")
    else:
        step = Decimal("0.00005") if usd < Decimal("0.99995") else Decimal("0.005")
        assert abs(Decimal(shown.removeprefix("$").replace(",", "")) - usd) <= step


@given(usages(top=400_000), st.sampled_from([GPT, CLAUDE]))
def test_any_usage_costs_what_genai_prices_says(usage: Usage, config: ModelConfig) -> None:
    assert usage.input_tokens is not None and usage.output_tokens is not None
    expected = package_figure(config.model, config.provider, input_tokens=usage.input_tokens,
                              cache_read_tokens=usage.cached_tokens or 0,
                              output_tokens=usage.output_tokens)
    assert price(config, usage).usd == expected >= 0


# Context window

def test_context_window_from_the_config_then_the_data() -> None:
    info = calc_price(Counts(), "gpt-4.1-mini", provider_id="openai").model
    assert context_window(GPT) == info.context_window == 1_000_000
    assert context_window(CLAUDE) == 200_000
    assert context_window(model("gpt-4.1-mini", context_window=32_000)) == 32_000
    local = model("llama3.2", base_url=LOCAL)
    assert context_window(local) is None
    assert context_window(model("llama3.2", base_url=LOCAL, context_window=8192)) == 8192
    assert context_window(model("llama3.2")) is None


def test_context_share_and_the_80_percent_warning() -> None:
    assert context_share(CLAUDE, 100_000) == 0.5
    assert context_share(CLAUDE, None) is None
    assert context_share(model("llama3.2", base_url=LOCAL), 100_000) is None
    assert not near_full(context_share(CLAUDE, 159_999))
    assert near_full(context_share(CLAUDE, 160_000))
    assert near_full(context_share(CLAUDE, 210_000))
    assert not near_full(None)


@pytest.mark.parametrize(("share", "shown"), [
    (None, "context unknown"), (0.0, "0%"), (0.004, "<1%"), (0.62, "62%"), (0.7999, "79%"),
    (0.8, "80%"), (1.05, "105%"),
])
def test_format_share(share: float | None, shown: str) -> None:
    assert format_share(share) == shown


# Estimate before sending

def test_text_is_estimated_low_at_five_characters_a_token() -> None:
    assert estimate_tokens(0, provider="openai") == 0
    assert estimate_tokens(10_000, provider="openai") == 2000


@pytest.mark.parametrize(("provider", "image", "tokens"), [
    ("anthropic", ImageSize(1000, 1000), 1333),
    ("anthropic", ImageSize(200, 200), 53),
    ("anthropic", ImageSize(4000, 3000), 1600),
    ("openai", ImageSize(1024, 1024), 765),
    ("openai", ImageSize(2048, 4096), 1105),
    ("openai", ImageSize(100, 100), 16),
    ("openai", ImageSize(0, 100), 0),
])
def test_images_cost_their_providers_documented_tokens(provider: str, image: ImageSize,
                                                       tokens: int) -> None:
    assert estimate_tokens(0, [image], provider=provider) == tokens


def test_pdfs_count_per_page_else_by_size() -> None:
    page = estimate_tokens(0, [DocumentSize(50_000, pages=1)], provider="anthropic")
    assert page == 1600
    assert estimate_tokens(0, [DocumentSize(50_000, pages=10)], provider="anthropic") == 16_000
    assert estimate_tokens(0, [DocumentSize(50_000)], provider="anthropic") == page
    assert estimate_tokens(0, [DocumentSize(40_000_000)], provider="anthropic") == 10 * page
    assert estimate_tokens(400, [DocumentSize(1, pages=2), ImageSize(1024, 1024)],
                           provider="openai") == 80 + 2 * 765 + 765


def test_only_a_request_that_clearly_cannot_fit_warns() -> None:
    gpt4o = model("gpt-4o")
    assert context_window(gpt4o) == 128_000
    assert not will_not_fit(gpt4o, 128_000)
    assert not will_not_fit(gpt4o, 140_799)
    assert will_not_fit(gpt4o, 140_800)
    assert will_not_fit(model("llama3.2", base_url=LOCAL, context_window=8192), 9012)
    assert not will_not_fit(model("llama3.2", base_url=LOCAL), 10**9)


def test_a_prompt_of_the_window_in_english_does_not_warn() -> None:
    # 128k tokens of prose at 4.7 characters a token (GPL-3 with cl100k) fits exactly.
    assert not will_not_fit(model("gpt-4o"), estimate_tokens(int(128_000 * 4.7),
                                                             provider="openai"))


# Config keys

def load(tmp_path: Path, table: str) -> ModelConfig:
    path = tmp_path / "config.toml"
    path.write_text(f'[models.m]\nprovider = "openai"\nbase_url = "{LOCAL}"\n{table}\n')
    return load_config(str(path), env={}).models["m"]


def test_config_price_and_context_window_parse(tmp_path: Path) -> None:
    config = load(tmp_path, "price = { input = 0.15, output = 0.60, cached = 0.075 }\n"
                            "context_window = 131072")
    assert config.price == Rates(Decimal("0.15"), Decimal("0.6"), Decimal("0.075"))
    assert config.context_window == 131072
    assert load(tmp_path, "price = { input = 1, output = 2 }").price == \
        Rates(Decimal(1), Decimal(2))
    assert load(tmp_path, "[models.m.price]\ninput = 0\noutput = 0").price == \
        Rates(Decimal(0), Decimal(0))
    assert load(tmp_path, "price = false").price is False
    assert load(tmp_path, 'price = "openai:gpt-4o"').price == "openai:gpt-4o"
    assert load(tmp_path, "").price is None


@pytest.mark.parametrize(("table", "key", "says"), [
    ("price = 3", "models.m.price", "a table of rates, a provider name, or false"),
    ("price = true", "models.m.price", "true is not a value"),
    ('price = ""', "models.m.price", "bad provider name"),
    ('price = "openai:"', "models.m.price", "bad provider name"),
    ("price = { input = 1 }", "models.m.price.output", "missing"),
    ("price = { output = 1 }", "models.m.price.input", "missing"),
    ("price = { input = 1, output = 1, cache = 1 }", "models.m.price.cache",
     "did you mean 'cached'"),
    ('price = { input = "1", output = 1 }', "models.m.price.input", "must be a number"),
    ("price = { input = true, output = 1 }", "models.m.price.input", "must be a number"),
    ("price = { input = -0.1, output = 1 }", "models.m.price.input", "negative"),
    ("price = { input = 1, output = 1, cached = nan }", "models.m.price.cached", "non-finite"),
    ("price = { input = inf, output = 1 }", "models.m.price.input", "non-finite"),
    ("context_window = 0", "models.m.context_window", "above 0"),
    ("context_window = 1.5", "models.m.context_window", "must be an integer"),
    ("context_window = true", "models.m.context_window", "must be an integer"),
])
def test_bad_price_or_window_is_a_one_line_error_naming_the_key(
        tmp_path: Path, table: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, table)
    message = str(info.value)
    assert f"'{key}'" in message and says in message
    assert "\n" not in message


def test_price_is_per_model_not_a_default(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[defaults]\nprice = false\n")
    with pytest.raises(ConfigError, match=r"unknown key 'defaults\.price'"):
        load_config(str(path), env={})


# Offline, and off the path to the first frame

def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_no_lookup_opens_a_socket_or_starts_a_thread() -> None:
    done = run("""
        import socket, threading

        def refuse(*args, **kwargs):
            raise AssertionError("a price lookup used the network")

        socket.socket.connect = socket.socket.connect_ex = refuse
        socket.create_connection = socket.getaddrinfo = refuse

        from termchat.config import ModelConfig
        from termchat.events import Usage
        from termchat import pricing

        usage = Usage(input_tokens=1000, output_tokens=500, cached_tokens=200)
        pricing.preload()
        for provider, name, base_url, price in [
            ("openai", "gpt-4.1-mini", None, None),
            ("anthropic", "claude-sonnet-4-5", None, None),
            ("openai", "anthropic/claude-sonnet-4.5", "https://openrouter.ai/api/v1", None),
            ("openai", "gpt-4o", "https://llm.example.com/v1", None),
            ("openai", "llama3.2", "http://127.0.0.1:11434/v1", "openai"),
            ("openai", "mystery", None, None),
        ]:
            model = ModelConfig("m", provider, name, base_url=base_url, price=price)
            pricing.price(model, usage)
            pricing.context_window(model)
        import genai_prices.data_snapshot as snapshots

        assert not snapshots.get_snapshot().from_auto_update
        assert [t.name for t in threading.enumerate()] == ["MainThread"]
        print("offline")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "offline"


def test_genai_prices_is_imported_by_the_first_lookup_that_needs_it() -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import termchat.pricing"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert "termchat.pricing" in done.stderr
    assert "genai_prices" not in done.stderr
    done = run("""
        import sys
        from termchat import pricing
        from termchat.config import ModelConfig
        from termchat.events import Usage

        assert "genai_prices" not in sys.modules
        # A local server is unknown by rule, without loading the data.
        local = ModelConfig("m", "openai", "gpt-4o", base_url="http://127.0.0.1:8000/v1")
        assert pricing.price(local, Usage(1, 1)).usd is None
        assert pricing.context_window(local) is None
        assert "genai_prices" not in sys.modules
        pricing.price(ModelConfig("m", "openai", "gpt-4o"), Usage(1, 1))
        assert "genai_prices" in sys.modules
    """)
    assert done.returncode == 0, done.stderr

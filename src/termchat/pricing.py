"""What replies cost and how full the context window is: prices and windows from genai-prices'
bundled data (offline, imported only on the first lookup) or the config, honest when unknown.

Which data prices a model (the first rule that applies):

1. `price = false` in the config: never priced.
2. `price = { input = …, output = …, cached = … }`: those rates, USD per million tokens.
3. `price = "provider"` or `"provider:model"`: that provider's entry in the data (a gateway or
   proxy that bills as OpenAI, say, or the devserver in a test).
4. No `base_url`: the data for the model's own provider (`openai`, `anthropic`).
5. A `base_url` on this machine or a private network (localhost, loopback, private, link-local
   and CGNAT addresses, single-label hosts, .local/.lan/.internal/.home.arpa): unknown,
   without loading the data. An OpenAI-compatible server calling its model `gpt-4o` is not
   OpenAI's gpt-4o.
6. Any other `base_url`: the provider whose API address it is in the data (api.openai.com,
   api.anthropic.com, openrouter.ai, api.groq.com, …); an address the data does not know is
   unknown.

Rules 3–6 also give the context window when the config sets no `context_window`.

The data is the package's own as installed (upgrading genai-prices updates it). Its updater,
the only code in the package that uses the network, is never started, and a snapshot it or
anything else installed process-wide is never read: lookups use a snapshot of the bundled data
built here.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from termchat.config import ModelConfig, Rates
from termchat.events import Usage

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, Provider

NEAR_FULL = 0.8
"""The share of the context window from which the conversation is about to overflow."""
CLEARLY_TOO_BIG = 1.1
"""An estimate at this multiple of the window cannot fit, whatever the estimate's error."""

_MILLION = Decimal(1_000_000)
_LOCAL_SUFFIXES = (".localhost", ".local", ".lan", ".internal", ".home.arpa")


class Why(StrEnum):
    """Why a price is unknown (the values are stable, for `--json`)."""

    NO_PRICE = "no_price"
    NO_USAGE = "no_usage"
    SERVER = "server"
    OFF = "off"

    @property
    def sentence(self) -> str:
        return _SENTENCES[self]


_SENTENCES = {
    Why.NO_PRICE: "genai-prices has no price for this model; set price for it in the config",
    Why.NO_USAGE: "the server did not report the token counts",
    Why.SERVER: "the server at base_url has no known price (self-hosted, or not in "
                "genai-prices' data); set price for this model in the config",
    Why.OFF: "price = false in the config",
}


@dataclass(frozen=True, slots=True)
class Cost:
    """What one or more requests cost, in USD: `known` is the sum of the `priced` parts; the
    `unpriced` parts' prices are unknown, for the reasons in `why`. Unknown is never $0: with
    an unknown part the cost is at least `known`, and with no priced part it is unknown.

    Costs add with `+` (or `total`); `Cost()` is the cost of nothing, exactly $0."""

    known: Decimal = Decimal(0)
    priced: int = 0
    unpriced: int = 0
    why: frozenset[Why] = frozenset()

    @classmethod
    def of(cls, usd: Decimal) -> Cost:
        return cls(usd, priced=1)

    @classmethod
    def unknown(cls, why: Why) -> Cost:
        return cls(unpriced=1, why=frozenset({why}))

    @property
    def complete(self) -> bool:
        """Every part is priced, so `known` is the whole cost."""
        return self.unpriced == 0

    @property
    def usd(self) -> Decimal | None:
        """The whole cost, or None unless every part is priced."""
        return self.known if self.complete else None

    @property
    def hidden(self) -> bool:
        """Every part is a model with `price = false`: show no cost at all."""
        return self.priced == 0 and self.why == {Why.OFF}

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(self.known + other.known, self.priced + other.priced,
                    self.unpriced + other.unpriced, self.why | other.why)

    def as_dict(self) -> dict[str, Any]:
        """For `--json`: amounts as decimal strings, so no digit is lost to a float."""
        return {
            "usd": _plain(self.known) if self.complete else None,
            "at_least_usd": _plain(self.known) if self.priced or self.complete else None,
            "unknown": sorted(self.why),
        }


def total(costs: Iterable[Cost]) -> Cost:
    """The cost of a turn's rounds, or of a conversation's replies."""
    return sum(costs, Cost())


def format_cost(cost: Cost) -> str:
    """`$0.0123`, `$1.23`, `<$0.0001`, `≥ $0.0119 (some unknown)`, `cost unknown`, or "" for a
    model with `price = false`. A lower bound is rounded down, so it stays true."""
    if cost.hidden:
        return ""
    if cost.complete:
        return _dollars(cost.known, ROUND_HALF_UP)
    if cost.priced == 0:
        return "cost unknown"
    return f"≥ {_dollars(cost.known, ROUND_FLOOR)} (some unknown)"


def explain(cost: Cost) -> str:
    """Why some of the cost is unknown, in sentences; "" when it is all known."""
    return "; ".join(why.sentence for why in sorted(cost.why))


def _dollars(usd: Decimal, rounding: str) -> str:
    if usd == 0:
        return "$0.00"
    small = usd.quantize(Decimal("0.0001"), rounding)
    if small == 0:
        return "<$0.0001" if rounding == ROUND_HALF_UP else "$0.00"
    if small < 1:
        return f"${small}"
    return f"${usd.quantize(Decimal('0.01'), rounding):,}"


def _plain(usd: Decimal) -> str:
    return f"{usd.normalize():f}"


def price(model: ModelConfig, usage: Usage, at: datetime | None = None) -> Cost:
    """What one request (one reply, or one round of a turn) cost, from the token counts its
    provider reported; `at` (timezone-aware) is when it was sent, as prices can change on a
    date; default now.

    The first call imports genai-prices and its data (20–50 ms): call it when a reply has
    finished or from a worker, never before the first frame or token."""
    if model.price is False:
        return Cost.unknown(Why.OFF)
    if usage.input_tokens is None or usage.output_tokens is None:
        return Cost.unknown(Why.NO_USAGE)
    # A server that says nothing of its cache is billed as if nothing was read from it.
    cached = usage.cached_tokens or 0
    if cached > usage.input_tokens:
        return Cost.unknown(Why.NO_USAGE)
    if isinstance(model.price, Rates):
        return Cost.of(_at_rates(model.price, usage.input_tokens, cached, usage.output_tokens))
    found = _lookup(model)
    if isinstance(found, Why):
        return Cost.unknown(found)
    from genai_prices.types import Usage as Counts

    provider, info = found
    # genai-prices' convention is termchat's: input_tokens is the whole input, cache reads
    # included (Anthropic's three input counts are summed by its provider already).
    counts = {"input_tokens": usage.input_tokens, "cache_read_tokens": cached,
              "output_tokens": usage.output_tokens}
    if usage.reasoning_tokens is not None:
        counts["output_reasoning_tokens"] = usage.reasoning_tokens
    try:
        calculation = info.calc_price(Counts(**counts), provider, genai_request_timestamp=at)
    except ValueError:
        return Cost.unknown(Why.NO_USAGE)
    return Cost.of(calculation.total_price)


def _at_rates(rates: Rates, input_tokens: int, cached: int, output_tokens: int) -> Decimal:
    cached_rate = rates.input if rates.cached is None else rates.cached
    return ((input_tokens - cached) * rates.input + cached * cached_rate
            + output_tokens * rates.output) / _MILLION


def context_window(model: ModelConfig) -> int | None:
    """The model's context window in tokens: `context_window` in the config, else the data's
    for the provider that prices it (rules 3–6 above), else None. Imports genai-prices."""
    if model.context_window is not None:
        return model.context_window
    found = _lookup(model)
    return None if isinstance(found, Why) else found[1].context_window


def context_share(model: ModelConfig, input_tokens: int | None) -> float | None:
    """The share of the window the last request used (its reported input tokens), which may
    pass 1.0; None when the count or the window is unknown."""
    window = context_window(model) if input_tokens is not None else None
    return None if window is None or input_tokens is None else input_tokens / window


def near_full(share: float | None) -> bool:
    """The last request used 80% of the window or more."""
    return share is not None and share >= NEAR_FULL


def format_share(share: float | None) -> str:
    """`62%` (rounded down, so 79.9% never reads as the 80% warning), `<1%`, or `context
    unknown`."""
    if share is None:
        return "context unknown"
    if 0 < share < 0.01:
        return "<1%"
    return f"{math.floor(share * 100)}%"


@dataclass(frozen=True, slots=True)
class ImageSize:
    """An image attachment's size in pixels, as its header says."""

    width: int
    height: int


@dataclass(frozen=True, slots=True)
class DocumentSize:
    """A PDF attachment: its size in bytes and, when known, its number of pages."""

    size: int
    pages: int | None = None


# Measured with tiktoken's cl100k_base: English prose 3.9–4.7 characters a token (GPL-3 4.71,
# the README 3.91, Node's process.md 3.90), Python 4.52, JSON 3.25–3.28, CSS 3.32, and the
# sparsest ordinary text found, the Apache-2.0 licence with its indentation, 5.00. Counting 5
# therefore rarely overestimates; with CLEARLY_TOO_BIG a warning needs 5.5 characters a token
# to be wrong, which only long runs of one character (rules, padding) reach. Claude's
# tokenizer makes more tokens from the same text, never fewer.
_CHARS_PER_TOKEN = 5
# A page is sent as its text and a picture of it; count the picture alone, a US Letter page at
# 150 dpi.
_PAGE = ImageSize(1275, 1650)
# Without a page count: at most this many bytes a page (a 600 dpi colour scan), so the count
# is low, never high.
_BYTES_PER_PAGE = 4_000_000


def estimate_tokens(text_chars: int, attachments: Iterable[ImageSize | DocumentSize] = (), *,
                    provider: str) -> int:
    """A cheap, deliberately low count of the tokens that text of `text_chars` characters and
    these attachments make for `provider` (`openai`, `anthropic`): a warning built on it is
    not a guess. For the next request of a conversation, add the last request's reported
    input tokens to the estimate for the last reply's text and the new prompt."""
    tokens = text_chars // _CHARS_PER_TOKEN
    for attachment in attachments:
        if isinstance(attachment, ImageSize):
            tokens += _image_tokens(provider, attachment.width, attachment.height)
        else:
            pages = attachment.pages if attachment.pages is not None \
                else max(1, attachment.size // _BYTES_PER_PAGE)
            tokens += pages * _image_tokens(provider, _PAGE.width, _PAGE.height)
    return tokens


def _image_tokens(provider: str, width: int, height: int) -> int:
    if width <= 0 or height <= 0:
        return 0
    if provider == "anthropic":
        # Scaled to a long edge of 1568 px, then width × height / 750, at most about 1600.
        scale = min(1.0, 1568 / max(width, height))
        return min(1600, int(width * scale * height * scale / 750))
    # OpenAI bills by 512 px tiles after fitting 2048 px and a 768 px short side (gpt-4o,
    # gpt-4.1, o-series), or by 32 px patches, at most 1536, times a factor above 1 (the mini
    # and nano models). Count the lower.
    scale = min(1.0, 2048 / max(width, height))
    scale *= min(1.0, 768 / (min(width, height) * scale))
    tiles = math.ceil(width * scale / 512) * math.ceil(height * scale / 512)
    patches = min(1536, math.ceil(width / 32) * math.ceil(height / 32))
    return min(85 + 170 * tiles, patches)


def will_not_fit(model: ModelConfig, estimate: int) -> bool:
    """The request clearly cannot fit: `estimate` (see `estimate_tokens`) is at least 110% of
    a known context window. An unknown window never warns."""
    window = context_window(model)
    return window is not None and estimate >= CLEARLY_TOO_BIG * window


def preload() -> None:
    """Import genai-prices and its data now (20–50 ms), e.g. in a worker after the first
    frame, so the first reply's price does not wait for it."""
    _snapshot()


@cache
def _snapshot() -> DataSnapshot:
    from genai_prices.data import providers
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=providers, from_auto_update=False)


@dataclass(frozen=True, slots=True)
class _Source:
    """Where the data prices a model: its name there, and the provider's id or API address."""

    ref: str
    provider_id: str | None = None
    api_url: str | None = None


def _source(model: ModelConfig) -> _Source | Why:
    if isinstance(model.price, str):
        provider, _, ref = model.price.partition(":")
        return _Source(ref or model.model, provider_id=provider)
    if not model.base_url:
        return _Source(model.model, provider_id=model.provider)
    if _on_private_network(model.base_url):
        return Why.SERVER
    return _Source(model.model, api_url=model.base_url)


def _on_private_network(url: str) -> bool:
    host = urlsplit(url).hostname
    if not host:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host or host == "localhost" or host.endswith(_LOCAL_SUFFIXES)
    return not address.is_global


def _lookup(model: ModelConfig) -> tuple[Provider, ModelInfo] | Why:
    source = _source(model)
    if isinstance(source, Why):
        return source
    data = _snapshot()
    try:
        provider = data.find_provider(None, source.provider_id, source.api_url)
    except LookupError:
        return Why.SERVER if source.api_url else Why.NO_PRICE
    try:
        return data.find_provider_model(source.ref, provider, None, None)
    except LookupError:
        return Why.NO_PRICE

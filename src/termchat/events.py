"""The one vocabulary of stream events shared by every provider and every front end."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from termchat.content import ToolCall, ToolResult


class FinishKind(StrEnum):
    """What a provider's raw finish reason means, independent of who sent it."""

    COMPLETE = "complete"
    LENGTH = "length"
    FILTERED = "filtered"
    REFUSAL = "refusal"
    TOOL = "tool"
    PAUSED = "paused"
    CONTEXT = "context"
    OTHER = "other"


# Raw reasons from both providers, mapped to a kind and a short human meaning. Reasons not
# listed here are kept verbatim with kind OTHER.
_FINISH: dict[str, tuple[FinishKind, str]] = {
    "stop": (FinishKind.COMPLETE, ""),
    "end_turn": (FinishKind.COMPLETE, ""),
    "stop_sequence": (FinishKind.COMPLETE, "hit a stop sequence"),
    # OpenAI's `length` is max_tokens, or a compatible server's own limit or context window.
    "length": (FinishKind.LENGTH, "hit the length limit"),
    "max_tokens": (FinishKind.LENGTH, "hit max_tokens"),
    "content_filter": (FinishKind.FILTERED, "cut by the content filter"),
    "refusal": (FinishKind.REFUSAL, "the model refused"),
    "tool_calls": (FinishKind.TOOL, "the model asked for a tool"),
    "function_call": (FinishKind.TOOL, "the model asked for a tool"),
    "tool_use": (FinishKind.TOOL, "the model asked for a tool"),
    "pause_turn": (FinishKind.PAUSED, "the provider paused the turn"),
    "model_context_window_exceeded": (FinishKind.CONTEXT, "hit the context window"),
}


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply's visible text (refusal text included: it is shown, not dropped).

    Like every string a provider hands on, it is valid Unicode (surrogate halves joined)."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning / thinking, shown apart from the reply."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts; None means the server did not say, which is not the same as 0."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    def merge(self, other: Usage) -> Usage:
        """Later reports win field by field; a field the later report leaves unknown is kept."""
        return Usage(
            input_tokens=_pick(other.input_tokens, self.input_tokens),
            output_tokens=_pick(other.output_tokens, self.output_tokens),
            cached_tokens=_pick(other.cached_tokens, self.cached_tokens),
            reasoning_tokens=_pick(other.reasoning_tokens, self.reasoning_tokens),
        )

    def __add__(self, other: Usage) -> Usage:
        """Two requests' counts together (a turn's tool rounds): unknown if either is."""
        return Usage(*(None if a is None or b is None else a + b for a, b in (
            (self.input_tokens, other.input_tokens), (self.output_tokens, other.output_tokens),
            (self.cached_tokens, other.cached_tokens),
            (self.reasoning_tokens, other.reasoning_tokens))))

    @property
    def known(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None


def _pick(new: int | None, old: int | None) -> int | None:
    return old if new is None else new


@dataclass(frozen=True, slots=True)
class Finish:
    """The end of a reply: the provider's raw reason, verbatim, and what it means."""

    reason: str
    kind: FinishKind

    @classmethod
    def from_raw(cls, reason: str) -> Finish:
        return cls(reason, _FINISH.get(reason, (FinishKind.OTHER, ""))[0])

    @property
    def meaning(self) -> str:
        """A short human meaning for unusual reasons; empty for an ordinary stop."""
        kind, meaning = _FINISH.get(self.reason, (FinishKind.OTHER, "unrecognised finish reason"))
        if kind is not self.kind and self.kind is FinishKind.REFUSAL:
            # OpenAI ends a refusal with an ordinary `stop`; the kind was read from the deltas.
            return "the model refused"
        return meaning

    @property
    def truncated(self) -> bool:
        return self.kind in (FinishKind.LENGTH, FinishKind.CONTEXT)

    def describe(self) -> str:
        """`stop`, or `max_tokens — hit max_tokens` for the unusual ones."""
        return f"{self.reason} — {self.meaning}" if self.meaning else self.reason


@dataclass(frozen=True, slots=True)
class ReasoningSigned:
    """The thinking block just ended, with what its provider needs to accept it back (an
    Anthropic `signature`, or a redacted block's opaque data)."""

    signature: str | None = None
    redacted: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    """The model began tool call `index` of this round; `name` is known from the start in both
    wire formats (OpenAI's first fragment, Anthropic's tool_use block)."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallArguments:
    """A fragment of call `index`'s arguments, as the JSON text streams in."""

    index: int
    fragment: str


@dataclass(frozen=True, slots=True)
class ToolCallReady:
    """Call `index` is complete: its whole arguments are in `call` (not checked as JSON here;
    invalid arguments go back to the model as a failed result)."""

    index: int
    call: ToolCall


@dataclass(frozen=True, slots=True)
class ToolRunning:
    """The turn runs call `call_id` now (approved, by the user or the config)."""

    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """A call's result, as it goes back to the model."""

    result: ToolResult


@dataclass(frozen=True, slots=True)
class Retrying:
    """The request failed before its reply started and is sent again in `delay` seconds:
    attempt `attempt` of `attempts`, because of `reason` (the error's one sentence)."""

    delay: float
    attempt: int
    attempts: int
    reason: str


Event = (TextDelta | ReasoningDelta | ReasoningSigned | ToolCallStarted | ToolCallArguments
         | ToolCallReady | ToolRunning | ToolFinished | Usage | Finish | Retrying)

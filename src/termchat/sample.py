"""Deterministic, realistic Markdown replies for the local provider server, tests and benchmarks."""

from __future__ import annotations

import random

_WORDS = (
    "the stream renders each chunk as it arrives while the terminal keeps its scrollback "
    "intact and the model explains how a parser settles blocks before the cursor moves on "
    "latency frame widget layout token reply context buffer socket server client request "
    "response markdown table list heading code fence python rust async await cancel"
).split()

_CODE = '''def fib(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


for i in range({n}):
    print(i, fib(i))'''


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 18))]
    if rng.random() < 0.3:
        i = rng.randrange(len(words))
        words[i] = f"`{words[i]}`"
    if rng.random() < 0.2:
        i = rng.randrange(len(words))
        words[i] = f"**{words[i]}**"
    return " ".join(words).capitalize() + "."


def long_reply(size: int = 40_000, seed: int = 7) -> str:
    """A Markdown reply of about `size` characters: headings, paragraphs, lists, code, tables."""
    rng = random.Random(seed)
    blocks: list[str] = []
    total = 0
    section = 0
    while total < size:
        kind = rng.choices(["heading", "para", "list", "ordered", "code", "table", "quote"],
                           weights=[1, 5, 2, 1, 1.2, 0.8, 0.5])[0]
        if kind == "heading":
            section += 1
            block = f"## {section}. {_sentence(rng).rstrip('.')}"
        elif kind == "para":
            block = " ".join(_sentence(rng) for _ in range(rng.randint(2, 5)))
        elif kind == "list":
            block = "\n".join(f"- {_sentence(rng)}" for _ in range(rng.randint(3, 6)))
        elif kind == "ordered":
            block = "\n".join(f"{i}. {_sentence(rng)}" for i in range(1, rng.randint(3, 6)))
        elif kind == "code":
            block = "```python\n" + _CODE.format(n=rng.randint(3, 20)) + "\n```"
        elif kind == "table":
            rows = [f"| {rng.choice(_WORDS)} | {rng.randint(1, 999)} | {rng.choice(_WORDS)} |"
                    for _ in range(rng.randint(3, 7))]
            block = "| name | value | note |\n|------|------:|------|\n" + "\n".join(rows)
        else:
            block = "> " + _sentence(rng)
        blocks.append(block)
        total += len(block) + 2
    return "\n\n".join(blocks) + "\n"


def chunked(text: str, count: int) -> list[str]:
    """Cut `text` into about `count` pieces of similar size (on characters, never bytes)."""
    size = max(1, len(text) // count)
    return [text[i:i + size] for i in range(0, len(text), size)]

"""Time the history store at scale: open, list, search and load on a large database, and
flip and open a conversation that has branched.

Builds (once, cached in bench/results/) a database of 10,000 conversations and 200,000
messages of Zipf-distributed words, each conversation one branch, plus one conversation of
200 messages with 50 branch points (regenerated replies) and tool calls, written through
the store's own recorder; then times each operation in fresh processes and prints the median
and max against its target (200 ms; 50 ms for flipping and opening the branched one).

    .venv/bin/python bench/bench_history.py            # full size
    .venv/bin/python bench/bench_history.py --quick    # small database, for a CI smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS = 200.0
MESSAGES_PER_CONVERSATION = 20
COMMON_WORDS = ("the", "to", "and", "a", "of", "is", "in", "that", "it", "you", "for", "this",
                "with", "on", "be", "can", "as", "are", "if", "or", "use", "not", "an", "by")
SYLLABLES = ("ka", "lo", "mi", "ren", "tu", "vel", "sor", "qua", "dex", "pi", "nor", "zan",
             "bel", "cto", "fy", "gri", "hal", "jo", "wen", "xis", "yu", "ost", "ep", "im")
RARE_HITS = 10
BRANCHED_EXCHANGES = 75
BRANCH_POINTS = 50
T = TypeVar("T")
OPERATIONS = ("import", "open", "list first page", "search 'the'", "search common word",
              "search rare word", "load one conversation", "load 200-message tree",
              "flip an alternative")
TARGETS = {"load 200-message tree": 50.0, "flip an alternative": 50.0}


def vocabulary(rng: random.Random, size: int) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))))
    return sorted(words)


def build(path: Path, conversations: int) -> dict[str, object]:
    """Create the database through the real migrations, then fill it in one transaction."""
    from termchat.history import HistoryStore

    rng = random.Random(42)
    content = vocabulary(rng, 20_000)
    rng.shuffle(content)
    # Common function words make up about half of all text, like in English.
    words = list(COMMON_WORDS) + content
    weights = [60.0 / (rank + 1) for rank in range(len(COMMON_WORDS))] + \
        [1.0 / (rank + 1) ** 1.05 for rank in range(len(content))]
    cumulative, total = [], 0.0
    for weight in weights:
        total += weight
        cumulative.append(total)

    def text(length: int) -> str:
        return " ".join(rng.choices(words, cum_weights=cumulative, k=length))

    rare = "zyxtrellium"
    rare_every = conversations * MESSAGES_PER_CONVERSATION // RARE_HITS

    HistoryStore.open(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    now = time.time() - conversations * 60.0
    message_rows = []
    for cid in range(1, conversations + 1):
        start = now + cid * 60.0
        db.execute("INSERT INTO conversations (id, title, model, created, updated) "
                   "VALUES (?, ?, ?, ?, ?)", (cid, text(8)[:60], "gpt", start, start + 50))
        for seq in range(MESSAGES_PER_CONVERSATION):
            user = seq % 2 == 0
            body = text(rng.randint(5, 50) if user else rng.randint(40, 250))
            if ((cid - 1) * MESSAGES_PER_CONVERSATION + seq) % rare_every == 0:
                body += f" {rare}"
            # One branch, as the migration leaves a v2 conversation: each message follows
            # the one before it.
            message_id = (cid - 1) * MESSAGES_PER_CONVERSATION + seq + 1
            message_rows.append((
                message_id, message_id - 1 if seq else None,
                cid, seq, "user" if user else "assistant", body,
                "gpt-4.1-mini", "openai", "complete", None if user else "stop",
                None if user else rng.randint(100, 5000), None if user else rng.randint(40, 400),
                start + seq, start + seq,
            ))
        if len(message_rows) >= 20_000:
            insert_messages(db, message_rows)
            message_rows.clear()
    insert_messages(db, message_rows)
    db.execute("COMMIT")
    branched, alternatives, last = build_branched(path, text)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    meta: dict[str, object] = {"schema": schema_fingerprint(), "conversations": conversations,
                               "messages": conversations * MESSAGES_PER_CONVERSATION,
                               "common": content[0], "rare": rare, "branched": branched,
                               "alternatives": alternatives, "last": last}
    for key, word in (("the", "the"), ("common", content[0]), ("rare", rare)):
        meta[f"{key}_hits"] = db.execute(
            "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?",
            (f'"{word}"',)).fetchone()[0]
    db.close()
    return meta


def build_branched(path: Path, text: Callable[[int], str]) -> tuple[int, list[int], int]:
    """A conversation of 200 messages with 50 branch points, written as a chat writes it:
    75 exchanges (one reply in ten calls a tool), then 50 of the prompts answered again, and
    the path flipped back to the first replies. Its id, the ids of the second replies (what
    a flip switches to) and of the last reply (what puts the whole path back)."""
    from termchat.config import ModelConfig
    from termchat.content import ToolCall, ToolResult
    from termchat.history import HistoryStore, MessageRecorder
    from termchat.turn import Reply, Status

    model = ModelConfig(name="gpt", provider="openai", model="gpt-4.1-mini")

    def reply(index: int) -> Reply:
        answer = Reply(model=model.model, provider=model.provider, status=Status.STREAMING)
        if index % 10 == 0:
            answer.add(ToolCall(f"call_{index}", "docs__search", f'{{"query": "{text(3)}"}}'))
            answer.add(ToolResult(f"call_{index}", text(80)))
        answer.add_text(text(150))
        answer.status = Status.COMPLETE
        return answer

    with HistoryStore.open(path) as store:
        record = store.new_conversation()
        prompts, alternatives = [], []
        for index in range(BRANCHED_EXCHANGES):
            recorder = record.user_prompt(text(30), model)
            assert isinstance(recorder, MessageRecorder) and recorder.prompt_id is not None
            recorder.finish(reply(index))
            prompts.append(recorder.prompt_id)
        last = record.follows
        for index, prompt in enumerate(prompts[:BRANCH_POINTS]):
            recorder = record.regenerate(prompt, model)
            assert isinstance(recorder, MessageRecorder)
            recorder.finish(reply(index + 1))
            alternatives.append(recorder.message_id)
        assert record.id is not None and last is not None
        store.activate(last)
        return record.id, alternatives, last


def schema_fingerprint() -> str:
    """Changes whenever the schema does, so a cached database is never measured stale."""
    from termchat.history import MIGRATIONS

    return hashlib.sha256(repr(MIGRATIONS).encode()).hexdigest()[:16]


def insert_messages(db: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    db.executemany(
        "INSERT INTO messages (id, parent_id, conversation_id, seq, role, text, model, "
        "provider, status, finish_reason, input_tokens, output_tokens, created, updated) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def measure(path: Path, common: str, rare: str, cid: int, branched: int,
            alternative: int, last: int) -> dict[str, float]:
    """One fresh process's timings in ms (the database pages are cold for SQLite)."""
    timings: dict[str, float] = {}

    def timed(name: str, action: Callable[[], T]) -> T:
        start = time.perf_counter()
        result = action()
        timings[name] = (time.perf_counter() - start) * 1000
        return result

    history = timed("import", lambda: importlib.import_module("termchat.history"))
    store = timed("open", lambda: history.HistoryStore.open(path))
    assert timed("list first page", lambda: store.list_conversations(limit=50))
    assert timed("search 'the'", lambda: store.search("the"))
    assert timed("search common word", lambda: store.search(common))
    assert timed("search rare word", lambda: store.search(rare))
    # Whoever continues a conversation is about to chat and has imported `turn` already.
    importlib.import_module("termchat.turn")
    assert timed("load one conversation", lambda: store.load(cid)).exchanges
    loaded = timed("load 200-message tree", lambda: store.load(branched))
    assert len(loaded.exchanges) == BRANCHED_EXCHANGES
    # What a front end does on `‹ 2/2 ›`: flip, then read the path it now shows.
    assert timed("flip an alternative", lambda: (store.activate(alternative),
                                                 store.get(branched))[1]).messages
    store.activate(last)
    store.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small database (500 convs)")
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per operation")
    parser.add_argument("--rebuild", action="store_true", help="build the database again")
    parser.add_argument("--measure", nargs=7, help=argparse.SUPPRESS,
                        metavar=("DB", "COMMON", "RARE", "CID", "BRANCHED", "TO", "BACK"))
    args = parser.parse_args()
    if args.measure:
        db, common, rare, *ids = args.measure
        cid, branched, alternative, last = map(int, ids)
        print(json.dumps(measure(Path(db), common, rare, cid, branched, alternative, last)))
        return

    conversations = 500 if args.quick else 10_000
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"history-{conversations}.db"
    meta_path = path.with_suffix(".json")
    cached = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if args.rebuild or cached.get("schema") != schema_fingerprint():
        for stale in (path, meta_path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)
        start = time.perf_counter()
        meta = build(path, conversations)
        meta_path.write_text(json.dumps(meta))
        print(f"built {path} in {time.perf_counter() - start:.1f} s")
    meta = json.loads(meta_path.read_text())

    runs: dict[str, list[float]] = {name: [] for name in OPERATIONS}
    for run in range(args.runs):
        # Each run flips at a different branch point, the deepest first.
        alternative = meta["alternatives"][-1 - run % len(meta["alternatives"])]
        out = subprocess.run(
            [sys.executable, __file__, "--measure", str(path), meta["common"], meta["rare"],
             str(meta["conversations"] // 2), str(meta["branched"]), str(alternative),
             str(meta["last"])],
            capture_output=True, text=True, check=True).stdout
        for name, ms in json.loads(out).items():
            runs[name].append(ms)

    size_mb = path.stat().st_size / 1e6
    print(f"{meta['conversations']:,} conversations, {meta['messages']:,} messages, "
          f"{size_mb:.0f} MB; timings from {args.runs} fresh processes")
    print(f"messages matching: 'the' {meta['the_hits']:,}, common word '{meta['common']}' "
          f"{meta['common_hits']:,}, rare word '{meta['rare']}' {meta['rare_hits']:,}")
    print(f"{'operation':<24}{'median ms':>10}{'max ms':>10}{'target ms':>11}")
    for name in OPERATIONS:
        times = runs[name]
        target = "" if name == "import" else f"{TARGETS.get(name, TARGET_MS):.0f}"
        print(f"{name:<24}{statistics.median(times):>10.1f}{max(times):>10.1f}{target:>11}")


if __name__ == "__main__":
    main()

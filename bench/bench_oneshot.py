"""Time one-shot mode's start-up and exit against a bare SDK script, on the local server.

For each provider, interleaved runs (to cancel drift) of:
  termchat   `termchat "hi"` with stdout piped
  bare SDK   a script that imports only that provider's SDK, makes the same streaming
             request and prints the text
and two intervals, both on time.monotonic() (this process and the in-process server share
the clock):
  start → request     just before Popen → the server receiving the request
  last chunk → exit   the server writing the last byte → the process reaped
Targets: termchat's start → request within 1.2x of the bare script's; last chunk → exit
at most 100 ms. The CPU time of each run is shown too: wall times swing on a busy machine.

    .venv/bin/python bench/bench_oneshot.py [--runs 10] [--chunks 50]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from termchat.devserver import ProviderServer, Script

RATIO_TARGET = 1.2
EXIT_TARGET_MS = 100.0
PROVIDERS = ("openai", "anthropic")

# The same request termchat makes with no configuration: its default model, one user message.
BARE_SCRIPTS = {
    "openai": """\
import sys
import openai

client = openai.OpenAI(max_retries=0)
stream = client.chat.completions.create(
    model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
    stream_options={"include_usage": True})
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        sys.stdout.write(chunk.choices[0].delta.content)
        sys.stdout.flush()
sys.stdout.write("\\n")
""",
    "anthropic": """\
import sys
import anthropic

client = anthropic.Anthropic(max_retries=0)
stream = client.messages.create(
    model="claude-sonnet-4-5", max_tokens=8192, messages=[{"role": "user", "content": "hi"}],
    stream=True)
for event in stream:
    if event.type == "content_block_delta" and event.delta.type == "text_delta":
        sys.stdout.write(event.delta.text)
        sys.stdout.flush()
sys.stdout.write("\\n")
""",
}


@dataclass
class Sample:
    start_to_request: float
    last_chunk_to_exit: float
    cpu: float
    """User + system CPU seconds of the whole run: steadier than wall time on a busy machine."""


def measure(command: list[str], env: dict[str, str], server: ProviderServer,
            expected: bytes) -> Sample:
    server.reset()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate(timeout=60)
    exited = time.monotonic()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or out != expected:
        raise SystemExit(f"{command[-2:]} failed ({proc.returncode}): {err.decode()[-500:]}")
    (request,) = server.requests
    assert request.last_chunk_at is not None
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Sample(request.received_at - started, exited - request.last_chunk_at, cpu)


def environment(provider: str, server: ProviderServer, home: Path) -> dict[str, str]:
    # Bytecode caching on, as in a user's install: without it every termchat module would be
    # compiled on every run, while the SDKs' caches were written when they were installed.
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("OPENAI_", "ANTHROPIC_", "TERMCHAT_", "XDG_"))
           and name != "PYTHONDONTWRITEBYTECODE"}
    env.update(XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"))
    if provider == "openai":
        env.update(OPENAI_BASE_URL=server.openai_base_url, OPENAI_API_KEY="bench")
    else:
        env.update(ANTHROPIC_BASE_URL=server.anthropic_base_url, ANTHROPIC_API_KEY="bench")
    return env


def median_p90(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return statistics.median(ordered), p90


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each program (10)")
    parser.add_argument("--chunks", type=int, default=50, help="chunks per reply (50)")
    args = parser.parse_args()

    termchat = shutil.which("termchat", path=str(Path(sys.executable).parent))
    if termchat is None:
        raise SystemExit("termchat is not installed next to this Python (pip install -e .)")
    pieces = [f"word{i} " for i in range(args.chunks)]
    expected = "".join(pieces).encode() + b"\n"

    # (provider, program, medians, p90s)
    rows: list[tuple[str, str, Sample, Sample]] = []
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, \
            ProviderServer(default=Script(chunks=pieces)) as server:
        for provider in PROVIDERS:
            script = Path(tmp) / f"bare_{provider}.py"
            script.write_text(BARE_SCRIPTS[provider])
            env = environment(provider, server, Path(tmp))
            programs = {"termchat": [termchat, "hi"], "bare SDK": [sys.executable, str(script)]}
            # One unmeasured run of each: the first run pays for a cold file cache.
            for command in programs.values():
                measure(command, env, server, expected)
            samples: dict[str, list[Sample]] = {name: [] for name in programs}
            for _ in range(args.runs):
                for name, command in programs.items():
                    samples[name].append(measure(command, env, server, expected))
            stats: dict[str, tuple[Sample, Sample]] = {}
            for name, runs in samples.items():
                start = median_p90([s.start_to_request for s in runs])
                end = median_p90([s.last_chunk_to_exit for s in runs])
                cpu = median_p90([s.cpu for s in runs])
                stats[name] = (Sample(start[0], end[0], cpu[0]), Sample(start[1], end[1], cpu[1]))
                rows.append((provider, name, *stats[name]))
            ratio = stats["termchat"][0].start_to_request / stats["bare SDK"][0].start_to_request
            exit_ms = stats["termchat"][0].last_chunk_to_exit * 1000
            verdicts.append(
                f"{provider:<10} start → request ratio {ratio:.2f}x "
                f"({'ok' if ratio <= RATIO_TARGET else 'MISSED'}, target ≤ {RATIO_TARGET}x); "
                f"last chunk → exit {exit_ms:.0f} ms "
                f"({'ok' if exit_ms <= EXIT_TARGET_MS else 'MISSED'}, target ≤ "
                f"{EXIT_TARGET_MS:.0f} ms)")

    print(f"\n{args.runs} runs each, {args.chunks}-chunk reply, interleaved; times in ms\n")
    print(f"{'provider':<10} {'program':<9} {'start → request':>22} {'last chunk → exit':>22}"
          f" {'CPU of the run':>22}")
    print(f"{'':<10} {'':<9}" + f" {'median':>11}{'p90':>11}" * 3)
    for provider, name, median, p90 in rows:
        print(f"{provider:<10} {name:<9}" + "".join(
            f" {getattr(median, field) * 1000:>11.0f}{getattr(p90, field) * 1000:>11.0f}"
            for field in ("start_to_request", "last_chunk_to_exit", "cpu")))
    print()
    for verdict in verdicts:
        print(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())

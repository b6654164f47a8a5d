"""Attachments in one-shot mode, end to end: `-a PATH` and `-a -` through the installed
`termchat` to the local provider server, each kind in both providers' exact wire shapes, and
every refusal one line before any request is sent."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from termchat.devserver import ProviderServer, Request, Script
from termchat.history import HistoryStore
from tests.support.cli import Run, environment, lines_of, run_concurrently
from tests.support.files import pdf, png
from tests.support.oneshot import detached

PROVIDERS = ("openai", "anthropic")
NOTES = "# Notes\n\nbuy milk\n"
# What a text file is sent as: a line naming it, then its content fenced with a hint.
NOTES_BLOCK = "File: notes.md\n```markdown\n# Notes\n\nbuy milk\n```"
SOURCE = "def f():\n    return 1\n"
PNG = png()
PDF = pdf(2)
# Over Anthropic's 5 MB of base64 for an image (3.75 MB of file), well under OpenAI's 20 MB.
BIG_PNG = png(padding=4 * 1024 * 1024)
FILES = {"notes.md": NOTES.encode(), "pic.png": PNG, "doc.pdf": PDF, "big.png": BIG_PNG,
         "blob.bin": bytes(range(256)) * 64, "main.py": SOURCE.encode()}


def data_url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Case:
    args: list[str]
    provider: str = "openai"
    stdin: bytes = b""
    reply: Script = field(default_factory=lambda: Script(text="seen"))


def both(name: str, args: list[str], **case: Any) -> dict[str, Case]:
    return {f"{name}-{provider}": Case(args, provider=provider, **case) for provider in PROVIDERS}


CASES: dict[str, Case] = {
    **both("kinds", ["-a", "notes.md", "--attach", "pic.png", "-a", "doc.pdf", "compare"]),
    **both("stdin-file", ["-a", "-", "describe it"], stdin=PNG),
    **both("piped-text-and-image", ["-a", "pic.png", "explain"], stdin=SOURCE.encode()),
    **both("only-a-file", ["-a", "main.py"]),
    **both("rejected", ["-a", "pic.png", "-a", "notes.md", "what is it?"], reply=Script(
        status=400, error_message="image input is not supported by this model")),
    "too-long": Case(["-a", "doc.pdf", "-a", "notes.md", "summarise"], reply=Script(
        status=400, error_code="context_length_exceeded",
        error_message="This model's maximum context length is 128000 tokens")),
    "json": Case(["--json", "-a", "pic.png", "-a", "notes.md", "hi"]),
    "missing": Case(["-a", "nope.txt", "hi"]),
    "directory": Case(["-a", "somedir", "hi"]),
    "binary": Case(["-a", "blob.bin", "hi"]),
    "too-large-for-anthropic": Case(["-a", "big.png", "hi"], provider="anthropic"),
    "large-for-openai": Case(["-a", "big.png", "hi"]),
    "stdin-twice": Case(["-a", "-", "-a", "-", "hi"], stdin=PNG),
    "binary-stdin": Case(["-a", "-", "hi"], stdin=bytes(range(256)) * 64),
    "hostile-name": Case(["-a", "evil\x1b]0;pwned\x07\u202e.txt", "hi"]),
}


@dataclass
class Result:
    run: Run
    requests: list[Request]

    @property
    def stderr(self) -> list[str]:
        return lines_of(self.run.stderr)

    @property
    def content(self) -> Any:
        (request,) = self.requests
        (message,) = request.body["messages"]
        assert message["role"] == "user"
        return message["content"]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    servers: list[ProviderServer] = []
    tmps = {name: tmp_path_factory.mktemp(name) for name in CASES}

    def run(name: str) -> Result:
        case = CASES[name]
        tmp = tmps[name]
        for file, data in FILES.items():
            (tmp / file).write_bytes(data)
        (tmp / "somedir").mkdir()
        servers.append(srv := ProviderServer(default=case.reply).start())
        env = environment(tmp, srv, case.provider)
        done = detached(case.args, env, case.stdin, cwd=tmp)
        return Result(done, srv.requests)

    with run_concurrently(CASES, run, servers) as results:
        yield results


# --- each kind on the wire ----------------------------------------------------------------


def test_text_image_and_pdf_in_openais_shape(results: dict[str, Result]) -> None:
    result = results["kinds-openai"]
    assert result.run.returncode == 0, result.run.stderr
    assert result.content == [
        {"type": "text", "text": "compare"},
        {"type": "text", "text": NOTES_BLOCK},
        {"type": "image_url", "image_url": {"url": data_url(PNG, "image/png")}},
        {"type": "file", "file": {"filename": "doc.pdf",
                                  "file_data": data_url(PDF, "application/pdf")}},
    ]
    assert result.run.stdout == b"seen\n" and result.stderr == []


def test_text_image_and_pdf_in_anthropics_shape(results: dict[str, Result]) -> None:
    result = results["kinds-anthropic"]
    assert result.run.returncode == 0, result.run.stderr
    assert result.content == [
        {"type": "text", "text": "compare"},
        {"type": "text", "text": NOTES_BLOCK},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": b64(PNG)}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": b64(PDF)}},
    ]


def image_part(provider: str, data: bytes) -> dict[str, Any]:
    if provider == "openai":
        return {"type": "image_url", "image_url": {"url": data_url(data, "image/png")}}
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                        "data": b64(data)}}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dash_attaches_stdin_as_a_file_and_it_is_not_the_prompt(results: dict[str, Result],
                                                                provider: str) -> None:
    result = results[f"stdin-file-{provider}"]
    assert result.run.returncode == 0, result.run.stderr
    assert result.content == [{"type": "text", "text": "describe it"},
                              image_part(provider, PNG)]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_piped_text_is_the_prompt_beside_an_attached_image(results: dict[str, Result],
                                                           provider: str) -> None:
    result = results[f"piped-text-and-image-{provider}"]
    assert result.run.returncode == 0, result.run.stderr
    assert result.content == [{"type": "text", "text": f"explain\n\n{SOURCE}"},
                              image_part(provider, PNG)]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_file_alone_is_the_message(results: dict[str, Result], provider: str) -> None:
    result = results[f"only-a-file-{provider}"]
    assert result.run.returncode == 0, result.run.stderr
    block = f"File: main.py\n```python\n{SOURCE}```"
    # Anthropic's content of one text block is sent as a plain string.
    assert result.content == ([{"type": "text", "text": block}] if provider == "openai"
                              else block)


def test_json_lists_the_attachments(results: dict[str, Result]) -> None:
    output = json.loads(results["json"].run.stdout)
    assert output["attachments"] == [
        {"name": "pic.png", "media_type": "image/png", "kind": "image", "size": len(PNG)},
        {"name": "notes.md", "media_type": "text/plain", "kind": "text",
         "size": len(NOTES)}]


def test_an_image_openai_takes_is_sent_though_anthropic_would_refuse_it(
        results: dict[str, Result]) -> None:
    result = results["large-for-openai"]
    assert result.run.returncode == 0, result.run.stderr
    assert result.content[1] == image_part("openai", BIG_PNG)


# --- refused before any request -----------------------------------------------------------


@pytest.mark.parametrize(("case", "line"), [
    ("missing", "termchat: cannot attach nope.txt: no such file"),
    ("directory", "termchat: cannot attach somedir: it is a directory"),
    ("binary", "termchat: cannot attach blob.bin: it is binary data of an unknown kind (only "
               "text, PNG, JPEG, GIF, WebP and PDF can be attached)"),
    ("binary-stdin", "termchat: cannot attach stdin: it is binary data of an unknown kind "
                     "(only text, PNG, JPEG, GIF, WebP and PDF can be attached)"),
    ("too-large-for-anthropic", "termchat: big.png is 4 MB; anthropic takes images up to "
                                "3.7 MB (5 MB once base64-encoded)"),
    ("stdin-twice", "termchat: -a - (stdin as a file) can be given only once"),
    ("hostile-name", "termchat: cannot attach evil.txt: no such file"),
])
def test_a_refused_attachment_is_one_line_exit_2_and_nothing_is_sent(
        results: dict[str, Result], case: str, line: str) -> None:
    result = results[case]
    assert (result.run.returncode, result.stderr) == (2, [line])
    assert result.requests == []
    assert result.run.stdout == b""


def test_an_unreadable_file_is_refused_before_any_request(provider_server: ProviderServer,
                                                          tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a file whatever its mode")
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    secret.chmod(0)
    run = detached(["-a", "secret.txt", "hi"], environment(tmp_path, provider_server),
                   cwd=tmp_path)
    assert (run.returncode, lines_of(run.stderr)) == (
        2, ["termchat: cannot attach secret.txt: permission denied"])
    assert provider_server.requests == []


def test_a_refused_attachment_stores_nothing(tmp_path: Path,
                                             provider_server: ProviderServer) -> None:
    env = environment(tmp_path, provider_server)
    run = detached(["-a", "nope.txt", "hi"], env, cwd=tmp_path)
    assert run.returncode == 2
    with HistoryStore.open(tmp_path / "data" / "termchat" / "history.db") as store:
        assert store.last_conversation_id() is None


# --- refused by the provider --------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_provider_that_rejects_an_image_is_one_sentence_naming_it(
        results: dict[str, Result], provider: str) -> None:
    result = results[f"rejected-{provider}"]
    assert result.run.returncode == 1
    (line,) = result.stderr
    assert line.startswith("termchat: 127.0.0.1:")
    assert line.split(" ", 2)[2] == (
        "rejected the request with pic.png attached (400: image input is not supported by "
        f"this model); {provider}:{'gpt-4.1-mini' if provider == 'openai' else 'claude-sonnet-5-5'}"
        " there may not take images: send it without -a pic.png, or use a model that takes "
        "images.")
    assert len(result.requests) == 1


def test_a_context_length_error_with_attachments_says_to_attach_less(
        results: dict[str, Result]) -> None:
    result = results["too-long"]
    assert result.run.returncode == 1
    assert result.stderr == [
        "termchat: The input is too long for openai:gpt-4.1-mini's context window (This "
        "model's maximum context length is 128000 tokens); shorten it or start a new "
        "conversation, or attach less (doc.pdf, notes.md)."]

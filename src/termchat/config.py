"""Configuration: find and strictly validate the TOML file, and resolve a model name to a
provider, model id, endpoint and key."""

from __future__ import annotations

import math
import os
import re
import shlex
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from termchat.errors import ConfigError, MissingKeyError
from termchat.tools.config import ToolsConfig, parse_tools

PROVIDERS = ("openai", "anthropic")

# What `openai:` / `anthropic:` alone, or no configuration at all, resolves to.
DEFAULT_MODELS = {"openai": "gpt-4.1-mini", "anthropic": "claude-sonnet-5-5"}
KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}

DEFAULT_CONNECT_TIMEOUT = 10.0
# Between chunks, headers included: long enough for a reasoning model's silent thinking.
DEFAULT_IDLE_TIMEOUT = 180.0

_NUMBER = (int, float)
# `price` is a table of rates, a provider in genai-prices' data, or false.
_PRICE = (dict, str, bool)
_RATE_KEYS: dict[str, tuple[type, ...]] = {"input": _NUMBER, "output": _NUMBER,
                                           "cached": _NUMBER}
# Keys a model may set, and which of them `[defaults]` may set for every model.
_MODEL_KEYS: dict[str, tuple[type, ...]] = {
    "provider": (str,),
    "model": (str,),
    "base_url": (str,),
    "api_key": (str,),
    "api_key_env": (str,),
    "api_key_cmd": (str,),
    "system": (str,),
    "temperature": _NUMBER,
    "max_tokens": (int,),
    "connect_timeout": _NUMBER,
    "idle_timeout": _NUMBER,
    "max_retries": (int,),
    "price": _PRICE,
    "context_window": (int,),
}
_DEFAULT_KEYS = ("system", "temperature", "max_tokens", "connect_timeout", "idle_timeout",
                 "max_retries")
_TOP_KEYS: dict[str, tuple[type, ...]] = {
    "default_model": (str,),
    "history": (bool,),
    "defaults": (dict,),
    "models": (dict,),
    "tools": (dict,),
    "mcp": (dict,),
    "keys": (dict,),
    "theme": (str,),
}
# A model's `tools` choice is checked by termchat.tools.config; it is not a ModelConfig field.
_MODEL_TOOLS_KEY: dict[str, tuple[type, ...]] = {"tools": (list, bool)}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               dict: "a table"}


def config_path(explicit: str | None = None, env: Mapping[str, str] = os.environ) -> Path:
    """--config, then TERMCHAT_CONFIG, then $XDG_CONFIG_HOME/termchat/config.toml."""
    if explicit:
        return Path(explicit).expanduser()
    if env.get("TERMCHAT_CONFIG"):
        return Path(env["TERMCHAT_CONFIG"]).expanduser()
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"]) / "termchat" / "config.toml"
    import platformdirs

    return platformdirs.user_config_path("termchat") / "config.toml"


def data_dir(env: Mapping[str, str] = os.environ) -> Path:
    """$XDG_DATA_HOME/termchat, or the platform's user data directory."""
    if env.get("XDG_DATA_HOME"):
        return Path(env["XDG_DATA_HOME"]) / "termchat"
    import platformdirs

    return platformdirs.user_data_path("termchat")


@dataclass(frozen=True)
class Rates:
    """A model's own price from the config, in USD per million tokens; `cached` (input read
    from the provider's cache) is None when the config leaves it to the input rate."""

    input: Decimal
    output: Decimal
    cached: Decimal | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to talk to one model."""

    name: str
    provider: str
    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    api_key_cmd: str | None = None
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    # SDK retries happen only before a reply starts (connection errors, 408/409/429/5xx).
    max_retries: int = 2
    # None: priced from genai-prices' data when the server is known there (see pricing.py);
    # a provider name ("openai" or "openai:gpt-4o"): priced as that provider's model; False:
    # never priced.
    price: Rates | str | Literal[False] | None = None
    context_window: int | None = None
    source: str = "the environment"

    @property
    def label(self) -> str:
        """`provider:model`, the unambiguous name shown to the user."""
        return f"{self.provider}:{self.model}"

    def resolve_key(self, env: Mapping[str, str] = os.environ) -> str:
        """The API key, from the config, a command, or an environment variable."""
        if self.api_key:
            return self.api_key
        if self.api_key_cmd:
            return _run_key_command(self.name, self.api_key_cmd)
        var = self.api_key_env or KEY_ENV[self.provider]
        if env.get(var):
            return env[var]
        where = f" (model '{self.name}' in {self.source})" if self.source != "the environment" \
            else ""
        hint = " Any value works for a local server that needs no key." if self.base_url else ""
        raise MissingKeyError(
            f"No API key for {self.label}{where}: set {var}, or api_key_env / api_key_cmd "
            f"in the config file.{hint}"
        )

    def with_overrides(self, **changes: Any) -> ModelConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_key_cache: dict[str, str] = {}


def _run_key_command(name: str, command: str) -> str:
    if command in _key_cache:
        return _key_cache[command]
    import subprocess

    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"api_key_cmd for model '{name}' could not run ({exc}); "
                          "fix the command in the config file.") from None
    key = done.stdout.strip()
    if done.returncode != 0 or not key:
        why = f"exited with {done.returncode}" if done.returncode else "printed nothing"
        raise MissingKeyError(f"api_key_cmd for model '{name}' {why}; run it by hand to see why.")
    _key_cache[command] = key
    return key


@dataclass(frozen=True)
class Config:
    """A loaded, validated configuration (possibly empty when there is no file)."""

    path: Path
    exists: bool = False
    default_model: str | None = None
    history: bool = True
    defaults: dict[str, Any] = field(default_factory=dict)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    keys: dict[str, str] = field(default_factory=dict)
    """`[keys]`: binding id -> keys (see termchat.keys), for Textual's keymap."""
    theme: str | None = None
    """The TUI's Textual theme; the palette's theme choice is written back here."""
    warnings: tuple[str, ...] = ()

    def resolve_model(self, name: str | None = None,
                      env: Mapping[str, str] = os.environ) -> ModelConfig:
        """An alias from the file, or `provider:model`, or the default for this setup."""
        name = name or self.default_model or _env_default(env)
        if name is None:
            raise NotConfiguredError(self.path)
        if name in self.models:
            return self.models[name]
        provider, sep, model = name.partition(":")
        if sep and provider in PROVIDERS:
            return ModelConfig(
                name=name, provider=provider, model=model or DEFAULT_MODELS[provider],
                base_url=env.get(BASE_URL_ENV[provider]) or None,
                **_inheritable(self.defaults),
            )
        if sep:
            raise ConfigError(f"Unknown provider '{provider}' in model '{name}': use "
                              f"{' or '.join(p + ':MODEL' for p in PROVIDERS)}.")
        known = ", ".join(sorted(self.models)) or "none configured"
        raise ConfigError(f"Unknown model '{name}' (aliases in {self.path}: {known}); "
                          "name an alias or use provider:model, e.g. openai:gpt-4.1-mini.")


class NotConfiguredError(ConfigError):
    """No model and no key anywhere: the first-run situation."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"No model configured: set OPENAI_API_KEY or ANTHROPIC_API_KEY, "
                         f"or write {path}.")
        self.path = path


def _env_default(env: Mapping[str, str]) -> str | None:
    if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL"):
        return "openai:" + DEFAULT_MODELS["openai"]
    if env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_BASE_URL"):
        return "anthropic:" + DEFAULT_MODELS["anthropic"]
    return None


def _inheritable(defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in defaults.items() if k in _DEFAULT_KEYS}


def load_config(explicit: str | None = None, env: Mapping[str, str] = os.environ) -> Config:
    """Load and validate the config file; a missing default file is an empty config."""
    path = config_path(explicit, env)
    explicitly_named = bool(explicit or env.get("TERMCHAT_CONFIG"))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if explicitly_named:
            raise ConfigError(f"{path}: no such config file; check the path, or copy "
                              "config.example.toml there.") from None
        return Config(path=path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror}); "
                          "check its permissions.") from None
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error {_toml_where(exc)}; fix that line "
                          "(see config.example.toml).") from None
    return _validate(path, text, data, env)


def _toml_where(exc: tomllib.TOMLDecodeError) -> str:
    match = re.match(r"(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)", str(exc))
    if not match:
        return f"({exc})"
    return f"at line {match['line']}, column {match['col']}: {match['msg']}"


class _Checker:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, key: str, problem: str, fix: str) -> ConfigError:
        line = _line_of(self.text, key.rsplit(".", 1)[-1])
        at = f" (line {line})" if line else ""
        return ConfigError(f"{self.path}: {problem} '{key}'{at}; {fix}.")

    def check(self, table: Mapping[str, Any], allowed: Mapping[str, tuple[type, ...]],
              prefix: str) -> None:
        for key, value in table.items():
            dotted = f"{prefix}{key}"
            if key not in allowed:
                import difflib

                close = difflib.get_close_matches(key, list(allowed), n=1)
                fix = f"did you mean '{close[0]}'" if close else \
                    f"allowed keys here: {', '.join(allowed)}"
                raise self.fail(dotted, "unknown key", fix)
            types = allowed[key]
            is_bool = isinstance(value, bool)
            if (is_bool and bool not in types) or not isinstance(value, types):
                raise self.fail(dotted, "wrong type for", f"it must be {_type_name(types)}")


def _type_name(types: tuple[type, ...]) -> str:
    if types is _PRICE:
        return "a table of rates, a provider name, or false"
    return "a number" if float in types else _TYPE_NAMES[types[0]]


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", re.MULTILINE)
    match = pattern.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _validate(path: Path, text: str, data: dict[str, Any], env: Mapping[str, str]) -> Config:
    checker = _Checker(path, text)
    checker.check(data, _TOP_KEYS, "")
    tools = parse_tools(checker, data)
    defaults = data.get("defaults", {})
    checker.check(defaults, {k: _MODEL_KEYS[k] for k in _DEFAULT_KEYS}, "defaults.")
    _check_ranges(checker, defaults, "defaults.")

    models: dict[str, ModelConfig] = {}
    for name, table in data.get("models", {}).items():
        prefix = f"models.{name}."
        if not isinstance(table, dict):
            raise checker.fail(f"models.{name}", "wrong type for",
                               "each model must be a [models.NAME] table")
        checker.check(table, {**_MODEL_KEYS, **_MODEL_TOOLS_KEY}, prefix)
        _check_ranges(checker, table, prefix)
        if "provider" not in table:
            raise checker.fail(prefix + "provider", "missing",
                               f"set provider = \"openai\" or \"anthropic\" in [models.{name}]")
        if table["provider"] not in PROVIDERS:
            raise checker.fail(prefix + "provider", f"unknown provider '{table['provider']}' in",
                               "use \"openai\" (or any OpenAI-compatible server with base_url) "
                               "or \"anthropic\"")
        if ":" in name:
            raise checker.fail(f"models.{name}", "a model alias may not contain ':'",
                               "rename the table")
        provider = table["provider"]
        settings = {**_inheritable(defaults), **table}
        settings.pop("tools", None)
        settings.setdefault("model", DEFAULT_MODELS[provider])
        settings.setdefault("base_url", env.get(BASE_URL_ENV[provider]) or None)
        if "price" in table:
            settings["price"] = _price(checker, table["price"], prefix + "price")
        models[name] = ModelConfig(name=name, source=str(path), **settings)

    default_model = data.get("default_model")
    if default_model and default_model not in models:
        provider, sep, _ = default_model.partition(":")
        if not (sep and provider in PROVIDERS):
            raise checker.fail("default_model", f"unknown model '{default_model}' in",
                               f"name a [models.NAME] alias ({', '.join(models) or 'none yet'})"
                               " or provider:model")

    keys = data.get("keys", {})
    _check_keys(checker, keys)
    warnings: list[str] = []
    if any(m.api_key for m in models.values()) and _readable_by_others(path):
        warnings.append(f"warning: {path} holds an API key and other users can read it; "
                        f"run: chmod 600 {shlex.quote(str(path))}")
    return Config(path=path, exists=True, default_model=default_model,
                  history=data.get("history", True), defaults=dict(defaults), models=models,
                  tools=tools, keys=dict(keys), theme=data.get("theme"),
                  warnings=tuple(warnings))


_KEY_NAME = re.compile(r"[a-z0-9_]+(\+[a-z0-9_]+)*")


def _check_keys(checker: _Checker, table: Mapping[str, Any]) -> None:
    """`[keys]`: each a binding termchat has, given keys Textual can name (`ctrl+s`,
    `f2`, `alt+left`, several with commas)."""
    from termchat.keys import BINDINGS

    checker.check(table, dict.fromkeys(BINDINGS, (str,)), "keys.")
    for name, value in table.items():
        chosen = [key.strip() for key in value.split(",")]
        if not all(_KEY_NAME.fullmatch(key) for key in chosen):
            raise checker.fail(f"keys.{name}", "not a key list in",
                               'write keys as Textual names them, e.g. "ctrl+s" or '
                               '"f2,ctrl+e"')


def _check_ranges(checker: _Checker, table: Mapping[str, Any], prefix: str) -> None:
    temperature = table.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        raise checker.fail(prefix + "temperature", "out-of-range value for",
                           "use a number from 0 to 2")
    for key in ("max_tokens", "connect_timeout", "idle_timeout", "context_window"):
        value = table.get(key)
        if value is not None and value <= 0:
            raise checker.fail(prefix + key, "non-positive value for", "use a number above 0")
    retries = table.get("max_retries")
    if retries is not None and retries < 0:
        raise checker.fail(prefix + "max_retries", "negative value for", "use 0 or more")


def _price(checker: _Checker, value: dict[str, Any] | str | bool,
           key: str) -> Rates | str | Literal[False]:
    if value is True:
        raise checker.fail(key, "true is not a value for",
                           "give rates { input = 0.15, output = 0.60 } (USD per million "
                           "tokens), a provider such as \"openai\", or false")
    if value is False:
        return False
    if isinstance(value, str):
        provider, sep, model = value.partition(":")
        if not re.fullmatch(r"[\w.-]+", provider) or (sep and not model.strip()):
            raise checker.fail(key, f"bad provider name '{value}' in",
                               "name a provider in genai-prices' data, e.g. \"openai\" or "
                               "\"openai:gpt-4o\"")
        return value
    checker.check(value, _RATE_KEYS, key + ".")
    for rate in ("input", "output"):
        if rate not in value:
            raise checker.fail(f"{key}.{rate}", "missing",
                               f"set {rate} in USD per million tokens")
    for rate, number in value.items():
        if not math.isfinite(number):
            raise checker.fail(f"{key}.{rate}", "non-finite value for",
                               "use a number of USD per million tokens")
        if number < 0:
            raise checker.fail(f"{key}.{rate}", "negative value for", "use 0 or more")
    # str() first: the float 0.15 becomes Decimal('0.15'), not its binary expansion.
    rates = {rate: Decimal(str(number)) for rate, number in value.items()}
    return Rates(**rates)


def _readable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False


_THEME_LINE = re.compile(r"^theme\s*=.*$", re.MULTILINE)
_FIRST_TABLE = re.compile(r"^[ \t]*\[", re.MULTILINE)


def save_theme(path: Path, theme: str) -> None:
    """Write `theme = "NAME"` into the config file at `path` (created, only readable by its
    user, when there is none): the line replaced where it is, or added before the first
    table, the rest of the file (comments included) left as it was. Raises `ConfigError`."""
    import json
    import tempfile

    line = f"theme = {json.dumps(theme)}"
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        top = _FIRST_TABLE.search(text)
        head, tail = (text[:top.start()], text[top.start():]) if top else (text, "")
        if _THEME_LINE.search(head):
            head = _THEME_LINE.sub(lambda _: line, head, count=1)
        else:
            head = f"{head.rstrip()}\n{line}\n\n" if head.strip() else f"{line}\n\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent,
                                         delete=False, prefix=".config-") as out:
            out.write((head + tail).rstrip("\n") + "\n")
        os.chmod(out.name, mode)
        os.replace(out.name, path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot save the theme ({exc.strerror or exc}); the "
                          "choice lasts until you quit.") from None

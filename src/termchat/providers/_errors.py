"""Turn SDK and transport exceptions into termchat's typed errors, one sentence each.

Both SDKs share one exception hierarchy by name (APIStatusError, APIConnectionError, ...), so
one mapping serves both; it is given the SDK module to test against.
"""

from __future__ import annotations

import email.utils
import json
import math
import socket
import time
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import httpx2

from termchat.config import KEY_ENV, ModelConfig
from termchat.errors import (
    AuthError,
    BadRequestError,
    ConnectionFailedError,
    ConnectTimeoutError,
    ContextLengthError,
    MalformedStreamError,
    ModelNotFoundError,
    NothingArrivedError,
    OverloadedError,
    ProviderError,
    RateLimitedError,
    ServerError,
    StalledError,
    StreamError,
    StreamInterruptedError,
    redact,
)

_DEFAULT_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}
_API = {"openai": "OpenAI Chat Completions", "anthropic": "Anthropic Messages"}
_MESSAGE_LIMIT = 200
_CONTEXT_HINTS = ("context length", "context_length", "context window", "maximum context",
                  "prompt is too long", "too many tokens", "reduce the length", "too long")


def host_of(model: ModelConfig) -> str:
    if not model.base_url:
        return _DEFAULT_HOSTS[model.provider]
    parts = urlsplit(model.base_url)
    return parts.netloc or model.base_url


def map_error(exc: BaseException, sdk: ModuleType, model: ModelConfig, *, started: bool,
              secrets: list[str], received: bool = False) -> ProviderError:
    """The user-facing error for `exc`, anything an SDK or its transport raised; `started`
    says whether the reply's headers had arrived, `received` whether any of the reply had."""
    error = _classify(exc, sdk, model, started, received)
    if started:
        error.retryable = False
    # The key gone from everything that prints the error: str(), repr() and args.
    error.message = redact(error.message, secrets)
    error.args = (error.message,)
    return error


def ended_early(model: ModelConfig, *, received: bool, content_type: str) -> ProviderError:
    """The body ended cleanly but the provider never said the reply was finished; `received`
    says whether any of the reply arrived, `content_type` is the response's."""
    host = host_of(model)
    if received:
        return StreamInterruptedError(f"The reply from {host} ended before it finished (no "
                                      "finish reason); the partial reply is kept, try again.")
    media = content_type.split(";")[0].strip().lower()
    if media != "text/event-stream":
        what = media or "a body of no content type"
        return NothingArrivedError(
            f"{host} answered with {what} instead of an event stream, so no reply arrived: "
            f"base_url does not seem to point at the {_API[model.provider]} API (an "
            "OpenAI-compatible server's usually ends in /v1); check base_url.")
    return NothingArrivedError(
        f"{host} ended the reply without sending any of it. The conversation may be too long "
        "for this server's context window, or the server failed (its log says which); try a "
        "new conversation or a shorter prompt.")


def _classify(exc: BaseException, sdk: ModuleType, model: ModelConfig, started: bool,
              received: bool) -> ProviderError:
    host = host_of(model)
    if isinstance(exc, sdk.APIStatusError):
        return _from_status(exc, model, host)
    if _caused_by(exc, httpx2.DecodingError):
        return _malformed_error(exc, model, host, received)
    if isinstance(exc, sdk.APITimeoutError | httpx2.TimeoutException):
        if not started and _caused_by(exc, httpx2.ConnectTimeout):
            return _retryable(ConnectTimeoutError(
                f"Could not connect to {host} within {model.connect_timeout:g} s; check the "
                "network or base_url, or raise connect_timeout."))
        return _retryable(StalledError(
            f"{host} sent nothing for {model.idle_timeout:g} s, so the reply was stopped; try "
            "again, or raise idle_timeout in the config."))
    if isinstance(exc, sdk.APIConnectionError | httpx2.TransportError):
        if received:
            return StreamInterruptedError(
                f"The connection to {host} dropped mid-reply; the partial reply is kept, "
                "try again.")
        if started:
            return StreamInterruptedError(
                f"The connection to {host} dropped before any of the reply arrived; try "
                "again.")
        return _retryable(ConnectionFailedError(
            f"Cannot reach {host} ({_connect_reason(exc)}); check the network and base_url, "
            "then try again."))
    if isinstance(exc, sdk.APIError) and not isinstance(exc, sdk.APIResponseValidationError):
        # OpenAI reports an error event inside the stream as a bare APIError.
        return StreamError(f"{host} reported an error mid-reply ({_message_of(exc)}); "
                           "try again.")
    # Anything else the SDK or its transport raised is the server's doing: a body that does
    # not decode, an event that is not JSON, a shape the SDK could not read.
    return _malformed_error(exc, model, host, received)


def _malformed_error(exc: BaseException, model: ModelConfig, host: str,
                     received: bool) -> MalformedStreamError:
    where = "mid-reply; the partial reply is kept" if received else "instead of a reply"
    return MalformedStreamError(f"{host} sent something that is not a valid "
                                f"{_API[model.provider]} response ({_malformed(exc)}) {where}; "
                                "try again, and if it repeats, check base_url and the server.")


def _retryable(error: ProviderError) -> ProviderError:
    error.retryable = True
    return error


def _malformed(exc: BaseException) -> str:
    if _caused_by(exc, httpx2.DecodingError):
        return "its body does not decode as its content-encoding says"
    if _caused_by(exc, json.JSONDecodeError):
        return "an event that is not valid JSON"
    if _caused_by(exc, UnicodeDecodeError):
        return "text that is not UTF-8"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:_MESSAGE_LIMIT]}"


def _from_status(exc: Any, model: ModelConfig, host: str) -> ProviderError:
    error = _status_error(exc, model, host)
    status: int = exc.status_code
    should_retry = _header(exc, "x-should-retry")
    if should_retry == "true":
        error.retryable = True
    elif should_retry != "false":
        error.retryable = status in (408, 409, 429) or status >= 500
    return error


def _status_error(exc: Any, model: ModelConfig, host: str) -> ProviderError:
    status: int = exc.status_code
    message = _message_of(exc)
    kind = _error_type(exc)
    key_var = model.api_key_env or KEY_ENV[model.provider]
    lowered = f"{message} {_error_code(exc)}".lower()
    if status == 200:
        # Anthropic's mid-stream `error` event arrives with the stream's 200 status.
        what = "is overloaded" if kind == "overloaded_error" else f"reported {kind or 'an error'}"
        return StreamError(f"{host} {what} mid-reply ({message}); try again.")
    if status == 401:
        return AuthError(f"{host} rejected the API key for {model.label} (401); check "
                         f"{key_var} or api_key_cmd.")
    if status == 403:
        return AuthError(f"{host} refused access to {model.label} (403): the key lacks "
                         "permission for this model or organisation; use a key with access, or "
                         "another model.")
    if status == 404:
        return ModelNotFoundError(f"{host} does not know model '{model.model}' (404); check the "
                                  "model name (-m) or base_url.")
    if status == 413 or "context_length_exceeded" in lowered or (
            status == 400 and any(hint in lowered for hint in _CONTEXT_HINTS)):
        return ContextLengthError(f"The input is too long for {model.label}'s context window "
                                  f"({message}); shorten it or start a new conversation.")
    if status == 429:
        retry_after = _retry_after(exc)
        if "insufficient_quota" in lowered or "quota" in lowered:
            return RateLimitedError(f"{host} says the quota for this key is used up (429); "
                                    "check the account's plan and billing.", retry_after)
        wait = f"retry after {retry_after:g} s" if retry_after is not None else \
            "wait a moment and try again"
        return RateLimitedError(f"Rate limited by {host} (429); {wait}.", retry_after)
    if status == 529 or kind == "overloaded_error":
        return OverloadedError(f"{host} is overloaded ({status}); try again in a minute.")
    if status >= 500:
        return ServerError(f"{host} had a server error ({status}: {message}); try again "
                           "shortly.")
    if status == 408:
        return ServerError(f"{host} timed out waiting for the request (408); try again.")
    if status == 409:
        return ServerError(f"{host} reported a conflict (409: {message}); try again.")
    if status in (400, 422):
        return BadRequestError(f"{host} rejected the request ({status}: {message}); check "
                               "this model's settings (model, max_tokens, temperature) in the "
                               "config.")
    return BadRequestError(f"{host} refused the request ({status}: {message}); check base_url "
                           f"and the settings of {model.label} in the config.")


def _body_error(exc: Any) -> dict[str, Any]:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner
    return {}


def _message_of(exc: Any) -> str:
    """The server's own words, on one line and short enough to read (a proxy's HTML page
    would otherwise fill the screen)."""
    message = _body_error(exc).get("message")
    if not (isinstance(message, str) and message):
        message = str(getattr(exc, "message", exc))
    message = " ".join(message.split()).rstrip(".")
    return message if len(message) <= _MESSAGE_LIMIT else message[:_MESSAGE_LIMIT] + "…"


def _error_type(exc: Any) -> str:
    kind = _body_error(exc).get("type") or getattr(exc, "type", None)
    return kind if isinstance(kind, str) else ""


def _error_code(exc: Any) -> str:
    code = _body_error(exc).get("code") or getattr(exc, "code", None)
    return code if isinstance(code, str) else ""


def _header(exc: Any, name: str) -> str | None:
    response = getattr(exc, "response", None)
    value = response.headers.get(name) if response is not None else None
    return value.strip().lower() if isinstance(value, str) else None


def _retry_after(exc: Any) -> float | None:
    """The server's Retry-After in seconds (`retry-after-ms` first, as the SDKs read it)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = _header(exc, name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            seconds = when.timestamp() - time.time()
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _connect_reason(exc: BaseException) -> str:
    # The OS error sits at the bottom of the chain (SDK error <- httpx2 <- httpcore2 <- OSError);
    # its type says more than the wording, which differs between platforms.
    if _caused_by(exc, ConnectionRefusedError):
        return "connection refused"
    if _caused_by(exc, socket.gaierror):
        return "the host name does not resolve"
    text = ""
    seen: BaseException | None = exc
    while seen is not None:
        text += f" {seen}"
        seen = seen.__cause__ or seen.__context__
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service" in lowered or "nodename" in lowered or "resolve" in lowered \
            or "getaddrinfo" in lowered:
        return "the host name does not resolve"
    if "unreachable" in lowered:
        return "network unreachable"
    return "connection failed"

"""Typed, user-facing errors (each carries one sentence saying what happened and what to do)
and the exit codes they end a run with."""

from __future__ import annotations

import os
import signal
from typing import IO

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_HANGUP = 128 + signal.SIGHUP
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


class TermchatError(Exception):
    """An error a user can cause or meet; shown as one line, never as a traceback."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(TermchatError):
    """Bad command-line usage."""

    exit_code = EXIT_USAGE


class ConfigError(TermchatError):
    """A configuration problem: bad file, unknown model, missing key."""

    exit_code = EXIT_USAGE


class MissingKeyError(ConfigError):
    """No API key could be found for the chosen model."""


class ProviderError(TermchatError):
    """A failure talking to the provider. `kind` names the class of failure for the UI.

    `retryable` says that sending the same request again may work: it is only ever set for a
    failure before the reply started. `retry_after` is the wait the server asked for.
    """

    kind = "error"
    retryable = False
    retry_after: float | None = None


class AuthError(ProviderError):
    kind = "auth"


class ModelNotFoundError(ProviderError):
    kind = "model"


class RateLimitedError(ProviderError):
    kind = "rate-limit"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(ProviderError):
    kind = "server"


class OverloadedError(ServerError):
    kind = "overloaded"


class ConnectionFailedError(ProviderError):
    kind = "connection"


class ConnectTimeoutError(ConnectionFailedError):
    kind = "connect-timeout"


class StalledError(ProviderError):
    kind = "stalled"


class ContextLengthError(ProviderError):
    kind = "context-length"


class BadRequestError(ProviderError):
    kind = "bad-request"


class StreamError(ProviderError):
    """The provider sent an error event after the reply had started."""

    kind = "stream-error"


class StreamInterruptedError(ProviderError):
    """The stream ended (or the connection dropped) before the provider said it was finished."""

    kind = "interrupted"


class MalformedStreamError(StreamInterruptedError):
    """The server sent something that is not its provider's wire format (invalid JSON, a body
    that does not decode): the reply stops there, like an interrupted one."""

    kind = "malformed"


class NothingArrivedError(StreamInterruptedError):
    """The server answered, then ended the reply without sending any of it."""

    kind = "empty"


def redact(text: str, secrets: list[str]) -> str:
    """Remove every secret (and any long-enough fragment the server echoed) from `text`."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, "[redacted]")
        if len(secret) >= 16:
            # Servers often echo a masked key such as `sk-proj-...wxyz`: drop its visible head.
            text = text.replace(secret[:8], "[redacted]")
    return text


def silence(stream: IO[str]) -> None:
    """Point a broken stream's descriptor at /dev/null, so the flush at interpreter exit
    succeeds instead of printing "Exception ignored ... BrokenPipeError"."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)

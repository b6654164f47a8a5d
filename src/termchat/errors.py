"""Typed, user-facing errors: each carries one sentence saying what happened and what to do."""

from __future__ import annotations


class TermchatError(Exception):
    """An error a user can cause or meet; shown as one line, never as a traceback."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(TermchatError):
    """Bad command-line usage."""

    exit_code = 2


class ConfigError(TermchatError):
    """A configuration problem: bad file, unknown model, missing key."""

    exit_code = 2


class MissingKeyError(ConfigError):
    """No API key could be found for the chosen model."""


class ProviderError(TermchatError):
    """A failure talking to the provider. `kind` names the class of failure for the UI."""

    kind = "error"


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

"""Configuration from environment variables, read and validated once at cold start."""

from __future__ import annotations

import os


class ConfigurationError(RuntimeError):
    """The function is deployed without a setting it needs: a template problem, not a user error."""


def require_env(name: str) -> str:
    """The value of a required variable; fails fast, naming it, when it is missing or empty."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(
            f"environment variable {name} is not set: define it in template.yaml for this function"
        )
    return value


def int_env(name: str, default: int, *, minimum: int = 1) -> int:
    """An optional positive integer setting."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"environment variable {name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigurationError(f"environment variable {name} must be at least {minimum}, got {value}")
    return value

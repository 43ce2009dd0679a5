"""The errors the CLI reports: each one is a message for the user and exit status 1."""

from __future__ import annotations


class CliError(Exception):
    """A problem the user can fix: a missing setting, a bad path, a refused request."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(CliError):
    """No stack could be found, or what was found is incomplete."""


class ApiError(CliError):
    """The API answered with an error (``{"error": {"code", "message"}}``) or could not be reached."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status else "no response"
        return f"{self.code}: {self.message} ({where})"

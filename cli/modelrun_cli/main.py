"""Entry point (filled in by the CLI work)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    raise SystemExit("modelrun CLI: not yet implemented")

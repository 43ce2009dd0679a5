"""A per-invocation view of ``os.environ``.

Lambda gives every function its own environment; here all functions share one process, and ``os.environ`` is
process-wide. ``install()`` replaces ``os.environ`` with a mapping that, inside ``function_environment(...)``,
shows exactly that function's variables (and writes stay there), and outside shows the real environment. The
overlay lives in a ``ContextVar``, so concurrent invocations on different threads each see their own.

Threads a handler starts itself begin with an empty context and see the process environment; the handlers read
their settings at cold start, on the invoking thread, so this does not arise in practice.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

_overlay: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("modelrun_env", default=None)


class ScopedEnviron(MutableMapping[str, str]):
    """Delegates to the real environment unless an invocation's environment is active on this context."""

    def __init__(self, base: MutableMapping[str, str]) -> None:
        self._base = base

    @property
    def _current(self) -> MutableMapping[str, str]:
        overlay = _overlay.get()
        return self._base if overlay is None else overlay

    def __getitem__(self, key: str) -> str:
        return self._current[key]

    def __setitem__(self, key: str, value: str) -> None:
        self._current[key] = value

    def __delitem__(self, key: str) -> None:
        del self._current[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._current))

    def __len__(self) -> int:
        return len(self._current)

    def copy(self) -> dict[str, str]:
        return dict(self._current)

    def __repr__(self) -> str:
        scope = "invocation" if _overlay.get() is not None else "process"
        return f"ScopedEnviron({scope}, {len(self)} variables)"

    # os._Environ API used by the standard library (subprocess, os.environb users).
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            # Private names are this object's own; a half-built copy (copy.copy, unpickling) must not recurse here.
            raise AttributeError(name)
        return getattr(self._base, name)


_real_environ: MutableMapping[str, str] = os.environ


def install() -> None:
    """Replace ``os.environ`` (idempotent): code that looks it up at call time (boto3, Powertools) is scoped."""
    if not isinstance(os.environ, ScopedEnviron):
        # Deliberately a replacement, not a clear: the real environment stays underneath as the process scope.
        os.environ = ScopedEnviron(_real_environ)  # type: ignore[assignment]  # noqa: B003


def process_environ() -> Mapping[str, str]:
    return _real_environ


@contextlib.contextmanager
def function_environment(variables: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Run the body with exactly ``variables`` as the environment on this context."""
    install()
    scoped = dict(variables)
    token = _overlay.set(scoped)
    try:
        yield scoped
    finally:
        _overlay.reset(token)

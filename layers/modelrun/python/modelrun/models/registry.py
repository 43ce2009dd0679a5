"""Model discovery and caching: ``<root>/<name>/<version>/{model.onnx,model.json}`` to a loaded model.

A model is loaded once per (name, version) and cached for the life of the process (the Lambda execution
environment).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Final

from modelrun.errors import UnknownModel
from modelrun.models.onnx import SPEC_FILE, LoadedModel, default_threads, load_model
from modelrun.models.spec import NAME_PATTERN, VERSION_PATTERN, ModelSpec, load_spec

_VERSION_PARTS: Final = re.compile(r"(\d+)")


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that compares digit runs as numbers: ``"9" < "10"``, ``"1.2" < "1.10"``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in _VERSION_PARTS.split(version) if part != ""
    )


class ModelRegistry:
    """The models under ``root``, loaded lazily and cached.

    Thread-safe: concurrent :meth:`get` calls for the same model load it once.
    """

    def __init__(self, root: Path, *, intra_op_threads: int | None = None) -> None:
        self.root = Path(root)
        self.intra_op_threads = intra_op_threads if intra_op_threads is not None else default_threads()
        self._loaded: dict[tuple[str, str], LoadedModel] = {}
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Model names that have at least one version folder with a model.json, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if NAME_PATTERN.fullmatch(entry.name) and self._version_folders(entry.name)
        )

    def versions(self, name: str) -> list[str]:
        """Versions of ``name``, oldest first, numeric-aware (``"10"`` after ``"9"``).

        Raises:
            UnknownModel: no model of that name.
        """
        versions = self._version_folders(name) if NAME_PATTERN.fullmatch(name) else []
        if not versions:
            raise UnknownModel(
                f"unknown model {_quote(name)}; available models: {_listing(self.names())}",
                model=name,
                available=self.names(),
            )
        return versions

    def list_models(self) -> list[ModelSpec]:
        """Every version's spec, sorted by name then version.

        Raises:
            ModelConfigError: a model.json is invalid (fail fast rather than hide a broken model).
        """
        return [
            load_spec(self.root / name / version / SPEC_FILE)
            for name in self.names()
            for version in self.versions(name)
        ]

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The loaded model, loading it on first use.

        Args:
            name: model name (the ``<name>`` folder).
            version: a version, or None for the latest one.

        Raises:
            UnknownModel: no such name or version (the message lists what exists).
            ModelConfigError: model.json or model.onnx is invalid or they disagree.
        """
        if version is not None:
            cached = self._loaded.get((name, version))
            if cached is not None:
                return cached
        available = self.versions(name)
        if version is None:
            version = available[-1]
        elif version not in available:
            raise UnknownModel(
                f"model {_quote(name)} has no version {_quote(version)}; available versions: {_listing(available)}",
                model=name,
                version=version,
                available=available,
            )
        key = (name, version)
        cached = self._loaded.get(key)
        if cached is not None:
            return cached
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            cached = self._loaded.get(key)
            if cached is None:
                cached = load_model(self.root / name / version, intra_op_threads=self.intra_op_threads)
                self._loaded[key] = cached
        return cached

    def _version_folders(self, name: str) -> list[str]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = [
            entry.name
            for entry in folder.iterdir()
            if VERSION_PATTERN.fullmatch(entry.name) and (entry / SPEC_FILE).is_file()
        ]
        return sorted(found, key=version_key)


def _quote(text: str) -> str:
    return f'"{text}"'


def _listing(items: list[str]) -> str:
    return ", ".join(_quote(item) for item in items) if items else "none"

"""The model.json contract: what a model folder declares about its input, output and labels.

A model lives in ``<MODEL_ROOT>/<name>/<version>/`` as ``model.onnx`` plus ``model.json``. Every field of
model.json is validated here, before the ONNX graph is opened; a wrong field raises
:class:`~modelrun.errors.ModelConfigError` whose message starts with the file and names the field path
(``input.layout``, ``labels[3]``, ...). Unknown keys are rejected too, so a typo cannot silently fall back to
a default.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from modelrun.errors import ModelConfigError

NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""A model name: lower-case, safe as a folder name and in a URL."""

VERSION_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A model version: safe as a folder name (no separators, cannot be ``.`` or ``..``)."""

LAYOUTS: Final = ("NCHW", "NHWC")
COLOR_MODES: Final = {"L": 1, "RGB": 3, "BGR": 3}
DTYPES: Final = ("float32", "float16", "uint8")
RESAMPLES: Final = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
OUTPUT_TYPES: Final = ("probabilities", "logits")

DEFAULT_SCALE: Final = 1 / 255
DEFAULT_RESAMPLE: Final = "bilinear"
MAX_DEFAULT_TOP_K: Final = 5

_TOP_LEVEL_KEYS: Final = frozenset({"name", "version", "description", "input", "output", "labels", "top_k"})
_INPUT_KEYS: Final = frozenset({"name", "layout", "size", "color_mode", "dtype", "scale", "mean", "std", "resample"})
_OUTPUT_KEYS: Final = frozenset({"name", "type"})


@dataclass(frozen=True, slots=True)
class InputSpec:
    """How an image becomes the graph's input tensor.

    ``size`` is ``(height, width)``. For ``uint8`` models the tensor holds raw 0..255 pixels, so ``scale``,
    ``mean`` and ``std`` are the identity (1, zeros, ones).
    """

    name: str
    layout: str
    size: tuple[int, int]
    color_mode: str
    dtype: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resample: str

    @property
    def channels(self) -> int:
        """Number of colour channels of the tensor: 1 for ``L``, 3 for ``RGB`` and ``BGR``."""
        return COLOR_MODES[self.color_mode]

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one image's tensor, without the batch dimension."""
        if self.layout == "NCHW":
            return (self.channels, self.height, self.width)
        return (self.height, self.width, self.channels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layout": self.layout,
            "size": list(self.size),
            "color_mode": self.color_mode,
            "dtype": self.dtype,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "resample": self.resample,
        }


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """Which graph output holds the class scores, and whether they are probabilities or raw logits."""

    name: str
    type: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A validated model.json."""

    name: str
    version: str
    description: str | None
    input: InputSpec
    output: OutputSpec
    labels: tuple[str, ...]
    top_k: int

    @property
    def channels(self) -> int:
        return self.input.channels

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for API responses (same field names as model.json)."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            "labels": list(self.labels),
            "top_k": self.top_k,
        }


def load_spec(path: Path) -> ModelSpec:
    """Read and validate a model.json.

    Args:
        path: the model.json file, or the ``<name>/<version>`` folder holding it. ``name`` and ``version``
            must equal the folder names.

    Raises:
        ModelConfigError: the file is missing, not JSON, or a field is wrong.
    """
    if path.is_dir():
        path = path / "model.json"
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{source}: cannot read model.json ({exc})", source=source) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelConfigError(
            f"{source}: model.json is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            source=source,
        ) from exc
    folder = path.parent
    return parse_spec(data, source, expected_name=folder.parent.name, expected_version=folder.name)


def parse_spec(
    data: Any,
    source: str,
    *,
    expected_name: str | None = None,
    expected_version: str | None = None,
) -> ModelSpec:
    """Validate a decoded model.json.

    Args:
        data: the decoded JSON document.
        source: where it came from (a file path); starts every error message.
        expected_name: when given, ``name`` must equal it (the ``<name>`` folder).
        expected_version: when given, ``version`` must equal it (the ``<version>`` folder).

    Raises:
        ModelConfigError: a field is missing, of the wrong type, out of range, or unknown.
    """
    check = _Checker(source)
    doc = check.mapping(data, "model.json", _TOP_LEVEL_KEYS)

    name = check.string(doc, "name")
    if not NAME_PATTERN.fullmatch(name):
        check.fail("name", f"must match [a-z0-9][a-z0-9_-]{{0,63}}, got {_show(name)}")
    if expected_name is not None and name != expected_name:
        check.fail("name", f"must equal its folder name {_show(expected_name)}, got {_show(name)}")

    version = check.string(doc, "version")
    if not VERSION_PATTERN.fullmatch(version):
        check.fail("version", f"must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}, got {_show(version)}")
    if expected_version is not None and version != expected_version:
        check.fail("version", f"must equal its folder name {_show(expected_version)}, got {_show(version)}")

    description = check.string(doc, "description", required=False) if "description" in doc else None

    input_spec = _parse_input(check, doc)
    output_spec = _parse_output(check, doc)

    raw_labels = check.present(doc, "labels")
    if not isinstance(raw_labels, list) or not raw_labels:
        check.fail("labels", f"must be a non-empty list of strings, got {_show(raw_labels)}")
    seen: set[str] = set()
    for index, label in enumerate(raw_labels):
        if not isinstance(label, str) or not label:
            check.fail(f"labels[{index}]", f"must be a non-empty string, got {_show(label)}")
        if label in seen:
            check.fail(f"labels[{index}]", f"duplicates the label {_show(label)}")
        seen.add(label)
    labels = tuple(raw_labels)

    if "top_k" in doc:
        top_k = check.integer(doc["top_k"], "top_k")
        if not 1 <= top_k <= len(labels):
            check.fail("top_k", f"must be between 1 and the number of labels ({len(labels)}), got {top_k}")
    else:
        top_k = min(MAX_DEFAULT_TOP_K, len(labels))

    return ModelSpec(
        name=name,
        version=version,
        description=description,
        input=input_spec,
        output=output_spec,
        labels=labels,
        top_k=top_k,
    )


def _parse_input(check: _Checker, doc: dict[str, Any]) -> InputSpec:
    section = check.mapping(check.present(doc, "input"), "input", _INPUT_KEYS)
    name = check.string(section, "name", prefix="input.")
    layout = check.choice(section, "layout", LAYOUTS, prefix="input.")
    color_mode = check.choice(section, "color_mode", tuple(COLOR_MODES), prefix="input.")
    dtype = check.choice(section, "dtype", DTYPES, prefix="input.")
    channels = COLOR_MODES[color_mode]

    raw_size = check.present(section, "size", prefix="input.")
    if not isinstance(raw_size, list) or len(raw_size) != 2:
        check.fail("input.size", f"must be [height, width], got {_show(raw_size)}")
    height = check.integer(raw_size[0], "input.size[0]", minimum=1)
    width = check.integer(raw_size[1], "input.size[1]", minimum=1)

    if dtype == "uint8":
        for key in ("scale", "mean", "std"):
            if key in section:
                check.fail(f"input.{key}", 'does not apply to dtype "uint8" (the tensor holds raw 0..255 pixels)')
        scale = 1.0
        mean: tuple[float, ...] = (0.0,) * channels
        std: tuple[float, ...] = (1.0,) * channels
    else:
        scale = check.number(section["scale"], "input.scale") if "scale" in section else DEFAULT_SCALE
        if scale <= 0:
            check.fail("input.scale", f"must be greater than 0, got {_show(section['scale'])}")
        mean = check.numbers(section, "mean", channels, color_mode) if "mean" in section else (0.0,) * channels
        std = check.numbers(section, "std", channels, color_mode) if "std" in section else (1.0,) * channels
        for index, value in enumerate(std):
            if value <= 0:
                check.fail(f"input.std[{index}]", f"must be greater than 0, got {_show(section['std'][index])}")

    resample = check.choice(section, "resample", RESAMPLES, prefix="input.", default=DEFAULT_RESAMPLE)
    return InputSpec(
        name=name,
        layout=layout,
        size=(height, width),
        color_mode=color_mode,
        dtype=dtype,
        scale=scale,
        mean=mean,
        std=std,
        resample=resample,
    )


def _parse_output(check: _Checker, doc: dict[str, Any]) -> OutputSpec:
    section = check.mapping(check.present(doc, "output"), "output", _OUTPUT_KEYS)
    name = check.string(section, "name", prefix="output.")
    kind = check.choice(section, "type", OUTPUT_TYPES, prefix="output.")
    return OutputSpec(name=name, type=kind)


class _Checker:
    """Field checks that raise ModelConfigError with the source and the field path in the message."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> NoReturn:
        raise ModelConfigError(f"{self.source}: {field} {problem}", source=self.source, field=field)

    def mapping(self, value: Any, field: str, allowed: frozenset[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, f"must be a JSON object, got {_show(value)}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            where = "" if field == "model.json" else f"{field}."
            self.fail(
                f"{where}{unknown[0]}",
                f"is not a known key (known keys: {', '.join(sorted(allowed))})",
            )
        return value

    def present(self, section: dict[str, Any], key: str, *, prefix: str = "") -> Any:
        if key not in section:
            self.fail(f"{prefix}{key}", "is required")
        return section[key]

    def string(self, section: dict[str, Any], key: str, *, prefix: str = "", required: bool = True) -> str:
        value = self.present(section, key, prefix=prefix)
        if not isinstance(value, str) or (required and not value):
            self.fail(f"{prefix}{key}", f"must be a non-empty string, got {_show(value)}")
        return value

    def choice(
        self,
        section: dict[str, Any],
        key: str,
        options: tuple[str, ...],
        *,
        prefix: str = "",
        default: str | None = None,
    ) -> str:
        if default is not None and key not in section:
            return default
        value = self.present(section, key, prefix=prefix)
        if value not in options:
            self.fail(f"{prefix}{key}", f"must be {_one_of(options)}, got {_show(value)}")
        return str(value)

    def integer(self, value: Any, field: str, *, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"must be an integer, got {_show(value)}")
        if minimum is not None and value < minimum:
            self.fail(field, f"must be at least {minimum}, got {value}")
        return value

    def number(self, value: Any, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(field, f"must be a finite number, got {_show(value)}")
        return float(value)

    def numbers(self, section: dict[str, Any], key: str, channels: int, color_mode: str) -> tuple[float, ...]:
        field = f"input.{key}"
        value = section[key]
        if not isinstance(value, list) or len(value) != channels:
            self.fail(
                field,
                f"must be a list of {channels} number(s), one per channel of color_mode {_show(color_mode)}, "
                f"got {_show(value)}",
            )
        return tuple(self.number(item, f"{field}[{index}]") for index, item in enumerate(value))


def _show(value: Any) -> str:
    """A value as it would appear in JSON, shortened for error messages."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_of(options: tuple[str, ...]) -> str:
    quoted = [f'"{option}"' for option in options]
    if len(quoted) == 2:
        return f"{quoted[0]} or {quoted[1]}"
    return "one of " + ", ".join(quoted)

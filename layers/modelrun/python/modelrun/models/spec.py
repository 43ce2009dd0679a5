"""The model.json contract: what a model folder declares about its task, input, transforms, output and labels.

A model lives in ``<MODEL_ROOT>/<name>/<version>/`` as ``model.onnx`` plus ``model.json``. Every field of
model.json is validated here, before the ONNX graph is opened; a wrong field raises
:class:`~modelrun.errors.ModelConfigError` whose message starts with the file and names the field path
(``input.layout``, ``transforms[2].size``, ``labels[3]``, ...). Unknown keys are rejected too, so a typo cannot
silently fall back to a default. The ``output`` section is validated by the task's decoder
(:func:`modelrun.decoders.decoder_for`), and the flat ``input`` shorthand expands to the equivalent transforms, so
the rest of the platform only ever sees transforms.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn

from modelrun.decoders import TASKS, decoder_for
from modelrun.errors import ModelConfigError
from modelrun.models.fields import one_of, show
from modelrun.transforms.steps import (
    COLOR_MODES,
    DEFAULT_COLOR_MODE,
    DEFAULT_RESAMPLE,
    DEFAULT_SCALE,
    DTYPES,
    LAYOUTS,
    RESAMPLES,
    Color,
    Dtype,
    Layout,
    Normalize,
    Origin,
    Resize,
    Step,
    parse_steps,
)

NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""A model name: lower-case, safe as a folder name and in a URL."""

VERSION_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A model version: safe as a folder name (no separators, cannot be ``.`` or ``..``)."""

CODE_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\.py")
"""A user code file: a plain Python file name in the model folder (no separators, no leading dot)."""

DEFAULT_TASK: Final = "classification"
FRAME_POLICIES: Final = ("first", "middle", "all")
"""What a multi-frame file means to the model: its first frame, its middle one, or every frame (one result each)."""
DEFAULT_FRAMES: Final = "first"

_TOP_LEVEL_KEYS: Final = frozenset(
    {"name", "version", "description", "task", "input", "transforms", "output", "labels", "top_k", "code", "frames"}
)
_INPUT_KEYS: Final = frozenset({"name", "layout", "size", "color_mode", "dtype", "scale", "mean", "std", "resample"})
_INPUT_NAME_ONLY: Final = frozenset({"name"})


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

    def steps(self) -> tuple[Step, ...]:
        """The transforms this shorthand stands for; their errors name the shorthand's fields (``input.size``)."""
        here = Origin("input")
        steps: list[Step] = [
            Color(self.color_mode, origin=Origin("input", (("mode", "color_mode"),))),
            Resize(size=self.size, resample=self.resample, origin=here),
        ]
        if self.dtype != "uint8":
            steps.append(Normalize(scale=self.scale, mean=self.mean, std=self.std, origin=here))
        steps += [Dtype(self.dtype, origin=here), Layout(self.layout, origin=here)]
        return tuple(steps)

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
class ModelSpec:
    """A validated model.json.

    Two specs are equal when they run the same model the same way: a flat ``input`` section and the transforms it
    expands to are the same spec (``input`` keeps the shorthand as written, for reference only).

    Attributes:
        task: one of :data:`modelrun.decoders.TASKS`.
        input_name: the graph input the transforms feed.
        transforms: the steps from image to input array (the shorthand's expansion when ``input`` was flat).
        output: the task decoder's frozen output config, or None when user code's ``postprocess`` replaces it.
        top_k: how many labels a classification reports; None for the other tasks.
        code: the user code file in the model folder, or None.
        input: the flat ``input`` shorthand when model.json used it, else None.
        frames: the frame policy for multi-frame files, one of :data:`FRAME_POLICIES`.
    """

    name: str
    version: str
    description: str | None
    task: str
    input_name: str
    transforms: tuple[Step, ...]
    output: Any
    labels: tuple[str, ...]
    top_k: int | None
    code: str | None = None
    input: InputSpec | None = field(default=None, compare=False)
    frames: str = DEFAULT_FRAMES

    @property
    def color_mode(self) -> str:
        """The colour mode the transforms convert to (RGB when they name none)."""
        color = next((step for step in self.transforms if isinstance(step, Color)), None)
        return color.mode if color is not None else DEFAULT_COLOR_MODE

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.color_mode]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for API responses, itself a valid model.json: the transforms always spelt out, the
        output as the task's decoder describes it."""
        shown: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "task": self.task,
            "input": {"name": self.input_name},
            "transforms": [step.to_dict() for step in self.transforms],
        }
        if self.output is not None:
            shown["output"] = decoder_for(self.task).describe(self.output)
        shown["labels"] = list(self.labels)
        if self.top_k is not None:
            shown["top_k"] = self.top_k
        if self.code is not None:
            shown["code"] = self.code
        shown["frames"] = self.frames
        return shown


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
        check.fail("name", f"must match [a-z0-9][a-z0-9_-]{{0,63}}, got {show(name)}")
    if expected_name is not None and name != expected_name:
        check.fail("name", f"must equal its folder name {show(expected_name)}, got {show(name)}")

    version = check.string(doc, "version")
    if not VERSION_PATTERN.fullmatch(version):
        check.fail("version", f"must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}, got {show(version)}")
    if expected_version is not None and version != expected_version:
        check.fail("version", f"must equal its folder name {show(expected_version)}, got {show(version)}")

    description = check.string(doc, "description", required=False) if "description" in doc else None

    task = check.choice(doc, "task", TASKS, default=DEFAULT_TASK)

    raw_labels = check.present(doc, "labels")
    if not isinstance(raw_labels, list) or not raw_labels:
        check.fail("labels", f"must be a non-empty list of strings, got {show(raw_labels)}")
    seen: set[str] = set()
    for index, label in enumerate(raw_labels):
        if not isinstance(label, str) or not label:
            check.fail(f"labels[{index}]", f"must be a non-empty string, got {show(label)}")
        if label in seen:
            check.fail(f"labels[{index}]", f"duplicates the label {show(label)}")
        seen.add(label)
    labels = tuple(raw_labels)

    shorthand: InputSpec | None = None
    if "transforms" in doc:
        section = check.mapping(check.present(doc, "input"), "input", _INPUT_NAME_ONLY, with_transforms=True)
        input_name = check.string(section, "name", prefix="input.")
        transforms = parse_steps(doc["transforms"], check.fail)
    else:
        shorthand = _parse_input(check, doc)
        input_name = shorthand.name
        transforms = shorthand.steps()

    code: str | None = None
    if "code" in doc:
        code = check.string(doc, "code")
        if not CODE_PATTERN.fullmatch(code):
            check.fail(
                "code", f'must be a Python file name in the model folder, like "transforms.py", got {show(code)}'
            )

    output, top_k = _parse_output(check, doc, task, labels, code)
    frames = check.choice(doc, "frames", FRAME_POLICIES, default=DEFAULT_FRAMES)

    return ModelSpec(
        name=name,
        version=version,
        description=description,
        task=task,
        input_name=input_name,
        transforms=transforms,
        output=output,
        labels=labels,
        top_k=top_k,
        code=code,
        input=shorthand,
        frames=frames,
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
        check.fail("input.size", f"must be [height, width], got {show(raw_size)}")
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
            check.fail("input.scale", f"must be greater than 0, got {show(section['scale'])}")
        mean = check.numbers(section, "mean", channels, color_mode) if "mean" in section else (0.0,) * channels
        std = check.numbers(section, "std", channels, color_mode) if "std" in section else (1.0,) * channels
        for index, value in enumerate(std):
            if value <= 0:
                check.fail(f"input.std[{index}]", f"must be greater than 0, got {show(section['std'][index])}")

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


def _parse_output(
    check: _Checker, doc: dict[str, Any], task: str, labels: tuple[str, ...], code: str | None
) -> tuple[Any, int | None]:
    """The task decoder's output config (None when absent next to user code) and, for classification, ``top_k``."""
    if "top_k" in doc and task != "classification":
        check.fail("top_k", f'applies to task "classification" only, not "{task}"')
    if "output" not in doc and code is not None:
        # User code's postprocess may replace the decoder; the load checks that it does.
        return None, None
    section = check.present(doc, "output")
    if task == "classification" and isinstance(section, dict):
        if "top_k" in section:
            check.fail("output.top_k", "is not a known key of output: top_k is a top-level field")
        if "top_k" in doc:
            section = {**section, "top_k": doc["top_k"]}
    config = decoder_for(task).parse_output(section, labels, check.fail)
    return config, getattr(config, "top_k", None)


class _Checker:
    """Field checks that raise ModelConfigError with the source and the field path in the message."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> NoReturn:
        raise ModelConfigError(f"{self.source}: {field} {problem}", source=self.source, field=field)

    def mapping(
        self, value: Any, field: str, allowed: frozenset[str], *, with_transforms: bool = False
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, f"must be a JSON object, got {show(value)}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            where = "" if field == "model.json" else f"{field}."
            if with_transforms:
                self.fail(f"{where}{unknown[0]}", 'does not go with "transforms": then input holds only "name"')
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
            self.fail(f"{prefix}{key}", f"must be a non-empty string, got {show(value)}")
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
            self.fail(f"{prefix}{key}", f"must be {one_of(options)}, got {show(value)}")
        return str(value)

    def integer(self, value: Any, field: str, *, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"must be an integer, got {show(value)}")
        if minimum is not None and value < minimum:
            self.fail(field, f"must be at least {minimum}, got {value}")
        return value

    def number(self, value: Any, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(field, f"must be a finite number, got {show(value)}")
        return float(value)

    def numbers(self, section: dict[str, Any], key: str, channels: int, color_mode: str) -> tuple[float, ...]:
        field = f"input.{key}"
        value = section[key]
        if not isinstance(value, list) or len(value) != channels:
            self.fail(
                field,
                f"must be a list of {channels} number(s), one per channel of color_mode {show(color_mode)}, "
                f"got {show(value)}",
            )
        return tuple(self.number(item, f"{field}[{index}]") for index, item in enumerate(value))

"""The contract between the prediction path and a task decoder, and the mask a decoder may return."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import numpy as np

from modelrun.transforms import Geometry

FailFn = Callable[[str, str], NoReturn]
"""Reports a wrong model.json field and does not return: ``fail("output.iou_threshold", "must be ...")``."""

Dim = int | str | None
"""One dimension of a graph output as ONNX Runtime reports it: a size, a symbolic name, or unknown."""


class TaskDecoder(Protocol):
    """Turns one image's graph outputs into its JSON-ready result for one task.

    A decoder is stateless: everything a model declares lives in the frozen config :meth:`parse_output` returns,
    which the caller keeps with the model and hands back to the other methods.
    """

    task: str

    def parse_output(self, section: Any, labels: tuple[str, ...], fail: FailFn) -> Any:
        """Validate model.json's ``output`` object for this task and return a frozen config.

        Raises:
            Whatever ``fail`` raises, called with the field path (``output.layout``) and the problem.
        """
        ...

    def output_names(self, config: Any) -> tuple[str, ...]:
        """The graph outputs this decoder reads (the caller fetches exactly these)."""
        ...

    def check_graph(
        self, config: Any, outputs: Mapping[str, Sequence[Dim]], labels: tuple[str, ...], fail: FailFn
    ) -> None:
        """At load: the named outputs exist in ``outputs`` (graph output name -> shape) and their static dims fit.

        Raises:
            Whatever ``fail`` raises, naming the field that disagrees with the graph.
        """
        ...

    def decode(
        self, outputs: Mapping[str, np.ndarray], config: Any, labels: tuple[str, ...], geometry: Geometry
    ) -> dict[str, Any]:
        """One image's outputs (batch dimension removed) -> its JSON-ready result.

        A segmentation result holds a :class:`Mask` under ``"mask"``; the caller inlines or stores it.

        Raises:
            ModelConfigError: an output whose dynamic shape turned out not to fit the config.
        """
        ...

    def describe(self, config: Any) -> dict[str, Any]:
        """The output config as ``GET /models`` shows it (JSON-ready)."""
        ...


@dataclass(frozen=True, slots=True)
class Mask:
    """A segmentation mask as an indexed PNG: palette mode, each pixel's value is its class index."""

    png: bytes
    width: int
    height: int

    def inline(self) -> dict[str, Any]:
        """The mask embedded in a JSON result, base64-encoded."""
        return {
            "format": "png",
            "width": self.width,
            "height": self.height,
            "encoding": "base64",
            "data": base64.b64encode(self.png).decode("ascii"),
        }

    def stored(self, key: str) -> dict[str, Any]:
        """The mask as a JSON result refers to it once the caller stored the PNG under ``key``."""
        return {"format": "png", "width": self.width, "height": self.height, "s3_key": key}

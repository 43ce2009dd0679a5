"""The one door for a model's own Python code: ``"code": "transforms.py"`` in model.json.

Model folders are trusted code shipped by the deployer in the models layer, never taken from a request; the file is
imported once, when the model loads, under a module name of its own (two models' ``transforms.py`` never share a
module). It defines ``preprocess(image, spec)``, ``postprocess(outputs, spec, geometry)`` or both. Anything wrong
with the file fails the load as :class:`~modelrun.errors.ModelConfigError` naming the file and line; an exception
from one of its functions while predicting one image is :class:`~modelrun.errors.ModelCodeError` for that image,
with the traceback logged and never returned.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final, NoReturn

from modelrun.errors import ModelCodeError, ModelConfigError

logger = logging.getLogger(__name__)

FUNCTIONS: Final = {"preprocess": ("image", "spec"), "postprocess": ("outputs", "spec", "geometry")}
"""Each function user code may define, with the parameters it is called with (positionally)."""

_MODULE_PREFIX: Final = "modelrun_user_code"
_counter = itertools.count(1)


@dataclass(frozen=True)
class UserCode:
    """A model's imported code file and the functions it defines (None where it defines none)."""

    path: Path
    module: ModuleType
    preprocess: Callable[..., Any] | None
    postprocess: Callable[..., Any] | None

    def call(self, function: str, *args: Any) -> Any:
        """Call ``preprocess`` or ``postprocess`` for one image.

        Raises:
            ModelCodeError: the function raised; the message has the exception's type and message, the traceback
                goes to the log only.
        """
        target = self.preprocess if function == "preprocess" else self.postprocess
        assert target is not None, f"{self.path.name} defines no {function}"  # callers check before calling
        try:
            return target(*args)
        except Exception as exc:
            logger.exception("model code raised", extra={"file": str(self.path), "function": function})
            raise ModelCodeError(
                f"{function} in {self.path.name} raised {type(exc).__name__}: {_first_line(exc)}",
                file=self.path.name,
                function=function,
                exception=type(exc).__name__,
            ) from exc

    def fail(self, function: str, problem: str) -> ModelCodeError:
        """The error for a ``function`` whose result for one image cannot be used."""
        return ModelCodeError(f"{function} in {self.path.name} {problem}", file=self.path.name, function=function)


def load_user_code(path: Path) -> UserCode:
    """Import the file at ``path`` once and check the functions it defines.

    Raises:
        ModelConfigError: the file is missing, does not import (syntax error, import error, any exception at import
            time: the message gives the line in the file), defines neither function, or defines one that cannot be
            called with its documented parameters. The error's field is ``code``.
    """
    source = str(path)
    if not path.is_file():
        _fail(source, f"{source}: the code file named by model.json's code is missing")
    module_name = f"{_MODULE_PREFIX}_{next(_counter)}_{path.parent.parent.name}_{path.parent.name}".replace("-", "_")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        _fail(source, f"{source}: cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs, as a normal import is: dataclasses and pickling look classes up by module name.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        line = exc.lineno if exc.lineno is not None else "?"
        _fail(source, f"{source}, line {line}: syntax error: {exc.msg}", exc)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        _fail(
            source,
            f"{source}, line {_line_in(exc, path)}: importing it raised {type(exc).__name__}: {_first_line(exc)}",
            exc,
        )

    functions: dict[str, Callable[..., Any] | None] = {}
    for name, parameters in FUNCTIONS.items():
        function = getattr(module, name, None)
        if function is not None:
            _check_signature(source, name, function, parameters)
        functions[name] = function
    if not any(functions.values()):
        _fail(source, f"{source}: defines neither preprocess(image, spec) nor postprocess(outputs, spec, geometry)")
    return UserCode(path=path, module=module, preprocess=functions["preprocess"], postprocess=functions["postprocess"])


def _check_signature(source: str, name: str, function: Any, parameters: tuple[str, ...]) -> None:
    wanted = f"{name}({', '.join(parameters)})"
    code = getattr(function, "__code__", None)
    where = f"{source}, line {code.co_firstlineno}" if code is not None else source
    if not callable(function):
        _fail(source, f"{where}: {name} must be a function {wanted}, got {type(function).__name__}")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # a callable Python cannot describe (a builtin): calling it will tell
    try:
        signature.bind(*parameters)
    except TypeError:
        _fail(source, f"{where}: {name}{signature} must take {len(parameters)} parameters: {wanted}")


def _line_in(exc: BaseException, path: Path) -> int | str:
    """The line of the last traceback frame inside the user's file (where their code went wrong)."""
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if Path(frame.filename) == path]
    return lines[-1] if lines and lines[-1] is not None else "?"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "(no message)"


def _fail(source: str, message: str, cause: BaseException | None = None) -> NoReturn:
    raise ModelConfigError(message, source=source, field="code") from cause

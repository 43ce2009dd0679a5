"""The whole stack in local mode, once per test session, on a free port.

Integration tests run in their own pytest process (see the Makefile): moto keeps its state per process, and a
unit test's ``mock_aws`` would reset the backends under the running stack.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from modelrun_local.runtime import LocalRuntime
from tests.modelfactory import make_model

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "digits"
API_KEY = "integration-test-key"
# Two more tenants with keys of their own (the default tenant's is API_KEY): tests/integration/test_tenants.py.
TENANTS = ("tenant-a", "tenant-b")
# Small limits so the oversized-image tests send little data; the defaults are tested in unit tests.
MAX_IMAGE_BYTES = 512 * 1024
MAX_IMAGE_PIXELS = 4_000_000


# Grey 16x16, four quadrant classes (the brightest quadrant wins), every frame of a multi-frame DICOM file.
DICOM_MODEL = "quadrants-dicom"

# The user-code model's preprocess refuses images of this width, so a test can make it fail on one image.
PICKY_WIDTH = 13
PICKY_CODE = f"""
import numpy as np


def preprocess(image, spec):
    if image.width == {PICKY_WIDTH}:
        raise ValueError("images {PICKY_WIDTH} pixels wide are not accepted")
    pixels = np.asarray(image.convert("RGB").resize((16, 16)), dtype=np.float32) / 255
    return pixels.transpose(2, 0, 1)
"""


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repo's models plus four a user could bring: NHWC RGB, a fixed batch of 1, one with its own
    ``preprocess`` in a transforms.py (refusing images PICKY_WIDTH pixels wide), and DICOM_MODEL."""
    root = tmp_path_factory.mktemp("models")
    for name in ("digits", "shapes", "cells", "ct"):
        shutil.copytree(REPO / "models" / name, root / name)
    make_model(root, name="colours-nhwc", layout="NHWC", color_mode="RGB", size=(12, 12))
    make_model(root, name="quadrants-b1", layout="NCHW", color_mode="L", size=(16, 16), batch=1, classes=4)
    make_model(root, name=DICOM_MODEL, color_mode="L", size=(16, 16), classes=4, frames="all")
    picky = make_model(root, name="picky", color_mode="RGB", size=(16, 16), code="transforms.py")
    (picky / "transforms.py").write_text(PICKY_CODE, encoding="utf-8")
    return root


# tests/integration/test_timeouts.py needs PredictBatchFunction to time out in seconds, not the template's 300: it runs
# in a pytest process of its own (see the Makefile) with this variable set, on a stack of its own.
SHORT_TIMEOUT_VARIABLE = "MODELRUN_TEST_PREDICT_BATCH_TIMEOUT"


def short_timeout_overrides() -> dict[str, str]:
    seconds = os.environ.get(SHORT_TIMEOUT_VARIABLE)
    return {"PredictBatchTimeout": seconds} if seconds else {}


@pytest.fixture(scope="session")
def stack(models_dir: Path) -> Iterator[LocalRuntime]:
    runtime = LocalRuntime(
        port=0,
        aws_port=0,
        ws_port=0,
        api_key=API_KEY,
        models_dir=models_dir,
        parameter_overrides={
            "MaxImageBytes": str(MAX_IMAGE_BYTES),
            "MaxImagePixels": str(MAX_IMAGE_PIXELS),
            # Recovery retries at once: the backoff itself is unit-tested, here it would only add waiting.
            "RecoveryBackoffSeconds": "0",
            **short_timeout_overrides(),
        },
    )
    for name in TENANTS:
        runtime.add_tenant(name)
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()


class Api:
    """A tiny client for the local REST API, with the API key set."""

    def __init__(self, base: str, key: str = API_KEY) -> None:
        self.base = base
        self.key = key
        self.session = requests.Session()
        self.session.headers["x-api-key"] = key

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self.base + path, timeout=60, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base + path, timeout=60, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.delete(self.base + path, timeout=60, **kwargs)


@pytest.fixture(scope="session")
def api(stack: LocalRuntime) -> Api:
    return Api(stack.url)


@pytest.fixture(scope="session")
def tenant_apis(stack: LocalRuntime) -> dict[str, Api]:
    """A client per extra tenant (TENANTS), each with its own key."""
    return {name: Api(stack.url, stack.tenant_keys[name]) for name in TENANTS}


@pytest.fixture(scope="session")
def a(tenant_apis: dict[str, Api]) -> Api:
    """Tenant A's client (``tenant-a``), for the tests of what one tenant owns."""
    return tenant_apis["tenant-a"]


@pytest.fixture(scope="session")
def b(tenant_apis: dict[str, Api]) -> Api:
    """Tenant B's client (``tenant-b``), the other tenant those tests try A's resources with."""
    return tenant_apis["tenant-b"]


@pytest.fixture(scope="session")
def images_bucket(stack: LocalRuntime) -> str:
    assert stack.stack is not None
    return stack.stack.ref("ImagesBucket")


@pytest.fixture(scope="session")
def s3(stack: LocalRuntime) -> Any:
    return boto3.client("s3", region_name=stack.region)


@pytest.fixture(scope="session")
def aws_environment(stack: LocalRuntime) -> dict[str, str]:
    """The credentials the local AWS endpoint answers, as the environment a user exports them in."""
    return stack.aws_credentials.environment()


def outside_s3(stack: LocalRuntime) -> Any:
    """An S3 client of another process's kind: plain HTTP to the local AWS endpoint, with the stack's credentials."""
    credentials = stack.aws_credentials
    return boto3.client(
        "s3",
        region_name=stack.region,
        endpoint_url=stack.aws_endpoint,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
    )


def sample(label: int, nth: int = 0) -> Path:
    return sorted(SAMPLES.glob(f"digit-{label}-*.png"))[nth]


# -- everything the stack logs -----------------------------------------------------------------------------------
class _Tee(io.TextIOBase):
    """A text stream that forwards everything to ``target`` and, while ``capture`` is set, appends it there too.

    It stays usable after the test: a Powertools Logger made during the test keeps it as its stream."""

    def __init__(self, target: Any, capture: LogCapture) -> None:
        self.target = target
        self.capture: LogCapture | None = capture

    def write(self, text: str) -> int:
        if self.capture is not None:
            self.capture.append(text)
        return int(self.target.write(text))

    def flush(self) -> None:
        self.target.flush()


class LogCapture:
    """Every log line the functions and the local runtime emit while it is active, as text to search.

    Records are taken where every logger hands them to its handlers (``logging.Logger.handle``: loggers that do not
    propagate, as Powertools' do, included), each kept as its message, its arguments, its keyword fields, its
    exception and stack text, and what each of its logger's handlers would write (Powertools' JSON line with the
    keys it appends). Text printed to ``sys.stdout`` and ``sys.stderr`` (Powertools' metrics lines) is kept too.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._lock = threading.Lock()

    def append(self, text: str) -> None:
        with self._lock:
            self._parts.append(text)

    def record(self, logger: logging.Logger, record: logging.LogRecord) -> None:
        parts = [record.getMessage(), json.dumps(vars(record), default=repr)]
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            parts.append(record.stack_info)
        for handler in logger.handlers:
            try:
                parts.append(handler.format(record))
            except Exception as exc:  # a formatter that fails is itself worth seeing in the text
                parts.append(f"<{type(exc).__name__} formatting the record: {exc}>")
        self.append("\n".join(parts))

    @property
    def text(self) -> str:
        with self._lock:
            return "\n".join(self._parts)


@pytest.fixture
def function_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[LogCapture]:
    """What the stack logs during the test (see :class:`LogCapture`).

    The one place that knows how logs leave the functions: each Lambda sandbox is a process of its own whose output
    the runtime relays, line by line, as records of ``modelrun_local.functions.<function>``; those and the
    runtime's own records are taken from the logging module, and the standard streams are tapped too.
    """
    capture = LogCapture()
    original_handle = logging.Logger.handle

    def handle(self: logging.Logger, record: logging.LogRecord) -> None:
        capture.record(self, record)
        original_handle(self, record)

    monkeypatch.setattr(logging.Logger, "handle", handle)
    tees = [_Tee(sys.stdout, capture), _Tee(sys.stderr, capture)]
    monkeypatch.setattr(sys, "stdout", tees[0])
    monkeypatch.setattr(sys, "stderr", tees[1])
    try:
        yield capture
    finally:
        for tee in tees:
            tee.capture = None

"""Every sample event in events/ is a real-shaped payload its function answers as the file name says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import REPO, sample

EVENTS = REPO / "events"
FUNCTIONS = {"predict": "PredictFunction"}
CASES = sorted((folder, path) for folder in FUNCTIONS for path in (EVENTS / folder).glob("*.json"))


@pytest.fixture(scope="module", autouse=True)
def referenced_objects(s3: Any, images_bucket: str) -> None:
    """The object json-s3-reference.json names."""
    s3.put_object(Bucket=images_bucket, Key="uploads/digits/digit-7-0081.png", Body=sample(7).read_bytes())


@pytest.mark.parametrize(("folder", "path"), CASES, ids=[f"{folder}/{path.stem}" for folder, path in CASES])
def test_a_sample_event_gets_the_answer_its_name_promises(stack: LocalRuntime, folder: str, path: Path) -> None:
    assert stack.stack is not None
    function = stack.stack.function(FUNCTIONS[folder])
    invocation = function.invoke(json.loads(path.read_text()))
    assert not invocation.failed, invocation.payload
    status = invocation.payload["statusCode"]
    body = json.loads(invocation.payload["body"])
    if path.stem.startswith("bad-"):
        assert 400 <= status < 500
        assert body["error"]["code"]
    else:
        assert 200 <= status < 300, body
        if "label" in body:
            assert body["label"] == "7"


def test_every_function_with_events_has_a_folder_of_samples() -> None:
    folders = {path.name for path in EVENTS.iterdir() if path.is_dir()}
    assert folders == set(FUNCTIONS)

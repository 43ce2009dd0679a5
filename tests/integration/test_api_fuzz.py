"""The REST API fuzzed against openapi.yaml with schemathesis: whatever a client sends, inside the document's bounds or
outside them, the local stack answers with a status the operation documents, in the documented content type and
shape, and never with a 5xx.

Bounded and repeatable: a fixed number of examples per operation (fewer for the two that start executions), a fixed
seed with Hypothesis derandomized and its example database off; every request has a timeout, and the batches the
fuzzing started are waited for (with a deadline) before the test ends, so their work does not spill into later tests.
Half the batch routes' requests name a real, finished batch instead of a generated id, and half the dataset routes'
a real dataset and image (DELETE excepted: it would take the dataset from every later request), so the success
answers are checked too, not only 404s.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case

from modelrun.batches.faults import Faults
from modelrun.errors import InvalidRequest
from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import API_KEY, Api, sample
from tests.integration.helpers import TERMINAL, upload, wait_for

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "openapi.yaml"
SEED = 20261201
EXAMPLES = 50
# Each accepted POST /batches or retry starts a state machine execution: a few are enough to check the answers.
EXECUTION_EXAMPLES = 6
STARTS_EXECUTIONS = (("POST", "/batches"), ("POST", "/batches/{batch_id}/retry"))
REQUEST_TIMEOUT_S = 30
BATCHES_DEADLINE_S = 120
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance")


def fuzz_config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # The API key is always sent right (the auth below): a wrong one is one 403, checked in the coverage phase.
            "generation": {
                "mode": "all",
                "max-examples": EXAMPLES,
                "deterministic": True,
                "database": "none",
                "with-security-parameters": False,
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "auth": {"openapi": {"ApiKey": {"api_key": API_KEY}}},
            # Failure reports show next_token and Idempotency-Key as sent; only the API key is masked.
            "output": {"sanitization": {"keys-to-sanitize": ["x-api-key"], "sensitive-markers": ["x-api-key"]}},
            "operations": [
                {"include-name": f"{method} {path}", "generation": {"max-examples": EXECUTION_EXAMPLES}}
                for method, path in STARTS_EXECUTIONS
            ],
        }
    )


@pytest.fixture(scope="module")
def finished_batch(api: Api, s3: Any, images_bucket: str) -> str:
    """A closed batch with a prediction and a failure: its results, error report, retry and reconcile answer 2xx."""
    keys = upload(s3, images_bucket, {"fuzz/seven.png": sample(7).read_bytes(), "fuzz/not-an-image.png": b"text"})
    submitted = api.post("/batches", json={"images": [*keys, "fuzz/missing.png"], "chunk_size": 2})
    assert submitted.status_code == 202, submitted.text
    batch_id: str = submitted.json()["batch_id"]
    assert wait_for(api, batch_id)["status"] == "COMPLETED_WITH_ERRORS"
    return batch_id


@pytest.fixture(scope="module")
def real_dataset(api: Api, s3: Any, images_bucket: str) -> dict[str, str]:
    """A READY dataset with an image that has a prediction: its listings, images and history answer 200."""
    keys = upload(s3, images_bucket, {"fuzz/dataset/seven.png": sample(7).read_bytes()})
    created = api.post("/datasets", json={"name": "fuzz", "images": keys})
    assert created.status_code in (200, 201), created.text
    dataset_id: str = created.json()["dataset_id"]
    image_id: str = api.get(f"/datasets/{dataset_id}/images").json()["images"][0]["image_id"]
    assert api.post("/predictions", json={"dataset_id": dataset_id, "image_id": image_id}).status_code == 200
    return {"dataset_id": dataset_id, "image_id": image_id}


@pytest.fixture(scope="module")
def started_batches(api: Api) -> Iterator[set[str]]:
    """The batches the fuzzing starts; at the end, each must reach a terminal status within the deadline."""
    started: set[str] = set()
    yield started
    deadline = time.monotonic() + BATCHES_DEADLINE_S
    pending = set(started)
    while pending and time.monotonic() < deadline:
        pending = {batch_id for batch_id in pending if api.get(f"/batches/{batch_id}").json()["status"] not in TERMINAL}
        if pending:
            time.sleep(0.5)
    assert not pending, f"batches started by the fuzzing still not terminal after {BATCHES_DEADLINE_S} s: {pending}"


# Raw image bodies in the formats schemathesis has no sample file for are sent as the bytes it generates.
schemathesis.serializer.alias(["image/bmp", "image/jpg", "image/tiff", "image/x-ms-bmp"], "application/octet-stream")
schema = schemathesis.openapi.from_path(SPEC, config=fuzz_config())
PAGED = (
    "/batches/{batch_id}/results",
    "/batches/{batch_id}/errors",
    "/datasets",
    "/datasets/{dataset_id}/images",
    "/datasets/{dataset_id}/images/{image_id}/predictions",
    "/audit",
)
# What a paging token decodes to, and what a client that edits one could make it decode to: JSON objects with the
# fields of a real token (of another listing, another batch, the wrong types) or any others.
TOKEN_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=5,
)
TOKEN_OBJECTS = st.dictionaries(
    st.sampled_from(["batch_id", "item", "batch_status", "pk", "sk", "tenant", "at", "tenant_resource"])
    | st.text(max_size=10),
    TOKEN_VALUES,
    min_size=1,
    max_size=4,
)


def paging_token(document: dict[str, Any]) -> str:
    """A next_token as the API makes one (modelrun.http.paging): URL-safe base64 of compact JSON, unpadded."""
    return base64.urlsafe_b64encode(json.dumps(document, separators=(",", ":")).encode()).decode().rstrip("=")


@schema.hook("flatmap_query")
def tampered_paging_tokens(context: schemathesis.HookContext, query: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    """Half the paged listings' requests carry a token-shaped next_token: random strings never decode to JSON."""
    if context.operation is None or context.operation.path not in PAGED:
        return st.just(query)
    tampered = TOKEN_OBJECTS.map(lambda document: {**(query or {}), "next_token": paging_token(document)})
    return st.just(query) | tampered


def without_fault_injection(case: Case) -> None:
    """Faults the stack would accept become none: an injected timeout holds a chunk for PredictBatchFunction's whole
    300 s timeout. Refused faults stay, so their validation is still fuzzed."""
    body = case.body
    if (case.method, case.path) != ("POST", "/batches") or not isinstance(body, dict) or "faults" not in body:
        return
    try:
        Faults.parse(body["faults"], allowed=True)
    except InvalidRequest:
        return
    case.body = {**body, "faults": None}


def with_real_ids_half_the_time(case: Case, real: dict[str, str]) -> None:
    """Half the generated batch, dataset and image ids (chosen by the id's own checksum, so runs repeat) become real
    ones; never a DELETE's."""
    if case.method == "DELETE" or not case.path_parameters:
        return
    for name, value in real.items():
        generated = case.path_parameters.get(name)
        if isinstance(generated, str) and zlib.crc32(generated.encode("utf-8", "surrogatepass")) % 2 == 0:
            case.path_parameters = {**case.path_parameters, name: value}


@schema.parametrize()
def test_every_answer_is_documented_and_no_input_is_a_server_error(
    case: Case, stack: LocalRuntime, finished_batch: str, real_dataset: dict[str, str], started_batches: set[str]
) -> None:
    # Given a generated request, valid or not, that injects no fault the stack would honour
    without_fault_injection(case)
    with_real_ids_half_the_time(case, {"batch_id": finished_batch, **real_dataset})

    # When it is sent to the local stack
    response = case.call_and_validate(base_url=stack.url, timeout=REQUEST_TIMEOUT_S)

    # Then the checks passed (no 5xx, a documented status, content type and shape); what it started is waited for
    if (case.method, case.path) in STARTS_EXECUTIONS and response.status_code == 202:
        started_batches.add(response.json()["batch_id"])

"""POST /datasets bodies (hostile ones included), and the prediction history: what an entry keeps of a result, newest
first, per image and per tenant."""

from __future__ import annotations

from typing import Any

import pytest

from modelrun.batches.store import FAILED_OUTCOME, PREDICTED, Outcome
from modelrun.datasets.history import SINGLE, DatasetRun, PredictionHistory, summary
from modelrun.datasets.ids import image_id_of, new_dataset_id
from modelrun.datasets.requests import MAX_INLINE_IMAGES, DatasetRequest
from modelrun.errors import InvalidRequest
from modelrun.http.paging import encode_token
from tests.unit.datasets.conftest import A, B, DatasetsAws


@pytest.mark.parametrize(
    ("body", "source", "record"),
    [
        ({"name": " scans "}, None, {}),
        ({"name": "scans", "s3_prefix": "scans/"}, "s3_prefix", {"s3_prefix": "scans/"}),
        ({"name": "scans", "manifest": "l.csv", "images": None}, "manifest", {"manifest": "l.csv"}),
        ({"name": "scans", "images": ["a.png"]}, "images", {"images": "inline"}),
    ],
)
def test_a_valid_body_names_at_most_one_source(body: dict[str, Any], source: str | None, record: dict) -> None:
    parsed = DatasetRequest.parse(body)

    assert (parsed.name, parsed.source, parsed.source_record()) == ("scans", source, record)
    assert parsed.runs_async == (source in ("s3_prefix", "manifest"))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([], "JSON object"),
        ({}, '"name"'),
        ({"name": ""}, '"name"'),
        ({"name": "   "}, '"name"'),
        ({"name": 7}, '"name"'),
        ({"name": "n" * 129}, '"name"'),
        ({"name": "a\x00b"}, "control characters"),
        ({"name": "a\x1bb"}, "control characters"),
        ({"name": "a\u0085b"}, "control characters"),
        ({"name": "x", "s3_prefix": "a/", "manifest": "l.csv"}, "at most one"),
        ({"name": "x", "s3_prefix": ""}, "non-empty"),
        ({"name": "x", "s3_prefix": ["a/"]}, "non-empty"),
        ({"name": "x", "manifest": "k" * 1025}, "1024 bytes"),
        ({"name": "x", "images": []}, "list of 1 to"),
        ({"name": "x", "images": "a.png"}, "list of 1 to"),
        ({"name": "x", "images": ["a"] * (MAX_INLINE_IMAGES + 1)}, "list of 1 to"),
        ({"name": "x", "images": ["a.png", 3]}, "images[1]"),
        ({"name": "x", "images": [" "]}, "images[0]"),
        ({"name": "x", "dataset_id": "d-1"}, "unknown field"),
    ],
)
def test_a_bad_body_is_refused_saying_what_is_wrong(body: Any, says: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        DatasetRequest.parse(body)

    assert says in refused.value.message


def test_a_name_with_a_right_to_left_mark_but_no_control_character_is_a_name() -> None:
    assert DatasetRequest.parse({"name": "scans \u05d0 \u202e"}).name == "scans \u05d0 \u202e"


@pytest.mark.parametrize(
    ("result", "kept"),
    [
        ({"label": "7", "score": 0.99, "top_k": [{"label": "7", "score": 0.99}]}, {"label": "7", "score": 0.99}),
        ({"labels": [{"label": "cat", "score": 0.9}], "scores": {"cat": 0.9}}, {"labels": ["cat"]}),
        (
            {"detections": [{"label": "b", "score": 1, "box": [0, 0, 1, 1]}, {"label": "a"}], "count": 2},
            {"count": 2, "labels": ["a", "b"]},
        ),
        (
            {
                "classes": [
                    {"label": "bg", "pixels": 10, "fraction": 0.9},
                    {"label": "cell", "pixels": 0, "fraction": 0.0},
                ],
                "mask": {"s3_key": "results/x.png"},
            },
            {"classes": [{"label": "bg", "fraction": 0.9}]},
        ),
        (
            {"frames": [{"frame": 0, "label": "a", "score": 1.0}]},
            {"frames": [{"frame": 0, "label": "a", "score": 1.0}]},
        ),
        ({"anything": {"a model's own": "fields"}, "score": True}, {}),
    ],
)
def test_an_entry_keeps_a_summary_of_the_result(result: dict[str, Any], kept: dict[str, Any]) -> None:
    assert summary(result) == kept


def test_an_images_predictions_are_listed_newest_first_for_its_tenant_only(aws: DatasetsAws) -> None:
    history = PredictionHistory(aws.table)
    dataset_id = new_dataset_id()
    image_id = image_id_of(dataset_id, "tenants/tenant-a/1.png")
    run = DatasetRun(tenant=A.name, dataset_id=dataset_id, run_at="2026-01-01T00:00:00.000Z")
    outcomes = [
        Outcome(
            item=0, key="tenants/tenant-a/1.png", chunk=0, status=PREDICTED, result={"label": "3"}, image_id=image_id
        ),
        Outcome(
            item=1,
            key="tenants/tenant-a/1.png",
            chunk=0,
            status=FAILED_OUTCOME,
            error_code="invalid_image",
            error_message="not an image",
            image_id=image_id,
        ),
    ]
    history.record_outcomes(run, batch_id="b-1", model="digits", version="1", outcomes=outcomes)
    history.record_outcomes(run, batch_id="b-1", model="digits", version="1", outcomes=outcomes)  # a chunk again
    history.record_single(
        A, dataset_id=dataset_id, image_id=image_id, result={"prediction_id": "p-1", "model": "digits", "label": "7"}
    )

    entries, token = history.page(A, dataset_id=dataset_id, image_id=image_id, limit=10, token=None)
    theirs, _ = history.page(B, dataset_id=dataset_id, image_id=image_id, limit=10, token=None)

    assert [(entry["batch_id"], entry["status"]) for entry in entries] == [
        (SINGLE, PREDICTED),
        ("b-1", FAILED_OUTCOME),
        ("b-1", PREDICTED),
    ]
    assert entries[0]["summary"] == {"label": "7"}
    assert entries[0]["prediction_id"] == "p-1"
    assert entries[1]["error"] == {"code": "invalid_image", "message": "not an image"}
    assert token is None
    assert theirs == []


def test_a_history_token_of_another_image_is_refused(aws: DatasetsAws) -> None:
    history = PredictionHistory(aws.table)
    dataset_id = new_dataset_id()
    token = encode_token({"pk": f"tenant-a#{dataset_id}#i-other", "sk": "x"})

    with pytest.raises(InvalidRequest):
        history.page(A, dataset_id=dataset_id, image_id="i-000000000000000000000000", limit=5, token=token)


def test_a_dataset_run_travels_through_an_event_and_a_plain_batch_has_none() -> None:
    run = DatasetRun.start("tenant-a", "d-20260101T000000-000000000000")

    assert DatasetRun.from_event({"dataset": run.to_event()}) == run
    assert DatasetRun.from_event({"dataset": {}}) is None
    assert DatasetRun.from_event({}) is None

"""Upload triggers on the local stack: objects put into the images bucket fire the template's S3 events (moto's
notifications, delivered asynchronously as S3 does by modelrun_local.patches), and results appear under results/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import REPO, Api, outside_s3, sample
from tests.integration.helpers import all_results, upload, wait_for

EVENTS = REPO / "events" / "on_upload"
RESULT_TIMEOUT_S = 60.0


def read_json(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None
    return document


def wait_for_result(s3: Any, bucket: str, key: str, *, etag: str | None = None) -> dict[str, Any]:
    """The JSON object at ``key`` once it exists (and, with ``etag``, once it is about that version of the upload)."""
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    document = None
    while time.monotonic() < deadline:
        document = read_json(s3, bucket, key)
        if document is not None and (etag is None or document.get("etag") == etag):
            return document
        time.sleep(0.1)
    raise AssertionError(f"no result s3://{bucket}/{key} (etag {etag}) after {RESULT_TIMEOUT_S} s; last: {document}")


def put(s3: Any, bucket: str, key: str, body: bytes) -> str:
    etag: str = s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
    return etag


def on_upload(stack: LocalRuntime) -> Any:
    assert stack.stack is not None
    return stack.stack.function("OnUploadFunction")


def unique(name: str) -> str:
    return f"{uuid.uuid4().hex[:8]}-{name}"


# -- images ------------------------------------------------------------------------------------------------------


def test_an_image_copied_into_uploads_gets_its_prediction_under_results(s3: Any, images_bucket: str) -> None:
    # Given a seven
    key = f"uploads/digits/{unique(sample(7).name)}"

    # When it is put under uploads/digits/
    etag = put(s3, images_bucket, key, sample(7).read_bytes())

    # Then its prediction appears under results/ with the object's ETag
    result = wait_for_result(s3, images_bucket, f"results/{key}.json")
    assert (result["key"], result["model"], result["label"], result["etag"]) == (key, "digits", "7", etag)


def test_an_image_put_through_the_local_aws_endpoint_from_outside_is_predicted(
    stack: LocalRuntime, s3: Any, images_bucket: str
) -> None:
    # Given an S3 client of another process's kind: plain HTTP to the endpoint in .modelrun/local.json
    outside = outside_s3(stack)
    key = f"uploads/digits/{unique('outside.png')}"

    # When it uploads a seven
    put(outside, images_bucket, key, sample(7, 1).read_bytes())

    # Then the trigger fires as for an upload in-process
    assert wait_for_result(outside, images_bucket, f"results/{key}.json")["label"] == "7"


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_an_image_copied_with_the_aws_cli_is_predicted(
    stack: LocalRuntime, s3: Any, images_bucket: str, tmp_path: Path
) -> None:
    # Given a seven in a local folder, under a name with a space
    image = tmp_path / "cli seven.png"
    image.write_bytes(sample(7, 2).read_bytes())
    key = f"uploads/digits/{unique('cli seven.png')}"

    # When `aws s3 cp` copies it to the local endpoint
    endpoint = stack.outputs()["AwsEndpoint"]
    command = ["aws", "--endpoint-url", endpoint, "--region", stack.region, "s3", "cp", str(image)]
    environment = {**os.environ, **stack.aws_credentials.environment()}
    subprocess.run(
        [*command, f"s3://{images_bucket}/{key}"], check=True, capture_output=True, timeout=60, env=environment
    )

    # Then it is predicted
    assert wait_for_result(s3, images_bucket, f"results/{key}.json")["label"] == "7"


def test_a_key_with_spaces_plus_signs_and_non_ascii_characters_is_decoded(s3: Any, images_bucket: str) -> None:
    # Given a key that S3 events carry URL-encoded (spaces as +, a real + as %2B, é as %C3%A9)
    key = f"uploads/digits/{unique('scan of a seven (café) 7+数字.png')}"

    # When it is uploaded
    put(s3, images_bucket, key, sample(7).read_bytes())

    # Then the result sits at the mirrored, decoded key and names it
    result = wait_for_result(s3, images_bucket, f"results/{key}.json")
    assert (result["key"], result["label"]) == (key, "7")


def test_a_corrupt_upload_gets_an_invalid_image_result(s3: Any, images_bucket: str) -> None:
    key = f"uploads/digits/{unique('truncated.png')}"

    put(s3, images_bucket, key, sample(7).read_bytes()[:60])

    result = wait_for_result(s3, images_bucket, f"results/{key}.json")
    assert result["error"]["code"] == "invalid_image"
    assert result["key"] == key


def test_an_upload_for_an_unknown_model_gets_an_unknown_model_result(s3: Any, images_bucket: str) -> None:
    key = f"uploads/no-such-model/{unique('seven.png')}"

    put(s3, images_bucket, key, sample(7).read_bytes())

    result = wait_for_result(s3, images_bucket, f"results/{key}.json")
    assert result["error"]["code"] == "unknown_model"
    assert "digits" in result["error"]["message"]


def test_the_same_key_uploaded_again_with_new_content_is_predicted_again(s3: Any, images_bucket: str) -> None:
    # Given a seven uploaded and predicted
    key = f"uploads/digits/{unique('reused.png')}"
    put(s3, images_bucket, key, sample(7).read_bytes())
    first = wait_for_result(s3, images_bucket, f"results/{key}.json")

    # When a three replaces it under the same key
    etag = put(s3, images_bucket, key, sample(3, 2).read_bytes())

    # Then the result is replaced by a new prediction of the new content
    second = wait_for_result(s3, images_bucket, f"results/{key}.json", etag=etag)
    assert (first["label"], second["label"]) == ("7", "3")
    assert second["prediction_id"] != first["prediction_id"]


def test_the_same_event_delivered_twice_predicts_once(stack: LocalRuntime, s3: Any, images_bucket: str) -> None:
    # Given an uploaded seven whose own notification has been processed
    key = f"uploads/digits/{unique('twice.png')}"
    etag = put(s3, images_bucket, key, sample(7).read_bytes())
    notified = wait_for_result(s3, images_bucket, f"results/{key}.json")
    # ... and an S3 event for it as S3 would deliver it, with a sequencer of its own
    event = json.loads((EVENTS / "image-uploaded.json").read_text())
    event["Records"][0]["s3"]["object"].update(key=key, eTag=etag, sequencer=f"{uuid.uuid4().int % 16**18:018X}")

    # When that event is delivered twice
    first = on_upload(stack).invoke(event)
    after_first = wait_for_result(s3, images_bucket, f"results/{key}.json")
    second = on_upload(stack).invoke(event)

    # Then the first delivery predicted anew and the second replayed its outcome without predicting or writing
    assert not first.failed, first.payload
    assert not second.failed, second.payload
    assert after_first["prediction_id"] != notified["prediction_id"]
    assert first.payload == second.payload
    assert read_json(s3, images_bucket, f"results/{key}.json") == after_first


def test_writing_under_results_triggers_nothing(stack: LocalRuntime, s3: Any, images_bucket: str) -> None:
    # Given the function's invocation count once earlier deliveries have started (events wait in one first-in,
    # first-out queue: a sentinel's result arrives after every event queued before it was handed to the function)
    function = on_upload(stack)
    sentinel = f"uploads/digits/{unique('sentinel-before.png')}"
    put(s3, images_bucket, sentinel, sample(7).read_bytes())
    wait_for_result(s3, images_bucket, f"results/{sentinel}.json")
    before = function.invocations

    # When an image, a JSON-lines list and a CSV list are written under results/, then one more upload is made
    stem = unique("loop")
    for name, body in (("a.png", sample(7).read_bytes()), ("b.jsonl", b'"x.png"\n'), ("c.csv", b"x.png\n")):
        put(s3, images_bucket, f"results/uploads/digits/{stem}-{name}", body)
        put(s3, images_bucket, f"results/batches/{stem}-{name}", body)
    after = f"uploads/digits/{unique('sentinel-after.png')}"
    put(s3, images_bucket, after, sample(7).read_bytes())
    wait_for_result(s3, images_bucket, f"results/{after}.json")

    # Then only that last upload invoked the function, and nothing was written about the results/ objects
    assert function.invocations == before + 1
    listed = s3.list_objects_v2(Bucket=images_bucket, Prefix="results/results/")
    assert listed["KeyCount"] == 0


# -- lists of images under batches/ ------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "folder"), [(".jsonl", "batches/digits/"), (".csv", "batches/")])
def test_a_list_copied_under_batches_runs_a_batch_whose_predictions_are_right(
    api: Api, s3: Any, images_bucket: str, suffix: str, folder: str
) -> None:
    # Given six images outside uploads/ (so they trigger nothing themselves)
    prefix = f"upload-triggers/{unique('batch')}/"
    images = {f"{prefix}{sample(label).name}": sample(label).read_bytes() for label in (0, 1, 3, 4, 6, 7)}
    keys = upload(s3, images_bucket, images)
    body = "".join(json.dumps(key) + "\n" for key in keys) if suffix == ".jsonl" else "key\n" + "\n".join(keys)

    # When a list of them is copied under batches/ (with the model's folder, or none for the default model)
    list_key = f"{folder}{unique('list')}{suffix}"
    etag = put(s3, images_bucket, list_key, body.encode())

    # Then results/ names the batch it started, and that batch predicts every image right
    submitted = wait_for_result(s3, images_bucket, f"results/{list_key}.submitted.json")
    assert (submitted["key"], submitted["etag"], submitted["model"], submitted["total"]) == (
        list_key,
        etag,
        "digits",
        6,
    )
    assert api.get("/" + submitted["links"]["self"]).json()["batch_id"] == submitted["batch_id"]
    job = wait_for(api, submitted["batch_id"])
    assert job["status"] == "COMPLETED", job
    labels = {result["key"]: result["label"] for result in all_results(api, submitted["batch_id"])}
    assert labels == {key: key.rsplit("/", 1)[1].split("-")[1] for key in keys}


def test_a_list_naming_a_missing_model_gets_an_unknown_model_result(s3: Any, images_bucket: str) -> None:
    list_key = f"batches/no-such-model/{unique('list')}.csv"

    put(s3, images_bucket, list_key, b"upload-triggers/a.png\n")

    result = wait_for_result(s3, images_bucket, f"results/{list_key}.submitted.json")
    assert result["error"]["code"] == "unknown_model"


# -- the sample events -------------------------------------------------------------------------------------------

SAMPLE_EVENTS = sorted(EVENTS.glob("*.json"))


@pytest.fixture(scope="module")
def sample_objects(s3: Any, images_bucket: str) -> None:
    """The objects events/on_upload/ names, with their own notifications processed (so nothing races the test)."""
    images = {f"upload-samples/{sample(7, nth).name}": sample(7, nth).read_bytes() for nth in (0, 1)}
    upload(s3, images_bucket, images)
    objects = {
        "uploads/digits/digit-7-0081.png": sample(7).read_bytes(),
        "uploads/digits/scan of a seven (café) 7+.png": sample(7).read_bytes(),
        "uploads/digits/v1/digit-7-0081.png": sample(7).read_bytes(),
        "uploads/no-such-model/digit-7-0081.png": sample(7).read_bytes(),
        "batches/digits/sevens.jsonl": "".join(json.dumps(key) + "\n" for key in images).encode(),
        "batches/sevens.csv": ("key\n" + "\n".join(images) + "\n").encode(),
    }
    for key, body in objects.items():
        put(s3, images_bucket, key, body)
    for key in objects:
        suffix = ".json" if key.startswith("uploads/") else ".submitted.json"
        wait_for_result(s3, images_bucket, f"results/{key}{suffix}")


@pytest.mark.usefixtures("sample_objects")
@pytest.mark.parametrize("path", SAMPLE_EVENTS, ids=[path.stem for path in SAMPLE_EVENTS])
def test_a_sample_event_gets_the_outcome_its_name_promises(
    stack: LocalRuntime, s3: Any, images_bucket: str, path: Path
) -> None:
    # Given a sample S3 event (its bucket is the local stack's)
    event = json.loads(path.read_text())
    assert event["Records"][0]["s3"]["bucket"]["name"] == images_bucket

    # When the function is invoked with it
    invocation = on_upload(stack).invoke(event)

    # Then it succeeds with the outcome the file name promises, written where the outcome says
    assert not invocation.failed, invocation.payload
    (outcome,) = invocation.payload["outcomes"]
    if path.stem.startswith("ignored-"):
        assert "ignored" in outcome
        return
    assert read_json(s3, images_bucket, outcome["result_key"]) == outcome["result"]
    result = outcome["result"]
    if "unknown-model" in path.stem:
        assert result["error"]["code"] == "unknown_model"
    elif path.stem.startswith("image-"):
        assert result["label"] == "7"
    else:
        assert path.stem.startswith("list-")
        assert (result["status"], result["total"]) == ("QUEUED", 2)


def test_every_sample_event_is_covered_by_a_name_this_module_understands() -> None:
    assert SAMPLE_EVENTS
    assert all(path.stem.startswith(("image-", "list-", "ignored-")) for path in SAMPLE_EVENTS)

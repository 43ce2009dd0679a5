"""Upload triggers: decoding S3 event keys, routing keys to what they ask for, result names, processing one upload
(moto S3, DynamoDB tables from template.yaml, the demo digits model), the local runtime's S3 event records, and the
template wiring that a circular dependency would break."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest

from modelrun.aws.s3 import ImageStore
from modelrun.batches.submit import BatchSubmitter
from modelrun.errors import TransientFailure
from modelrun.images.decode import Limits
from modelrun.models.registry import ModelRegistry
from modelrun.predict import Predictor
from modelrun.uploads.triggers import (
    Ignored,
    ImageUpload,
    ListUpload,
    UploadedObject,
    UploadProcessor,
    batch_paths,
    decode_key,
    result_key,
    route,
)
from modelrun_local.patches import s3_record_as_sent_by_s3
from modelrun_local.template import load_yaml, references
from tests.batchfixtures import BUCKET, MODELS, SAMPLES, TEMPLATE, BatchAws
from tests.samtransform import transformed_template

EVENTS = Path(__file__).resolve().parents[3] / "events" / "on_upload"
PASS_MACHINE = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
ROLE = "arn:aws:iam::123456789012:role/modelrun-unit-state-machine"
SEVEN = SAMPLES / "digit-7-0081.png"


# -- decoding keys -----------------------------------------------------------------------------------------------


def test_a_plus_in_an_event_key_is_a_space() -> None:
    assert decode_key("uploads/digits/my+scan.png") == "uploads/digits/my scan.png"


def test_an_encoded_plus_in_an_event_key_is_a_plus() -> None:
    assert decode_key("uploads/digits/a%2Bb.png") == "uploads/digits/a+b.png"


def test_percent_encoded_utf_8_in_an_event_key_is_decoded_to_text() -> None:
    assert decode_key("uploads/digits/caf%C3%A9+%E6%95%B0%E5%AD%97.png") == "uploads/digits/café 数字.png"


def test_an_event_key_with_nothing_encoded_is_unchanged() -> None:
    assert decode_key("uploads/digits/digit-7-0081.png") == "uploads/digits/digit-7-0081.png"


@pytest.mark.parametrize(
    "key", ["uploads/digits/a b+c.png", "uploads/x/(1) é 数字 %41 ~!.png", "batches/a&b=c;d.csv", "uploads/a//b.png"]
)
def test_a_key_encoded_as_s3_encodes_it_decodes_back_to_itself(key: str) -> None:
    assert decode_key(quote_plus(key, safe="/")) == key


# -- routing -----------------------------------------------------------------------------------------------------


def test_an_image_under_a_model_folder_is_predicted_with_that_model() -> None:
    assert route("uploads/digits/scans/a.png") == ImageUpload("uploads/digits/scans/a.png", "digits", None)


def test_a_v_folder_right_after_the_model_pins_the_version() -> None:
    assert route("uploads/digits/v2/a.png") == ImageUpload("uploads/digits/v2/a.png", "digits", "2")


def test_a_file_named_like_a_version_is_a_file_not_a_version() -> None:
    assert route("uploads/digits/v2") == ImageUpload("uploads/digits/v2", "digits", None)


def test_a_folder_starting_with_v_and_a_letter_is_an_ordinary_folder() -> None:
    assert route("uploads/digits/vacation/a.png") == ImageUpload("uploads/digits/vacation/a.png", "digits", None)


def test_an_image_directly_under_uploads_uses_the_default_model() -> None:
    assert route("uploads/a.png") == ImageUpload("uploads/a.png", None, None)


@pytest.mark.parametrize("key", ["batches/digits/list.jsonl", "batches/digits/nightly/list.csv"])
def test_a_list_under_a_model_folder_starts_a_batch_with_that_model(key: str) -> None:
    assert route(key) == ListUpload(key, "digits", None)


def test_a_list_directly_under_batches_uses_the_default_model() -> None:
    assert route("batches/sevens.CSV") == ListUpload("batches/sevens.CSV", None, None)


def test_a_list_under_a_v_folder_pins_the_batch_version() -> None:
    assert route("batches/digits/v1/list.jsonl") == ListUpload("batches/digits/v1/list.jsonl", "digits", "1")


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("results/uploads/digits/a.png.json", "own outputs"),
        ("results/batches/list.jsonl.submitted.json", "own outputs"),
        ("uploads/digits/", "folder placeholder"),
        ("uploads/batches/run-1/a.png", "CLI stages"),
        ("uploads/manifests/run-1.jsonl", "CLI stages"),
        ("batches/digits/notes.txt", "only .jsonl and .csv"),
        ("jobs/b-1/manifest.json", "only uploads/"),
        ("batches-test/list.csv", "only uploads/"),
        ("scans/a.png", "only uploads/"),
    ],
)
def test_keys_outside_the_two_triggers_are_ignored_with_a_reason(key: str, reason: str) -> None:
    target = route(key)
    assert isinstance(target, Ignored)
    assert reason in target.reason


# -- result names ------------------------------------------------------------------------------------------------


def test_an_image_result_mirrors_the_upload_key_under_results() -> None:
    assert route("uploads/digits/a b.png").result_key == "results/uploads/digits/a b.png.json"  # type: ignore[union-attr]


def test_a_list_result_mirrors_the_list_key_under_results() -> None:
    expected = "results/batches/digits/l.csv.submitted.json"
    assert route("batches/digits/l.csv").result_key == expected  # type: ignore[union-attr]


def test_a_key_too_long_to_mirror_gets_a_hashed_result_name_within_s3s_limit() -> None:
    key = "uploads/digits/" + "é" * 500 + ".png"  # 1,019 bytes of UTF-8: fits S3, not with results/ and .json

    name = result_key(key, ".json")

    assert len(name.encode("utf-8")) <= 1024
    assert re.fullmatch(r"results/uploads/_long-keys/[0-9a-f]{64}\.json", name)


def test_a_list_upload_stands_for_the_post_batches_body_with_a_manifest() -> None:
    assert ListUpload("batches/digits/v1/l.csv", "digits", "1").batch_body() == {
        "manifest": "batches/digits/v1/l.csv",
        "model": "digits",
        "version": "1",
    }


def test_batch_links_are_paths_relative_to_the_api_url() -> None:
    assert batch_paths("b-1") == {
        "self": "batches/b-1",
        "results": "batches/b-1/results",
        "errors": "batches/b-1/errors",
    }


# -- processing one upload ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry(MODELS, intra_op_threads=1)


@pytest.fixture
def processor(aws: BatchAws, registry: ModelRegistry) -> UploadProcessor:
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(name="modelrun-unit-batch", definition=json.dumps(PASS_MACHINE), roleArn=ROLE)
    submitter = BatchSubmitter(
        store=aws.store,
        s3=aws.s3,
        sfn=sfn,
        registry=registry,
        bucket=BUCKET,
        state_machine_arn=machine["stateMachineArn"],
        default_model="digits",
    )
    predictor = Predictor(registry, Limits(), "digits")
    return UploadProcessor(predictor, ImageStore(aws.s3, {BUCKET}), submitter, aws.s3, BUCKET)


def uploaded(aws: BatchAws, key: str, body: bytes) -> UploadedObject:
    aws.put(key, body)
    etag = aws.s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
    return UploadedObject(bucket=BUCKET, key=key, etag=etag, sequencer="0062E99A88DC407460", size=len(body))


def process(processor: UploadProcessor, upload: UploadedObject) -> dict[str, Any]:
    target = processor.target(upload)
    assert not isinstance(target, Ignored)
    return processor.process(upload, target)


def written(aws: BatchAws, key: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(aws.text(key))
    return document


def test_an_uploaded_image_gets_its_prediction_written_under_results(aws: BatchAws, processor: UploadProcessor) -> None:
    # Given a seven uploaded under the digits model
    upload = uploaded(aws, "uploads/digits/a seven.png", SEVEN.read_bytes())

    # When it is processed
    outcome = process(processor, upload)

    # Then its result is written next to the other results, with the model's answer and the object's ETag
    document = written(aws, "results/uploads/digits/a seven.png.json")
    assert outcome == {"result_key": "results/uploads/digits/a seven.png.json", "result": document}
    assert document["label"] == "7"
    assert (document["key"], document["model"], document["version"]) == ("uploads/digits/a seven.png", "digits", "1")
    assert document["etag"] == upload.etag
    assert set(document) == {
        "key", "model", "version", "label", "score", "top_k", "etag", "prediction_id", "predicted_at",
    }  # fmt: skip


def test_a_pinned_version_that_does_not_exist_is_an_unknown_model_result(
    aws: BatchAws, processor: UploadProcessor
) -> None:
    upload = uploaded(aws, "uploads/digits/v9/a.png", SEVEN.read_bytes())

    outcome = process(processor, upload)

    assert outcome["result"]["error"]["code"] == "unknown_model"
    assert 'available versions: "1"' in outcome["result"]["error"]["message"]


def test_an_image_for_an_unknown_model_is_a_result_naming_the_models_that_exist(
    aws: BatchAws, processor: UploadProcessor
) -> None:
    upload = uploaded(aws, "uploads/no-such-model/a.png", SEVEN.read_bytes())

    process(processor, upload)

    document = written(aws, "results/uploads/no-such-model/a.png.json")
    assert document["error"]["code"] == "unknown_model"
    assert "digits" in document["error"]["message"]
    assert (document["key"], document["model"], document["etag"]) == (upload.key, "no-such-model", upload.etag)


def test_a_corrupt_image_is_an_invalid_image_result(aws: BatchAws, processor: UploadProcessor) -> None:
    upload = uploaded(aws, "uploads/digits/broken.png", SEVEN.read_bytes()[:60])

    process(processor, upload)

    assert written(aws, "results/uploads/digits/broken.png.json")["error"]["code"] == "invalid_image"


def test_an_upload_deleted_before_it_is_processed_is_an_image_not_found_result(
    aws: BatchAws, processor: UploadProcessor
) -> None:
    upload = uploaded(aws, "uploads/digits/gone.png", SEVEN.read_bytes())
    aws.s3.delete_object(Bucket=BUCKET, Key=upload.key)

    process(processor, upload)

    assert written(aws, "results/uploads/digits/gone.png.json")["error"]["code"] == "image_not_found"


def test_an_uploaded_list_starts_a_batch_and_says_which(aws: BatchAws, processor: UploadProcessor) -> None:
    # Given two images and a CSV list of them under batches/digits/
    for name in ("a.png", "b.png"):
        aws.put(f"scans/{name}", SEVEN.read_bytes())
    upload = uploaded(aws, "batches/digits/two.csv", b"key\nscans/a.png\nscans/b.png\n")

    # When it is processed
    process(processor, upload)

    # Then a batch of both images is registered, and the submitted file names it with the paths to follow it
    document = written(aws, "results/batches/digits/two.csv.submitted.json")
    job = processor.submitter.store.get(document["batch_id"])
    assert (job["total"], job["model"], job["version"], job["source"]) == (2, "digits", "1", {"manifest": upload.key})
    assert (document["status"], document["total"]) == ("QUEUED", 2)
    assert (document["model"], document["version"]) == ("digits", "1")
    assert document["links"] == batch_paths(document["batch_id"])


def test_an_empty_list_is_a_result_saying_what_is_wrong(aws: BatchAws, processor: UploadProcessor) -> None:
    upload = uploaded(aws, "batches/empty.jsonl", b"\n")

    process(processor, upload)

    error = written(aws, "results/batches/empty.jsonl.submitted.json")["error"]
    assert error["code"] == "invalid_request"
    assert "names no images" in error["message"]


def test_a_platform_error_is_raised_for_a_retry_and_writes_no_result(
    aws: BatchAws, processor: UploadProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload = uploaded(aws, "uploads/digits/a.png", SEVEN.read_bytes())

    def throttled(*_args: Any, **_kwargs: Any) -> bytes:
        raise TransientFailure("S3 throttled the read: retry")

    monkeypatch.setattr(ImageStore, "read", throttled)  # the tenant's view of processor.images reads through it

    with pytest.raises(TransientFailure):
        process(processor, upload)
    assert "results/uploads/digits/a.png.json" not in aws.object_keys()


def test_an_event_from_another_bucket_is_ignored(processor: UploadProcessor) -> None:
    target = processor.target(UploadedObject(bucket="someone-else", key="uploads/digits/a.png"))

    assert isinstance(target, Ignored)
    assert "not the stack's images bucket" in target.reason


# -- the local runtime's S3 event records ------------------------------------------------------------------------


def moto_record(key: str) -> dict[str, Any]:
    """A record as moto builds it: the key quote_plus'ed whole, no sequencer."""
    record: dict[str, Any] = json.loads((EVENTS / "image-uploaded.json").read_text())["Records"][0]
    record = copy.deepcopy(record)
    record["s3"]["object"] = {"key": quote_plus(key), "size": 10, "eTag": "abc"}
    for field in ("userIdentity", "requestParameters", "responseElements"):
        record.pop(field)
    return record


def test_a_local_s3_record_encodes_the_key_as_s3_does_keeping_slashes() -> None:
    shaped = s3_record_as_sent_by_s3(moto_record("uploads/digits/a b+é.png"))

    assert shaped["s3"]["object"]["key"] == "uploads/digits/a+b%2B%C3%A9.png"


def test_local_s3_records_carry_increasing_sequencers_and_s3s_other_fields() -> None:
    first = s3_record_as_sent_by_s3(moto_record("uploads/a.png"))
    second = s3_record_as_sent_by_s3(moto_record("uploads/a.png"))

    assert int(first["s3"]["object"]["sequencer"], 16) < int(second["s3"]["object"]["sequencer"], 16)
    assert {"userIdentity", "requestParameters", "responseElements"} <= set(first)


# -- the template ------------------------------------------------------------------------------------------------


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return [*path[path.index(child) :], child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_template_has_no_circular_dependency_once_sam_adds_the_bucket_notifications() -> None:
    # Given the template after the SAM transform (cfn-lint and sam validate check it before the transform, where the
    # bucket's NotificationConfiguration and DependsOn on the permissions do not exist yet)
    resources = transformed_template()["Resources"]
    assert resources["ImagesBucket"]["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]

    # When every resource's dependencies are followed
    graph: dict[str, set[str]] = {}
    for name, resource in resources.items():
        depends_on = resource.get("DependsOn", [])
        depends_on = [depends_on] if isinstance(depends_on, str) else depends_on
        graph[name] = {ref for ref in references(resource) if ref in resources} | set(depends_on)

    # Then no chain of them comes back to where it started
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_on_upload_names_the_bucket_exactly_as_the_bucket_names_itself() -> None:
    resources = load_yaml(TEMPLATE)["Resources"]
    name = resources["ImagesBucket"]["Properties"]["BucketName"]["Fn::Sub"]
    function = resources["OnUploadFunction"]["Properties"]
    statements = function["Policies"][0]["Statement"]
    arns = [resource["Fn::Sub"] for statement in statements for resource in _as_list(statement["Resource"])]

    assert function["Environment"]["Variables"]["IMAGES_BUCKET"] == {"Fn::Sub": name}
    assert arns
    assert all(arn.startswith(f"arn:${{AWS::Partition}}:s3:::{name}") for arn in arns)


def test_on_upload_triggers_only_under_uploads_and_on_lists_under_batches() -> None:
    events = load_yaml(TEMPLATE)["Resources"]["OnUploadFunction"]["Properties"]["Events"]

    filters = sorted(
        tuple(sorted((rule["Name"], rule["Value"]) for rule in event["Properties"]["Filter"]["S3Key"]["Rules"]))
        for event in events.values()
    )

    assert filters == [
        (("prefix", "batches/"), ("suffix", ".csv")),
        (("prefix", "batches/"), ("suffix", ".jsonl")),
        (("prefix", "uploads/"),),
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]

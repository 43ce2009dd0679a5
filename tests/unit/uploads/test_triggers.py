"""Upload triggers: decoding S3 event keys, routing keys to what they ask for, result names, processing one upload
(moto S3, DynamoDB tables from template.yaml, the demo digits model), the local runtime's S3 event records, and the
template wiring that a circular dependency would break."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest

from modelrun.audit import AuditTrail
from modelrun.aws.s3 import ImageStore
from modelrun.batches.submit import BatchSubmitter
from modelrun.errors import TransientFailure
from modelrun.images.decode import Limits
from modelrun.models.registry import ModelRegistry
from modelrun.predict import Predictor
from modelrun.tenants import Tenant
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
from tests.batchfixtures import BUCKET, DEFAULT, MODELS, SAMPLES, TEMPLATE, BatchAws, create_table
from tests.samtransform import transformed_template

EVENTS = Path(__file__).resolve().parents[3] / "events" / "on_upload"
PASS_MACHINE = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
ROLE = "arn:aws:iam::123456789012:role/modelrun-unit-state-machine"
SEVEN = SAMPLES / "digit-7-0081.png"
ACME = Tenant("acme")


def image(key: str, model: str | None, version: str | None, tenant: Tenant = DEFAULT) -> ImageUpload:
    return ImageUpload(key, model, version, tenant, key.removeprefix(tenant.prefix))


def listed(key: str, model: str | None, version: str | None, tenant: Tenant = DEFAULT) -> ListUpload:
    return ListUpload(key, model, version, tenant, key.removeprefix(tenant.prefix))


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
    assert route("uploads/digits/scans/a.png") == image("uploads/digits/scans/a.png", "digits", None)


def test_a_v_folder_right_after_the_model_pins_the_version() -> None:
    assert route("uploads/digits/v2/a.png") == image("uploads/digits/v2/a.png", "digits", "2")


def test_a_file_named_like_a_version_is_a_file_not_a_version() -> None:
    assert route("uploads/digits/v2") == image("uploads/digits/v2", "digits", None)


def test_a_folder_starting_with_v_and_a_letter_is_an_ordinary_folder() -> None:
    assert route("uploads/digits/vacation/a.png") == image("uploads/digits/vacation/a.png", "digits", None)


def test_an_image_directly_under_uploads_uses_the_default_model() -> None:
    assert route("uploads/a.png") == image("uploads/a.png", None, None)


@pytest.mark.parametrize("key", ["batches/digits/list.jsonl", "batches/digits/nightly/list.csv"])
def test_a_list_under_a_model_folder_starts_a_batch_with_that_model(key: str) -> None:
    assert route(key) == listed(key, "digits", None)


def test_a_list_directly_under_batches_uses_the_default_model() -> None:
    assert route("batches/sevens.CSV") == listed("batches/sevens.CSV", None, None)


def test_a_list_under_a_v_folder_pins_the_batch_version() -> None:
    assert route("batches/digits/v1/list.jsonl") == listed("batches/digits/v1/list.jsonl", "digits", "1")


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

    name = result_key(DEFAULT, key, ".json")

    assert len(name.encode("utf-8")) <= 1024
    assert re.fullmatch(r"results/uploads/_long-keys/[0-9a-f]{64}\.json", name)


def test_a_list_upload_stands_for_the_post_batches_body_with_a_manifest() -> None:
    assert listed("batches/digits/v1/l.csv", "digits", "1").batch_body() == {
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
    return UploadProcessor(predictor, ImageStore(aws.s3, {BUCKET}), submitter, aws.s3, BUCKET, known={DEFAULT, ACME})


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


# -- tenants -----------------------------------------------------------------------------------------------------


def test_an_image_under_a_tenants_uploads_is_that_tenants_with_its_model() -> None:
    key = "tenants/acme/uploads/digits/v1/scans/a.png"
    assert route(key) == ImageUpload(key, "digits", "1", ACME, "uploads/digits/v1/scans/a.png")


def test_a_list_under_a_tenants_batches_is_a_batch_of_that_tenants() -> None:
    key = "tenants/acme/batches/nightly.csv"
    assert route(key) == ListUpload(key, None, None, ACME, "batches/nightly.csv")


def test_a_tenants_results_mirror_its_path_under_its_own_results() -> None:
    target = route("tenants/acme/uploads/digits/a b.png")
    assert isinstance(target, ImageUpload)
    assert target.result_key == "tenants/acme/results/uploads/digits/a b.png.json"
    assert target.mask_key == "tenants/acme/results/uploads/digits/a b.png.mask.png"
    assert target.frame_mask_key(2) == "tenants/acme/results/uploads/digits/a b.png.f2.mask.png"
    listed_target = route("tenants/acme/batches/l.jsonl")
    assert isinstance(listed_target, ListUpload)
    assert listed_target.result_key == "tenants/acme/results/batches/l.jsonl.submitted.json"


def test_a_tenants_key_too_long_to_mirror_gets_a_hashed_name_in_its_space() -> None:
    key = "tenants/acme/uploads/digits/" + "é" * 490 + ".png"

    name = result_key(ACME, key.removeprefix("tenants/acme/"), ".json")

    assert len(name.encode("utf-8")) <= 1024
    assert re.fullmatch(r"tenants/acme/results/uploads/_long-keys/[0-9a-f]{64}\.json", name)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("tenants/acme/results/uploads/digits/a.png.json", "own outputs"),
        ("tenants/acme/results/b-1/masks/0.png", "own outputs"),
        ("tenants/acme/jobs/b-1/keys.jsonl", "only uploads/"),
        ("tenants/acme/inputs/u-1/a.png", "only uploads/"),
        ("tenants/acme/uploads/batches/run-1/a.png", "CLI stages"),
        ("tenants/acme/batches/notes.txt", "only .jsonl and .csv"),
        ("tenants/acme/uploads/", "folder placeholder"),
        ("tenants/acme/../beta/uploads/digits/a.png", "only uploads/"),
        ("tenants/acme/./uploads/digits/a.png", "only uploads/"),
        ("tenants//uploads/digits/a.png", "must name a tenant"),
        ("tenants/Acme/uploads/digits/a.png", "must name a tenant"),
        ("tenants/../uploads/digits/a.png", "must name a tenant"),
        ("tenants/acme", "must name a tenant"),
        ("tenants/uploads", "must name a tenant"),
        ("tenants/-x/uploads/a.png", "must name a tenant"),
        ("tenants/" + "a" * 41 + "/uploads/a.png", "must name a tenant"),
        ("tenants/acme/tenants/beta/uploads/a.png", "only uploads/"),
    ],
)
def test_hostile_or_odd_keys_under_tenants_are_ignored_with_a_reason(key: str, reason: str) -> None:
    target = route(key)
    assert isinstance(target, Ignored)
    assert reason in target.reason


def test_a_drop_under_a_tenant_no_api_key_has_is_ignored(processor: UploadProcessor) -> None:
    target = processor.target(UploadedObject(bucket=BUCKET, key="tenants/ghost/uploads/digits/a.png"))

    assert isinstance(target, Ignored)
    assert "no tenant 'ghost'" in target.reason


def test_a_tenants_uploaded_image_is_predicted_into_its_space_only(aws: BatchAws, processor: UploadProcessor) -> None:
    # Given a seven dropped into acme's uploads/
    upload = uploaded(aws, "tenants/acme/uploads/digits/a.png", SEVEN.read_bytes())

    # When it is processed
    outcome = process(processor, upload)

    # Then its result document is in acme's results/, and nothing was written outside acme's space
    assert outcome["result_key"] == "tenants/acme/results/uploads/digits/a.png.json"
    assert written(aws, outcome["result_key"])["label"] == "7"
    assert all(key.startswith("tenants/acme/") for key in aws.object_keys()), aws.object_keys()


def test_a_tenants_list_starts_a_batch_of_that_tenants_with_its_files_in_its_space(
    aws: BatchAws, processor: UploadProcessor
) -> None:
    # Given acme's images and a list of them dropped into acme's batches/
    for name in ("a.png", "b.png"):
        aws.put(f"tenants/acme/scans/{name}", SEVEN.read_bytes())
    upload = uploaded(
        aws, "tenants/acme/batches/digits/two.jsonl", b'"tenants/acme/scans/a.png"\n"tenants/acme/scans/b.png"\n'
    )

    # When it is processed
    outcome = process(processor, upload)

    # Then the batch is acme's (no other tenant reads it), its files and the submitted document in acme's space
    batch_id = outcome["result"]["batch_id"]
    assert outcome["result_key"] == "tenants/acme/results/batches/digits/two.jsonl.submitted.json"
    job = processor.submitter.store.for_tenant(ACME).get(batch_id)
    assert job["keys_object"] == f"tenants/acme/jobs/{batch_id}/keys.jsonl"
    assert all(key.startswith("tenants/acme/") for key in aws.object_keys()), aws.object_keys()


def test_a_tenants_list_naming_another_tenants_images_starts_nothing(aws: BatchAws, processor: UploadProcessor) -> None:
    # Given beta's image and a list in acme's batches/ that names it
    aws.put("tenants/beta/scans/a.png", SEVEN.read_bytes())
    upload = uploaded(aws, "tenants/acme/batches/steal.jsonl", b'"tenants/beta/scans/a.png"\n')

    # When it is processed
    outcome = process(processor, upload)

    # Then it is an image_not_found result in acme's space, and no batch exists
    assert outcome["result"]["error"]["code"] == "image_not_found"
    assert outcome["result_key"] == "tenants/acme/results/batches/steal.jsonl.submitted.json"
    assert aws.jobs.scan()["Items"] == []


def test_a_default_tenants_list_cannot_name_a_tenants_images(aws: BatchAws, processor: UploadProcessor) -> None:
    aws.put("tenants/acme/scans/a.png", SEVEN.read_bytes())
    upload = uploaded(aws, "batches/steal.jsonl", b'"tenants/acme/scans/a.png"\n')

    outcome = process(processor, upload)

    assert outcome["result"]["error"]["code"] == "image_not_found"
    assert aws.jobs.scan()["Items"] == []


# -- the audit trail of triggered work ---------------------------------------------------------------------------


@pytest.fixture
def audited(processor: UploadProcessor, aws: BatchAws) -> UploadProcessor:
    processor.audit = AuditTrail(create_table(aws.dynamodb, "AuditTable", "unit-audit"), 30)
    return processor


def audit_records(processor: UploadProcessor, tenant: Tenant) -> list[dict[str, Any]]:
    assert processor.audit is not None
    records, _ = processor.audit.page(tenant, resource=None, limit=100, token=None)
    return records


def test_a_tenants_triggered_prediction_is_audited_for_that_tenant_only_without_its_key(
    aws: BatchAws, audited: UploadProcessor
) -> None:
    # Given a seven dropped into acme's uploads/ by a write S3 gave a request id
    upload = dataclasses.replace(
        uploaded(aws, "tenants/acme/uploads/digits/jane-doe.png", SEVEN.read_bytes()), request_id="S3REQ0001"
    )

    # When it is processed
    document = process(audited, upload)["result"]

    # Then acme's trail has one record of it: action, outcome, model, the prediction and the key's hash, not the key
    (record,) = audit_records(audited, ACME)
    assert (record["action"], record["status"], record["outcome"]) == ("s3:upload", 200, "ok")
    assert (record["model"], record["version"], record["request_id"]) == ("digits", "1", "S3REQ0001")
    assert record["resources"] == {
        "prediction_id": document["prediction_id"],
        "key_sha256": hashlib.sha256(upload.key.encode()).hexdigest(),
    }
    assert "jane-doe" not in json.dumps(record)
    # and no other tenant's trail has it
    assert audit_records(audited, DEFAULT) == []
    assert audit_records(audited, Tenant("beta")) == []


def test_a_triggered_upload_that_fails_is_audited_with_its_error_code(aws: BatchAws, audited: UploadProcessor) -> None:
    process(audited, uploaded(aws, "tenants/acme/uploads/digits/broken.png", SEVEN.read_bytes()[:60]))

    (record,) = audit_records(audited, ACME)
    assert (record["action"], record["status"], record["outcome"]) == ("s3:upload", 400, "invalid_image")


def test_a_triggered_batch_is_audited_with_its_batch_id(aws: BatchAws, audited: UploadProcessor) -> None:
    aws.put("tenants/acme/scans/a.png", SEVEN.read_bytes())

    document = process(audited, uploaded(aws, "tenants/acme/batches/one.csv", b"tenants/acme/scans/a.png\n"))["result"]

    (record,) = audit_records(audited, ACME)
    assert (record["action"], record["status"], record["outcome"]) == ("s3:batch-list", 202, "ok")
    assert record["resources"]["batch_id"] == document["batch_id"]


def test_an_ignored_key_is_not_audited(audited: UploadProcessor) -> None:
    target = audited.target(UploadedObject(bucket=BUCKET, key="tenants/acme/results/x.json"))

    assert isinstance(target, Ignored)
    assert audit_records(audited, ACME) == []


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


def test_on_upload_triggers_under_uploads_on_lists_under_batches_and_on_everything_under_tenants() -> None:
    events = load_yaml(TEMPLATE)["Resources"]["OnUploadFunction"]["Properties"]["Events"]

    filters = sorted(
        tuple(sorted((rule["Name"], rule["Value"]) for rule in event["Properties"]["Filter"]["S3Key"]["Rules"]))
        for event in events.values()
    )

    assert filters == [
        (("prefix", "batches/"), ("suffix", ".csv")),
        (("prefix", "batches/"), ("suffix", ".jsonl")),
        (("prefix", "tenants/"),),
        (("prefix", "uploads/"),),
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]

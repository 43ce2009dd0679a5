"""The modelrun CLI in-process against the local stack: predict, batches from local files and from S3, discovery."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest

from modelrun_cli import uploads
from modelrun_cli.main import main, run
from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import API_KEY, sample

CORRUPT = b"\x89PNG\r\n\x1a\n this is not really a PNG"
TIMEOUT = ["--timeout", "120"]


@pytest.fixture(scope="module")
def flags(stack: LocalRuntime, images_bucket: str) -> list[str]:
    return [
        "--endpoint",
        stack.url,
        "--api-key",
        API_KEY,
        "--bucket",
        images_bucket,
        "--aws-endpoint",
        stack.aws_endpoint,
    ]


@pytest.fixture(autouse=True)
def no_outside_configuration(monkeypatch: pytest.MonkeyPatch, aws_environment: dict[str, str]) -> None:
    """The developer's own MODELRUN_* settings must not steer these tests; the local stack's AWS credentials are
    exported, as the stack prints them for."""
    for name in ("ENDPOINT", "API_KEY", "BUCKET", "AWS_ENDPOINT", "STACK", "LOCAL_STATE"):
        monkeypatch.delenv(f"MODELRUN_{name}", raising=False)
    for name, value in aws_environment.items():
        monkeypatch.setenv(name, value)


def cli(*argv: str) -> tuple[int, str, str]:
    """``modelrun ...`` in-process, as ``main`` runs it but with its own stdout and stderr.

    The stack's functions run in this process too, and Powertools' single_metric prints its EMF line with
    print(): captured through sys.stdout, it would mix into the CLI's output.
    """
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), env=os.environ, cwd=Path.cwd(), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def copy_samples(folder: Path, count: int) -> list[Path]:
    """``count`` committed samples (labels cycling 0-9), some in a subfolder so the upload recurses."""
    copies = []
    for number in range(count):
        source = sample(number % 10, number // 10)
        target = folder / ("nested" if number % 3 == 0 else "") / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copies.append(target)
    return copies


def label_of(key: str) -> str:
    return Path(key).name.split("-")[1]


@pytest.fixture(scope="module")
def finished_batch(
    tmp_path_factory: pytest.TempPathFactory, flags: list[str], aws_environment: dict[str, str]
) -> dict[str, Any]:
    """31 local files (30 samples, 1 corrupt) submitted in chunks of 8 and waited for, with the CLI's output."""
    folder = tmp_path_factory.mktemp("batch")
    copy_samples(folder, 30)
    (folder / "corrupt.png").write_bytes(CORRUPT)
    out, err = io.StringIO(), io.StringIO()
    argv = ["batch", "submit", str(folder), "--chunk-size", "8", "--wait", "--json", *TIMEOUT, *flags]
    code = run(argv, env=aws_environment, cwd=folder, out=out, err=err)
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


# -- predict and models ------------------------------------------------------------------------------------------
def test_predict_prints_the_label_a_sample_carries_and_its_top_k(flags: list[str]) -> None:
    code, out, _ = cli("predict", str(sample(7)), *flags)
    assert code == 0
    label, score = out.splitlines()[0].split()
    assert label == "7"
    assert 0.5 < float(score) <= 1.0
    assert out.splitlines()[1].split() == ["LABEL", "SCORE"]


def test_predict_with_json_prints_the_api_answer(flags: list[str]) -> None:
    code, out, _ = cli("predict", str(sample(3, 1)), "--model", "digits", "--version", "1", "--json", *flags)
    assert code == 0
    answer = json.loads(out)
    assert (answer["label"], answer["model"], answer["version"]) == ("3", "digits", "1")


@pytest.mark.parametrize("tenant", [None, "tenant-a"])
def test_predict_of_a_file_over_the_body_limit_uploads_it_through_the_api_and_predicts_it_by_image_s3(
    stack: LocalRuntime, flags: list[str], monkeypatch: pytest.MonkeyPatch, s3: Any, tenant: str | None
) -> None:
    # Given a file over the body limit (the real limit, 4 MiB, is past this stack's MaxImageBytes: lowered, a
    # committed sample takes the same path), sent with the default key or a named tenant's
    monkeypatch.setattr(uploads, "DIRECT_BODY_LIMIT", 64)
    image = sample(4, 2)
    key_flags = flags if tenant is None else [*flags, "--api-key", stack.tenant_keys[tenant]]

    # When it is predicted
    code, out, err = cli("predict", str(image), "--json", *key_flags)

    # Then it was uploaded through POST /uploads into that key's space and predicted from there
    assert code == 0, err
    assert json.loads(out)["label"] == "4"
    [note] = err.splitlines()
    assert "uploading it through the API (POST /uploads) into this API key's space" in note
    assert stack.stack is not None
    bucket = stack.stack.ref("ImagesBucket")
    space = "" if tenant is None else f"tenants/{tenant}/"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{space}inputs/")
    uploaded = [item["Key"] for item in listed.get("Contents", []) if item["Key"].endswith(f"/{image.name}")]
    assert uploaded
    assert s3.get_object(Bucket=bucket, Key=uploaded[-1])["Body"].read() == image.read_bytes()


def test_predict_of_an_unknown_model_exits_1_with_the_api_error(flags: list[str]) -> None:
    code, out, err = cli("predict", str(sample(1)), "--model", "no-such-model", *flags)
    assert code == 1
    assert out == ""
    assert "unknown_model" in err


def test_models_lists_the_default_model_through_the_console_entry_point(
    capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    code = main(["models", "--json", *flags])
    assert code == 0
    catalogue = json.loads(capsys.readouterr().out)
    assert catalogue["default_model"] == "digits"
    assert "digits" in {spec["name"] for spec in catalogue["models"]}


def test_a_wrong_api_key_exits_1_with_invalid_api_key_on_stderr(
    capsys: pytest.CaptureFixture[str], stack: LocalRuntime
) -> None:
    code = main(["models", "--endpoint", stack.url, "--api-key", "not-the-key"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert "invalid_api_key" in captured.err


# -- batches from local files ------------------------------------------------------------------------------------
def test_a_folder_with_a_corrupt_file_ends_completed_with_errors_and_prints_only_the_job(
    finished_batch: dict[str, Any],
) -> None:
    assert finished_batch["code"] == 0, finished_batch["stderr"]
    job = json.loads(finished_batch["stdout"])  # the whole of stdout is one JSON document
    assert job["status"] == "COMPLETED_WITH_ERRORS"
    assert job["counts"] == {"predicted": 30, "failed": 1, "pending": 0}
    assert job["chunks"] == 4
    assert "uploading 31 images" in finished_batch["stderr"]
    assert "COMPLETED_WITH_ERRORS" in finished_batch["stderr"].splitlines()[-1]  # the last progress line


def test_the_corrupt_file_is_the_one_failed_result_with_code_invalid_image(
    flags: list[str], finished_batch: dict[str, Any]
) -> None:
    batch_id = json.loads(finished_batch["stdout"])["batch_id"]
    code, out, _ = cli("batch", "results", batch_id, "--status", "failed", "--json", *flags)
    assert code == 0
    failed = json.loads(out)["results"]
    assert [Path(result["key"]).name for result in failed] == ["corrupt.png"]
    assert failed[0]["error"]["code"] == "invalid_image"


def test_all_results_as_json_lines_follow_every_page(flags: list[str], finished_batch: dict[str, Any]) -> None:
    batch_id = json.loads(finished_batch["stdout"])["batch_id"]
    code, out, _ = cli("batch", "results", batch_id, "--all", "--jsonl", "--limit", "7", *flags)
    assert code == 0
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == 31
    assert sorted(result["item"] for result in results) == list(range(31))
    predicted = [result for result in results if result["status"] == "predicted"]
    correct = sum(result["label"] == label_of(result["key"]) for result in predicted)
    assert correct >= 28


def test_all_results_as_csv_have_one_header_and_a_row_per_image(
    flags: list[str], finished_batch: dict[str, Any]
) -> None:
    batch_id = json.loads(finished_batch["stdout"])["batch_id"]
    code, out, _ = cli("batch", "results", batch_id, "--all", "--csv", "--limit", "10", *flags)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("item,key,status")
    assert len(lines) == 32


def test_status_and_wait_of_a_finished_batch_print_its_summary(
    flags: list[str], finished_batch: dict[str, Any]
) -> None:
    batch_id = json.loads(finished_batch["stdout"])["batch_id"]
    code, out, _ = cli("batch", "status", batch_id, *flags)
    assert code == 0
    assert out.splitlines()[0] == f"{batch_id} COMPLETED_WITH_ERRORS"
    code, out, _ = cli("batch", "wait", batch_id, "--json", *flags)
    assert code == 0
    assert json.loads(out)["links"]["results_file"]


def test_an_unknown_batch_exits_1(flags: list[str]) -> None:
    code, _, err = cli("batch", "status", "b-does-not-exist", *flags)
    assert code == 1
    assert "not_found" in err


def test_a_retried_submit_with_the_same_idempotency_key_returns_the_same_batch(
    flags: list[str], tmp_path: Path
) -> None:
    copy_samples(tmp_path, 3)
    key = "cli-test-" + secrets.token_hex(4)
    first = cli("batch", "submit", str(tmp_path), "--idempotency-key", key, "--json", *flags)
    again = cli("batch", "submit", str(tmp_path), "--idempotency-key", key, "--json", *flags)
    assert first[0] == again[0] == 0, again[2]
    assert json.loads(first[1])["batch_id"] == json.loads(again[1])["batch_id"]


def test_a_long_file_list_is_submitted_as_a_manifest_file(
    flags: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3: Any,
    images_bucket: str,
) -> None:
    monkeypatch.setattr(uploads, "INLINE_KEYS_LIMIT", 10)
    copy_samples(tmp_path, 12)
    prefix = "cli-tests/manifest-" + secrets.token_hex(4)
    code, out, err = cli("batch", "submit", str(tmp_path), "--prefix", prefix, "--wait", "--json", *TIMEOUT, *flags)
    assert code == 0, err
    job = json.loads(out)
    assert (job["status"], job["total"]) == ("COMPLETED", 12)
    manifest = s3.get_object(Bucket=images_bucket, Key=uploads.manifest_key(prefix))["Body"].read().decode()
    assert len(manifest.splitlines()) == 12


# -- batches from S3 ---------------------------------------------------------------------------------------------
def test_an_s3_prefix_in_the_images_bucket_is_submitted_without_uploading(
    flags: list[str], s3: Any, images_bucket: str
) -> None:
    prefix = "cli-tests/prefix-" + secrets.token_hex(4) + "/"
    for label in (2, 4, 6, 8):
        s3.put_object(Bucket=images_bucket, Key=f"{prefix}{sample(label).name}", Body=sample(label).read_bytes())
    url = f"s3://{images_bucket}/{prefix}"
    code, out, err = cli("batch", "submit", url, "--wait", "--json", *TIMEOUT, *flags)
    assert code == 0, err
    job = json.loads(out)
    assert (job["status"], job["total"]) == ("COMPLETED", 4)
    assert "uploading" not in err
    code, out, _ = cli("batch", "results", job["batch_id"], "--all", "--jsonl", *flags)
    results = [json.loads(line) for line in out.splitlines()]
    assert {result["key"]: result["label"] for result in results} == {
        f"{prefix}{sample(label).name}": str(label) for label in (2, 4, 6, 8)
    }


def test_an_s3_prefix_in_another_bucket_is_refused(flags: list[str]) -> None:
    code, out, err = cli("batch", "submit", "s3://someone-elses-bucket/scans/", *flags)
    assert code == 1
    assert out == ""
    assert "not the stack's images bucket" in err


# -- discovery through the local state file ----------------------------------------------------------------------
def test_the_local_state_file_is_enough_to_predict_and_to_upload_a_batch(
    stack: LocalRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "local.json"
    state.write_text(json.dumps(stack.outputs()))
    monkeypatch.setenv("MODELRUN_LOCAL_STATE", str(state))
    code, out, _ = cli("predict", str(sample(5)))
    assert code == 0
    assert out.split()[0] == "5"
    images = copy_samples(tmp_path / "images", 2)
    code, out, err = cli("batch", "submit", *map(str, images), "--wait", *TIMEOUT)
    assert code == 0, err
    assert out.splitlines()[0].startswith("b-")
    assert any(line.endswith(" COMPLETED") for line in out.splitlines())

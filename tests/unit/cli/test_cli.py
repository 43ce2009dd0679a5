"""The modelrun CLI without a stack: where it finds the stack, its arguments, its output, its file handling."""

from __future__ import annotations

import csv
import functools
import http.server
import io
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import requests
from moto import mock_aws
from websockets.sync.server import serve as websocket_serve

from modelrun.batches.store import ERROR_FIELDS
from modelrun_cli import client as client_module
from modelrun_cli import commands, output, uploads, waiting
from modelrun_cli.client import ApiClient, error_from_response
from modelrun_cli.config import Flags, Target, discover, read_cloudformation_stack
from modelrun_cli.errors import ApiError, CliError, ConfigError
from modelrun_cli.main import run
from modelrun_cli.uploads import (
    collect_images,
    content_type_for,
    images_source,
    manifest_key,
    parse_s3_url,
    stage_through_api,
    upload_images,
    upload_prefix,
)
from modelrun_cli.waiting import RateMeter, poll_intervals, wait_for_batch, watch_batch, ws_url_with_key
from tests.dicomfactory import dicom_bytes, write

STATE = {
    "ApiUrl": "http://127.0.0.1:3000/",
    "ApiKey": "local-key",
    "AwsEndpoint": "http://127.0.0.1:5001",
    "ImagesBucketName": "local-images",
    "Region": "us-east-1",
}


def write_state(folder: Path, **changes: Any) -> Path:
    path = folder / ".modelrun" / "local.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**STATE, **changes}))
    return path


def no_stack(name: str) -> Target:
    raise AssertionError(f"the CloudFormation stack {name!r} must not be read")


def find(flags: Flags, env: dict[str, str], cwd: Path, repo: Path, **kwargs: Any) -> Target:
    return discover(flags, env, cwd, package_repo=repo, read_stack=kwargs.get("read_stack", no_stack))


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """A working directory and a separate 'package repository', neither holding a state file yet."""
    cwd, repo = tmp_path / "work", tmp_path / "repo"
    cwd.mkdir()
    repo.mkdir()
    return cwd, repo


# -- configuration discovery -------------------------------------------------------------------------------------
def test_flags_win_over_the_environment_and_the_local_state(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    write_state(cwd)
    env = {"MODELRUN_ENDPOINT": "http://env/", "MODELRUN_API_KEY": "env-key", "MODELRUN_BUCKET": "env-bucket"}
    flags = Flags(endpoint="http://flag/", api_key="flag-key", bucket="flag-bucket", aws_endpoint="http://s3")
    target = find(flags, env, cwd, repo)
    assert (target.endpoint, target.api_key, target.bucket, target.aws_endpoint) == (
        "http://flag/",
        "flag-key",
        "flag-bucket",
        "http://s3",
    )
    assert target.source == "--endpoint"


def test_the_environment_wins_over_a_stack_name_and_the_local_state(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    write_state(cwd)
    env = {
        "MODELRUN_ENDPOINT": "http://env/",
        "MODELRUN_API_KEY": "env-key",
        "MODELRUN_BUCKET": "env-bucket",
        "MODELRUN_AWS_ENDPOINT": "http://env-s3",
        "MODELRUN_STACK": "deployed",
    }
    target = find(Flags(), env, cwd, repo)
    assert (target.endpoint, target.api_key, target.bucket, target.aws_endpoint) == (
        "http://env/",
        "env-key",
        "env-bucket",
        "http://env-s3",
    )
    assert target.source == "MODELRUN_ENDPOINT"


def test_an_endpoint_flag_takes_its_api_key_from_the_environment(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    target = find(Flags(endpoint="http://flag/"), {"MODELRUN_API_KEY": "env-key"}, cwd, repo)
    assert (target.endpoint, target.api_key) == ("http://flag/", "env-key")


def test_an_endpoint_without_an_api_key_is_refused_with_what_to_pass(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    with pytest.raises(ConfigError, match="--api-key or set MODELRUN_API_KEY"):
        find(Flags(), {"MODELRUN_ENDPOINT": "http://env/"}, cwd, repo)


def test_a_stack_name_wins_over_the_local_state_and_flags_still_override_its_values(
    places: tuple[Path, Path],
) -> None:
    cwd, repo = places
    write_state(cwd)
    asked: list[str] = []

    def read_stack(name: str) -> Target:
        asked.append(name)
        return Target("https://api.example/v1/", "deployed-key", f"stack {name}", bucket="deployed-images")

    target = find(Flags(stack="prod", bucket="other-bucket"), {}, cwd, repo, read_stack=read_stack)
    assert asked == ["prod"]
    assert (target.endpoint, target.api_key, target.bucket) == (
        "https://api.example/v1/",
        "deployed-key",
        "other-bucket",
    )


def test_the_stack_name_can_come_from_the_environment(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    asked: list[str] = []

    def read_stack(name: str) -> Target:
        asked.append(name)
        return Target("https://api.example/v1/", "deployed-key", f"stack {name}")

    find(Flags(), {"MODELRUN_STACK": "staging"}, cwd, repo, read_stack=read_stack)
    assert asked == ["staging"]


def test_the_local_state_is_found_in_a_parent_of_the_working_directory(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    state = write_state(cwd)
    deep = cwd / "a" / "b"
    deep.mkdir(parents=True)
    target = find(Flags(), {}, deep, repo)
    assert (target.endpoint, target.api_key, target.bucket) == ("http://127.0.0.1:3000/", "local-key", "local-images")
    assert (target.aws_endpoint, target.region, target.local) == ("http://127.0.0.1:5001", "us-east-1", True)
    assert str(state) in target.source


def test_the_working_directory_state_wins_over_the_package_repository_state(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    write_state(cwd, ApiKey="from-cwd")
    write_state(repo, ApiKey="from-repo")
    assert find(Flags(), {}, cwd, repo).api_key == "from-cwd"


def test_the_package_repository_state_is_used_from_any_other_directory(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    write_state(repo, ApiKey="from-repo")
    assert find(Flags(), {}, cwd, repo).api_key == "from-repo"


def test_modelrun_local_state_names_the_state_file_instead_of_the_search(
    places: tuple[Path, Path], tmp_path: Path
) -> None:
    cwd, repo = places
    write_state(cwd, ApiKey="from-cwd")
    named = write_state(tmp_path / "elsewhere", ApiKey="from-named")
    assert find(Flags(), {"MODELRUN_LOCAL_STATE": str(named)}, cwd, repo).api_key == "from-named"


def test_a_missing_named_state_file_is_an_error_naming_it(places: tuple[Path, Path], tmp_path: Path) -> None:
    cwd, repo = places
    write_state(cwd)
    missing = tmp_path / "gone.json"
    with pytest.raises(ConfigError, match=r"gone\.json"):
        find(Flags(), {"MODELRUN_LOCAL_STATE": str(missing)}, cwd, repo)


def test_a_state_file_left_by_a_stopped_stack_is_refused(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    write_state(cwd, pid=_dead_pid())
    with pytest.raises(ConfigError, match="is not running"):
        find(Flags(), {}, cwd, repo)


def test_a_state_file_of_a_running_stack_is_accepted(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    write_state(cwd, pid=os.getpid())
    assert find(Flags(), {}, cwd, repo).api_key == "local-key"


def test_a_state_file_without_an_api_key_is_refused(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    write_state(cwd, ApiKey="")
    with pytest.raises(ConfigError, match="no ApiUrl and ApiKey"):
        find(Flags(), {}, cwd, repo)


def test_no_stack_at_all_says_how_to_start_the_local_one_and_what_to_pass(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    with pytest.raises(ConfigError) as raised:
        find(Flags(), {}, cwd, repo)
    message = raised.value.message
    assert "make run" in message
    assert "--endpoint URL --api-key KEY" in message
    assert "--stack NAME" in message


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


def deploy_outputs(outputs: dict[str, str]) -> None:
    template = {
        "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {name: {"Value": value} for name, value in outputs.items()},
    }
    boto3.client("cloudformation").create_stack(StackName="modelrun-prod", TemplateBody=json.dumps(template))


def test_a_deployed_stack_gives_its_url_bucket_and_the_value_of_its_api_key(aws: Any) -> None:
    key = boto3.client("apigateway").create_api_key(name="clients", value="the-secret-value-of-the-key", enabled=True)
    deploy_outputs({"ApiUrl": "https://abc.execute-api/v1/", "ApiKeyId": key["id"], "ImagesBucketName": "images"})
    target = read_cloudformation_stack("modelrun-prod")
    assert (target.endpoint, target.api_key, target.bucket) == (
        "https://abc.execute-api/v1/",
        "the-secret-value-of-the-key",
        "images",
    )
    assert (target.region, target.aws_endpoint, target.local) == ("eu-west-1", None, False)


def test_a_stack_that_does_not_exist_or_lacks_the_outputs_is_a_clear_error(aws: Any) -> None:
    with pytest.raises(ConfigError, match="stack 'missing'"):
        read_cloudformation_stack("missing")
    deploy_outputs({"ApiUrl": "https://abc.execute-api/v1/"})
    with pytest.raises(ConfigError, match=r"no output.*ApiKeyId, ImagesBucketName"):
        read_cloudformation_stack("modelrun-prod")


def _dead_pid() -> int:
    """A pid no process has: the highest pid the kernel hands out, plus one."""
    limit = Path("/proc/sys/kernel/pid_max")
    return int(limit.read_text()) + 1 if limit.exists() else 2**22 + 1


# -- arguments ---------------------------------------------------------------------------------------------------
def run_cli(argv: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(argv, env=env or {}, cwd=tmp_path, out=out, err=err, read_stack=no_stack)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        ["batch", "submit", "images/", "--chunk-size", "0"],
        ["batch", "submit", "images/", "--chunk-size", "501"],
        ["batch", "submit", "images/", "--max-concurrency", "1001"],
        ["batch", "submit", "images/", "--max-concurrency", "many"],
        ["batch", "submit", "images/", "--timeout", "0"],
        ["batch", "submit"],
        ["batch", "wait", "b-1", "--timeout", "-5"],
        ["batch", "results", "b-1", "--limit", "0"],
        ["batch", "results", "b-1", "--limit", "1001"],
        ["batch", "results", "b-1", "--status", "pending"],
        ["batch", "results", "b-1", "--json", "--csv"],
        ["batch", "submit", "images/", "--wait", "--watch"],
        ["batch", "submit", "images/", "--faults", "{not json"],
        ["batch", "submit", "images/", "--faults", "[0.1]"],
        ["batch", "submit", "images/", "--transient-rate", "1.5"],
        ["batch", "submit", "images/", "--timeout-rate", "often"],
        ["batch", "watch"],
        ["batch", "watch", "b-1", "--timeout", "0"],
        ["batch", "errors", "b-1", "--limit", "1001"],
        ["batch", "errors", "b-1", "--csv", "--download", "dir"],
        ["batch", "errors", "b-1", "--status", "failed"],
        ["batch", "retry"],
        ["batch", "reconcile"],
        ["batch"],
        ["predict"],
        [],
    ],
)
def test_bad_arguments_exit_with_status_2_before_any_request(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(argv, tmp_path)
    assert code == 2
    assert out == ""
    assert "usage: modelrun" in capsys.readouterr().err


def test_help_describes_where_the_stack_is_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_cli(["--help"], tmp_path)
    text = capsys.readouterr().out
    assert code == 0
    for name in ("MODELRUN_ENDPOINT", "MODELRUN_STACK", ".modelrun/local.json", "MODELRUN_LOCAL_STATE"):
        assert name in text


@pytest.mark.parametrize("before_command", [True, False])
def test_connection_flags_work_before_and_after_the_command(
    before_command: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []

    def models(self: ApiClient) -> dict[str, Any]:
        seen.append((self.base, self.session.headers["x-api-key"]))
        return {"default_model": "digits", "models": []}

    monkeypatch.setattr(ApiClient, "models", models)
    flags = ["--endpoint", "http://flag:1/", "--api-key", "k1"]
    argv = [*flags, "models"] if before_command else ["models", *flags]
    code, out, _ = run_cli(argv, tmp_path)
    assert code == 0
    assert seen == [("http://flag:1", "k1")]
    assert out == "no models\n"


def test_no_stack_found_exits_1_with_the_start_hint(tmp_path: Path) -> None:
    code, out, err = run_cli(["models"], tmp_path, env={"MODELRUN_LOCAL_STATE": str(tmp_path / "none.json")})
    assert code == 1
    assert out == ""
    assert "make run" in err


def test_an_api_error_exits_1_with_its_code_message_and_where_the_key_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: ApiClient, *args: Any, **kwargs: Any) -> Any:
        raise ApiError(403, "invalid_api_key", "send a valid API key in the x-api-key header")

    monkeypatch.setattr(ApiClient, "request", refuse)
    code, out, err = run_cli(["models"], tmp_path, env={"MODELRUN_ENDPOINT": "http://x/", "MODELRUN_API_KEY": "bad"})
    assert code == 1
    assert out == ""
    assert "invalid_api_key: send a valid API key" in err
    assert "API key from MODELRUN_ENDPOINT" in err


def test_an_s3_source_outside_the_images_bucket_is_refused_before_submitting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ApiClient, "request", no_stack)
    env = {"MODELRUN_ENDPOINT": "http://x/", "MODELRUN_API_KEY": "k", "MODELRUN_BUCKET": "images"}
    code, _, err = run_cli(["batch", "submit", "s3://elsewhere/scans/"], tmp_path, env=env)
    assert code == 1
    assert "not the stack's images bucket (images)" in err


def test_uploading_with_a_prefix_without_a_known_bucket_asks_for_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.png").write_bytes(b"png")
    monkeypatch.setattr(ApiClient, "request", no_stack)
    env = {"MODELRUN_ENDPOINT": "http://x/", "MODELRUN_API_KEY": "k"}
    code, _, err = run_cli(["batch", "submit", str(tmp_path / "a.png"), "--prefix", "mine/run-1"], tmp_path, env=env)
    assert code == 1
    assert "--bucket NAME" in err


def test_an_endpoint_nobody_answers_exits_1_naming_where_the_endpoint_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "RETRY_DELAYS_S", (0.0,))
    with socket.socket() as probe:  # a port that was free a moment ago, closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = write_state(tmp_path, ApiUrl=f"http://127.0.0.1:{port}/", pid=os.getpid())
    code, out, err = run_cli(["models"], tmp_path, env={"MODELRUN_LOCAL_STATE": str(state)})
    assert code == 1
    assert out == ""
    assert f"connection_error: cannot connect to http://127.0.0.1:{port}/models" in err
    assert "is the local stack still running?" in err


# -- the HTTP client's errors ------------------------------------------------------------------------------------
def response(status: int, body: bytes) -> requests.Response:
    made = requests.Response()
    made.status_code = status
    made._content = body
    made.reason = "Reason"
    return made


def test_an_api_error_body_gives_its_code_and_message() -> None:
    error = error_from_response(response(404, b'{"error": {"code": "unknown_model", "message": "no model x"}}'))
    assert (error.status, error.code, error.message) == (404, "unknown_model", "no model x")


def test_a_gateway_message_body_and_a_text_body_still_give_a_readable_error() -> None:
    assert error_from_response(response(429, b'{"message": "Too Many Requests"}')).code == "http_429"
    text = error_from_response(response(502, b"Bad Gateway"))
    assert (text.code, text.message) == ("http_502", "Bad Gateway")


def test_a_throttled_safe_request_is_tried_again_then_succeeds() -> None:
    class Session(requests.Session):
        def __init__(self) -> None:
            super().__init__()
            self.answers = [response(429, b"{}"), response(200, b'{"ok": true}')]

        def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
            return self.answers.pop(0)

    slept: list[float] = []
    client = ApiClient("http://x/", "k", session=Session(), sleep=slept.append)
    assert client.request("GET", "models", retry=True) == {"ok": True}
    assert slept == [0.5]


# -- output ------------------------------------------------------------------------------------------------------
JOB = {
    "batch_id": "b-1",
    "status": "COMPLETED_WITH_ERRORS",
    "model": "digits",
    "version": "1",
    "total": 31,
    "counts": {"predicted": 30, "failed": 1, "pending": 0},
    "percent": 100.0,
    "attempt": 1,
    "chunks": 1,
    "timings": {"created_at": "t0", "started_at": "t1", "finished_at": "t2", "duration_s": 1.5},
    "links": {"self": "http://x/batches/b-1", "results": "http://x/batches/b-1/results", "results_file": "http://f"},
}


def test_a_progress_line_shows_elapsed_time_status_and_counts() -> None:
    job = {**JOB, "status": "RUNNING", "counts": {"predicted": 11, "failed": 1, "pending": 19}, "percent": 38.71}
    assert output.format_progress(job, 4.25) == (
        "[   4.2s] b-1 RUNNING: 12/31 (38.71%) - 11 predicted, 1 failed, 19 pending"
    )


def test_the_summary_gives_status_counts_model_duration_and_links() -> None:
    lines = output.format_job(JOB).splitlines()
    assert lines[0] == "b-1 COMPLETED_WITH_ERRORS"
    assert lines[1] == "  images   31: 30 predicted, 1 failed, 0 pending (100.0%)"
    assert lines[2] == "  model    digits version 1"
    assert "(1.5 s)" in lines[4]
    assert lines[-1] == "  file     http://f"


def test_a_submitted_batch_prints_its_id_alone_on_the_first_line() -> None:
    text = output.format_submitted(
        {"batch_id": "b-9", "status": "QUEUED", "total": 3, "links": {}}, uploaded_to="s3://b/p/"
    )
    assert text.splitlines() == ["b-9", "  images   3 (QUEUED, uploaded to s3://b/p/)"]


def test_a_prediction_prints_label_and_score_then_the_top_k_table() -> None:
    result = {
        "model": "digits",
        "version": "1",
        "label": "7",
        "score": 0.99951,
        "top_k": [{"label": "7", "score": 0.99951}, {"label": "1", "score": 0.0003}],
        "timings_ms": {"total": 0.9},
    }
    assert output.format_prediction(result).splitlines() == [
        "7 0.9995",
        "LABEL  SCORE",
        "7      0.9995",
        "1      0.0003",
        "(model digits version 1, 0.9 ms)",
    ]


def test_the_model_table_marks_the_default_model() -> None:
    catalogue = {
        "default_model": "digits",
        "models": [
            {
                "name": "digits",
                "version": "1",
                "input": {"name": "image"},
                "transforms": [
                    {"op": "color", "mode": "L"},
                    {"op": "resize", "size": [8, 8], "resample": "box"},
                    {"op": "layout", "layout": "NCHW"},
                ],
            },
            {"name": "other", "version": "2", "labels": ["a", "b"], "description": "x " * 80},
        ],
    }
    lines = output.format_models(catalogue).splitlines()
    assert lines[1].split()[:4] == ["digits*", "1", "classification", "8x8"]
    assert lines[2].endswith("...")
    assert lines[-1].startswith("* the default model (digits")


RESULTS = [
    {
        "item": 0,
        "key": "a.png",
        "status": "failed",
        "attempt": 1,
        "error": {"code": "invalid_image", "message": "bad, really"},
    },
    {"item": 1, "key": "b.png", "status": "predicted", "attempt": 1, "label": "7", "score": 0.5, "top_k": []},
]


def test_results_as_csv_have_one_header_and_quoted_messages() -> None:
    assert output.results_csv(RESULTS).splitlines() == [
        "item,key,status,label,score,error_code,error_message,attempt,updated_at",
        '0,a.png,failed,,,invalid_image,"bad, really",1,',
        "1,b.png,predicted,7,0.5,,,1,",
    ]
    assert output.results_csv(RESULTS[:1], header=False).count("item,key") == 0


def test_results_as_json_lines_are_one_object_per_line() -> None:
    lines = output.results_jsonl(RESULTS).splitlines()
    assert [json.loads(line) for line in lines] == RESULTS


def test_the_results_table_shows_an_error_code_and_message() -> None:
    lines = output.format_results(RESULTS).splitlines()
    assert lines[0].split() == ["ITEM", "KEY", "STATUS", "LABEL", "SCORE", "ERROR"]
    assert lines[1].endswith("invalid_image: bad, really")


# -- content types and file collection ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("a.png", "image/png"),
        ("a.JPG", "image/jpeg"),
        ("a.jpeg", "image/jpeg"),
        ("a.gif", "image/gif"),
        ("a.bmp", "image/bmp"),
        ("a.tif", "image/tiff"),
        ("a.TIFF", "image/tiff"),
        ("a.webp", "image/webp"),
        ("scan.dcm", "application/dicom"),
        ("SCAN.DICOM", "application/dicom"),
        ("noextension", "application/octet-stream"),
    ],
)
def test_the_content_type_follows_the_extension(name: str, content_type: str) -> None:
    assert content_type_for(name) == content_type


def make_files(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_a_folder_is_searched_recursively_for_image_extensions_in_a_stable_order(tmp_path: Path) -> None:
    make_files(tmp_path, "b.png", "a.JPG", "sub/deeper/c.webp", "sub/a.tiff", "notes.txt", "sub/model.onnx", "z.gif")
    images = collect_images([tmp_path])
    assert [image.relative for image in images] == ["a.JPG", "b.png", "sub/a.tiff", "sub/deeper/c.webp", "z.gif"]
    assert images[2].path == tmp_path / "sub" / "a.tiff"


def test_a_named_file_is_taken_whatever_its_extension_after_folders_in_argument_order(tmp_path: Path) -> None:
    make_files(tmp_path, "dir/x.png", "scan.dcm")
    images = collect_images([tmp_path / "scan.dcm", tmp_path / "dir"])
    assert [image.relative for image in images] == ["scan.dcm", "x.png"]


def dicom_file(path: Path) -> Path:
    return write(path, dicom_bytes(np.zeros((4, 4), dtype=np.uint16)))


def test_an_extensionless_file_with_the_dicom_marker_is_sent_as_application_dicom(tmp_path: Path) -> None:
    # Given a DICOM file named like a scanner export (no extension) and a file of other bytes
    scan = dicom_file(tmp_path / "IM0001")
    other = tmp_path / "README"
    other.write_bytes(b"x" * 200)
    # Then the marker at offset 128, not the name, decides
    assert content_type_for(scan) == "application/dicom"
    assert content_type_for(other) == "application/octet-stream"


def test_a_folder_contributes_dicom_files_by_their_bytes_whatever_their_name(tmp_path: Path) -> None:
    # Given a folder with extensionless DICOM files, a .dcm, a PNG, and files that are none of these: one too short
    # to hold the marker, and one with "DICM" elsewhere than at offset 128
    dicom_file(tmp_path / "series" / "1.2.840.1")
    dicom_file(tmp_path / "series" / "IM0002")
    dicom_file(tmp_path / "scan.dcm")
    make_files(tmp_path, "b.png", "notes.txt")
    (tmp_path / "short").write_bytes(b"DICM")
    (tmp_path / "decoy").write_bytes(b"DICM" + b"\0" * 200)
    # When the folder is collected
    images = collect_images([tmp_path])
    # Then every DICOM file is an image, with or without extension, and nothing else is
    assert [image.relative for image in images] == ["b.png", "scan.dcm", "series/1.2.840.1", "series/IM0002"]


def test_two_files_that_would_share_a_key_are_refused(tmp_path: Path) -> None:
    make_files(tmp_path, "one/a.png", "two/a.png")
    with pytest.raises(CliError, match=r"would both be uploaded as 'a\.png'"):
        collect_images([tmp_path / "one", tmp_path / "two"])


def test_a_missing_path_and_a_folder_without_images_are_errors(tmp_path: Path) -> None:
    make_files(tmp_path, "notes.txt")
    with pytest.raises(CliError, match="no such file or folder"):
        collect_images([tmp_path / "missing"])
    with pytest.raises(CliError, match="no images found"):
        collect_images([tmp_path])


# -- upload locations and the request's image source ------------------------------------------------------------
def test_s3_urls_split_into_bucket_and_prefix_and_a_bare_bucket_is_refused() -> None:
    location = parse_s3_url("s3://images/scans/2024/")
    assert (location.bucket, location.prefix) == ("images", "scans/2024/")
    with pytest.raises(CliError, match="names no prefix"):
        parse_s3_url("s3://images/")


def test_uploads_go_under_a_fresh_prefix_unless_a_prefix_or_idempotency_key_fixes_it() -> None:
    assert upload_prefix() != upload_prefix()
    assert upload_prefix().startswith("uploads/batches/")
    assert upload_prefix("/mine/run-1/") == "mine/run-1"
    assert (
        upload_prefix(idempotency_key="k") == upload_prefix(idempotency_key="k") != upload_prefix(idempotency_key="j")
    )


class RecordingS3:
    def __init__(self) -> None:
        self.uploaded: dict[tuple[str, str], bytes] = {}

    def upload_fileobj(self, body: Any, bucket: str, key: str, ExtraArgs: dict[str, str]) -> None:
        self.uploaded[(bucket, key)] = body.read()


class PuttingS3:
    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.put: dict[str, tuple[bytes, str]] = {}

    def put_object(self, Bucket: str, Key: str, Body: Any, ContentType: str) -> None:
        from botocore.exceptions import ClientError

        if Key == self.refuse:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")
        self.put[Key] = (Body.read(), ContentType)


def test_uploads_keep_the_file_order_content_types_and_relative_paths_under_the_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads, "UPLOAD_WINDOW", 2)
    make_files(tmp_path, "b.png", "a.jpg", "sub/c.webp", "sub/d.tif", "e.gif")
    s3 = PuttingS3()
    progress: list[tuple[int, int]] = []
    keys = upload_images(
        s3, "images", collect_images([tmp_path]), "up/1", workers=3, progress=lambda *n: progress.append(n)
    )
    assert keys == ["up/1/a.jpg", "up/1/b.png", "up/1/e.gif", "up/1/sub/c.webp", "up/1/sub/d.tif"]
    assert s3.put["up/1/sub/d.tif"] == (b"x", "image/tiff")
    assert sorted(progress) == [(done, 5) for done in range(1, 6)]


def test_a_refused_upload_stops_the_run_naming_the_file(tmp_path: Path) -> None:
    make_files(tmp_path, "a.png", "b.png")
    with pytest.raises(CliError, match=r"upload of .*b\.png to s3://images/up/b\.png failed"):
        upload_images(PuttingS3(refuse="up/b.png"), "images", collect_images([tmp_path]), "up")


def test_a_short_key_list_is_sent_inline_and_a_long_one_as_a_manifest_file() -> None:
    s3 = RecordingS3()
    keys = [f"p/{number}.png" for number in range(5)]
    assert images_source(s3, "images", "p", keys, inline_limit=5) == {"images": keys}
    assert s3.uploaded == {}
    source = images_source(s3, "images", "p", keys, inline_limit=4)
    assert source == {"manifest": manifest_key("p")}
    assert not source["manifest"].startswith("p/")
    lines = s3.uploaded[("images", manifest_key("p"))].decode().splitlines()
    assert [json.loads(line) for line in lines] == keys


class SigningApi:
    """POST /uploads and the PUTs to its links, as the CLI's client makes them: calls and uploads recorded."""

    def __init__(self, tenant_space: str = "tenants/acme/", refuse: str | None = None) -> None:
        self.tenant_space = tenant_space
        self.refuse = refuse
        self.calls: list[tuple[list[dict[str, Any]], str | None]] = []
        self.datasets: list[str] = []
        self.put: dict[str, tuple[bytes, dict[str, str]]] = {}

    def create_uploads(
        self, files: list[dict[str, Any]], *, idempotency_key: str | None = None, dataset_id: str | None = None
    ) -> dict[str, Any]:
        self.calls.append((files, idempotency_key))
        if dataset_id is not None:
            self.datasets.append(dataset_id)
        upload_id = f"u-{len(self.calls)}"
        uploads_ = [
            {
                "name": spec["name"],
                "key": f"{self.tenant_space}inputs/{upload_id}/{Path(spec['name']).name}",
                "url": f"https://s3.example/{upload_id}/{Path(spec['name']).name}",
                "headers": {"Content-Type": spec["content_type"]},
                **({"image_id": f"i-{upload_id}-{Path(spec['name']).name}"} if dataset_id else {}),
            }
            for spec in files
        ]
        return {"upload_id": upload_id, "bucket": "images", "expires_in": 900, "uploads": uploads_}

    def upload(self, url: str, path: Path, headers: dict[str, str]) -> None:
        if url.endswith(f"/{self.refuse}"):
            raise ApiError(403, "upload_failed", "SignatureDoesNotMatch")
        self.put[url] = (path.read_bytes(), headers)


def test_staging_through_the_api_signs_every_file_in_windows_and_keeps_the_images_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given five images, and POST /uploads signing two per call
    monkeypatch.setattr(uploads, "API_UPLOAD_FILES", 2)
    make_files(tmp_path, "b.png", "a.jpg", "sub/c.webp", "sub/d.tif", "e.gif")
    api = SigningApi()
    progress: list[tuple[int, int]] = []

    # when they are staged through the API
    staged = stage_through_api(
        api,
        collect_images([tmp_path]),
        workers=3,
        progress=lambda *n: progress.append(n),  # type: ignore[arg-type]
    )

    # then three calls signed them with their relative names, types and sizes, each was PUT with its signed headers,
    # and the keys (the API's, in the key's tenant's space) come back in the images' order
    assert [[spec["name"] for spec in files] for files, _ in api.calls] == [
        ["a.jpg", "b.png"],
        ["e.gif", "sub/c.webp"],
        ["sub/d.tif"],
    ]
    assert api.calls[1][0][1] == {"name": "sub/c.webp", "content_type": "image/webp", "size": 1}
    assert staged.keys == [
        "tenants/acme/inputs/u-1/a.jpg",
        "tenants/acme/inputs/u-1/b.png",
        "tenants/acme/inputs/u-2/e.gif",
        "tenants/acme/inputs/u-2/c.webp",
        "tenants/acme/inputs/u-3/d.tif",
    ]
    assert api.put["https://s3.example/u-3/d.tif"] == (b"x", {"Content-Type": "image/tiff"})
    assert sorted(progress) == [(done, 5) for done in range(1, 6)]
    assert staged.location == "s3://images/tenants/acme/inputs/"


def test_staging_with_an_idempotency_key_sends_one_key_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads, "API_UPLOAD_FILES", 2)
    make_files(tmp_path, "a.png", "b.png", "c.png")
    api = SigningApi()

    stage_through_api(api, collect_images([tmp_path]), idempotency_key="nightly")  # type: ignore[arg-type]

    assert [key for _, key in api.calls] == ["nightly#0", "nightly#1"]


def test_staging_into_a_dataset_names_it_in_every_call_and_returns_the_image_ids_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads, "API_UPLOAD_FILES", 2)
    make_files(tmp_path, "b.png", "a.png", "c.dcm")
    api = SigningApi()

    staged = stage_through_api(api, collect_images([tmp_path]), dataset_id="d-1")  # type: ignore[arg-type]

    assert api.datasets == ["d-1", "d-1"]
    assert staged.image_ids == ["i-u-1-a.png", "i-u-1-b.png", "i-u-2-c.dcm"]
    assert len(api.put) == 3


def test_staging_outside_a_dataset_returns_no_image_ids(tmp_path: Path) -> None:
    make_files(tmp_path, "a.png")
    api = SigningApi()

    staged = stage_through_api(api, collect_images([tmp_path]))  # type: ignore[arg-type]

    assert api.datasets == []
    assert staged.image_ids == []


def test_one_upload_folder_is_the_staged_location() -> None:
    staged = uploads.Staged("images", ["inputs/u-1/a.png", "inputs/u-1/sub/b.png"])
    assert staged.location == "s3://images/inputs/u-1/"


def test_a_file_the_api_would_not_sign_is_refused_before_anything_is_uploaded(tmp_path: Path) -> None:
    make_files(tmp_path, "a.png", "notes.txt")
    api = SigningApi()
    images = collect_images([tmp_path / "a.png", tmp_path / "notes.txt"])

    with pytest.raises(CliError, match=r"notes\.txt: not an image by its extension nor a DICOM file"):
        stage_through_api(api, images)  # type: ignore[arg-type]
    assert api.calls == []


def test_a_refused_put_stops_the_run_naming_the_file(tmp_path: Path) -> None:
    make_files(tmp_path, "a.png", "b.png")
    with pytest.raises(CliError, match=r"upload of .*b\.png to tenants/acme/inputs/u-1/b\.png failed"):
        stage_through_api(SigningApi(refuse="b.png"), collect_images([tmp_path]))  # type: ignore[arg-type]


def test_batch_submit_of_a_folder_stages_through_the_api_and_submits_the_keys_it_got(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a folder of two images and a named tenant's key, with no bucket and no AWS credentials
    make_files(tmp_path / "scans", "a.png", "b.png")
    api = SigningApi()
    submitted: list[dict[str, Any]] = []
    monkeypatch.setattr(ApiClient, "create_uploads", lambda self, files, **kw: api.create_uploads(files, **kw))
    monkeypatch.setattr(ApiClient, "upload", lambda self, url, path, headers: api.upload(url, path, headers))

    def submit(self: ApiClient, body: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        submitted.append(body)
        return {"batch_id": "b-1", "status": "QUEUED", "total": 2, "links": {}}

    monkeypatch.setattr(ApiClient, "submit_batch", submit)

    # when it is submitted
    code, out, err = run_cli(["batch", "submit", str(tmp_path / "scans")], tmp_path, env=ENDPOINT)

    # then the batch names the keys POST /uploads signed, in the key's tenant's space
    assert code == 0, err
    assert submitted == [{"images": ["tenants/acme/inputs/u-1/a.png", "tenants/acme/inputs/u-1/b.png"]}]
    assert "uploading 2 images through the API" in err
    assert "uploaded to s3://images/tenants/acme/inputs/u-1/" in out


def test_more_images_than_a_request_lists_are_refused_before_uploading_unless_given_a_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads, "INLINE_KEYS_LIMIT", 2)
    make_files(tmp_path / "scans", "a.png", "b.png", "c.png")
    monkeypatch.setattr(ApiClient, "request", no_stack)

    code, _, err = run_cli(["batch", "submit", str(tmp_path / "scans")], tmp_path, env=ENDPOINT)

    assert code == 1
    assert "3 images are more than the 2 one request can list" in err
    assert "--prefix" in err


def test_a_tenants_prefix_keeps_its_list_file_in_the_tenants_space() -> None:
    assert manifest_key("tenants/acme/runs/1").startswith("tenants/acme/uploads/manifests/")
    assert manifest_key("runs/1").startswith("uploads/manifests/")
    assert manifest_key("tenants/acme").startswith("uploads/manifests/")  # no space named: the default tenant's


# -- waiting -----------------------------------------------------------------------------------------------------
def test_the_poll_interval_grows_from_half_a_second_to_five() -> None:
    intervals = poll_intervals()
    first = [next(intervals) for _ in range(8)]
    assert first[0] == 0.5
    assert first == sorted(first)
    assert first[-1] == 5.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class ScriptedClient:
    """Answers GET /batches/{id} from a script of job documents and errors, repeating the last one."""

    def __init__(self, *answers: dict[str, Any] | ApiError) -> None:
        self.answers = list(answers)
        self.calls = 0

    def batch(self, batch_id: str) -> dict[str, Any]:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, ApiError):
            raise answer
        return answer


def job(status: str, predicted: int, failed: int = 0, total: int = 4) -> dict[str, Any]:
    pending = total - predicted - failed
    return {
        "batch_id": "b-1",
        "status": status,
        "total": total,
        "counts": {"predicted": predicted, "failed": failed, "pending": pending},
    }


def test_waiting_reports_only_changes_and_ends_at_a_terminal_status() -> None:
    client = ScriptedClient(
        job("QUEUED", 0), job("RUNNING", 0), job("RUNNING", 0), job("RUNNING", 2), job("COMPLETED", 4)
    )
    clock = FakeClock()
    seen: list[str] = []
    outcome = wait_for_batch(
        client,
        "b-1",
        timeout_s=60,
        on_progress=lambda document, _: seen.append(f"{document['status']} {document['counts']['predicted']}"),
        clock=clock,
        sleep=clock.sleep,
    )
    assert (outcome.finished, outcome.succeeded) == (True, True)
    assert seen == ["QUEUED 0", "RUNNING 0", "RUNNING 2", "COMPLETED 4"]
    assert client.calls == 5


def test_waiting_stops_at_the_deadline_with_the_last_status() -> None:
    client = ScriptedClient(job("RUNNING", 1))
    clock = FakeClock()
    outcome = wait_for_batch(client, "b-1", timeout_s=12, clock=clock, sleep=clock.sleep)
    assert outcome.finished is False
    assert outcome.job["status"] == "RUNNING"
    assert clock.now == 12


def test_waiting_polls_through_a_passing_gateway_error_but_not_an_unknown_batch() -> None:
    clock = FakeClock()
    retried: list[ApiError] = []
    flaky = ScriptedClient(ApiError(503, "http_503", "unavailable"), job("FAILED", 0, failed=4))
    outcome = wait_for_batch(flaky, "b-1", on_retry=retried.append, clock=clock, sleep=clock.sleep)
    assert (outcome.finished, outcome.succeeded) == (True, False)
    assert [error.status for error in retried] == [503]
    unknown = ScriptedClient(ApiError(404, "not_found", "no batch"))
    with pytest.raises(ApiError, match="no batch"):
        wait_for_batch(unknown, "b-1", clock=clock, sleep=clock.sleep)


# -- the WebSocket URL -------------------------------------------------------------------------------------------
def test_the_ws_url_flag_beats_the_environment_and_the_local_state(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    write_state(cwd, WebSocketUrl="ws://state/v1")
    target = find(Flags(ws_url="ws://flag/v1"), {"MODELRUN_WS_URL": "ws://env/v1"}, cwd, repo)
    assert target.ws_url == "ws://flag/v1"


def test_the_ws_url_environment_variable_beats_the_local_state(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    write_state(cwd, WebSocketUrl="ws://state/v1")
    assert find(Flags(), {"MODELRUN_WS_URL": "ws://env/v1"}, cwd, repo).ws_url == "ws://env/v1"


def test_the_local_state_gives_its_websocket_url(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    write_state(cwd, WebSocketUrl="ws://127.0.0.1:3001/v1")
    assert find(Flags(), {}, cwd, repo).ws_url == "ws://127.0.0.1:3001/v1"


def test_an_explicit_endpoint_does_not_borrow_the_local_states_websocket_url(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    write_state(cwd, WebSocketUrl="ws://127.0.0.1:3001/v1")
    env = {"MODELRUN_ENDPOINT": "https://other/v1/", "MODELRUN_API_KEY": "k"}
    assert find(Flags(), env, cwd, repo).ws_url is None


def test_a_deployed_stack_gives_its_websocket_url_output(aws: Any) -> None:
    key = boto3.client("apigateway").create_api_key(name="clients", value="the-secret-value-of-the-key", enabled=True)
    deploy_outputs(
        {
            "ApiUrl": "https://abc.execute-api/v1/",
            "ApiKeyId": key["id"],
            "ImagesBucketName": "images",
            "WebSocketUrl": "wss://ws.execute-api/v1",
        }
    )
    assert read_cloudformation_stack("modelrun-prod").ws_url == "wss://ws.execute-api/v1"


def test_the_api_key_is_added_to_the_websocket_url_unless_it_carries_one() -> None:
    assert ws_url_with_key("ws://127.0.0.1:3001/v1", "k 1") == "ws://127.0.0.1:3001/v1?api_key=k+1"
    assert ws_url_with_key("wss://x/v1?a=b", "k") == "wss://x/v1?a=b&api_key=k"
    assert ws_url_with_key("wss://x/v1?api_key=mine", "k") == "wss://x/v1?api_key=mine"


# -- a fake WebSocket API (the progress contract), on a free loopback port ------------------------------------
KEY = "watch-key"
Script = Callable[[Any, dict[str, Any]], None]


@dataclass
class FakeLiveApi:
    """A WebSocket server speaking the progress contract: it checks the API key at connect, records what clients
    send, and answers a subscribe with ``script(connection, subscribe_message)``."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    header_keys: list[str | None] = field(default_factory=list)


@pytest.fixture
def live_api() -> Iterator[Callable[[Script], FakeLiveApi]]:
    servers: list[Any] = []

    def start(script: Script) -> FakeLiveApi:
        api = FakeLiveApi(url="")

        def check_key(connection: Any, request: Any) -> Any:
            api.paths.append(request.path)
            api.header_keys.append(request.headers.get("x-api-key"))
            if f"api_key={KEY}" not in request.path:
                return connection.respond(HTTPStatus.FORBIDDEN, "Forbidden\n")
            return None

        def handler(connection: Any) -> None:
            for raw in connection:
                message = json.loads(raw)
                api.received.append(message)
                if message.get("action") == "subscribe":
                    connection.send(json.dumps({"type": "subscribed", "batch_id": message["batch_id"]}))
                    script(connection, message)

        server = websocket_serve(handler, "127.0.0.1", 0, process_request=check_key)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        api.url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/v1"
        return api

    yield start
    for server in servers:
        server.shutdown()


def message(kind: str, status: str, predicted: int, failed: int = 0, total: int = 4, **extra: Any) -> dict[str, Any]:
    done = predicted + failed
    return {
        "type": kind,
        "batch_id": "b-1",
        "status": status,
        "attempt": 1,
        "total": total,
        "counts": {"predicted": predicted, "failed": failed, "pending": total - done},
        "percent": round(100.0 * done / total, 2),
        "rate": 2.0 if done else None,
        "eta_s": (total - done) / 2.0 if done else None,
        "updated_at": "2026-11-19T10:13:20.000Z",
        **extra,
    }


def sends(*messages: dict[str, Any]) -> Script:
    def script(connection: Any, _subscribe: dict[str, Any]) -> None:
        for sent in messages:
            connection.send(json.dumps(sent))

    return script


def watch(client: Any, ws_url: str | None, **kwargs: Any) -> tuple[Any, list[dict[str, Any]], list[str]]:
    seen: list[dict[str, Any]] = []
    notes: list[str] = []
    clock = kwargs.pop("clock", None) or FakeClock()
    outcome = watch_batch(
        client,
        "b-1",
        ws_url=ws_url,
        api_key=KEY,
        timeout_s=kwargs.pop("timeout_s", 30),
        on_progress=seen.append,
        on_note=notes.append,
        clock=clock,
        sleep=kwargs.pop("sleep", getattr(clock, "sleep", None)),
    )
    return outcome, seen, notes


def test_watching_follows_the_live_messages_to_the_completed_one_and_ends_with_the_job_document(
    live_api: Callable[[Script], FakeLiveApi],
) -> None:
    # Given a WebSocket API that sends two progress messages and then the completed one
    completed = message("completed", "COMPLETED", 4, links={"results": "r", "errors": "e"})
    api = live_api(sends(message("progress", "RUNNING", 1), message("progress", "RUNNING", 3), completed))
    client = ScriptedClient(job("RUNNING", 0), job("COMPLETED", 4))

    # When the batch is watched
    outcome, seen, notes = watch(client, api.url)

    # Then every live message reached the view, in order, and the outcome is the final job document
    assert [(update["type"], update["counts"]["predicted"]) for update in seen] == [
        ("progress", 0),
        ("progress", 1),
        ("progress", 3),
        ("completed", 4),
    ]
    assert (outcome.finished, outcome.succeeded, outcome.job["status"]) == (True, True, "COMPLETED")
    assert notes == []
    assert client.calls == 2  # once before subscribing, once at the end: no polling


def test_watching_subscribes_to_the_batch_with_the_api_key_in_the_query_and_the_header(
    live_api: Callable[[Script], FakeLiveApi],
) -> None:
    api = live_api(sends(message("completed", "COMPLETED", 4)))
    watch(ScriptedClient(job("RUNNING", 0), job("COMPLETED", 4)), api.url)
    assert api.received[0] == {"action": "subscribe", "batch_id": "b-1"}
    assert api.paths == [f"/v1?api_key={KEY}"]
    assert api.header_keys == [KEY]


def test_messages_about_other_batches_and_unknown_types_are_ignored(
    live_api: Callable[[Script], FakeLiveApi],
) -> None:
    other = {**message("completed", "FAILED", 0, failed=4), "batch_id": "b-other"}
    api = live_api(sends(other, {"type": "hello", "batch_id": "b-1"}, message("completed", "COMPLETED", 4)))
    _, seen, _ = watch(ScriptedClient(job("RUNNING", 0), job("COMPLETED", 4)), api.url)
    assert [update["status"] for update in seen] == ["RUNNING", "COMPLETED"]


def test_a_batch_already_ended_needs_no_connection(live_api: Callable[[Script], FakeLiveApi]) -> None:
    api = live_api(sends())
    outcome, seen, notes = watch(ScriptedClient(job("COMPLETED_WITH_ERRORS", 3, failed=1)), api.url)
    assert (outcome.finished, outcome.succeeded) == (True, True)
    assert [update["type"] for update in seen] == ["completed"]
    assert (api.paths, notes) == ([], [])


def test_a_refused_connection_falls_back_to_polling_and_says_so_once(
    live_api: Callable[[Script], FakeLiveApi],
) -> None:
    # Given a WebSocket API that refuses this key (403)
    api = live_api(sends())
    wrong = api.url.replace("/v1", "/v1?api_key=wrong")
    client = ScriptedClient(job("RUNNING", 0), job("RUNNING", 2), job("RUNNING", 3), job("COMPLETED", 4))

    # When the batch is watched
    outcome, seen, notes = watch(client, wrong)

    # Then it is polled to its end, with one note naming why
    assert outcome.job["status"] == "COMPLETED"
    assert [update["counts"]["predicted"] for update in seen] == [0, 2, 3, 4]
    assert len(notes) == 1
    assert "HTTP 403" in notes[0]
    assert "polling GET /batches/b-1" in notes[0]


def test_no_websocket_url_polls_and_says_where_a_url_would_come_from(tmp_path: Path) -> None:
    outcome, _, notes = watch(ScriptedClient(job("RUNNING", 0), job("COMPLETED", 4)), None)
    assert outcome.finished is True
    assert len(notes) == 1
    assert "--ws-url" in notes[0]
    assert "MODELRUN_WS_URL" in notes[0]


def test_nothing_listening_at_the_websocket_url_falls_back_to_polling() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome, _, notes = watch(ScriptedClient(job("RUNNING", 0), job("COMPLETED", 4)), f"ws://127.0.0.1:{port}/v1")
    assert outcome.job["status"] == "COMPLETED"
    assert len(notes) == 1
    assert "nothing answers at the WebSocket URL" in notes[0]


def test_a_connection_that_drops_midway_falls_back_to_polling(live_api: Callable[[Script], FakeLiveApi]) -> None:
    def drop(connection: Any, _subscribe: dict[str, Any]) -> None:
        connection.send(json.dumps(message("progress", "RUNNING", 1)))
        connection.close()

    api = live_api(drop)
    client = ScriptedClient(job("RUNNING", 0), job("RUNNING", 2), job("COMPLETED", 4))
    outcome, seen, notes = watch(client, api.url)
    assert outcome.job["status"] == "COMPLETED"
    assert seen[1]["counts"]["predicted"] == 1  # the live message before the drop
    assert len(notes) == 1
    assert "closed" in notes[0]


def test_an_error_message_from_the_websocket_api_falls_back_to_polling(
    live_api: Callable[[Script], FakeLiveApi],
) -> None:
    error = {"type": "error", "code": "not_found", "message": "no batch b-1 yet"}
    api = live_api(sends(error))
    outcome, _, notes = watch(ScriptedClient(job("RUNNING", 0), job("COMPLETED", 4)), api.url)
    assert outcome.job["status"] == "COMPLETED"
    assert "not_found: no batch b-1 yet" in notes[0]


def test_a_silent_websocket_is_checked_against_the_rest_api_so_a_lost_completed_message_ends_the_watch(
    live_api: Callable[[Script], FakeLiveApi], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a WebSocket API that never sends progress, and a batch that ends meanwhile
    monkeypatch.setattr(waiting, "LIVE_SILENCE_S", 0.05)
    api = live_api(sends())
    client = ScriptedClient(job("RUNNING", 0), job("RUNNING", 1), job("COMPLETED", 4))

    # When it is watched
    outcome, _, notes = watch(client, api.url)

    # Then the silence is checked through GET /batches/{id} and the watch ends there, still on the WebSocket
    assert (outcome.finished, outcome.job["status"]) == (True, "COMPLETED")
    assert notes == []


def test_a_live_watch_stops_at_the_deadline_with_the_last_status(live_api: Callable[[Script], FakeLiveApi]) -> None:
    api = live_api(sends(message("progress", "RUNNING", 1)))
    outcome, _, _ = watch(ScriptedClient(job("RUNNING", 1)), api.url, timeout_s=0.3, clock=time.monotonic)
    assert (outcome.finished, outcome.job["status"]) == (False, "RUNNING")


def test_polling_measures_a_rate_and_an_eta_once_the_counts_move() -> None:
    clock = FakeClock()
    meter = RateMeter(clock)
    assert meter.measure(job("RUNNING", 0, total=100)) == (None, None)
    clock.now = 2.0
    rate, eta_s = meter.measure(job("RUNNING", 10, total=100))
    assert (rate, eta_s) == (5.0, 18.0)


# -- the progress bar --------------------------------------------------------------------------------------------
def test_the_bar_shows_percent_counts_rate_eta_and_status() -> None:
    progress = message("progress", "RUNNING", 12, failed=1, total=31)
    progress.update(percent=41.94, rate=6.5, eta_s=2.6)
    assert output.format_bar(progress, width=10) == (
        "[####------]  41.9%  13/31 (12 predicted, 1 failed)  6.5 img/s  ETA 3s  RUNNING"
    )


def test_an_unknown_rate_and_eta_show_as_dashes() -> None:
    assert "- img/s  ETA -  QUEUED" in output.format_bar(message("progress", "QUEUED", 0))


@pytest.mark.parametrize(("seconds", "shown"), [(0.4, "0s"), (59, "59s"), (185, "3m05s"), (7620, "2h07m")])
def test_durations_read_as_seconds_minutes_and_hours(seconds: float, shown: str) -> None:
    assert output.duration(seconds) == shown


def test_off_a_terminal_the_bar_is_a_line_per_status_change_and_at_most_one_per_interval_otherwise() -> None:
    stream, clock = io.StringIO(), FakeClock()
    line = output.ProgressLine(stream, interval_s=2.0, clock=clock)
    line.show(message("progress", "QUEUED", 0))
    line.show(message("progress", "RUNNING", 1))  # a new status: written at once
    clock.now = 1.0
    line.show(message("progress", "RUNNING", 2))  # counts only, within the interval: skipped
    clock.now = 2.5
    line.show(message("progress", "RUNNING", 3))  # the interval passed: written
    line.show(message("completed", "COMPLETED", 4))
    line.finish()
    assert [text.split()[-1] for text in stream.getvalue().splitlines()] == [
        "QUEUED",
        "RUNNING",
        "RUNNING",
        "COMPLETED",
    ]
    assert "3/4" in stream.getvalue().splitlines()[2]


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_notes_print_above_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    stream = io.StringIO()
    line = output.ProgressLine(stream, tty=True)
    line.show(message("progress", "RUNNING", 1))
    line.note("live progress unavailable")
    line.show(message("progress", "RUNNING", 2))
    line.finish()
    text = stream.getvalue()
    assert text.count("\n") == 2  # the note's line and the end of the bar
    assert "\r\x1b[Klive progress unavailable\n" in text
    assert text.endswith("RUNNING\x1b[K\n")


def test_on_a_narrow_terminal_the_bar_is_cut_to_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "41")
    stream = io.StringIO()
    output.ProgressLine(stream, tty=True).show(message("progress", "RUNNING", 1))
    assert stream.getvalue() == "\r[######------------------]  25.0%  1/4 (\x1b[K"  # 40 characters


# -- watch, errors, retry, reconcile from the command line -----------------------------------------------------
ENDPOINT = {"MODELRUN_ENDPOINT": "http://x/", "MODELRUN_API_KEY": KEY}


def scripted_batches(monkeypatch: pytest.MonkeyPatch, *documents: dict[str, Any]) -> ScriptedClient:
    scripted = ScriptedClient(*documents)
    monkeypatch.setattr(ApiClient, "batch", lambda self, batch_id: scripted.batch(batch_id))
    monkeypatch.setattr(waiting, "FIRST_INTERVAL_S", 0.01)
    return scripted


def test_batch_watch_json_prints_only_the_final_job_document_and_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_api: Callable[[Script], FakeLiveApi]
) -> None:
    api = live_api(sends(message("progress", "RUNNING", 2), message("completed", "COMPLETED", 4)))
    scripted_batches(monkeypatch, job("QUEUED", 0), job("COMPLETED", 4))
    code, out, err = run_cli(["batch", "watch", "b-1", "--json", "--ws-url", api.url], tmp_path, env=ENDPOINT)
    assert code == 0
    assert json.loads(out)["status"] == "COMPLETED"
    assert "2/4 (2 predicted, 0 failed)" in err
    assert "polling" not in err


def test_batch_watch_without_a_websocket_polls_and_prints_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted_batches(monkeypatch, job("RUNNING", 0), job("COMPLETED_WITH_ERRORS", 3, failed=1))
    code, out, err = run_cli(["batch", "watch", "b-1"], tmp_path, env=ENDPOINT)
    assert code == 0
    assert out.splitlines()[0] == "b-1 COMPLETED_WITH_ERRORS"
    assert err.count("polling GET /batches/b-1") == 1
    assert "modelrun batch errors b-1" in err


def test_batch_watch_exits_1_for_a_failed_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_batches(monkeypatch, job("RUNNING", 0), job("FAILED", 0, failed=4))
    code, _, err = run_cli(["batch", "watch", "b-1"], tmp_path, env=ENDPOINT)
    assert code == 1
    assert "FAILED" in err


def test_batch_watch_exits_1_at_its_timeout_saying_how_to_follow_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted_batches(monkeypatch, job("RUNNING", 1))
    code, out, err = run_cli(["batch", "watch", "b-1", "--timeout", "0.2"], tmp_path, env=ENDPOINT)
    assert code == 1
    assert out.splitlines()[0] == "b-1 RUNNING"
    assert "`modelrun batch watch b-1` follows it again" in err


def test_an_unknown_batch_ends_the_watch_with_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_batches(monkeypatch, ApiError(404, "not_found", "no batch 'b-1'"))
    code, _, err = run_cli(["batch", "watch", "b-1"], tmp_path, env=ENDPOINT)
    assert code == 1
    assert "not_found: no batch 'b-1' (HTTP 404)" in err


# -- a local stack that restarted ----------------------------------------------------------------------------------
FIRST_RUN = {"InstanceId": "run-1", "StartedAt": "2025-03-01T12:00:00+00:00", "pid": os.getpid()}
SECOND_RUN = {"InstanceId": "run-2", "StartedAt": "2025-03-01T12:05:00+00:00", "pid": os.getpid()}


class RestartingStack:
    """GET /batches/{id}: the batch runs, then the local stack restarts (a new state file) and no longer knows it."""

    def __init__(self, folder: Path, after: dict[str, Any] | None) -> None:
        self.folder = folder
        self.after = after  # the state file the restart writes; None: the stack stopped and removed it
        self.calls = 0

    def batch(self, batch_id: str) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            return job("RUNNING", 1)
        if self.after is None:
            (self.folder / ".modelrun" / "local.json").unlink()
        else:
            write_state(self.folder, **self.after)
        raise ApiError(404, "not_found", f"no batch '{batch_id}': check the id returned by POST /batches")


def wait_through(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, after: dict[str, Any] | None) -> tuple[int, str]:
    write_state(tmp_path, **FIRST_RUN)
    stack = RestartingStack(tmp_path, after)
    monkeypatch.setattr(ApiClient, "batch", lambda self, batch_id: stack.batch(batch_id))
    monkeypatch.setattr(waiting, "FIRST_INTERVAL_S", 0.01)
    code, _, err = run_cli(["batch", "wait", "b-1", "--timeout", "30"], tmp_path)
    return code, err


def test_a_batch_lost_to_a_local_stack_restart_is_reported_as_the_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given `batch wait` following a batch on the local stack found through its state file
    # When the stack restarts meanwhile and answers 404 for the batch
    code, err = wait_through(monkeypatch, tmp_path, SECOND_RUN)

    # Then the CLI says the stack restarted and the batch is gone, not that the id may be wrong
    assert code == 1
    assert "was restarted at 2025-03-01T12:05:00+00:00" in err
    assert "started at 2025-03-01T12:00:00+00:00" in err
    assert "keeps its state in memory: batch b-1 is gone" in err
    assert "check the id" not in err


def test_a_batch_lost_because_the_local_stack_stopped_says_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err = wait_through(monkeypatch, tmp_path, None)
    assert code == 1
    assert "the local stack this command was talking to has stopped" in err
    assert "check the id" not in err


def test_an_unknown_batch_on_the_same_local_stack_run_keeps_the_api_message_and_says_what_a_restart_loses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the local stack still on the run the CLI found
    # When it answers 404 for the batch
    code, err = wait_through(monkeypatch, tmp_path, FIRST_RUN)

    # Then the API's own message stands, with what a restart before this run would have lost
    assert code == 1
    assert "not_found: no batch 'b-1': check the id returned by POST /batches (HTTP 404)" in err
    assert "a batch submitted before it started at 2025-03-01T12:00:00+00:00 is gone" in err
    assert "restarted" not in err


# -- credentials for the local AWS endpoint ------------------------------------------------------------------------
def test_the_local_state_gives_the_aws_endpoint_s_credentials(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    write_state(cwd, AwsAccessKeyId="AKIALOCAL", AwsSecretAccessKey="local-secret")
    target = find(Flags(), {"AWS_ACCESS_KEY_ID": "AKIAREAL", "AWS_SECRET_ACCESS_KEY": "real"}, cwd, repo)
    assert target.aws_credentials == ("AKIALOCAL", "local-secret")


def test_an_aws_endpoint_named_by_flag_signs_with_the_exported_credentials(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    env = {**ENDPOINT, "AWS_ACCESS_KEY_ID": "AKIALOCAL", "AWS_SECRET_ACCESS_KEY": "local-secret"}
    target = find(Flags(aws_endpoint="http://127.0.0.1:5001"), env, cwd, repo)
    client = uploads.s3_client(target)
    signer_credentials = client._request_signer._credentials.get_frozen_credentials()
    assert (signer_credentials.access_key, signer_credentials.secret_key) == ("AKIALOCAL", "local-secret")


def test_an_aws_endpoint_without_credentials_says_which_to_set(places: tuple[Path, Path]) -> None:
    cwd, repo = places
    target = find(Flags(aws_endpoint="http://127.0.0.1:5001"), dict(ENDPOINT), cwd, repo)
    with pytest.raises(CliError, match="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        uploads.s3_client(target)


def capture_submits(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []

    def submit(self: ApiClient, body: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        bodies.append(dict(body))
        return {"batch_id": "b-1", "status": "QUEUED", "total": 4, "links": {}}

    monkeypatch.setattr(ApiClient, "submit_batch", submit)
    return bodies


@pytest.mark.parametrize(
    ("flags", "faults"),
    [
        (["--faults", '{"transient_rate": 0.1, "fail_chunks": [2]}'], {"transient_rate": 0.1, "fail_chunks": [2]}),
        (["--transient-rate", "0.2", "--timeout-rate", "0.05"], {"transient_rate": 0.2, "timeout_rate": 0.05}),
        (["--faults", '{"fail_chunks": [0]}', "--timeout-rate", "1"], {"fail_chunks": [0], "timeout_rate": 1.0}),
    ],
)
def test_faults_go_into_the_request_from_json_and_the_shorthands(
    flags: list[str], faults: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = capture_submits(monkeypatch)
    env = {**ENDPOINT, "MODELRUN_BUCKET": "images"}
    code, _, _ = run_cli(["batch", "submit", "s3://images/scans/", *flags], tmp_path, env=env)
    assert code == 0
    assert bodies == [{"s3_prefix": "scans/", "faults": faults}]


def test_a_fault_given_twice_is_refused_before_submitting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = capture_submits(monkeypatch)
    env = {**ENDPOINT, "MODELRUN_BUCKET": "images"}
    argv = ["batch", "submit", "s3://images/scans/", "--faults", '{"transient_rate": 0.1}', "--transient-rate", "0.2"]
    code, _, err = run_cli(argv, tmp_path, env=env)
    assert (code, bodies) == (1, [])
    assert "--transient-rate and --faults both set transient_rate" in err


def test_submit_watch_prints_the_batch_id_first_then_follows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture_submits(monkeypatch)
    scripted_batches(monkeypatch, job("QUEUED", 0), job("COMPLETED", 4))
    env = {**ENDPOINT, "MODELRUN_BUCKET": "images"}
    code, out, err = run_cli(["batch", "submit", "s3://images/scans/", "--watch"], tmp_path, env=env)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "b-1"
    assert "b-1 COMPLETED" in lines
    assert "[" in err


REPORT = {
    "batch_id": "b-1",
    "status": "COMPLETED_WITH_ERRORS",
    "attempt": 1,
    "failed": 3,
    "summary": {"invalid_image": 2, "image_not_found": 1},
    "summary_complete": True,
    "links": {"csv": "http://files/errors-1.csv?X-Amz-Signature=s", "jsonl": "http://files/errors-1.jsonl?s"},
}
ENTRIES = [
    {
        "item": item,
        "key": f"scans/{item}.png",
        "code": code,
        "message": f"bad, {item}",
        "attempts": 1,
        "last_attempt_at": "2026-11-19T10:13:20.000Z",
    }
    for item, code in ((1, "invalid_image"), (3, "image_not_found"), (4, "invalid_image"))
]


def paged_errors(monkeypatch: pytest.MonkeyPatch, report: dict[str, Any] = REPORT) -> list[tuple[Any, Any]]:
    """GET /batches/{id}/errors over ENTRIES, ``limit`` at a time, with opaque tokens; the calls made."""
    calls: list[tuple[Any, Any]] = []

    def errors(self: ApiClient, batch_id: str, *, limit: int | None = None, next_token: str | None = None) -> Any:
        calls.append((limit, next_token))
        start = int(next_token or 0)
        size = limit or 100
        end = start + size
        token = str(end) if end < len(ENTRIES) else None
        return {**report, "errors": ENTRIES[start:end], "next_token": token}

    monkeypatch.setattr(ApiClient, "errors", errors)
    return calls


def test_the_error_report_prints_the_summary_by_code_then_a_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paged_errors(monkeypatch)
    code, out, _ = run_cli(["batch", "errors", "b-1"], tmp_path, env=ENDPOINT)
    lines = out.splitlines()
    assert code == 0
    assert lines[:3] == [
        "b-1 COMPLETED_WITH_ERRORS: 3 failed images",
        "  invalid_image    2",
        "  image_not_found  1",
    ]
    assert lines[3].split() == ["ITEM", "KEY", "CODE", "ATTEMPT", "LAST", "ATTEMPT", "MESSAGE"]
    assert lines[4].split()[:3] == ["1", "scans/1.png", "invalid_image"]
    assert lines[4].endswith("bad, 1")


def test_the_error_report_as_csv_follows_every_page_with_one_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = paged_errors(monkeypatch)
    code, out, _ = run_cli(["batch", "errors", "b-1", "--all", "--limit", "2", "--csv"], tmp_path, env=ENDPOINT)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0
    assert calls == [(2, None), (2, "2")]
    assert rows == [{name: str(entry[name]) for name in ERROR_FIELDS} for entry in ENTRIES]


def test_the_error_report_csv_columns_are_those_of_the_error_file() -> None:
    assert output.ERROR_CSV_COLUMNS == ERROR_FIELDS


def test_the_error_report_as_json_holds_the_summary_links_and_every_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paged_errors(monkeypatch)
    code, out, _ = run_cli(["batch", "errors", "b-1", "--all", "--limit", "1", "--json"], tmp_path, env=ENDPOINT)
    document = json.loads(out)
    assert code == 0
    assert (document["errors"], document["summary"], document["next_token"]) == (ENTRIES, REPORT["summary"], None)
    assert document["links"] == REPORT["links"]


def test_one_page_of_the_error_report_says_how_to_get_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paged_errors(monkeypatch)
    code, out, err = run_cli(["batch", "errors", "b-1", "--limit", "2", "--jsonl"], tmp_path, env=ENDPOINT)
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == ENTRIES[:2]
    assert "--next-token 2" in err


def test_download_saves_both_error_files_in_the_folder_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paged_errors(monkeypatch)
    fetched: list[str] = []

    def download(self: ApiClient, url: str, path: Path) -> int:
        fetched.append(url)
        path.write_text(url)
        return len(url)

    monkeypatch.setattr(ApiClient, "download", download)
    folder = tmp_path / "reports" / "today"
    code, out, _ = run_cli(["batch", "errors", "b-1", "--download", str(folder)], tmp_path, env=ENDPOINT)
    assert code == 0
    assert out.splitlines() == [str(folder / "b-1-errors.csv"), str(folder / "b-1-errors.jsonl")]
    assert fetched == [REPORT["links"]["csv"], REPORT["links"]["jsonl"]]


def test_download_of_a_running_batch_says_the_files_come_at_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paged_errors(monkeypatch, {**REPORT, "status": "RUNNING", "links": {}})
    code, out, err = run_cli(["batch", "errors", "b-1", "--download", str(tmp_path)], tmp_path, env=ENDPOINT)
    assert (code, out) == (1, "")
    assert "written when it ends" in err


def test_download_of_a_batch_without_failures_has_nothing_to_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paged_errors(monkeypatch, {**REPORT, "status": "COMPLETED", "summary": {}, "links": {}})
    code, out, err = run_cli(["batch", "errors", "b-1", "--download", str(tmp_path / "d")], tmp_path, env=ENDPOINT)
    assert (code, out) == (0, "")
    assert "nothing to download" in err
    assert not (tmp_path / "d").exists()


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    """A plain HTTP server over a folder holding errors.csv, on a free loopback port."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "errors.csv").write_text("item,key\n1,a.png\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_download_writes_the_object_whole(file_server: str, tmp_path: Path) -> None:
    target = tmp_path / "got.csv"
    size = ApiClient("http://x/", "k").download(f"{file_server}/errors.csv?X-Amz-Signature=abc", target)
    assert (size, target.read_text()) == (17, "item,key\n1,a.png\n")


def test_a_refused_download_leaves_no_file_and_says_links_expire(file_server: str, tmp_path: Path) -> None:
    target = tmp_path / "got.csv"
    with pytest.raises(ApiError, match="links expire after an hour") as raised:
        ApiClient("http://x/", "k").download(f"{file_server}/missing.csv?sig", target)
    assert raised.value.status == 404
    assert not target.exists()
    assert list(tmp_path.glob("*.part")) == []


def test_retry_prints_the_new_attempt_and_how_many_images_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = {"batch_id": "b-1", "status": "QUEUED", "attempt": 2, "retried": 3, "execution_arn": "arn", "links": {}}
    monkeypatch.setattr(ApiClient, "retry", lambda self, batch_id: answer)
    code, out, _ = run_cli(["batch", "retry", "b-1"], tmp_path, env=ENDPOINT)
    assert code == 0
    assert out.splitlines() == ["b-1", "  attempt  2: 3 images again (QUEUED)"]


def test_retry_with_nothing_to_retry_exits_1_with_the_conflict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def conflict(self: ApiClient, batch_id: str) -> dict[str, Any]:
        raise ApiError(409, "conflict", "batch b-1 is COMPLETED: only a batch that ended with failures ...")

    monkeypatch.setattr(ApiClient, "retry", conflict)
    code, out, err = run_cli(["batch", "retry", "b-1", "--watch"], tmp_path, env=ENDPOINT)
    assert (code, out) == (1, "")
    assert "conflict: batch b-1 is COMPLETED" in err


def test_retry_watch_follows_the_new_attempt_to_its_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = {"batch_id": "b-1", "status": "QUEUED", "attempt": 2, "retried": 1, "links": {}}
    monkeypatch.setattr(ApiClient, "retry", lambda self, batch_id: answer)
    scripted_batches(monkeypatch, job("QUEUED", 3), job("COMPLETED", 4))
    code, out, _ = run_cli(["batch", "retry", "b-1", "--watch", "--json"], tmp_path, env=ENDPOINT)
    assert code == 0
    assert json.loads(out)["status"] == "COMPLETED"


def test_reconcile_prints_the_recounted_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ApiClient, "reconcile", lambda self, batch_id: JOB)
    code, out, _ = run_cli(["batch", "reconcile", "b-1"], tmp_path, env=ENDPOINT)
    assert code == 0
    assert out.splitlines()[0] == "b-1 COMPLETED_WITH_ERRORS"


def test_the_job_summary_lists_the_error_files() -> None:
    files = {"csv": "http://f/errors-1.csv", "jsonl": "http://f/errors-1.jsonl"}
    lines = output.format_job({**JOB, "links": {**JOB["links"], "errors_files": files}}).splitlines()
    assert lines[-2:] == ["  err csv  http://f/errors-1.csv", "  err jsonl http://f/errors-1.jsonl"]


# -- predict: the image as the body, or uploaded and named by image_s3 ------------------------------------------
PREDICTION = {"model": "digits", "version": "1", "label": "7", "score": 0.99, "top_k": [{"label": "7", "score": 0.99}]}


@pytest.fixture
def predict_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every API request and presigned upload of a ``predict`` run, in order, with a body limit of 100 bytes; POST
    /uploads signs into a tenant's space, as it does for a named tenant's key."""
    log: list[tuple[str, Any]] = []

    def request(self: ApiClient, method: str, path: str, **kwargs: Any) -> Any:
        log.append(("request", {"method": method, "path": path, **kwargs}))
        if path != "uploads":
            return PREDICTION
        [spec] = kwargs["json"]["files"]
        key = f"tenants/acme/inputs/u-1/{spec['name']}"
        signed = {"name": spec["name"], "key": key, "url": f"https://s3.example/{key}", "headers": {"X": "signed"}}
        return {"upload_id": "u-1", "bucket": "images", "expires_in": 900, "uploads": [signed]}

    def upload(self: ApiClient, url: str, path: Path, headers: Mapping[str, str]) -> None:
        log.append(("put", {"url": url, "body": path.read_bytes(), "headers": dict(headers)}))

    def no_s3(target: Any) -> Any:
        raise AssertionError("predict needs no S3 client of its own")

    monkeypatch.setattr(ApiClient, "request", request)
    monkeypatch.setattr(ApiClient, "upload", upload)
    monkeypatch.setattr(commands, "s3_client", no_s3)
    monkeypatch.setattr(uploads, "DIRECT_BODY_LIMIT", 100)
    return log


def test_the_body_limit_leaves_room_in_lambdas_6_mb_event_for_the_base64_image_and_the_rest() -> None:
    base64_image = -(-uploads.DIRECT_BODY_LIMIT // 3) * 4
    assert base64_image + 256 * 1024 <= 6 * 1024 * 1024  # headers, request context and the JSON around the body
    assert uploads.DIRECT_BODY_LIMIT == 4 * 1024 * 1024


def test_an_image_of_up_to_the_body_limit_goes_as_the_request_body(
    tmp_path: Path, predict_calls: list[tuple[str, Any]]
) -> None:
    (tmp_path / "small.png").write_bytes(b"p" * 100)
    env = {**ENDPOINT, "MODELRUN_BUCKET": "images"}
    code, out, err = run_cli(["predict", str(tmp_path / "small.png"), "--model", "digits"], tmp_path, env=env)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "7 0.9900"
    assert predict_calls == [
        (
            "request",
            {
                "method": "POST",
                "path": "predictions",
                "data": b"p" * 100,
                "params": {"model": "digits"},
                "headers": {"Content-Type": "image/png"},
                "retry": True,
            },
        )
    ]


def test_an_image_over_the_body_limit_is_uploaded_through_the_api_then_predicted_by_image_s3(
    tmp_path: Path, predict_calls: list[tuple[str, Any]]
) -> None:
    # given an image one byte over the body limit, and no images bucket named anywhere
    (tmp_path / "big.png").write_bytes(b"p" * 101)
    argv = ["predict", str(tmp_path / "big.png"), "--model", "digits", "--version", "1", "--json"]

    # when it is predicted
    code, out, err = run_cli(argv, tmp_path, env=ENDPOINT)

    # then it is signed by POST /uploads (into the key's tenant's space), put to the signed link, then named by
    # image_s3; stdout is the answer alone
    assert code == 0
    assert json.loads(out) == PREDICTION
    assert [kind for kind, _ in predict_calls] == ["request", "put", "request"]
    (_, sign), (_, put), (_, predict) = predict_calls
    assert (sign["method"], sign["path"]) == ("POST", "uploads")
    assert sign["json"] == {"files": [{"name": "big.png", "content_type": "image/png", "size": 101}]}
    key = "tenants/acme/inputs/u-1/big.png"
    assert put == {"url": f"https://s3.example/{key}", "body": b"p" * 101, "headers": {"X": "signed"}}
    assert predict == {
        "method": "POST",
        "path": "predictions",
        "json": {"model": "digits", "version": "1", "image_s3": {"bucket": "images", "key": key}},
        "retry": True,
    }
    assert err.splitlines() == [
        f"{tmp_path / 'big.png'} (101 bytes) is over the 100 bytes a request body can carry through API Gateway: "
        "uploading it through the API (POST /uploads) into this API key's space and predicting it from there "
        "(image_s3)"
    ]


def test_a_file_over_the_body_limit_that_is_no_image_is_refused_before_any_request(
    tmp_path: Path, predict_calls: list[tuple[str, Any]]
) -> None:
    # given a large file with no image extension and no DICOM marker
    (tmp_path / "notes.txt").write_bytes(b"n" * 101)

    # when it is predicted, then nothing is signed, uploaded or predicted, and the message says why
    code, out, err = run_cli(["predict", str(tmp_path / "notes.txt")], tmp_path, env=ENDPOINT)
    assert (code, out, predict_calls) == (1, "", [])
    assert "not an image by its extension nor a DICOM file" in err

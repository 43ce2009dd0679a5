"""The modelrun CLI without a stack: where it finds the stack, its arguments, its output, its file handling."""

from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto import mock_aws

from modelrun_cli import client as client_module
from modelrun_cli import output, uploads
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
    upload_images,
    upload_prefix,
)
from modelrun_cli.waiting import poll_intervals, wait_for_batch

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


def test_uploading_without_a_known_bucket_asks_for_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.png").write_bytes(b"png")
    monkeypatch.setattr(ApiClient, "request", no_stack)
    env = {"MODELRUN_ENDPOINT": "http://x/", "MODELRUN_API_KEY": "k"}
    code, _, err = run_cli(["batch", "submit", str(tmp_path / "a.png")], tmp_path, env=env)
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
            {"name": "digits", "version": "1", "input": {"size": [8, 8], "color_mode": "L", "layout": "NCHW"}},
            {"name": "other", "version": "2", "labels": ["a", "b"], "description": "x " * 80},
        ],
    }
    lines = output.format_models(catalogue).splitlines()
    assert lines[1].split()[:3] == ["digits*", "1", "8x8"]
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
        ("scan.dcm", "application/octet-stream"),
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

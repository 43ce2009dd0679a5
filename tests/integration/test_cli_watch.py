"""The CLI's live view against the local stack: ``batch submit --watch`` and ``batch watch`` through the real local
WebSocket API (and by polling without one), with ``retry --watch``, ``reconcile`` and injected faults."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest

from modelrun_cli.main import main, run
from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import API_KEY, Api, sample
from tests.integration.helpers import wait_for

CORRUPT = b"\x89PNG\r\n\x1a\n this is not really a PNG"
TIMEOUT = ["--timeout", "180"]
POLLING_NOTE = "polling GET /batches/"


@pytest.fixture(autouse=True)
def no_outside_configuration(monkeypatch: pytest.MonkeyPatch, aws_environment: dict[str, str]) -> None:
    """The developer's own MODELRUN_* settings must not steer these tests; the local stack's AWS credentials are
    exported, as the stack prints them for."""
    for name in ("ENDPOINT", "API_KEY", "BUCKET", "AWS_ENDPOINT", "STACK", "LOCAL_STATE", "WS_URL"):
        monkeypatch.delenv(f"MODELRUN_{name}", raising=False)
    for name, value in aws_environment.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def ws_url(stack: LocalRuntime) -> str:
    url = stack.outputs().get("WebSocketUrl")
    assert url, "the local runtime names no WebSocketUrl"
    return url


@pytest.fixture(scope="module")
def rest_flags(stack: LocalRuntime, images_bucket: str) -> list[str]:
    """How to reach the stack without a WebSocket URL (so waiting has to poll)."""
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


@pytest.fixture(scope="module")
def live_flags(rest_flags: list[str], ws_url: str) -> list[str]:
    return [*rest_flags, "--ws-url", ws_url]


def cli(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    # The exported AWS credentials (no_outside_configuration) and nothing else of the environment, unless given.
    exported = {name: os.environ[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    code = run(list(argv), env={**exported, **(env or {})}, cwd=cwd or Path.cwd(), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def folder_of(tmp_path: Path, good: int, corrupt: int = 0) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for number in range(good):
        shutil.copyfile(sample(number % 10, number // 10), folder / f"good-{number:03d}.png")
    for number in range(corrupt):
        (folder / f"corrupt-{number:03d}.png").write_bytes(CORRUPT)
    return folder


def bars(err: str) -> list[str]:
    """The progress bar lines the CLI wrote on stderr (not a terminal: one line per update)."""
    return [line for line in err.splitlines() if line.startswith("[")]


def websocket_invocations(stack: LocalRuntime) -> int:
    """How many events ($connect, subscribe, $disconnect, ...) the WebSocket API's function has handled."""
    assert stack.stack is not None
    return stack.stack.function("WebSocketFunction").invocations


def test_submit_watch_ends_with_the_completed_summary_through_the_local_websocket(
    tmp_path: Path, stack: LocalRuntime, live_flags: list[str]
) -> None:
    # Given a folder of 12 good images and one corrupt one, and the stack's WebSocket URL
    folder = folder_of(tmp_path, good=12, corrupt=1)
    before = websocket_invocations(stack)

    # When it is submitted with --watch
    slowly = ["--chunk-size", "1", "--max-concurrency", "2"]  # still running when the watch subscribes
    code, out, err = cli("batch", "submit", str(folder), *slowly, "--watch", *TIMEOUT, *live_flags)

    # Then the view connected and subscribed (no fallback to polling), followed the live messages to the completed
    # one, and the summary follows
    assert code == 0, err
    assert POLLING_NOTE not in err
    assert websocket_invocations(stack) - before >= 2
    lines = out.splitlines()
    batch_id = lines[0]
    assert f"{batch_id} COMPLETED_WITH_ERRORS" in lines
    assert "  images   13: 12 predicted, 1 failed, 0 pending (100.0%)" in lines
    last = bars(err)[-1]
    assert "100.0%  13/13 (12 predicted, 1 failed)" in last
    assert last.endswith("COMPLETED_WITH_ERRORS")
    assert f"modelrun batch errors {batch_id}" in err


def test_submit_watch_without_a_websocket_url_polls_and_says_so_once(tmp_path: Path, rest_flags: list[str]) -> None:
    folder = folder_of(tmp_path, good=5)
    code, out, err = cli("batch", "submit", str(folder), "--watch", "--json", *TIMEOUT, *rest_flags)
    assert code == 0, err
    assert err.count(POLLING_NOTE) == 1
    assert json.loads(out)["status"] == "COMPLETED"


def test_watch_finds_the_websocket_url_in_the_local_state_file(
    tmp_path: Path, stack: LocalRuntime, api: Api, rest_flags: list[str]
) -> None:
    # Given a finished batch and the local stack's state file (which carries WebSocketUrl)
    code, out, _ = cli("batch", "submit", str(folder_of(tmp_path, good=3)), *rest_flags)
    batch_id = out.splitlines()[0]
    wait_for(api, batch_id)
    state = stack.write_state(tmp_path / "state" / "local.json")
    assert json.loads(state.read_text())["WebSocketUrl"]

    # When it is watched with no flags at all
    code, out, err = cli("batch", "watch", batch_id, "--json", env={"MODELRUN_LOCAL_STATE": str(state)})

    # Then the state file gave the stack and its WebSocket URL: no polling note
    assert code == 0, err
    assert POLLING_NOTE not in err
    assert json.loads(out)["batch_id"] == batch_id


def test_watching_a_running_batch_live_ends_on_its_completed_message(
    tmp_path: Path, stack: LocalRuntime, live_flags: list[str]
) -> None:
    # Given a batch that was just submitted (not waited for)
    slowly = ["--chunk-size", "2", "--max-concurrency", "2"]  # still running when the watch subscribes
    code, out, _ = cli("batch", "submit", str(folder_of(tmp_path, good=20)), *slowly, *live_flags)
    batch_id = out.splitlines()[0]
    before = websocket_invocations(stack)

    # When `batch watch` follows it
    code, out, err = cli("batch", "watch", batch_id, "--json", *TIMEOUT, *live_flags)

    # Then it ends at the batch's end, exit 0, with the final job document alone on stdout
    assert code == 0, err
    assert POLLING_NOTE not in err
    assert websocket_invocations(stack) - before >= 2
    job = json.loads(out)
    assert (job["status"], job["counts"]) == ("COMPLETED", {"predicted": 20, "failed": 0, "pending": 0})
    assert bars(err)[-1].endswith("COMPLETED")


def test_a_failed_batch_exits_1(tmp_path: Path, live_flags: list[str]) -> None:
    folder = folder_of(tmp_path, good=0, corrupt=3)
    code, out, err = cli("batch", "submit", str(folder), "--watch", *TIMEOUT, *live_flags)
    assert code == 1
    assert f"{out.splitlines()[0]} FAILED" in out.splitlines()
    assert "FAILED (`modelrun batch errors" in err


def test_retry_watch_follows_the_new_attempt_to_its_own_completed_message(
    tmp_path: Path, live_flags: list[str]
) -> None:
    # Given a batch that ended with a corrupt image
    folder = folder_of(tmp_path, good=4, corrupt=1)
    code, out, _ = cli("batch", "submit", str(folder), "--watch", *TIMEOUT, *live_flags)
    batch_id = out.splitlines()[0]
    assert code == 0

    # When it is retried with --watch (the corrupt image fails again)
    code, out, err = cli("batch", "retry", batch_id, "--watch", "--json", *TIMEOUT, *live_flags)

    # Then the watch ends on the second attempt's end, live
    assert code == 0, err
    assert POLLING_NOTE not in err
    job = json.loads(out)
    assert (job["status"], job["attempt"]) == ("COMPLETED_WITH_ERRORS", 2)
    assert f"batch {batch_id}: attempt 2 runs 1 images" in err


def test_retry_of_a_batch_with_nothing_to_retry_exits_1_with_the_conflict(
    tmp_path: Path, live_flags: list[str]
) -> None:
    code, out, _ = cli("batch", "submit", str(folder_of(tmp_path, good=2)), "--watch", *TIMEOUT, *live_flags)
    assert code == 0
    code, out, err = cli("batch", "retry", out.splitlines()[0], *live_flags)
    assert (code, out) == (1, "")
    assert "conflict:" in err
    assert "(HTTP 409)" in err


def test_reconcile_prints_the_recounted_job(tmp_path: Path, api: Api, rest_flags: list[str]) -> None:
    code, out, _ = cli("batch", "submit", str(folder_of(tmp_path, good=3, corrupt=1)), *rest_flags)
    batch_id = out.splitlines()[0]
    wait_for(api, batch_id)
    code, out, err = cli("batch", "reconcile", batch_id, *rest_flags)
    assert code == 0, err
    assert out.splitlines()[:2] == [
        f"{batch_id} COMPLETED_WITH_ERRORS",
        "  images   4: 3 predicted, 1 failed, 0 pending (100.0%)",
    ]


def test_injected_transient_faults_are_recovered_while_watching(tmp_path: Path, live_flags: list[str]) -> None:
    # Given a batch whose chunk invocations fail a third of the time (the local stack allows fault injection)
    folder = folder_of(tmp_path, good=16)
    argv = ["batch", "submit", str(folder), "--chunk-size", "2", "--transient-rate", "0.35", "--watch", "--json"]

    # When it is submitted and watched
    code, out, err = cli(*argv, *TIMEOUT, *live_flags)

    # Then recovery brings every image home and the watch ends COMPLETED
    assert code == 0, err
    job = json.loads(out)
    assert (job["status"], job["counts"]["predicted"]) == ("COMPLETED", 16)


def test_the_console_entry_point_watches_with_the_environment_settings(
    tmp_path: Path,
    stack: LocalRuntime,
    ws_url: str,
    rest_flags: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = cli("batch", "submit", str(folder_of(tmp_path, good=2)), *rest_flags)
    batch_id = out.splitlines()[0]
    monkeypatch.setenv("MODELRUN_ENDPOINT", stack.url)
    monkeypatch.setenv("MODELRUN_API_KEY", API_KEY)
    monkeypatch.setenv("MODELRUN_WS_URL", ws_url)
    assert main(["batch", "watch", batch_id, *TIMEOUT]) == 0
    assert POLLING_NOTE not in capsys.readouterr().err

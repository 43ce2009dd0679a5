"""The web page end to end in headless Chromium: choose images, upload, run the batch, follow it, read the results."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from modelrun_local.runtime import LocalRuntime
from tests.browser.conftest import PHONE
from tests.integration.conftest import API_KEY, MAX_IMAGE_BYTES, SAMPLES, Api
from tests.integration.helpers import wait_for

SCREENSHOT = Path("/tmp/modelrun-web-page.png")
PHONE_SCREENSHOT = Path("/tmp/modelrun-web-page-phone.png")
TERMINAL = {"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"}
BATCH_TIMEOUT_MS = 180_000
# Nothing listens on the discard port: a WebSocket to it is refused at once.
DEAD_WEBSOCKET = "ws://127.0.0.1:9/v1"


def good_samples(per_label: int) -> list[Path]:
    """The first samples of every digit: their file names carry the true label (digit-<label>-<n>.png)."""
    return [path for label in range(10) for path in sorted(SAMPLES.glob(f"digit-{label}-*.png"))[:per_label]]


def true_label(name: str) -> str:
    found = re.fullmatch(r"digit-(\d)-\d+\.png", name)
    assert found, name
    return found.group(1)


def corrupt_png(folder: Path) -> Path:
    path = folder / "scan-corrupt.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png" * 8)
    return path


def record_progress(page: Page) -> None:
    """Keep every state the progress section shows, to tell afterwards what the user saw while the batch ran."""
    page.evaluate(
        """() => {
          window.progressSeen = [];
          const section = document.getElementById("progress-section");
          new MutationObserver(() => window.progressSeen.push({
            status: document.getElementById("batch-status").textContent,
            text: document.getElementById("progress-text").textContent,
            rate: document.getElementById("rate").textContent,
          })).observe(section, {subtree: true, childList: true, characterData: true});
        }"""
    )


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#model")).to_have_value("digits")


def submit(page: Page, files: list[Path]) -> None:
    page.set_input_files("#files", files)
    expect(page.locator("#selection")).to_contain_text(f"{len(files)} image")
    page.get_by_role("button", name="Upload and run the batch").click()


def wait_until_finished(page: Page) -> None:
    expect(page.locator("#results-section")).to_be_visible(timeout=BATCH_TIMEOUT_MS)


def use_config(page: Page, page_url: str, stack: LocalRuntime, **changes: str) -> None:
    """Serve the page a config.json of the running stack with some values changed."""
    outputs = stack.outputs()
    config = {"apiUrl": outputs["ApiUrl"], "apiKey": outputs["ApiKey"], **changes}
    page.route(f"{page_url}config.json", lambda route: route.fulfill(json=config))


def test_a_batch_chosen_on_the_page_runs_to_a_results_table_and_an_error_report(
    page: Page, page_url: str, tmp_path: Path
) -> None:
    # Given the page, the demo model, good sample images and one corrupt file that claims to be a PNG
    corrupt = corrupt_png(tmp_path)
    images = good_samples(per_label=4)
    open_page(page, page_url)
    record_progress(page)

    # When they are chosen and submitted
    submit(page, [*images, corrupt])

    # Then the batch finishes with every image in the results table and the corrupt file in the error report
    wait_until_finished(page)
    expect(page.locator("#batch-status")).to_have_text("COMPLETED_WITH_ERRORS")
    rows = page.locator("#results-table tbody tr")
    expect(rows).to_have_count(len(images) + 1)
    table = [[cell.strip() for cell in row.locator("td").all_inner_texts()] for row in rows.all()]
    predicted = {file: label for _, file, label, _, status in table if status == "predicted"}
    assert set(predicted) == {path.name for path in images}
    right = sum(predicted[file] == true_label(file) for file in predicted)
    assert right >= 0.9 * len(images), table  # the demo model is 97.6% accurate on the samples
    errors = page.locator("#errors-table tbody tr")
    expect(errors).to_have_count(1)
    expect(errors.locator("td").nth(1)).to_have_text(corrupt.name)
    expect(errors.locator("td").nth(2)).to_have_text("invalid_image")
    expect(page.locator("#errors-codes")).to_contain_text("invalid_image 1")
    expect(page.locator("#errors-downloads a")).to_have_count(2)
    # ... and while it ran, the page showed it unfinished before it showed it finished
    seen = page.evaluate("window.progressSeen")
    unfinished = [state for state in seen if state["status"] and state["status"] not in TERMINAL]
    assert unfinished, seen
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_progress_comes_live_over_the_stacks_websocket_api(page: Page, page_url: str) -> None:
    # Given the page of a stack with a WebSocket API (its config.json names it)
    open_page(page, page_url)

    # When a batch runs
    submit(page, good_samples(per_label=1))

    # Then the page followed it over the socket, not by polling
    wait_until_finished(page)
    expect(page.locator("#progress-source")).to_contain_text("live over the WebSocket API")


class FakeProgressSocket:
    """A WebSocket server speaking the progress contract: one made-up progress message, then the real outcome."""

    RATE = 12.5

    def __init__(self, api: Api) -> None:
        self.api = api
        self.paths: list[str] = []
        self.received: list[dict[str, Any]] = []
        self.server = serve(self.handle, "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.socket.getsockname()[:2]
        return f"ws://{host}:{port}/v1"

    def handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        self.paths.append(connection.request.path)
        request = json.loads(connection.recv(timeout=30))
        self.received.append(request)
        batch_id = request["batch_id"]
        connection.send(json.dumps({"type": "subscribed", "batch_id": batch_id}))
        progress = {
            "type": "progress",
            "batch_id": batch_id,
            "status": "RUNNING",
            "attempt": 1,
            "total": 10,
            "counts": {"predicted": 3, "failed": 0, "pending": 7},
            "percent": 30.0,
            "rate": self.RATE,
            "eta_s": 0.6,
            "updated_at": "2026-11-25T10:00:00.000Z",
        }
        connection.send(json.dumps(progress))
        job = wait_for(self.api, batch_id)
        fields = {key: job[key] for key in ("status", "attempt", "total", "counts", "percent")}
        links = {"results": f"/batches/{batch_id}/results", "errors": f"/batches/{batch_id}/errors"}
        completed = {**progress, **fields, "type": "completed", "rate": None, "eta_s": 0, "links": links}
        connection.send(json.dumps(completed))
        with contextlib.suppress(TimeoutError, ConnectionClosed):
            self.received.append(json.loads(connection.recv(timeout=10)))  # the page's unsubscribe

    def __enter__(self) -> FakeProgressSocket:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()


@pytest.fixture
def fake_socket(api: Api) -> Iterator[FakeProgressSocket]:
    with FakeProgressSocket(api) as server:
        yield server


def test_the_page_subscribes_with_its_key_and_shows_each_progress_message(
    page: Page, page_url: str, stack: LocalRuntime, fake_socket: FakeProgressSocket
) -> None:
    # Given a page whose WebSocket API sends one progress message, then the completed message
    use_config(page, page_url, stack, webSocketUrl=fake_socket.url)
    open_page(page, page_url)
    record_progress(page)

    # When a batch runs
    submit(page, good_samples(per_label=1))
    wait_until_finished(page)

    # Then the page connected with its API key, subscribed to the batch, showed the message, and unsubscribed
    assert fake_socket.paths == [f"/v1?api_key={API_KEY}"]
    batch_id = page.locator("#batch-id").inner_text()
    assert fake_socket.received[0] == {"action": "subscribe", "batch_id": batch_id}
    seen = page.evaluate("window.progressSeen")
    assert {"status": "RUNNING", "text": "3 of 10 images done (30%)", "rate": "12.5 images/s"} in seen, seen
    expect(page.locator("#batch-status")).to_have_text("COMPLETED")
    assert fake_socket.received[-1] == {"action": "unsubscribe", "batch_id": batch_id}


def test_progress_falls_back_to_polling_when_the_websocket_cannot_connect(
    page: Page, page_url: str, stack: LocalRuntime
) -> None:
    # Given a page whose WebSocket API refuses connections
    use_config(page, page_url, stack, webSocketUrl=DEAD_WEBSOCKET)
    open_page(page, page_url)

    # When a batch runs
    submit(page, good_samples(per_label=1))

    # Then the page still follows it to the end, by polling
    wait_until_finished(page)
    expect(page.locator("#batch-status")).to_have_text("COMPLETED")
    expect(page.locator("#progress-source")).to_contain_text("by polling")
    expect(page.locator("#results-table tbody tr")).to_have_count(10)


def test_an_api_error_is_shown_to_the_user_as_the_api_worded_it(
    page: Page, page_url: str, api: Api, tmp_path: Path
) -> None:
    # Given an image over the stack's MaxImageBytes, and what the API says about it
    big = tmp_path / "big-scan.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_IMAGE_BYTES)
    expected = api.post(
        "/uploads", json={"files": [{"name": big.name, "content_type": "image/png", "size": big.stat().st_size}]}
    ).json()["error"]
    open_page(page, page_url)

    # When it is submitted on the page
    submit(page, [big])

    # Then the page shows the API's code and message, word for word, and no batch starts
    expect(page.locator("#alert")).to_be_visible()
    expect(page.locator("#alert-code")).to_have_text(expected["code"])
    expect(page.locator("#alert-message")).to_have_text(expected["message"])
    assert expected["code"] == "image_too_large"
    expect(page.locator("#progress-section")).to_be_hidden()


def test_a_file_that_is_not_an_image_is_left_out_with_a_message(page: Page, page_url: str, tmp_path: Path) -> None:
    # Given a text file beside an image
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    open_page(page, page_url)

    # When both are chosen
    page.set_input_files("#files", [good_samples(per_label=1)[0], notes])

    # Then only the image is selected, and the user is told why the other is not
    expect(page.locator("#selection")).to_contain_text("1 image selected")
    expect(page.locator("#alert-message")).to_contain_text("notes.txt")


def test_images_dropped_on_the_drop_zone_are_selected(page: Page, page_url: str) -> None:
    # Given two sample images as a drag-and-drop payload
    images = good_samples(per_label=1)[:2]
    open_page(page, page_url)
    payload = [{"name": path.name, "bytes": list(path.read_bytes())} for path in images]
    transfer = page.evaluate_handle(
        """(files) => {
          const transfer = new DataTransfer();
          for (const file of files) {
            transfer.items.add(new File([new Uint8Array(file.bytes)], file.name, {type: "image/png"}));
          }
          return transfer;
        }""",
        payload,
    )

    # When they are dropped on the drop zone
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})

    # Then they are the selection
    expect(page.locator("#selection")).to_contain_text("2 images selected")
    expect(page.locator("#file-list li")).to_have_text([path.name for path in images])


def test_the_page_fits_a_phone_screen_without_sideways_scrolling(page: Page, page_url: str, tmp_path: Path) -> None:
    # Given a phone-sized window
    page.set_viewport_size(PHONE)
    open_page(page, page_url)

    # When a batch with an error runs to the end
    submit(page, [*good_samples(per_label=1)[:3], corrupt_png(tmp_path)])
    wait_until_finished(page)
    expect(page.locator("#errors-table tbody tr")).to_have_count(1)

    # Then nothing is wider than the screen (the tables scroll inside their frames)
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    page.screenshot(path=str(PHONE_SCREENSHOT), full_page=True)


def test_a_page_without_config_json_says_how_to_make_one(page: Page, page_url: str) -> None:
    # Given a page whose config.json is missing
    page.route(f"{page_url}config.json", lambda route: route.fulfill(status=404, body="Not Found"))

    # When it opens
    page.goto(page_url)

    # Then it says what is wrong and what to do, instead of a blank page
    expect(page.locator("#alert-code")).to_have_text("config_missing")
    expect(page.locator("#alert-message")).to_contain_text("scripts/deploy_web.py")

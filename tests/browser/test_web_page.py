"""The web page end to end in headless Chromium: choose images, upload, run the batch, follow it, read the results."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.integration.conftest import SAMPLES

SCREENSHOT = Path("/tmp/modelrun-web-page.png")
TERMINAL = {"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"}
BATCH_TIMEOUT_MS = 180_000


def good_samples(per_label: int) -> list[Path]:
    """The first samples of every digit: their file names carry the true label (digit-<label>-<n>.png)."""
    return [path for label in range(10) for path in sorted(SAMPLES.glob(f"digit-{label}-*.png"))[:per_label]]


def true_label(name: str) -> str:
    found = re.fullmatch(r"digit-(\d)-\d+\.png", name)
    assert found, name
    return found.group(1)


def record_progress(page: Page) -> None:
    """Keep every state the progress section shows, to tell afterwards what the user saw while the batch ran."""
    page.evaluate(
        """() => {
          window.progressSeen = [];
          const section = document.getElementById("progress-section");
          new MutationObserver(() => window.progressSeen.push({
            status: document.getElementById("batch-status").textContent,
            text: document.getElementById("progress-text").textContent,
          })).observe(section, {subtree: true, childList: true, characterData: true});
        }"""
    )


def test_a_batch_chosen_on_the_page_runs_to_a_results_table_and_an_error_report(
    page: Page, page_url: str, tmp_path: Path
) -> None:
    # Given the page, the demo model, good sample images and one corrupt file that claims to be a PNG
    corrupt = tmp_path / "scan-corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png" * 8)
    images = good_samples(per_label=4)
    page.goto(page_url)
    expect(page.locator("#model")).to_have_value("digits")
    record_progress(page)

    # When they are chosen and submitted
    page.set_input_files("#files", [*images, corrupt])
    expect(page.locator("#selection")).to_contain_text(f"{len(images) + 1} images selected")
    page.get_by_role("button", name="Upload and run the batch").click()

    # Then the batch finishes with every image in the results table and the corrupt file in the error report
    expect(page.locator("#results-section")).to_be_visible(timeout=BATCH_TIMEOUT_MS)
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
    # ... and while it ran, the page showed it unfinished before it showed it finished
    seen = page.evaluate("window.progressSeen")
    unfinished = [state for state in seen if state["status"] and state["status"] not in TERMINAL]
    assert unfinished, seen
    page.screenshot(path=str(SCREENSHOT), full_page=True)

"""A DICOM file predicted on the page: the browser cannot decode it, so the page asks the API for the model's view
(``preview=true``), draws that PNG, and draws the result's overlay on top.

The file is a cells sample made into a MONOCHROME1 DICOM with 16-bit stored values and its own window, chosen so
that windowing then inverting gives back the sample's 8-bit values exactly: the picture the page shows must be the
sample itself, which a page that drew raw stored values, skipped the window or forgot the inversion would not show.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import Page, Request, expect

from tests.browser.test_result_overlays import CELLS, classes_drawn, drawn_overlay
from tests.dicomfactory import dicom_bytes
from tests.integration.conftest import Api

SAMPLE = CELLS / "cells-004.png"
STEP = 16  # stored value per 8-bit level
# DICOM's linear window maps x to ((x - (c - 0.5)) / (w - 1) + 0.5) * 255: with w - 1 = 255 * STEP and
# c - 0.5 = (w - 1) / 2 that is x / STEP, the 8-bit level again.
WIDTH = 255 * STEP + 1
CENTER = (WIDTH - 1) / 2 + 0.5
SCREENSHOT = Path("/tmp/page-dicom.png")


def sample_as_monochrome1_dicom(folder: Path) -> tuple[Path, np.ndarray]:
    grey = np.asarray(Image.open(SAMPLE).convert("L"))
    stored = ((255 - grey.astype(np.uint16)) * STEP).astype(np.uint16)  # MONOCHROME1: low values are white
    path = folder / "cells-004.dcm"
    path.write_bytes(dicom_bytes(stored, photometric="MONOCHROME1", window=(CENTER, WIDTH), modality="OT"))
    return path, grey


def shown_image(page: Page, view: str) -> np.ndarray:
    """The pixels of the picture under the overlay, at its natural size (grey: the red channel)."""
    data_url = page.evaluate(
        """(view) => {
          const image = document.querySelector(`#${view} .overlay img`);
          const canvas = document.createElement("canvas");
          canvas.width = image.naturalWidth;
          canvas.height = image.naturalHeight;
          canvas.getContext("2d").drawImage(image, 0, 0);
          return canvas.toDataURL("image/png");
        }""",
        view,
    )
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def test_a_dcm_is_shown_as_the_windowed_image_the_model_saw_with_its_mask_drawn_over_it(
    page: Page, page_url: str, api: Api, tmp_path: Path
) -> None:
    # Given the sample as a MONOCHROME1 DICOM file
    path, grey = sample_as_monochrome1_dicom(tmp_path)
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request) if "/predictions" in request.url else None)

    # When it is chosen on the page and predicted with the cells model
    page.goto(page_url)
    expect(page.locator("#model")).to_have_value("digits")
    page.select_option("#model", "cells")
    page.set_input_files("#files", [path])
    expect(page.locator("#selection")).to_contain_text("1 image selected")
    page.get_by_role("button", name="Predict this image").click()
    expect(page.locator('#prediction-view figure[data-drawn="true"]')).to_be_visible()

    # Then the page sent the file as DICOM and asked for the model's view
    [sent] = requests
    assert "preview=true" in sent.url
    assert sent.headers["content-type"] == "application/dicom"

    # And the picture it shows is the windowed, inverted frame: the sample's own grey levels, not blank
    shown = shown_image(page, "prediction-view")
    assert shown.shape[:2] == grey.shape
    assert shown[:, :, 0].std() > 10, "the picture is blank"
    assert np.abs(shown[:, :, 0].astype(int) - grey.astype(int)).max() <= 1
    assert (shown[:, :, 0] == shown[:, :, 1]).all()

    # And the overlay is the result's mask (the API answers the same file the same way), scaled over the picture
    answer = api.post("/predictions?model=cells", data=path.read_bytes(), headers={"Content-Type": "application/dicom"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["mask"]["data"]))))
    assert classes_drawn(drawn_overlay(page, "prediction-view"), mask) >= 2, result["classes"]
    expect(page.locator("#prediction-summary")).to_contain_text("cells-004.dcm: ")
    page.locator("#prediction-section").screenshot(path=str(SCREENSHOT))


def test_a_png_is_predicted_without_asking_for_a_preview(page: Page, page_url: str) -> None:
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request) if "/predictions" in request.url else None)
    page.goto(page_url)
    expect(page.locator("#model")).to_have_value("digits")
    page.select_option("#model", "cells")
    page.set_input_files("#files", [SAMPLE])
    page.get_by_role("button", name="Predict this image").click()
    expect(page.locator('#prediction-view figure[data-drawn="true"]')).to_be_visible()
    [sent] = requests
    assert "preview" not in sent.url


def test_an_extensionless_dicom_file_is_accepted_by_its_bytes(page: Page, page_url: str, tmp_path: Path) -> None:
    path, _ = sample_as_monochrome1_dicom(tmp_path)
    renamed = path.rename(tmp_path / "IM0001")
    page.goto(page_url)
    expect(page.locator("#model")).to_have_value("digits")
    page.set_input_files("#files", [renamed])
    expect(page.locator("#file-list li")).to_have_text(["IM0001"])
    expect(page.locator("#predict-one")).to_be_enabled()

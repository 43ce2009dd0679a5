"""What a model found, drawn over the image on the page: detection boxes and a segmentation mask, checked in the
canvas's own pixels against the API's answer."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from playwright.sync_api import Page, Route, expect

from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import REPO, Api, outside_s3

SHAPES = REPO / "samples" / "shapes"
CELLS = REPO / "samples" / "cells"
DETECTION_SCREENSHOT = Path("/tmp/page-detection.png")
MASK_SCREENSHOT = Path("/tmp/page-mask.png")
MASK_ALPHA = 140  # app.js draws each class at this opacity (of 255)
# Around a box edge, the stroke (2 px) and antialiasing; beside a box's top-left corner, its label.
EDGE_BAND = 3
LABEL_ZONE = (-4, -22, 170, 22)  # x from, y from, x to, y to, relative to the scaled (x1, y1)


@dataclass
class Drawn:
    """The overlay canvas as the page drew it, and the image's own size."""

    pixels: np.ndarray  # height x width x RGBA
    natural: tuple[int, int]  # width, height

    @property
    def scale(self) -> tuple[float, float]:
        height, width = self.pixels.shape[:2]
        return width / self.natural[0], height / self.natural[1]


def predict_on_the_page(page: Page, page_url: str, api: Api, model: str, image: Path) -> dict[str, Any]:
    """Choose the model and one image, press "Predict this image" and wait until the page has drawn the answer;
    the answer the API gives for that image (the models are deterministic). Chromium does not keep the body of a
    response to a File upload for Playwright to read, so the test asks the API itself."""
    page.goto(page_url)
    expect(page.locator("#model")).to_have_value("digits")
    page.select_option("#model", model)
    page.set_input_files("#files", [image])
    page.get_by_role("button", name="Predict this image").click()
    expect(page.locator('#prediction-view figure[data-drawn="true"]')).to_be_visible()
    response = api.post(f"/predictions?model={model}", data=image.read_bytes(), headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    expect(page.locator("#prediction-summary")).to_contain_text(f"{image.name}: ")
    return result


def drawn_overlay(page: Page, view: str) -> Drawn:
    found = page.evaluate(
        """(view) => {
          const image = document.querySelector(`#${view} .overlay img`);
          const canvas = document.querySelector(`#${view} .overlay canvas`);
          return {png: canvas.toDataURL("image/png"), natural: [image.naturalWidth, image.naturalHeight],
                  shown: [image.clientWidth, image.clientHeight], canvas: [canvas.width, canvas.height]};
        }""",
        view,
    )
    data = base64.b64decode(found["png"].split(",", 1)[1])
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    assert pixels.shape[1::-1] == tuple(found["canvas"]) == tuple(found["shown"])  # one canvas pixel per CSS pixel
    assert found["shown"] != found["natural"], "the image should be shown scaled, to check the overlay scales too"
    return Drawn(pixels=pixels, natural=tuple(found["natural"]))


def drawing_zone(box: list[float], shape: tuple[int, ...]) -> np.ndarray:
    """Where a box (scaled to the canvas) may put paint: a band around each side, and its label's corner."""
    x1, y1, x2, y2 = (round(side) for side in box)
    zone = np.zeros(shape[:2], dtype=bool)
    band = EDGE_BAND
    rows, columns = slice(max(y1 - band, 0), y2 + band + 1), slice(max(x1 - band, 0), x2 + band + 1)
    zone[rows, max(x1 - band, 0) : x1 + band + 1] = True
    zone[rows, max(x2 - band, 0) : x2 + band + 1] = True
    zone[max(y1 - band, 0) : y1 + band + 1, columns] = True
    zone[max(y2 - band, 0) : y2 + band + 1, columns] = True
    left, top, right, bottom = LABEL_ZONE
    zone[max(y1 + top, 0) : y1 + bottom, max(x1 + left, 0) : x1 + right] = True
    return zone


def classes_drawn(drawn: Drawn, mask: np.ndarray) -> int:
    """Check the overlay against the mask (class indices) pixel by pixel, away from class edges (where scaling
    picks either side); how many classes other than the background it shows."""
    assert drawn.natural == (mask.shape[1], mask.shape[0])
    sx, sy = drawn.scale
    height, width = drawn.pixels.shape[:2]
    source_y = np.minimum(((np.arange(height) + 0.5) / sy).astype(int), mask.shape[0] - 1)
    source_x = np.minimum(((np.arange(width) + 0.5) / sx).astype(int), mask.shape[1] - 1)
    padded = np.pad(mask, 2, mode="edge")
    uniform = np.ones_like(mask, dtype=bool)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            uniform &= padded[2 + dy : 2 + dy + mask.shape[0], 2 + dx : 2 + dx + mask.shape[1]] == mask
    classes = mask[np.ix_(source_y, source_x)]
    inside = uniform[np.ix_(source_y, source_x)]
    pixels = drawn.pixels.astype(int)

    background = inside & (classes == 0)
    assert background.sum() > 1000
    assert (pixels[background][:, 3] == 0).all(), "the background is not clear"
    foreground = inside & (classes != 0)
    assert foreground.sum() > 1000
    shown = sorted(set(np.unique(classes[inside]).tolist()) - {0})
    for index in shown:
        colours = pixels[inside & (classes == index)]
        assert (abs(colours[:, 3] - MASK_ALPHA) <= 1).all(), f"class {index}: not drawn at the mask's opacity"
        assert (abs(colours[:, :3] - np.array(palette_colour(index))) <= 3).all(), f"class {index}: not its colour"
    return len(shown)


def palette_colour(index: int) -> tuple[int, int, int]:
    """The mask PNG's colour of a class (PASCAL VOC's colour map, as the segmentation decoder builds it)."""
    red = green = blue = 0
    bits = index
    for shift in range(7, -1, -1):
        red |= (bits & 1) << shift
        green |= ((bits >> 1) & 1) << shift
        blue |= ((bits >> 2) & 1) << shift
        bits >>= 3
    return red, green, blue


def test_detection_boxes_are_drawn_where_the_answer_puts_them_at_the_images_displayed_scale(
    page: Page, page_url: str, api: Api
) -> None:
    # Given a shapes sample predicted on the page with the detection model
    result = predict_on_the_page(page, page_url, api, "shapes", SHAPES / "shapes-002.png")
    detections = result["detections"]
    assert detections, result

    # When the overlay is read back
    drawn = drawn_overlay(page, "prediction-view")
    alpha = drawn.pixels[:, :, 3]
    height, width = alpha.shape
    sx, sy = drawn.scale

    # Then each box's four sides are drawn through the scaled box's edges
    boxes = [[side * scale for side, scale in zip(d["box"], (sx, sy, sx, sy), strict=True)] for d in detections]
    zones = [drawing_zone(box, alpha.shape) for box in boxes]
    expected = np.logical_or.reduce(zones)
    colour_of_label: dict[str, set[tuple[int, ...]]] = {}
    for number, (detection, (x1, y1, x2, y2)) in enumerate(zip(detections, boxes, strict=True)):
        middle_x, middle_y = round((x1 + x2) / 2), round((y1 + y2) / 2)
        sides = {
            "left": (middle_y, slice(round(x1) - 1, round(x1) + 2)),
            "right": (middle_y, slice(round(x2) - 2, round(x2) + 1)),
            "bottom": (slice(round(y2) - 2, round(y2) + 1), middle_x),
            "top": (slice(round(y1) - 1, round(y1) + 2), middle_x),
        }
        others = np.logical_or.reduce([zone for other, zone in enumerate(zones) if other != number] or [~expected])
        for side, where in sides.items():
            line = drawn.pixels[where]
            opaque = line[line[:, 3] == 255]
            assert len(opaque), f"{detection}: nothing drawn on its {side} side"
            # ... in its label's colour (the top runs under the label's text; another box may cross a side)
            if side != "top" and not others[where].any():
                colour_of_label.setdefault(detection["label"], set()).add(tuple(opaque[0][:3].tolist()))
    assert all(len(colours) == 1 for colours in colour_of_label.values()), colour_of_label
    assert len({colour for colours in colour_of_label.values() for colour in colours}) == len(colour_of_label)

    # ... and nothing anywhere else: the insides of the boxes and the rest of the image stay clear
    stray = np.argwhere((alpha > 0) & ~expected)
    assert not len(stray), f"{len(stray)} pixels drawn away from every box, e.g. (y, x) {stray[:5].tolist()}"
    assert (~expected).sum() > 0.5 * width * height

    # ... and the figure says in words what it shows
    expect(page.locator("#prediction-view img")).to_have_attribute(
        "alt", f"shapes-002.png, with the objects found outlined: {len(detections)} objects: " + _first_three(result)
    )
    expect(page.locator("#prediction-view tbody tr")).to_have_count(len(detections))
    page.locator("#prediction-section").screenshot(path=str(DETECTION_SCREENSHOT))


def _first_three(result: dict[str, Any]) -> str:
    shown = [f"{entry['label']} {entry['score']:.2f}" for entry in result["detections"][:3]]
    more = result["count"] - len(shown)
    return ", ".join(shown) + (f", +{more} more" if more > 0 else "")


def test_the_segmentation_mask_colours_the_foreground_pixels_and_leaves_the_background_clear(
    page: Page, page_url: str, api: Api
) -> None:
    # Given a cells sample predicted on the page with the segmentation model
    result = predict_on_the_page(page, page_url, api, "cells", CELLS / "cells-004.png")
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["mask"]["data"]))))
    assert mask.shape == (result["mask"]["height"], result["mask"]["width"])

    # When the overlay is read back
    drawn = drawn_overlay(page, "prediction-view")

    # Then every canvas pixel inside a region of one class shows that class: clear over the background, the class's
    # palette colour half-transparent over the others
    assert classes_drawn(drawn, mask) >= 2, result["classes"]  # the sample has cells and nuclei

    # ... and the legend and the table name the classes
    present = [entry["label"] for entry in result["classes"] if entry["index"] and entry["pixels"]]
    expect(page.locator("#prediction-view .legend li")).to_have_count(len(present))
    expect(page.locator("#prediction-view tbody tr")).to_have_count(len(result["classes"]))
    page.locator("#prediction-section").screenshot(path=str(MASK_SCREENSHOT))


def test_a_batch_results_segmentation_mask_is_fetched_from_its_link_and_drawn_over_the_uploaded_image(
    page: Page, page_url: str, api: Api, stack: LocalRuntime, images_bucket: str
) -> None:
    # Given the mask the cells model gives a sample, stored where a batch stores it, behind a presigned link
    image = CELLS / "cells-004.png"
    answer = api.post("/predictions?model=cells", data=image.read_bytes(), headers={"Content-Type": "image/png"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    png = base64.b64decode(result["mask"]["data"])
    storage = outside_s3(stack)

    # ... and a batch of that image run from the page, its results page shaped as the batch API documents a
    # segmentation outcome (classes, and mask with s3_key and url: model-format.md, "Batch and trigger result
    # shapes"), until batches run segmentation models themselves
    def segmentation_results(route: Route) -> None:
        page_of_results = route.fetch().json()
        for entry in page_of_results["results"]:
            key = f"results/{page_of_results['batch_id']}/masks/{entry['item']}.png"
            storage.put_object(Bucket=images_bucket, Key=key, Body=png, ContentType="image/png")
            url = storage.generate_presigned_url("get_object", Params={"Bucket": images_bucket, "Key": key})
            for field in ("label", "score", "top_k"):
                entry.pop(field, None)
            entry["classes"] = result["classes"]
            size = {"width": result["mask"]["width"], "height": result["mask"]["height"]}
            entry["mask"] = {"format": "png", **size, "s3_key": key, "url": url}
        route.fulfill(json=page_of_results)

    page.route(re.compile(r".*/batches/[^/]+/results\?.*"), segmentation_results)
    page.goto(page_url)
    expect(page.locator("#model")).to_have_value("digits")
    page.set_input_files("#files", [image])
    page.get_by_role("button", name="Upload and run the batch").click()
    expect(page.locator("#results-section")).to_be_visible(timeout=180_000)

    # When its row's "Show" is pressed (from the keyboard)
    row = page.locator("#results-table tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(2)).to_contain_text("cell 9.76%, debris 3.02%, nucleus 2.44%")
    row.get_by_role("button", name="Show cells-004.png with its result drawn on it").focus()
    page.keyboard.press("Enter")
    expect(page.locator('#result-view figure[data-drawn="true"]')).to_be_visible()

    # Then the mask fetched from the link is drawn over the image: each class in its colour, the background clear
    mask = np.asarray(Image.open(io.BytesIO(png)))
    assert classes_drawn(drawn_overlay(page, "result-view"), mask) >= 2
    expect(page.locator("#result-view img")).to_have_attribute(
        "alt", "cells-004.png, with the segmentation mask laid over it: cell 9.76%, debris 3.02%, nucleus 2.44%"
    )

"""Datasets on the page: upload sample digits into a new dataset, see it READY, run a batch over it, predict one of
its images by id and read that image's prediction history; a dataset being registered is followed until READY; a
name that looks like HTML is shown as text; the API's errors are shown as it worded them; the open dataset is kept in
the address, and deleted only after a confirmation."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, Request, Route, expect

from tests.browser.conftest import PHONE
from tests.browser.test_dicom_page import sample_as_monochrome1_dicom
from tests.browser.test_web_page import BATCH_TIMEOUT_MS, good_samples, open_page, true_label
from tests.integration.conftest import Api
from tests.integration.helpers import upload

SCREENSHOT = Path("/tmp/modelrun-web-page-datasets.png")
PHONE_SCREENSHOT = Path("/tmp/modelrun-web-page-datasets-phone.png")
HOSTILE = '<img src=x onerror="window.pwned = true">'


def unique(name: str) -> str:
    """Names are unique per tenant and the browser tests share one stack: each test makes its own."""
    return f"{name} {uuid.uuid4().hex[:8]}"


def dataset_row(page: Page, name: str) -> Locator:
    return page.locator("#datasets-table tbody tr").filter(has=page.locator("td.name", has_text=name))


def create_dataset_on_the_page(page: Page, name: str, files: list[Path]) -> None:
    page.get_by_label("Name", exact=True).fill(name)
    page.set_input_files("#dataset-files", files)
    expect(page.locator("#dataset-selection")).to_contain_text(f"{len(files)} images selected")
    page.get_by_role("button", name=f"Create the dataset and upload {len(files)} images").click()


def test_a_dataset_uploaded_on_the_page_is_batched_predicted_by_id_and_has_a_history(page: Page, page_url: str) -> None:
    # Given the page and one sample of each of four digits
    images = good_samples(per_label=1)[:4]
    name = unique("digits from the page")
    open_page(page, page_url)

    # When a new dataset is created with them
    create_dataset_on_the_page(page, name, images)

    # Then it is listed READY with its four images, picked, and its images are listed by name and id
    expect(page.locator("#dataset-form-status")).to_have_text(f"{name}: 4 of 4 images uploaded.")
    row = dataset_row(page, name)
    expect(row.locator("td").nth(1)).to_have_text("READY")
    expect(row.locator("td").nth(2)).to_have_text("4")
    expect(row).to_have_attribute("aria-current", "true")
    expect(page.locator("#dataset-shown-name")).to_have_text(name)
    expect(page.locator("#dataset-status")).to_have_text("READY")
    expect(page.locator("#dataset-count")).to_have_text("4 images")
    expect(page.locator("#images-table tbody tr")).to_have_count(4)
    listed = page.locator("#images-table tbody td.file").all_inner_texts()
    assert sorted(listed) == sorted(path.name for path in images)

    # When a batch runs over it
    page.get_by_role("button", name="Run a batch over this dataset").click()

    # Then the page follows it to the results table as for any batch, each image under the name it was uploaded as
    expect(page.locator("#results-section")).to_be_visible(timeout=BATCH_TIMEOUT_MS)
    expect(page.locator("#batch-status")).to_have_text("COMPLETED")
    results = page.locator("#results-table tbody tr")
    expect(results).to_have_count(4)
    files = [cells[1].strip() for cells in (r.locator("td").all_inner_texts() for r in results.all())]
    assert sorted(files) == sorted(path.name for path in images)

    # When its third image is predicted by its id
    third = page.locator("#images-table tbody tr").nth(2)
    image_id = third.locator("td.id").inner_text()
    file_name = third.locator("td.file").inner_text()
    page.get_by_label("Predict an image by its id").fill(image_id)
    page.get_by_role("button", name="Predict by id").click()

    # Then the prediction card shows it as the page shows a single prediction, drawn on the model's view of it
    expect(page.locator("#prediction-title")).to_be_focused()
    summary = page.locator("#prediction-summary")
    expect(summary).to_contain_text(f"{file_name}: {true_label(file_name)} (")
    expect(summary).to_contain_text(f"image {image_id}")
    expect(page.locator('#prediction-view figure[data-drawn="true"]')).to_be_visible()
    expect(page.locator("#prediction-view figure img")).to_have_attribute(
        "alt", re.compile(rf"^{re.escape(file_name)}: ")
    )

    # When its history is shown
    third.get_by_role("button", name=f"Prediction history of {file_name}").click()

    # Then it lists the single prediction, newest first, then the batch's outcome
    expect(page.locator("#history-title")).to_be_focused()
    expect(page.locator("#history-image")).to_have_text(f"{file_name} ({image_id})")
    history = page.locator("#history-table tbody tr")
    expect(history).to_have_count(2)
    batch_id = page.locator("#batch-id").inner_text()
    expect(history.nth(0).locator("td").nth(1)).to_have_text("single prediction")
    expect(history.nth(1).locator("td").nth(1)).to_have_text(f"batch {batch_id}")
    for entry in history.all():
        expect(entry.locator("td").nth(2)).to_have_text("digits 1")
        expect(entry.locator("td").nth(3)).to_have_text("predicted")
        expect(entry.locator("td").nth(4)).to_contain_text(f"{true_label(file_name)} (")
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_a_registering_dataset_is_followed_until_ready(
    page: Page, page_url: str, api: Api, s3: Any, images_bucket: str
) -> None:
    # Given a dataset of two images whose first GET the page makes answers REGISTERING, as a prefix being read would
    name = unique("registering")
    folder = f"browser-datasets/{uuid.uuid4().hex}/"
    keys = upload(s3, images_bucket, {folder + path.name: path.read_bytes() for path in good_samples(per_label=1)[:2]})
    created = api.post("/datasets", json={"name": name, "images": keys})
    assert created.status_code == 201, created.text
    dataset_id = created.json()["dataset_id"]
    answered: list[str] = []

    def first_registering(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        if not answered:
            body |= {"status": "REGISTERING", "images": 1, "keys_read": 1, "finished_at": None}
        answered.append(body["status"])
        route.fulfill(response=response, body=json.dumps(body))

    page.route(f"**/datasets/{dataset_id}", first_registering)
    open_page(page, page_url)

    # When it is opened
    dataset_row(page, name).get_by_role("button", name=f"Open the dataset {name}").click()

    # Then the page shows it registering, asks again, and shows it READY with its images
    expect(page.locator("#dataset-status")).to_have_text("READY")
    expect(page.locator("#dataset-count")).to_have_text("2 images")
    expect(dataset_row(page, name).locator("td").nth(1)).to_have_text("READY")
    expect(page.locator("#images-table tbody tr")).to_have_count(2)
    assert answered[:2] == ["REGISTERING", "READY"], answered
    expect(page.get_by_role("button", name="Run a batch over this dataset")).to_be_enabled()


def test_a_dataset_name_that_looks_like_html_is_shown_as_text(page: Page, page_url: str, api: Api) -> None:
    # Given a dataset whose name is an HTML image tag with a script in it
    name = f"{HOSTILE} {uuid.uuid4().hex[:8]}"
    created = api.post("/datasets", json={"name": name})
    assert created.status_code == 201, created.text

    # When the page lists it and it is opened
    open_page(page, page_url)
    row = dataset_row(page, name)
    expect(row.locator("td.name")).to_have_text(name)
    row.get_by_role("button", name=f"Open the dataset {name}").click()

    # Then the name is shown as text everywhere, and no element came of it
    expect(page.locator("#dataset-shown-name")).to_have_text(name)
    expect(page.locator("#images-empty")).to_be_visible()
    assert page.locator("#datasets-section img, #dataset-section img").count() == 0
    assert page.evaluate("window.pwned") is None


def test_an_opened_dataset_is_kept_in_the_address_so_a_reload_opens_it_again(
    page: Page, page_url: str, api: Api
) -> None:
    # Given a dataset, opened on the page
    name = unique("kept in the address")
    dataset_id = api.post("/datasets", json={"name": name}).json()["dataset_id"]
    open_page(page, page_url)
    dataset_row(page, name).get_by_role("button", name=f"Open the dataset {name}").click()
    expect(page.locator("#dataset-shown-name")).to_have_text(name)

    # When the page is reloaded
    assert page.evaluate("location.hash") == f"#dataset={dataset_id}"
    page.reload()

    # Then the same dataset is open again
    expect(page.locator("#dataset-section")).to_be_visible()
    expect(page.locator("#dataset-shown-name")).to_have_text(name)
    expect(page.locator("#dataset-id")).to_have_text(dataset_id)


def test_a_dataset_is_deleted_only_once_the_user_confirms(page: Page, page_url: str, api: Api) -> None:
    # Given a dataset opened from a link to it
    name = unique("to delete")
    dataset_id = api.post("/datasets", json={"name": name}).json()["dataset_id"]
    page.goto(f"{page_url}#dataset={dataset_id}")
    expect(page.locator("#dataset-shown-name")).to_have_text(name)
    questions: list[str] = []

    # When its deletion is asked for and the confirmation dismissed
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Delete this dataset").click()

    # Then nothing is deleted
    expect(page.locator("#dataset-section")).to_be_visible()
    assert api.get(f"/datasets/{dataset_id}").status_code == 200
    [question] = questions
    assert name in question

    # When it is asked for again and confirmed
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete this dataset").click()

    # Then the dataset is gone: from the page, the list, the address and the API
    expect(page.locator("#datasets-status")).to_have_text(f"Dataset {name} deleted.")
    expect(page.locator("#dataset-section")).to_be_hidden()
    expect(dataset_row(page, name)).to_have_count(0)
    assert "dataset=" not in page.evaluate("location.hash")
    assert api.get(f"/datasets/{dataset_id}").status_code == 404


def test_a_link_to_a_dataset_that_is_gone_shows_the_api_s_answer_and_opens_nothing(
    page: Page, page_url: str, api: Api
) -> None:
    # Given a link to a dataset deleted since (as another tenant's dataset, it is not found for this key)
    dataset_id = api.post("/datasets", json={"name": unique("gone")}).json()["dataset_id"]
    assert api.delete(f"/datasets/{dataset_id}").status_code == 200
    expected = api.get(f"/datasets/{dataset_id}").json()["error"]

    # When the page is opened from it
    page.goto(f"{page_url}#dataset={dataset_id}")

    # Then the API's not-found is shown, no dataset is open, and the link is dropped from the address
    expect(page.locator("#alert-code")).to_have_text(expected["code"])
    expect(page.locator("#alert-message")).to_have_text(expected["message"])
    expect(page.locator("#dataset-section")).to_be_hidden()
    assert "dataset=" not in page.evaluate("location.hash")


def test_an_unknown_image_id_is_shown_as_the_api_worded_it(page: Page, page_url: str, api: Api) -> None:
    # Given an empty dataset, and what the API says of an image id it does not have
    name = unique("empty")
    dataset_id = api.post("/datasets", json={"name": name}).json()["dataset_id"]
    unknown = "i-000000000000000000000000"
    expected = api.post("/predictions", json={"dataset_id": dataset_id, "image_id": unknown}).json()["error"]
    open_page(page, page_url)
    dataset_row(page, name).get_by_role("button", name=f"Open the dataset {name}").click()

    # When that id is predicted on the page
    page.get_by_label("Predict an image by its id").fill(unknown)
    page.get_by_label("Predict an image by its id").press("Enter")

    # Then the page shows the API's code and message, word for word
    expect(page.locator("#alert-code")).to_have_text(expected["code"])
    expect(page.locator("#alert-message")).to_have_text(expected["message"])
    assert expected["code"] == "image_not_found"
    expect(page.locator("#prediction-section")).to_be_hidden()


def test_a_file_the_storage_refuses_is_reported_and_the_others_are_uploaded(page: Page, page_url: str) -> None:
    # Given three images, and a storage that refuses the PUT of one of them as S3 would
    images = good_samples(per_label=1)[:3]
    refused = images[1]
    denied = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    page.route(
        re.compile(rf".*/{re.escape(refused.name)}\?.*"),
        lambda route: (
            route.fulfill(status=403, body=denied, content_type="application/xml")
            if route.request.method == "PUT"
            else route.fallback()
        ),
    )
    name = unique("partly uploaded")
    open_page(page, page_url)
    page.evaluate(
        """() => {
          window.uploadStatus = [];
          const status = document.getElementById("dataset-form-status");
          new MutationObserver(() => window.uploadStatus.push(status.textContent))
            .observe(status, {childList: true, characterData: true});
        }"""
    )

    # When they are uploaded into a new dataset
    create_dataset_on_the_page(page, name, images)

    # Then the refused file is reported with the storage's own words, the others are uploaded, and progress was shown
    expect(page.locator("#alert-code")).to_have_text("upload_failed")
    expect(page.locator("#alert-message")).to_contain_text("1 of 3 images were not uploaded")
    expect(page.locator("#alert-message")).to_contain_text(f"{refused.name}: storage answered 403 AccessDenied")
    expect(page.locator("#dataset-form-status")).to_have_text(f"{name}: 2 of 3 images uploaded.")
    seen = page.evaluate("window.uploadStatus")
    assert any(text.startswith("Uploaded ") and f"of 3 images into {name}" in text for text in seen), seen
    expect(page.locator("#dataset-status")).to_have_text("READY")

    # And predicting the refused one says its image is missing, as the API words it
    row = page.locator("#images-table tbody tr").filter(has=page.locator("td.file", has_text=refused.name))
    row.get_by_role("button", name=f"Predict {refused.name}").click()
    expect(page.locator("#alert-code")).to_have_text("image_not_found")


def test_the_dataset_cards_fit_a_phone_screen_without_sideways_scrolling(
    page: Page, page_url: str, api: Api, s3: Any, images_bucket: str
) -> None:
    # Given a phone-sized window and a dataset with images and a long name
    page.set_viewport_size(PHONE)
    name = unique("a rather long dataset name that has to wrap on a phone screen")
    folder = f"browser-datasets/{uuid.uuid4().hex}/"
    keys = upload(s3, images_bucket, {folder + path.name: path.read_bytes() for path in good_samples(per_label=1)[:3]})
    assert api.post("/datasets", json={"name": name, "images": keys}).status_code == 201

    # When it is opened and an image's history shown
    open_page(page, page_url)
    dataset_row(page, name).get_by_role("button", name=f"Open the dataset {name}").click()
    expect(page.locator("#images-table tbody tr")).to_have_count(3)
    page.locator("#images-table tbody tr").first.get_by_role("button", name="History").click()
    expect(page.locator("#history-empty")).to_be_visible()

    # Then nothing is wider than the screen (the tables scroll inside their frames)
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    page.screenshot(path=str(PHONE_SCREENSHOT), full_page=True)


def test_a_dcm_uploaded_into_a_dataset_is_predicted_by_id_on_the_model_view_the_api_sends(
    page: Page, page_url: str, tmp_path: Path
) -> None:
    # Given a DICOM file of a cells sample, and the page with the cells model chosen
    path, _ = sample_as_monochrome1_dicom(tmp_path)
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request) if request.method == "PUT" else None)
    name = unique("dicom")
    open_page(page, page_url)
    page.select_option("#model", "cells")

    # When it is uploaded into a new dataset and predicted from the images list
    page.get_by_label("Name", exact=True).fill(name)
    page.set_input_files("#dataset-files", [path])
    page.get_by_role("button", name="Create the dataset and upload 1 image").click()
    expect(page.locator("#dataset-count")).to_have_text("1 image")
    with page.expect_request(lambda request: request.url.endswith("/predictions")) as asked:
        page.get_by_role("button", name=f"Predict {path.name}").click()

    # Then it went up as DICOM, the prediction asked for the model's view, and the mask is drawn over that view
    [put] = sent
    assert put.headers["content-type"] == "application/dicom"
    assert json.loads(asked.value.post_data or "{}")["preview"] is True
    expect(page.locator('#prediction-view figure[data-drawn="true"]')).to_be_visible()
    expect(page.locator("#prediction-summary")).to_contain_text(f"{path.name}: ")
    expect(page.locator("#prediction-summary")).to_contain_text("model cells version 1")

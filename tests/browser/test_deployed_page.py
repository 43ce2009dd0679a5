"""The page as scripts/deploy_web.py publishes it: config.json without a key, content types, and a bucket-hosted
page on another origin than the API, in headless Chromium.

The bucket is on the local S3 endpoint (moto's server), whose origin differs from the gateway's: the page calls the
API across origins, as a deployed page behind S3 or CloudFront does.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import API_KEY, REPO

SITE_BUCKET = "modelrun-web-page"
SCREENSHOT = Path("/tmp/modelrun-web-page-deployed.png")
KEY_SCREENSHOT = Path("/tmp/modelrun-web-page-wrong-key.png")


@pytest.fixture(scope="module")
def deploy_web() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_web", REPO / "scripts" / "deploy_web.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(stack: LocalRuntime, s3: Any, deploy_web: ModuleType) -> str:
    """The page published to a bucket of the local S3 endpoint with the local stack's outputs; its URL."""
    s3.create_bucket(Bucket=SITE_BUCKET)
    # Readable by anyone, as for S3 website hosting (web/README.md); moto's server refuses anonymous reads otherwise.
    public_read = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{SITE_BUCKET}/*",
            }
        ],
    }
    s3.put_bucket_policy(Bucket=SITE_BUCKET, Policy=json.dumps(public_read))
    config = deploy_web.page_config(stack.outputs())
    deploy_web.publish(s3, SITE_BUCKET, deploy_web.site_files(config))
    return f"{stack.aws_endpoint}/{SITE_BUCKET}/index.html"


def test_the_deployed_config_names_the_api_and_websocket_but_never_a_key(
    stack: LocalRuntime, deploy_web: ModuleType
) -> None:
    # Given a stack's outputs, which locally include the API key
    outputs = stack.outputs()

    # When the page's config is made from them
    config = deploy_web.page_config(outputs)

    # Then it has where to call, and no key
    assert config == {"apiUrl": outputs["ApiUrl"], "webSocketUrl": outputs["WebSocketUrl"]}


def test_every_published_file_has_the_content_type_a_browser_needs(site: str, s3: Any) -> None:
    # Given the published page
    # When its objects are read back
    types = {key: s3.head_object(Bucket=SITE_BUCKET, Key=key)["ContentType"] for key in ("index.html", "app.js")}
    types["style.css"] = s3.head_object(Bucket=SITE_BUCKET, Key="style.css")["ContentType"]
    types["config.json"] = s3.head_object(Bucket=SITE_BUCKET, Key="config.json")["ContentType"]

    # Then each has its type, and the documentation is not published
    assert types == {
        "index.html": "text/html; charset=utf-8",
        "app.js": "text/javascript; charset=utf-8",
        "style.css": "text/css; charset=utf-8",
        "config.json": "application/json",
    }
    assert "Contents" not in s3.list_objects_v2(Bucket=SITE_BUCKET, Prefix="README")


def test_the_deployed_page_asks_for_the_key_then_calls_the_api_across_origins(page: Page, site: str) -> None:
    # Given the page opened from its bucket, another origin than the API, with no key in its config
    page.goto(site)
    expect(page.locator("#key-section")).to_be_visible()

    # When the user types the API key
    page.get_by_label("API key for this stack").fill(API_KEY)
    page.get_by_role("button", name="Use this key").click()

    # Then the page lists the models from the API (CORS preflight and response both allowed) and keeps the key
    expect(page.locator("#model")).to_have_value("digits")
    expect(page.locator("#key-section")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('modelrun.apiKey')") == API_KEY
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_a_wrong_key_typed_on_the_deployed_page_is_shown_as_the_api_words_it(page: Page, site: str) -> None:
    # Given the deployed page
    page.goto(site)

    # When a wrong key is typed
    page.get_by_label("API key for this stack").fill("not-the-key")
    page.get_by_role("button", name="Use this key").click()

    # Then the API's refusal is shown, and the key is asked for again
    expect(page.locator("#alert-code")).to_have_text("invalid_api_key")
    expect(page.locator("#alert-message")).to_have_text("send a valid API key in the x-api-key header")
    expect(page.locator("#key-section")).to_be_visible()
    page.screenshot(path=str(KEY_SCREENSHOT), full_page=True)

"""What a browser gets from local mode over HTTP: the page and its config at /ui/, and CORS as on AWS.

The page at /ui/ is on the gateway's origin, but its uploads go to the local S3 endpoint (another port) and a
deployed page calls the API from another origin: preflights must be answered as API Gateway and S3 answer them.
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import requests

from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import API_KEY

PAGE_ORIGIN = "https://pages.example.org"
PREFLIGHT = {
    "Origin": PAGE_ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type,x-api-key,idempotency-key",
}


def raw_get(stack: LocalRuntime, path: str) -> http.client.HTTPResponse:
    """A GET with the path exactly as given (requests would normalise ``..`` away)."""
    host, port = urlsplit(stack.url).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", path)
    return connection.getresponse()


# --- the page --------------------------------------------------------------------------------------------------


def test_the_root_redirects_to_the_page(stack: LocalRuntime) -> None:
    # Given the local stack
    # When its root is opened
    response = requests.get(stack.url + "/", allow_redirects=False, timeout=10)

    # Then the browser is sent to the page
    assert (response.status_code, response.headers["Location"]) == (302, "/ui/")


def test_the_page_is_served_without_an_api_key_with_its_content_types(stack: LocalRuntime) -> None:
    # Given the local stack
    # When the page's files are fetched without a key
    types = {name: requests.get(f"{stack.url}/ui/{name}", timeout=10) for name in ("", "app.js", "style.css")}

    # Then each comes with the type a browser needs to use it
    assert [response.status_code for response in types.values()] == [200, 200, 200]
    assert types[""].headers["Content-Type"].startswith("text/html")
    assert types["app.js"].headers["Content-Type"].startswith("text/javascript")
    assert types["style.css"].headers["Content-Type"].startswith("text/css")


def test_the_page_config_names_the_stacks_api_websocket_and_key(stack: LocalRuntime) -> None:
    # Given the running stack's outputs
    outputs = stack.outputs()

    # When the page's config.json is fetched
    config = requests.get(f"{stack.url}/ui/config.json", timeout=10).json()

    # Then it points at this stack
    assert config == {"apiUrl": outputs["ApiUrl"], "webSocketUrl": outputs["WebSocketUrl"], "apiKey": API_KEY}


def test_a_path_out_of_the_web_folder_is_not_served(stack: LocalRuntime) -> None:
    # Given paths that climb out of web/
    # When they are requested
    statuses = [raw_get(stack, path).status for path in ("/ui/../template.yaml", "/ui/%2e%2e/template.yaml")]

    # Then neither reaches the file
    assert statuses == [404, 404]


def test_a_post_to_the_page_is_405(stack: LocalRuntime) -> None:
    # Given the page
    # When something is posted to it
    response = requests.post(f"{stack.url}/ui/", data=b"x", timeout=10)

    # Then it is refused as a method the page does not take
    assert (response.status_code, response.json()["error"]["code"]) == (405, "method_not_allowed")


# --- CORS on the API, as API Gateway answers with the template's Cors -------------------------------------------


def test_a_preflight_is_answered_by_the_gateway_without_an_api_key(stack: LocalRuntime) -> None:
    # Given a browser about to POST /batches from another origin
    # When it sends the preflight, which carries no API key
    response = requests.options(f"{stack.url}/v1/batches", headers=PREFLIGHT, timeout=10)

    # Then the gateway allows the page's origin, headers and the path's methods, as API Gateway's mock does
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "OPTIONS,POST"
    assert response.headers["Access-Control-Allow-Headers"] == "content-type,x-api-key,idempotency-key"
    assert response.headers["Access-Control-Max-Age"] == "600"


def test_a_preflight_lists_every_method_of_a_path(stack: LocalRuntime) -> None:
    # Given a path with a GET route only
    # When a browser sends a preflight for it
    response = requests.options(f"{stack.url}/v1/batches/b-1/results", headers=PREFLIGHT, timeout=10)

    # Then the allowed methods are that path's
    assert response.headers["Access-Control-Allow-Methods"] == "GET,OPTIONS"


def test_a_preflight_for_a_path_without_routes_is_404_route_not_found(stack: LocalRuntime) -> None:
    # Given a path the API does not have
    # When a browser sends a preflight for it
    response = requests.options(f"{stack.url}/v1/nothing", headers=PREFLIGHT, timeout=10)

    # Then it is refused as API Gateway refuses it
    assert (response.status_code, response.json()["error"]["code"]) == (404, "route_not_found")


def test_a_refused_api_key_answer_is_readable_by_the_page(stack: LocalRuntime) -> None:
    # Given a request from another origin with a wrong key
    # When the gateway refuses it
    response = requests.get(f"{stack.url}/v1/models", headers={"Origin": PAGE_ORIGIN, "x-api-key": "no"}, timeout=10)

    # Then its error carries the CORS origin (the template's gateway responses), so the page can show it
    assert response.status_code == 403
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_a_function_answer_to_another_origin_carries_the_cors_headers(stack: LocalRuntime) -> None:
    # Given a request from another origin with the key
    # When a function answers it
    headers = {"Origin": PAGE_ORIGIN, "x-api-key": API_KEY}
    response = requests.get(f"{stack.url}/v1/models", headers=headers, timeout=10)

    # Then the answer lets the page read it
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] in ("*", PAGE_ORIGIN)


# --- CORS on the images bucket ---------------------------------------------------------------------------------


def test_the_images_bucket_answers_an_upload_preflight_from_the_page(stack: LocalRuntime, images_bucket: str) -> None:
    # Given a presigned upload URL from POST /uploads
    upload = requests.post(
        f"{stack.url}/v1/uploads",
        json={"files": [{"name": "scan.png", "content_type": "image/png", "size": 10}]},
        headers={"x-api-key": API_KEY},
        timeout=10,
    ).json()["uploads"][0]
    assert urlsplit(upload["url"]).path.startswith(f"/{images_bucket}/inputs/")

    # When the browser sends the PUT's preflight from the page's origin
    preflight = {**PREFLIGHT, "Origin": stack.url, "Access-Control-Request-Method": "PUT"}
    preflight["Access-Control-Request-Headers"] = "content-type"
    response = requests.options(upload["url"], headers=preflight, timeout=10)

    # Then the local S3 endpoint allows it, with the bucket's CORS rules from the template
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] in ("*", stack.url)
    assert "PUT" in response.headers["Access-Control-Allow-Methods"]

"""The HTTP adapter: the three request forms, the error mapping of the REST resolver, and the prediction behind
POST /predictions."""

from __future__ import annotations

import base64
import copy
import fnmatch
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from PIL import Image

from modelrun.errors import (
    InvalidJson,
    InvalidRequest,
    ModelConfigError,
    UnknownModel,
    UnsupportedMediaType,
)
from modelrun.http.requests import IMAGE_CONTENT_TYPES, S3Ref, json_body, parse_image_request, query_int
from modelrun.http.resolver import create_resolver, error_response
from modelrun.images.decode import Limits
from modelrun.models.registry import ModelRegistry
from modelrun.predict import Predictor
from modelrun_local.template import Template
from tests.modelfactory import make_model

REPO = Path(__file__).resolve().parents[3]
EVENTS = REPO / "events" / "predict"
TEMPLATE = REPO / "template.yaml"
JSON_HEADERS = {"Content-Type": "application/json"}
PNG_HEADERS = {"Content-Type": "image/png"}


def png(color: tuple[int, int, int] = (230, 20, 20), size: tuple[int, int] = (16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_json(document: Any, query: dict[str, str] | None = None) -> Any:
    """Parse a JSON request body as API Gateway delivers it (text, not base64)."""
    return parse_image_request(json.dumps(document), is_base64=False, headers=JSON_HEADERS, query=query or {})


def rest_event(method: str, path: str) -> dict[str, Any]:
    """A real-shaped REST proxy event (from events/) for another method and path."""
    event: dict[str, Any] = copy.deepcopy(json.loads((EVENTS / "list-models.json").read_text()))
    event.update(httpMethod=method, path=path, resource=path)
    event["requestContext"].update(httpMethod=method, resourcePath=path, path=f"/v1{path}")
    return event


def resolve(app: APIGatewayRestResolver, method: str, path: str) -> tuple[int, dict[str, list[str]], Any]:
    """Status, multi-value headers (what the REST resolver sets) and decoded JSON body of the resolver's answer."""
    response = app.resolve(rest_event(method, path), None)  # type: ignore[arg-type]
    return response["statusCode"], dict(response["multiValueHeaders"]), json.loads(response["body"])


# --- JSON with a base64 image ------------------------------------------------------------------------------


def test_a_json_body_with_a_base64_image_gives_the_image_bytes_model_and_version() -> None:
    # given a JSON request naming a model and version with a base64 PNG
    image = png()

    # when it is parsed
    request = parse_json({"model": "digits", "version": "2", "image": b64(image)})

    # then the image bytes, model and version come back, and there is no S3 reference
    assert (request.image, request.model, request.version, request.ref) == (image, "digits", "2", None)


def test_a_base64_image_wrapped_over_several_lines_is_decoded() -> None:
    # given base64 wrapped at 76 columns, as the base64 tool writes it
    image = png(size=(40, 40))
    wrapped = "\n".join(b64(image)[i : i + 76] for i in range(0, len(b64(image)), 76))

    # when it is parsed
    request = parse_json({"image": wrapped})

    # then the line breaks are ignored
    assert request.image == image


def test_a_base64_image_with_a_data_url_prefix_is_decoded() -> None:
    # given a data URL, as a browser's FileReader produces it
    image = png()

    # when it is parsed
    request = parse_json({"image": "data:image/png;base64," + b64(image)})

    # then the prefix is dropped and the bytes decoded
    assert request.image == image


def test_an_image_that_is_not_valid_base64_is_an_invalid_request() -> None:
    # given an "image" with characters outside the base64 alphabet
    # when it is parsed, then it is refused as invalid base64
    with pytest.raises(InvalidRequest, match='"image" is not valid base64') as caught:
        parse_json({"image": "not*base64!"})
    assert (caught.value.code, caught.value.status) == ("invalid_request", 400)


def test_an_image_that_is_not_a_string_is_an_invalid_request() -> None:
    # given a JSON number where the base64 string belongs
    # when it is parsed, then the message says what "image" must be
    with pytest.raises(InvalidRequest, match='"image" must be a base64 string'):
        parse_json({"image": 12345})


# --- JSON with an S3 reference -----------------------------------------------------------------------------


def test_a_json_body_with_an_s3_reference_gives_the_bucket_and_key() -> None:
    # given the S3-reference form of the sample event
    event = json.loads((EVENTS / "json-s3-reference.json").read_text())

    # when its body is parsed
    request = parse_image_request(event["body"], is_base64=event["isBase64Encoded"], headers=event["headers"], query={})

    # then the reference, not image bytes, comes back
    assert request.ref == S3Ref("modelrun-local-images-123456789012-us-east-1", "uploads/digits/digit-7-0081.png")
    assert (request.image, request.model) == (b"", "digits")


@pytest.mark.parametrize(
    "reference",
    [{"bucket": "images"}, {"key": "a.png"}, {"bucket": "", "key": "a.png"}, {"bucket": "images", "key": 7}, "s3://x"],
    ids=["no-key", "no-bucket", "empty-bucket", "numeric-key", "a-string"],
)
def test_an_s3_reference_without_a_string_bucket_and_key_is_an_invalid_request(reference: Any) -> None:
    # given an image_s3 value that is not {"bucket": str, "key": str}
    # when it is parsed, then the message shows the expected shape
    with pytest.raises(InvalidRequest, match='"image_s3" must be an object with string "bucket" and "key"'):
        parse_json({"image_s3": reference})


def test_a_body_with_both_an_image_and_an_s3_reference_is_an_invalid_request() -> None:
    # given both forms at once
    # when it is parsed, then the client is told to send exactly one
    with pytest.raises(InvalidRequest, match="send exactly one of"):
        parse_json({"image": b64(png()), "image_s3": {"bucket": "b", "key": "k"}})


def test_a_body_with_neither_an_image_nor_an_s3_reference_is_an_invalid_request() -> None:
    # given only a model name
    # when it is parsed, then the client is told to send exactly one
    with pytest.raises(InvalidRequest, match="send exactly one of"):
        parse_json({"model": "digits"})


# --- model and version ------------------------------------------------------------------------------------


def test_the_model_and_version_come_from_the_query_when_the_json_names_none() -> None:
    # given a JSON body without model, and model/version query parameters
    # when it is parsed
    request = parse_json({"image": b64(png())}, query={"model": "colours", "version": "3"})

    # then the query supplies them
    assert (request.model, request.version) == ("colours", "3")


def test_the_json_model_wins_over_the_query_model() -> None:
    # given a model both in the body and the query
    # when it is parsed
    request = parse_json({"model": "from-body", "image": b64(png())}, query={"model": "from-query"})

    # then the body's choice is used
    assert request.model == "from-body"


def test_a_request_naming_no_model_leaves_the_choice_to_the_default() -> None:
    # given no model anywhere
    # when it is parsed
    request = parse_json({"image": b64(png())})

    # then model and version are None (the predictor applies its default)
    assert (request.model, request.version) == (None, None)


def test_the_model_name_is_stripped_of_surrounding_spaces() -> None:
    # given a model name padded with spaces
    # when it is parsed, then the spaces are gone
    assert parse_json({"model": "  digits ", "image": b64(png())}).model == "digits"


@pytest.mark.parametrize("value", ["", "   ", 7, ["digits"]], ids=["empty", "blank", "number", "list"])
def test_a_model_that_is_not_a_non_empty_string_is_an_invalid_request(value: Any) -> None:
    # given a "model" field that cannot name a model
    # when it is parsed, then the message names the field
    with pytest.raises(InvalidRequest, match='"model" must be a non-empty string'):
        parse_json({"model": value, "image": b64(png())})


# --- masks ----------------------------------------------------------------------------------------------------


def test_a_request_asks_for_masks_unless_it_says_otherwise() -> None:
    # given a JSON body and a raw body that say nothing of masks
    # when they are parsed, then both ask for the mask
    assert parse_json({"image": b64(png())}).masks is True
    raw = parse_image_request(b64(png()), is_base64=True, headers={"Content-Type": "image/png"}, query={})
    assert raw.masks is True


def test_masks_false_in_the_json_body_or_the_query_leaves_the_mask_out() -> None:
    # given "masks": false in a JSON body, and ?masks=false for a raw body
    # when they are parsed, then neither asks for the mask
    assert parse_json({"image": b64(png()), "masks": False}).masks is False
    assert parse_json({"image": b64(png())}, query={"masks": "false"}).masks is False
    raw = parse_image_request(
        b64(png()), is_base64=True, headers={"Content-Type": "image/png"}, query={"masks": "false"}
    )
    assert raw.masks is False


def test_the_json_masks_wins_over_the_query_masks() -> None:
    # given "masks": true in the body and ?masks=false
    # when it is parsed, then the body's answer holds
    assert parse_json({"image": b64(png()), "masks": True}, query={"masks": "false"}).masks is True


@pytest.mark.parametrize("value", ["false", 0, 1, [], {}], ids=["string", "zero", "one", "list", "object"])
def test_a_json_masks_that_is_not_a_boolean_is_an_invalid_request(value: Any) -> None:
    # given a "masks" field that is not true or false
    # when it is parsed, then the message names the field
    with pytest.raises(InvalidRequest, match='"masks" must be true or false'):
        parse_json({"image": b64(png()), "masks": value})


@pytest.mark.parametrize("value", ["no", "0", "False", "yes"])
def test_a_query_masks_other_than_true_or_false_is_an_invalid_request(value: str) -> None:
    # given ?masks= with something else
    # when a raw body is parsed, then the message names the parameter
    with pytest.raises(InvalidRequest, match='query parameter "masks" must be true or false'):
        parse_image_request(b64(png()), is_base64=True, headers={"Content-Type": "image/png"}, query={"masks": value})


# --- preview ----------------------------------------------------------------------------------------------------


def test_a_request_asks_for_no_preview_unless_it_says_so() -> None:
    assert parse_json({"image": b64(png())}).preview is False
    raw = parse_image_request(b64(png()), is_base64=True, headers={"Content-Type": "application/dicom"}, query={})
    assert raw.preview is False


def test_preview_true_in_the_query_or_the_json_body_asks_for_the_preview() -> None:
    # given ?preview=true for a raw DICOM body, "preview": true in JSON bodies, and the query under a JSON body
    raw = parse_image_request(
        b64(png()), is_base64=True, headers={"Content-Type": "application/dicom"}, query={"preview": "true"}
    )
    # then each asks for it, and the body's own answer wins over the query's
    assert raw.preview is True
    assert parse_json({"image": b64(png()), "preview": True}).preview is True
    assert parse_json({"image_s3": {"bucket": "b", "key": "k"}, "preview": True}).preview is True
    assert parse_json({"image": b64(png())}, query={"preview": "true"}).preview is True
    assert parse_json({"image": b64(png()), "preview": False}, query={"preview": "true"}).preview is False


@pytest.mark.parametrize("value", ["true", 1, [], {}], ids=["string", "one", "list", "object"])
def test_a_json_preview_that_is_not_a_boolean_is_an_invalid_request(value: Any) -> None:
    with pytest.raises(InvalidRequest, match='"preview" must be true or false'):
        parse_json({"image": b64(png()), "preview": value})


def test_a_query_preview_other_than_true_or_false_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match='query parameter "preview" must be true or false'):
        parse_image_request(b64(png()), is_base64=True, headers={"Content-Type": "image/png"}, query={"preview": "1"})


# --- raw image bodies ------------------------------------------------------------------------------------


def test_a_raw_png_event_gives_the_png_bytes_and_the_query_model() -> None:
    # given the raw-body sample event (API Gateway base64-encodes binary media types)
    event = json.loads((EVENTS / "raw-png-body.json").read_text())

    # when it is parsed
    request = parse_image_request(
        event["body"],
        is_base64=event["isBase64Encoded"],
        headers=event["headers"],
        query=event["queryStringParameters"],
    )

    # then the decoded bytes are a PNG, and the model is the query's
    assert request.image.startswith(b"\x89PNG\r\n\x1a\n")
    assert request.image == base64.b64decode(event["body"])
    assert (request.model, request.version, request.ref) == ("digits", None, None)


@pytest.mark.parametrize("content_type", sorted(IMAGE_CONTENT_TYPES))
def test_every_image_content_type_is_read_as_a_raw_image_body(content_type: str) -> None:
    # given raw bytes with one of the accepted image content types
    data = b"\x00\x01binary\xff"

    # when it is parsed
    request = parse_image_request(b64(data), is_base64=True, headers={"Content-Type": content_type}, query={})

    # then the body is taken as the image
    assert request.image == data


def test_every_raw_image_content_type_accepted_is_a_binary_media_type_of_the_api() -> None:
    # given the media types the REST API delivers base64-encoded (intact)
    binary = Template.load(TEMPLATE).binary_media_types("RestApi")

    # when the accepted raw-body content types are checked against them
    garbled = sorted(kind for kind in IMAGE_CONTENT_TYPES if not any(fnmatch.fnmatch(kind, p) for p in binary))

    # then none would arrive as text
    assert garbled == []


def test_the_content_type_header_is_matched_whatever_its_case_and_parameters() -> None:
    # given a lower-case header name, an upper-case media type and a parameter
    headers = {"content-type": "Image/PNG; charset=binary"}

    # when a raw body is parsed
    request = parse_image_request(b64(b"raw"), is_base64=True, headers=headers, query={"model": "digits"})

    # then it is still recognised as a raw image
    assert (request.image, request.model) == (b"raw", "digits")


def test_an_empty_query_model_means_no_model_for_a_raw_body() -> None:
    # given ?model= with no value
    # when a raw body is parsed
    request = parse_image_request(b64(b"raw"), is_base64=True, headers=PNG_HEADERS, query={"model": ""})

    # then no model is named
    assert request.model is None


def test_a_raw_body_that_claims_base64_but_is_not_is_an_invalid_request() -> None:
    # given a body flagged base64 that is not
    # when it is parsed, then the request body is named as the culprit
    with pytest.raises(InvalidRequest, match="the request body is not valid base64"):
        parse_image_request("%%%", is_base64=True, headers=PNG_HEADERS, query={})


def test_an_unsupported_content_type_is_refused_with_415_and_the_accepted_types() -> None:
    # given a text/plain body
    # when it is parsed
    with pytest.raises(UnsupportedMediaType) as caught:
        parse_image_request("hello", is_base64=False, headers={"Content-Type": "text/plain"}, query={})

    # then the status is 415 and the message lists what is accepted
    assert (caught.value.code, caught.value.status) == ("unsupported_media_type", 415)
    assert "'text/plain'" in caught.value.message
    assert "application/json" in caught.value.message
    assert "image/png" in caught.value.message


# --- JSON parsing errors ---------------------------------------------------------------------------------


def test_a_body_without_a_content_type_is_read_as_json() -> None:
    # given a JSON body and no headers at all
    image = png()

    # when it is parsed
    request = parse_image_request(json.dumps({"image": b64(image)}), is_base64=False, headers={}, query={})

    # then it is understood as JSON
    assert request.image == image


def test_a_json_body_that_the_gateway_base64_encoded_is_decoded_first() -> None:
    # given a JSON document delivered base64-encoded
    image = png()
    body = b64(json.dumps({"model": "digits", "image": b64(image)}).encode())

    # when it is parsed
    request = parse_image_request(body, is_base64=True, headers=JSON_HEADERS, query={})

    # then the document inside is read
    assert (request.model, request.image) == ("digits", image)


@pytest.mark.parametrize("body", [None, "", "  \n "], ids=["none", "empty", "blank"])
def test_an_empty_json_body_is_invalid_json_that_shows_the_expected_shape(body: str | None) -> None:
    # given no body
    # when it is parsed, then the message says what to send
    with pytest.raises(InvalidJson, match=r'the request body is empty: send \{"model"'):
        parse_image_request(body, is_base64=False, headers=JSON_HEADERS, query={})


def test_malformed_json_is_invalid_json_with_the_line_and_column() -> None:
    # given JSON with a missing value on line 2
    body = '{"model": "digits",\n "image": }'

    # when it is parsed
    with pytest.raises(InvalidJson) as caught:
        parse_image_request(body, is_base64=False, headers=JSON_HEADERS, query={})

    # then the position is in the message, and the code is invalid_json with status 400
    assert "at line 2 column 11" in caught.value.message
    assert (caught.value.code, caught.value.status) == ("invalid_json", 400)


def test_a_json_document_that_is_not_an_object_is_invalid_json() -> None:
    # given a JSON array
    # when it is parsed, then it must be an object
    with pytest.raises(InvalidJson, match="must be a JSON object"):
        parse_image_request("[1, 2]", is_base64=False, headers=JSON_HEADERS, query={})


@pytest.mark.parametrize(
    "body",
    [
        '{"model": "digits", "image_s3": {"bucket": "b", "key": "\\ud800"}}',
        '{"\\udc00": 1, "image": "AAAA"}',
        '{"image": "AAAA", "version": ["1", {"v": "x\\udbff"}]}',
    ],
    ids=["lone-high-surrogate-value", "lone-low-surrogate-key", "nested"],
)
def test_json_escaping_a_lone_surrogate_is_invalid_json(body: str) -> None:
    # given valid JSON syntax that escapes half of a UTF-16 surrogate pair (an S3 key of one was a 502)
    # when it is parsed, then it is refused as invalid_json: it holds no text a key or name could be
    with pytest.raises(InvalidJson, match="lone UTF-16 surrogate") as caught:
        parse_image_request(body, is_base64=False, headers=JSON_HEADERS, query={})
    assert caught.value.status == 400


def test_json_escaping_a_surrogate_pair_is_the_character_it_encodes() -> None:
    # given a key escaped as a UTF-16 surrogate pair, as JSON encoders write characters outside the BMP
    body = '{"image_s3": {"bucket": "b", "key": "scans/\\ud83d\\ude00.png"}}'

    # when it is parsed, then the pair is one character
    assert parse_image_request(body, is_base64=False, headers=JSON_HEADERS, query={}).ref == S3Ref(
        "b", "scans/\U0001f600.png"
    )


@pytest.mark.parametrize(
    "body",
    ["[" * 100_000 + "]" * 100_000, '{"a": ' * 5_000 + "1" + "}" * 5_000],
    ids=["arrays", "objects"],
)
def test_json_nested_deeper_than_the_parser_goes_is_invalid_json(body: str) -> None:
    # given a small body nested deeper than Python's recursion limit (it was a 502)
    # when it is read, then it is refused as invalid_json
    with pytest.raises(InvalidJson, match="too deeply"):
        json_body(body, is_base64=False)


def test_json_with_an_integer_of_more_digits_than_python_reads_is_invalid_json() -> None:
    # given an integer of 5,000 digits (past int_max_str_digits: json.loads raised a plain ValueError, a 502)
    body = '{"images": ["a.png"], "chunk_size": ' + "1" * 5_000 + "}"

    # when it is read, then it is refused as invalid_json
    with pytest.raises(InvalidJson, match="too many digits"):
        json_body(body, is_base64=False)


def test_invalid_json_is_a_kind_of_invalid_request() -> None:
    # given the error hierarchy
    # then a handler catching InvalidRequest also catches InvalidJson, with its own code
    assert issubclass(InvalidJson, InvalidRequest)
    assert InvalidJson("x").code != InvalidRequest("x").code


# --- query parameters --------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "250", "1000"])
def test_an_integer_query_parameter_in_range_is_read(raw: str) -> None:
    # given ASCII digits from 1 to the maximum
    # when the parameter is read, then it is that number
    assert query_int({"limit": raw}, "limit", default=100, maximum=1000) == int(raw)


@pytest.mark.parametrize(
    "raw", ["\u00b2", "\u0661", "1\u00b2", "\uff15"], ids=["superscript", "arabic", "mixed", "fullwidth"]
)
def test_an_integer_query_parameter_of_digits_other_than_ascii_is_an_invalid_request(raw: str) -> None:
    # given characters str.isdigit() accepts but that are not ASCII digits ("²" made int() raise: a 502)
    # when the parameter is read, then it is refused saying what it must be
    with pytest.raises(InvalidRequest, match="must be an integer from 1 to 1000"):
        query_int({"limit": raw}, "limit", default=100, maximum=1000)


# --- the resolver's error mapping ------------------------------------------------------------------------


def test_a_domain_error_raised_by_a_route_becomes_its_status_and_error_body() -> None:
    # given a route that raises UnknownModel
    app = create_resolver()

    @app.get("/models/missing")
    def missing() -> dict[str, Any]:
        raise UnknownModel("no model named 'missing'; available: digits")

    # when it is called
    status, headers, body = resolve(app, "GET", "/models/missing")

    # then the answer is 404 with the stable code and the message, as JSON
    assert status == 404
    assert headers["Content-Type"] == ["application/json"]
    assert body == {"error": {"code": "unknown_model", "message": "no model named 'missing'; available: digits"}}


def test_a_domain_error_subclass_keeps_its_own_code() -> None:
    # given a route that raises InvalidJson (an InvalidRequest)
    app = create_resolver()

    @app.post("/predictions")
    def predict() -> dict[str, Any]:
        raise InvalidJson("the request body is not valid JSON")

    # when it is called
    status, _, body = resolve(app, "POST", "/predictions")

    # then the subclass's code is used
    assert (status, body["error"]["code"]) == (400, "invalid_json")


def test_the_details_of_a_domain_error_are_part_of_the_error_body() -> None:
    # given an error carrying details
    app = create_resolver()

    @app.get("/models")
    def broken() -> dict[str, Any]:
        raise ModelConfigError("model.json: labels has 2 entries, the graph 3 outputs", field="labels")

    # when it is called
    status, _, body = resolve(app, "GET", "/models")

    # then the status is the error's (500) and the details are included
    assert status == 500
    assert body["error"] == {
        "code": "invalid_model_config",
        "message": "model.json: labels has 2 entries, the graph 3 outputs",
        "details": {"field": "labels"},
    }


def test_an_unexpected_exception_is_not_turned_into_a_domain_error_response() -> None:
    # given a route with a programming error
    app = create_resolver()

    @app.get("/models")
    def buggy() -> dict[str, Any]:
        raise ZeroDivisionError("bug")

    # when it is called, then the exception propagates (Lambda reports a function error, API Gateway a 502)
    with pytest.raises(ZeroDivisionError):
        resolve(app, "GET", "/models")


def test_an_unknown_route_is_404_route_not_found_naming_the_method_and_path() -> None:
    # given a resolver with no routes
    app = create_resolver()

    # when an unknown path is requested
    status, headers, body = resolve(app, "DELETE", "/nowhere")

    # then the answer is the project's 404, not Powertools' default
    assert status == 404
    assert headers["Content-Type"] == ["application/json"]
    assert body["error"]["code"] == "route_not_found"
    assert body["error"]["message"].startswith("no route for DELETE /nowhere")


def test_an_error_response_without_details_has_only_code_and_message() -> None:
    # given no details
    # when an error response is built
    response = error_response(415, "unsupported_media_type", "send an image")

    # then the body has exactly code and message
    assert response.status_code == 415
    assert json.loads(str(response.body)) == {"error": {"code": "unsupported_media_type", "message": "send an image"}}


# --- the prediction -----------------------------------------------------------------------------------------


@pytest.fixture
def predictor(tmp_path: Path) -> Predictor:
    """Two versions of an RGB colour model (the brightest channel wins) and a grey quadrant model."""
    make_model(tmp_path, name="colours", version="1", color_mode="RGB")
    make_model(tmp_path, name="colours", version="2", color_mode="RGB")
    make_model(tmp_path, name="quadrants", color_mode="L", classes=4)
    return Predictor(ModelRegistry(tmp_path), Limits(), default_model="colours")


def test_a_prediction_names_the_model_version_label_and_timings(predictor: Predictor) -> None:
    # given a green image
    # when it is predicted with the default model
    result = predictor.predict(png((20, 230, 20)))

    # then the default model's latest version answers "green", and the timings add up
    assert (result["model"], result["version"], result["label"]) == ("colours", "2", "green")
    assert result["top_k"][0]["label"] == "green"
    assert 0.0 < result["score"] <= 1.0
    assert uuid.UUID(result["prediction_id"]).version == 4
    timings = result["timings_ms"]
    assert set(timings) == {"preprocess", "inference", "total"}
    assert timings["total"] >= timings["preprocess"]


def test_a_prediction_uses_the_model_and_version_asked_for(predictor: Predictor) -> None:
    # given a named model and an explicit older version of the default
    # when each is asked for
    grey = predictor.predict(png((0, 0, 0)), model="quadrants")
    older = predictor.predict(png((230, 20, 20)), version="1")

    # then each request is served by what it named
    assert (grey["model"], grey["version"]) == ("quadrants", "1")
    assert (older["model"], older["version"], older["label"]) == ("colours", "1", "red")


def test_each_prediction_gets_its_own_id(predictor: Predictor) -> None:
    # given the same image twice
    image = png()

    # when it is predicted twice
    first, second = predictor.predict(image), predictor.predict(image)

    # then the labels agree and the ids differ
    assert first["label"] == second["label"]
    assert first["prediction_id"] != second["prediction_id"]


def test_a_prediction_for_an_unknown_model_is_unknown_model(predictor: Predictor) -> None:
    # given a model name that is not deployed
    # when it is asked for, then it is a 404 unknown_model
    with pytest.raises(UnknownModel) as caught:
        predictor.predict(png(), model="nonexistent")
    assert caught.value.status == 404

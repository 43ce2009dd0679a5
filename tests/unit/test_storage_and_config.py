"""Settings from the environment, and reading referenced images from S3 (moto, buckets as template.yaml makes them)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from modelrun.aws.s3 import ImageStore
from modelrun.config import ConfigurationError, int_env, require_env
from modelrun.errors import ImageNotFound, ImageTooLarge, InvalidRequest
from modelrun_local.template import Template

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
IMAGES_BUCKET = "modelrun-test-images"
OTHER_BUCKET = "someone-elses-bucket"
VARIABLE = "MODELRUN_TEST_SETTING"


# --- require_env ---------------------------------------------------------------------------------------------


def test_a_required_variable_gives_its_value_without_surrounding_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a set variable with stray spaces
    monkeypatch.setenv(VARIABLE, "  images-bucket \n")

    # when it is required, then the trimmed value comes back
    assert require_env(VARIABLE) == "images-bucket"


@pytest.mark.parametrize("value", [None, "", "   "], ids=["unset", "empty", "blank"])
def test_a_missing_required_variable_fails_naming_it_and_the_template(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    # given the variable unset or empty
    if value is None:
        monkeypatch.delenv(VARIABLE, raising=False)
    else:
        monkeypatch.setenv(VARIABLE, value)

    # when it is required, then the error names the variable and where to define it
    with pytest.raises(ConfigurationError, match=f"environment variable {VARIABLE} is not set: define it in template"):
        require_env(VARIABLE)


# --- int_env -------------------------------------------------------------------------------------------------


def test_an_unset_integer_setting_gives_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # given the variable unset
    monkeypatch.delenv(VARIABLE, raising=False)

    # when it is read, then the default comes back
    assert int_env(VARIABLE, 42) == 42


def test_a_set_integer_setting_gives_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a padded integer
    monkeypatch.setenv(VARIABLE, " 1024 ")

    # when it is read, then the value wins over the default
    assert int_env(VARIABLE, 42) == 1024


def test_an_integer_setting_that_is_not_a_number_fails_showing_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a unit suffix
    monkeypatch.setenv(VARIABLE, "10MB")

    # when it is read, then the error names the variable and repeats the value
    with pytest.raises(ConfigurationError, match=f"{VARIABLE} must be an integer, got '10MB'"):
        int_env(VARIABLE, 42)


@pytest.mark.parametrize("value", ["0", "-5"])
def test_an_integer_setting_below_the_minimum_fails(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    # given a value under the default minimum of 1
    monkeypatch.setenv(VARIABLE, value)

    # when it is read, then the error states the minimum
    with pytest.raises(ConfigurationError, match=f"{VARIABLE} must be at least 1, got {value}"):
        int_env(VARIABLE, 42)


def test_an_integer_setting_may_lower_its_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    # given zero, for a setting whose minimum is zero
    monkeypatch.setenv(VARIABLE, "0")

    # when it is read, then zero is accepted
    assert int_env(VARIABLE, 5, minimum=0) == 0


# --- ImageStore against S3 ----------------------------------------------------------------------------------


def create_bucket_like_images_bucket(s3: Any, name: str) -> None:
    """A bucket with the ImagesBucket properties of template.yaml, so these tests follow the template."""
    props = Template.load(TEMPLATE).resources["ImagesBucket"]["Properties"]
    s3.create_bucket(Bucket=name)
    # CloudFormation's list of rules is the S3 API's {"Rules": [...]}, with the default under another name.
    rules = [
        {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
        for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    ]
    s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
    s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=props["OwnershipControls"])


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's S3 with fake credentials, the images bucket and a bucket the store is not allowed to read."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        client = boto3.client("s3")
        create_bucket_like_images_bucket(client, IMAGES_BUCKET)
        create_bucket_like_images_bucket(client, OTHER_BUCKET)
        yield client


@pytest.fixture
def store(s3: Any) -> ImageStore:
    return ImageStore(s3, {IMAGES_BUCKET})


def test_the_images_bucket_is_encrypted_as_the_template_says(s3: Any) -> None:
    # given the fixture bucket
    # when its encryption is read back
    rules = s3.get_bucket_encryption(Bucket=IMAGES_BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]

    # then it is the template's AES256 default
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_an_object_in_an_allowed_bucket_is_read_whole(s3: Any, store: ImageStore) -> None:
    # given an object in the images bucket
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    s3.put_object(Bucket=IMAGES_BUCKET, Key="uploads/a.png", Body=data)

    # when it is read
    read = store.read(IMAGES_BUCKET, "uploads/a.png", max_bytes=10_000)

    # then the bytes are the object's
    assert read == data


def test_an_object_exactly_at_the_size_limit_is_read(s3: Any, store: ImageStore) -> None:
    # given an object of exactly max_bytes
    s3.put_object(Bucket=IMAGES_BUCKET, Key="edge.png", Body=b"x" * 1000)

    # when it is read with that limit, then it is accepted
    assert len(store.read(IMAGES_BUCKET, "edge.png", max_bytes=1000)) == 1000


def test_an_object_over_the_size_limit_is_image_too_large_with_both_sizes(s3: Any, store: ImageStore) -> None:
    # given an object one byte over the limit
    s3.put_object(Bucket=IMAGES_BUCKET, Key="big.png", Body=b"x" * 1001)

    # when it is read
    with pytest.raises(ImageTooLarge) as caught:
        store.read(IMAGES_BUCKET, "big.png", max_bytes=1000)

    # then it is a 413 naming the size and the limit
    assert (caught.value.code, caught.value.status) == ("image_too_large", 413)
    assert caught.value.message == "the image is 1001 bytes; the limit is 1000 bytes"


def test_a_missing_object_is_image_not_found_naming_the_s3_uri(store: ImageStore) -> None:
    # given no object under the key
    # when it is read
    with pytest.raises(ImageNotFound) as caught:
        store.read(IMAGES_BUCKET, "uploads/nothing.png", max_bytes=1000)

    # then it is a 404 with the full S3 address
    assert (caught.value.code, caught.value.status) == ("image_not_found", 404)
    assert f"no object s3://{IMAGES_BUCKET}/uploads/nothing.png" in caught.value.message
    assert isinstance(caught.value.__cause__, ClientError)


def test_an_allowed_bucket_that_does_not_exist_is_image_not_found(s3: Any) -> None:
    # given a store allowed a bucket that was never created
    store = ImageStore(s3, {"deleted-bucket"})

    # when an object of it is read, then it is reported as not found
    with pytest.raises(ImageNotFound, match=re.escape("s3://deleted-bucket/a.png")):
        store.read("deleted-bucket", "a.png", max_bytes=1000)


def test_a_bucket_outside_the_allowed_set_is_refused_even_when_the_object_exists(s3: Any, store: ImageStore) -> None:
    # given an object in a bucket the store is not allowed to read
    s3.put_object(Bucket=OTHER_BUCKET, Key="a.png", Body=b"secret")

    # when it is read
    with pytest.raises(InvalidRequest) as caught:
        store.read(OTHER_BUCKET, "a.png", max_bytes=1000)

    # then it is a 400 that names the bucket to use instead
    assert (caught.value.code, caught.value.status) == ("invalid_request", 400)
    assert repr(OTHER_BUCKET) in caught.value.message
    assert caught.value.message.endswith(f"put the image in {IMAGES_BUCKET}")


class DeniedS3:
    """An S3 client whose every read is refused by IAM."""

    def get_object(self, **_: Any) -> Any:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetObject")


def test_an_s3_error_other_than_not_found_is_not_disguised_as_a_user_error() -> None:
    # given S3 refusing access (a permissions problem of the stack, not of the request)
    store = ImageStore(DeniedS3(), {IMAGES_BUCKET})

    # when an object is read, then the ClientError propagates unchanged
    with pytest.raises(ClientError) as caught:
        store.read(IMAGES_BUCKET, "a.png", max_bytes=1000)
    assert caught.value.response["Error"]["Code"] == "AccessDenied"

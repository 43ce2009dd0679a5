"""The REST API over HTTP: one method per route, errors raised as ApiError with the API's code and message."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from modelrun_cli.errors import ApiError

# Statuses worth another quick try on a request that is safe to repeat: throttled, or briefly unavailable.
# (A 502 or 504 is a function error or timeout: repeating it at once rarely helps and can take minutes.)
RETRY_STATUSES = frozenset({429, 503})
RETRY_DELAYS_S = (0.5, 1.0, 2.0)
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0
DOWNLOAD_CHUNK_BYTES = 1 << 20


def error_from_response(response: requests.Response) -> ApiError:
    """The API's ``{"error": {"code", "message"}}``, or the best that a non-API body (a proxy's) allows."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return ApiError(response.status_code, str(error.get("code") or "error"), str(error.get("message") or ""))
    if isinstance(body, dict) and body.get("message"):
        return ApiError(response.status_code, f"http_{response.status_code}", str(body["message"]))
    text = response.text.strip()[:200] or response.reason or "no body"
    return ApiError(response.status_code, f"http_{response.status_code}", text)


def _unreachable(url: str, exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return f"no answer from {url} in time"
    if isinstance(exc, requests.ConnectionError):
        return f"cannot connect to {url} (nothing answers there, or the name does not resolve)"
    return f"cannot reach {url}: {exc}"


class ApiClient:
    """A modelrun API at ``endpoint`` (its base URL: ``http://127.0.0.1:3000/`` or ``https://.../v1/``)."""

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base = endpoint.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers["x-api-key"] = api_key
        self.session.headers["User-Agent"] = "modelrun-cli"
        self.sleep = sleep

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, retry: bool = False, **kwargs: Any) -> Any:
        """The decoded JSON body of a 2xx answer; ApiError otherwise. ``retry`` for requests safe to repeat."""
        url = self.url(path)
        delays = RETRY_DELAYS_S if retry else ()
        for attempt in range(len(delays) + 1):
            last = attempt == len(delays)
            try:
                response = self.session.request(method, url, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S), **kwargs)
            except requests.RequestException as exc:
                if last:
                    raise ApiError(0, "connection_error", _unreachable(url, exc)) from exc
            else:
                if response.ok:
                    return self._json(response)
                if last or response.status_code not in RETRY_STATUSES:
                    raise error_from_response(response)
            self.sleep(delays[attempt])
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _json(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(response.status_code, "invalid_response", f"the API answered non-JSON: {exc}") from exc

    # -- routes ----------------------------------------------------------------------------------------------
    def predict(self, image: bytes, content_type: str, *, model: str | None, version: str | None) -> dict[str, Any]:
        params = {name: value for name, value in (("model", model), ("version", version)) if value}
        result: dict[str, Any] = self.request(
            "POST", "predictions", data=image, params=params, headers={"Content-Type": content_type}, retry=True
        )
        return result

    def predict_stored(self, bucket: str, key: str, *, model: str | None, version: str | None) -> dict[str, Any]:
        """POST /predictions for an image already in the images bucket (``image_s3``): any size the API accepts."""
        body: dict[str, Any] = {name: value for name, value in (("model", model), ("version", version)) if value}
        body["image_s3"] = {"bucket": bucket, "key": key}
        result: dict[str, Any] = self.request("POST", "predictions", json=body, retry=True)
        return result

    def predict_dataset_image(
        self, dataset_id: str, image_id: str, *, model: str | None, version: str | None
    ) -> dict[str, Any]:
        """POST /predictions for an image of a dataset, named by its ids."""
        body: dict[str, Any] = {name: value for name, value in (("model", model), ("version", version)) if value}
        body.update(dataset_id=dataset_id, image_id=image_id)
        result: dict[str, Any] = self.request("POST", "predictions", json=body, retry=True)
        return result

    def models(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "models", retry=True)
        return result

    def model(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"models/{quote(name, safe='')}", retry=True)
        return result

    def submit_batch(self, body: Mapping[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        # Repeating a submit is only safe when the API can recognise the repeat.
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self.request(
            "POST", "batches", json=dict(body), headers=headers, retry=bool(idempotency_key)
        )
        return result

    def create_uploads(
        self, files: list[Mapping[str, Any]], *, idempotency_key: str | None = None, dataset_id: str | None = None
    ) -> dict[str, Any]:
        """POST /uploads: presigned PUT URLs for ``files`` ({"name", "content_type", "size"}), keys in the caller's
        tenant's space (registered in a dataset of the caller's with ``dataset_id``); with an idempotency key, the
        same keys as the first call with it. Repeated on 429/503 when that cannot register an image twice: with an
        idempotency key, or outside a dataset (it then stores nothing, only signs URLs)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body: dict[str, Any] = {"files": [dict(spec) for spec in files]}
        if dataset_id:
            body["dataset_id"] = dataset_id
        result: dict[str, Any] = self.request(
            "POST", "uploads", json=body, headers=headers, retry=bool(idempotency_key) or not dataset_id
        )
        return result

    def batch(self, batch_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"batches/{quote(batch_id, safe='')}", retry=True)
        return result

    def results(
        self, batch_id: str, *, status: str | None = None, limit: int | None = None, next_token: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, str] = {}
        if status:
            params["status"] = status
        if limit:
            params["limit"] = str(limit)
        if next_token:
            params["next_token"] = next_token
        result: dict[str, Any] = self.request(
            "GET", f"batches/{quote(batch_id, safe='')}/results", params=params, retry=True
        )
        return result

    def errors(self, batch_id: str, *, limit: int | None = None, next_token: str | None = None) -> dict[str, Any]:
        params: dict[str, str] = {}
        if limit:
            params["limit"] = str(limit)
        if next_token:
            params["next_token"] = next_token
        result: dict[str, Any] = self.request(
            "GET", f"batches/{quote(batch_id, safe='')}/errors", params=params, retry=True
        )
        return result

    def retry(self, batch_id: str) -> dict[str, Any]:
        # Not repeated on 429/503: a second retry could start another attempt.
        result: dict[str, Any] = self.request("POST", f"batches/{quote(batch_id, safe='')}/retry")
        return result

    def reconcile(self, batch_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"batches/{quote(batch_id, safe='')}/reconcile", retry=True)
        return result

    def upload(self, url: str, path: Path, headers: Mapping[str, str]) -> None:
        """PUT a file to a presigned link of POST /uploads, with the headers it was signed with.

        A plain request, not the API session: the API key is for the API, not for S3.

        Raises:
            ApiError: S3 refused the file (the link expired, or the file changed size since it was signed) or
                could not be reached.
        """
        try:
            with path.open("rb") as body:
                response = requests.put(
                    url, data=body, headers=dict(headers), timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
                )
        except requests.RequestException as exc:
            raise ApiError(0, "connection_error", _unreachable(_shown(url), exc)) from exc
        if not response.ok:
            raise ApiError(
                response.status_code,
                "upload_failed",
                f"{_shown(url)} answered {response.status_code} {response.reason or ''}: {response.text.strip()[:200]}",
            )

    # -- datasets ---------------------------------------------------------------------------------------------
    def create_dataset(self, body: Mapping[str, Any]) -> dict[str, Any]:
        # Safe to repeat: a name registers into the same dataset again, and its images keep their ids.
        result: dict[str, Any] = self.request("POST", "datasets", json=dict(body), retry=True)
        return result

    def datasets(self, *, limit: int | None = None, next_token: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "datasets", params=_paging(limit, next_token), retry=True)
        return result

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"datasets/{quote(dataset_id, safe='')}", retry=True)
        return result

    def dataset_images(
        self, dataset_id: str, *, limit: int | None = None, next_token: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET", f"datasets/{quote(dataset_id, safe='')}/images", params=_paging(limit, next_token), retry=True
        )
        return result

    def image_predictions(
        self, dataset_id: str, image_id: str, *, limit: int | None = None, next_token: str | None = None
    ) -> dict[str, Any]:
        path = f"datasets/{quote(dataset_id, safe='')}/images/{quote(image_id, safe='')}/predictions"
        result: dict[str, Any] = self.request("GET", path, params=_paging(limit, next_token), retry=True)
        return result

    def delete_dataset(self, dataset_id: str) -> dict[str, Any]:
        # Not repeated: a first DELETE that went through would make the second a 404.
        result: dict[str, Any] = self.request("DELETE", f"datasets/{quote(dataset_id, safe='')}")
        return result

    def download(self, url: str, path: Path) -> int:
        """Save a presigned link's object at ``path`` (written whole or not at all); the number of bytes.

        A plain request, not the API session: the API key is for the API, not for S3.
        """
        partial = path.with_name(path.name + ".part")
        try:
            with requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as response:
                if not response.ok:
                    raise ApiError(
                        response.status_code,
                        "download_failed",
                        f"{_shown(url)} answered {response.reason or 'an error'}: links expire after an hour, "
                        "ask for the report again",
                    )
                size = 0
                with partial.open("wb") as file:
                    for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                        file.write(chunk)
                        size += len(chunk)
        except requests.RequestException as exc:
            partial.unlink(missing_ok=True)
            raise ApiError(0, "connection_error", _unreachable(_shown(url), exc)) from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, path)
        return size


def _paging(limit: int | None, next_token: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if limit:
        params["limit"] = str(limit)
    if next_token:
        params["next_token"] = next_token
    return params


def _shown(url: str) -> str:
    """A presigned URL without its signature, for messages."""
    return url.split("?", 1)[0]

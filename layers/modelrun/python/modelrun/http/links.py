"""Links in responses: the base URL the client called, and the API routes of one batch or dataset."""

from __future__ import annotations

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from modelrun.http.requests import header


def api_base(event: APIGatewayProxyEvent) -> str:
    """The base URL the client called (scheme, host, stage), for links in responses."""
    headers = dict(event.headers or {})
    proto = header(headers, "X-Forwarded-Proto") or "https"
    host = header(headers, "Host") or "localhost"
    full_path = str(event.request_context.path or event.path)
    prefix = full_path[: len(full_path) - len(event.path)] if full_path.endswith(event.path) else ""
    return f"{proto}://{host}{prefix}"


def batch_links(event: APIGatewayProxyEvent, batch_id: str) -> dict[str, str]:
    """The API routes of one batch: its job document, its paged results and its error report."""
    base = f"{api_base(event)}/batches/{batch_id}"
    return {"self": base, "results": f"{base}/results", "errors": f"{base}/errors"}


def dataset_links(event: APIGatewayProxyEvent, dataset_id: str) -> dict[str, str]:
    """The API routes of one dataset: its document and its paged images."""
    base = f"{api_base(event)}/datasets/{dataset_id}"
    return {"self": base, "images": f"{base}/images"}

"""What the commands print: plain-text tables and summaries for people, JSON, JSON lines and CSV for programs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

RESULT_CSV_COLUMNS = ("item", "key", "status", "label", "score", "error_code", "error_message", "attempt", "updated_at")
DESCRIPTION_WIDTH = 60


def to_json(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart, headers in capitals."""
    cells = [
        [str(header).upper() for header in headers],
        *[["" if cell is None else str(cell) for cell in row] for row in rows],
    ]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def score(value: Any) -> str:
    return f"{float(value):.4f}" if isinstance(value, int | float) else ""


# -- predictions and models --------------------------------------------------------------------------------------
def format_prediction(result: Mapping[str, Any]) -> str:
    """``label score`` on the first line (easy to cut), then the top-k table and which model answered."""
    lines = [f"{result.get('label')} {score(result.get('score'))}"]
    top_k = result.get("top_k") or []
    if top_k:
        lines.append(table(("label", "score"), [(entry.get("label"), score(entry.get("score"))) for entry in top_k]))
    total_ms = (result.get("timings_ms") or {}).get("total")
    took = f", {total_ms} ms" if total_ms is not None else ""
    lines.append(f"(model {result.get('model')} version {result.get('version')}{took})")
    return "\n".join(lines)


def _input_summary(spec: Mapping[str, Any]) -> str:
    model_input = spec.get("input") or {}
    size = model_input.get("size") or []
    shape = "x".join(str(side) for side in size)
    return " ".join(part for part in (shape, model_input.get("color_mode"), model_input.get("layout")) if part)


def _shorten(text: Any, width: int = DESCRIPTION_WIDTH) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def format_models(catalogue: Mapping[str, Any]) -> str:
    """GET /models (every model) or GET /models/{name} (one model's versions) as a table."""
    if "versions" in catalogue:
        specs = list(catalogue.get("versions") or [])
        marked = {(catalogue.get("name"), catalogue.get("latest"))}
        note = "* latest version"
    else:
        specs = list(catalogue.get("models") or [])
        latest: dict[Any, Any] = {}
        for spec in specs:
            latest[spec.get("name")] = spec.get("version")  # versions come in ascending order
        default = catalogue.get("default_model")
        marked = {(default, latest.get(default))}
        note = f"* the default model ({default}, its latest version)" if default else ""
    if not specs:
        return "no models"
    rows = [
        (
            str(spec.get("name")) + ("*" if (spec.get("name"), spec.get("version")) in marked else ""),
            spec.get("version"),
            _input_summary(spec),
            len(spec.get("labels") or []),
            _shorten(spec.get("description")),
        )
        for spec in specs
    ]
    text = table(("model", "version", "input", "labels", "description"), rows)
    return f"{text}\n{note}" if note else text


# -- batches -----------------------------------------------------------------------------------------------------
def counts_of(job: Mapping[str, Any]) -> tuple[int, int, int]:
    counts = job.get("counts") or {}
    return int(counts.get("predicted", 0)), int(counts.get("failed", 0)), int(counts.get("pending", 0))


def format_submitted(submitted: Mapping[str, Any], *, uploaded_to: str | None = None) -> str:
    """The batch id alone on the first line (for scripts), then what was queued and where to look."""
    lines = [str(submitted.get("batch_id"))]
    uploaded = f", uploaded to {uploaded_to}" if uploaded_to else ""
    lines.append(f"  images   {submitted.get('total')} ({submitted.get('status')}{uploaded})")
    lines += _link_lines(submitted.get("links") or {})
    return "\n".join(lines)


def _link_lines(links: Mapping[str, Any]) -> list[str]:
    names = (("self", "status"), ("results", "results"), ("errors", "errors"), ("results_file", "file"))
    return [f"  {label:<8} {links[name]}" for name, label in names if links.get(name)]


def format_progress(job: Mapping[str, Any], elapsed_s: float) -> str:
    """One line per change while waiting: elapsed time, status, how far, and the three counts."""
    predicted, failed, pending = counts_of(job)
    total = job.get("total", predicted + failed + pending)
    percent = job.get("percent")
    shown = f" ({percent}%)" if percent is not None else ""
    return (
        f"[{elapsed_s:6.1f}s] {job.get('batch_id')} {job.get('status')}: {predicted + failed}/{total}{shown}"
        f" - {predicted} predicted, {failed} failed, {pending} pending"
    )


def format_job(job: Mapping[str, Any]) -> str:
    """GET /batches/{id} for people: status line, counts, model, timings, links."""
    predicted, failed, pending = counts_of(job)
    timings = job.get("timings") or {}
    lines = [f"{job.get('batch_id')} {job.get('status')}"]
    lines.append(
        f"  images   {job.get('total')}: {predicted} predicted, {failed} failed, {pending} pending"
        f" ({job.get('percent', 0)}%)"
    )
    lines.append(f"  model    {job.get('model')} version {job.get('version')}")
    lines.append(f"  chunks   {job.get('chunks')}, attempt {job.get('attempt')}")
    when = ", ".join(f"{name} {timings[key]}" for key, name in _TIMINGS if timings.get(key))
    if timings.get("duration_s") is not None:
        when += f" ({timings['duration_s']} s)"
    if when:
        lines.append(f"  times    {when}")
    lines += _link_lines(job.get("links") or {})
    return "\n".join(lines)


_TIMINGS = (("created_at", "created"), ("started_at", "started"), ("finished_at", "finished"))


def format_results(results: Sequence[Mapping[str, Any]]) -> str:
    if not results:
        return "no results"
    rows = []
    for result in results:
        error = result.get("error") or {}
        outcome = f"{error.get('code')}: {error.get('message')}" if error else ""
        rows.append(
            (
                result.get("item"),
                result.get("key"),
                result.get("status"),
                result.get("label"),
                score(result.get("score")),
                outcome,
            )
        )
    return table(("item", "key", "status", "label", "score", "error"), rows)


def result_row(result: Mapping[str, Any]) -> dict[str, Any]:
    error = result.get("error") or {}
    return {
        "item": result.get("item"),
        "key": result.get("key"),
        "status": result.get("status"),
        "label": result.get("label"),
        "score": result.get("score"),
        "error_code": error.get("code"),
        "error_message": error.get("message"),
        "attempt": result.get("attempt"),
        "updated_at": result.get("updated_at"),
    }


def results_csv(results: Iterable[Mapping[str, Any]], *, header: bool = True) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_CSV_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    for result in results:
        writer.writerow(result_row(result))
    return buffer.getvalue()


def results_jsonl(results: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(result, separators=(",", ":"), ensure_ascii=False) + "\n" for result in results)

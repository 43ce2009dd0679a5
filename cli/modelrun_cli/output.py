"""What the commands print: plain-text tables and summaries for people, JSON, JSON lines and CSV for programs."""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

RESULT_CSV_COLUMNS = ("item", "key", "status", "label", "score", "error_code", "error_message", "attempt", "updated_at")
# The error report's columns: the same as the errors-<attempt>.csv file the stack writes when a batch ends.
ERROR_CSV_COLUMNS = ("item", "key", "code", "message", "attempts", "last_attempt_at")
DESCRIPTION_WIDTH = 60
BAR_WIDTH = 24
MESSAGE_WIDTH = 80


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
def size(count: int) -> str:
    """A number of bytes for people: ``300 bytes``, ``12.5 KiB``, ``4.2 MiB``."""
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"


def task_of(result: Mapping[str, Any]) -> str:
    """Which task a prediction or batch outcome is the result of, read from its fields (results carry no task);
    for one predicted frame by frame, the task of its first frame."""
    frames = result.get("frames")
    if isinstance(frames, list) and frames and isinstance(frames[0], Mapping):
        return task_of(frames[0])
    if "detections" in result:
        return "detection"
    if "classes" in result:
        return "segmentation"
    if isinstance(result.get("labels"), list) and "scores" in result:
        return "multilabel"
    return "classification"


def box(value: Any) -> str:
    """``[x1, y1, x2, y2]`` as ``x1,y1,x2,y2`` with at most one decimal, or ``-`` when there is none."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        return "-"
    return ",".join(f"{float(side):.1f}".removesuffix(".0") for side in value)


def percent(fraction: Any) -> str:
    return f"{100 * float(fraction):.2f}%" if isinstance(fraction, int | float) else ""


def format_prediction(result: Mapping[str, Any]) -> str:
    """A one-line answer first (easy to cut), then the task's table and which model answered.

    classification: ``label score`` and the top-k; multilabel: the labels at or above their threshold and every
    label's score; detection: how many objects and one row per object (label, score, box in image pixels);
    segmentation: the mask's size and per class its pixels, fraction of the image and bounding box. A multi-frame
    DICOM predicted frame by frame (``frames``) gets a ``frame N`` heading and those lines per frame; a DICOM
    image's identifiers (modality, size, study/series/instance UIDs) follow the answer.
    """
    frames = result.get("frames")
    if isinstance(frames, list):
        lines = [f"{len(frames)} frame{'s' * (len(frames) != 1)}"]
        for frame in frames:
            lines.append(f"frame {frame.get('frame')}")
            lines += ["  " + line for line in "\n".join(_task_lines(frame)).splitlines()]
    else:
        lines = _task_lines(result)
    lines += _dicom_lines(result.get("dicom"))
    total_ms = (result.get("timings_ms") or {}).get("total")
    took = f", {total_ms} ms" if total_ms is not None else ""
    lines.append(f"(model {result.get('model')} version {result.get('version')}{took})")
    return "\n".join(lines)


# The DICOM fields shown, in this order: the API returns only identifiers and geometry, never patient data.
_DICOM_FIELDS = (
    ("modality", "modality"),
    ("study_instance_uid", "study"),
    ("series_instance_uid", "series"),
    ("sop_instance_uid", "instance"),
)


def _dicom_lines(dicom: Any) -> list[str]:
    """``dicom CT 512x512, 3 frames`` and one line per UID, or nothing for an image that was not DICOM."""
    if not isinstance(dicom, Mapping):
        return []
    shape = f"{dicom.get('columns')}x{dicom.get('rows')}" if dicom.get("rows") and dicom.get("columns") else ""
    count = dicom.get("frames") or dicom.get("number_of_frames")
    frames = f", {count} frames" if isinstance(count, int) and count > 1 else ""
    lines = [" ".join(part for part in ("dicom", str(dicom.get("modality") or ""), shape) if part) + frames]
    lines += [f"  {label:<8} {dicom[name]}" for name, label in _DICOM_FIELDS[1:] if dicom.get(name)]
    return lines


def _task_lines(result: Mapping[str, Any]) -> list[str]:
    task = task_of(result)
    if task == "detection":
        lines = _detection_lines(result)
    elif task == "segmentation":
        lines = _segmentation_lines(result)
    elif task == "multilabel":
        lines = _multilabel_lines(result)
    else:
        lines = [f"{result.get('label')} {score(result.get('score'))}"]
        top_k = result.get("top_k") or []
        if top_k:
            rows = [(entry.get("label"), score(entry.get("score"))) for entry in top_k]
            lines.append(table(("label", "score"), rows))
    return lines


def _detection_lines(result: Mapping[str, Any]) -> list[str]:
    detections = list(result.get("detections") or [])
    count = result.get("count", len(detections))
    lines = [f"{count} detection{'s' * (count != 1)}"]
    if detections:
        rows = [(entry.get("label"), score(entry.get("score")), box(entry.get("box"))) for entry in detections]
        lines.append(table(("label", "score", "box (x1,y1,x2,y2)"), rows))
    return lines


def _segmentation_lines(result: Mapping[str, Any]) -> list[str]:
    mask = result.get("mask") or {}
    shape = f"mask {mask.get('width')}x{mask.get('height')}" if mask else "no mask"
    lines = [f"{shape}: {segmentation_summary(result)}"]
    rows = [
        (
            entry.get("index"),
            entry.get("label"),
            entry.get("pixels"),
            percent(entry.get("fraction")),
            box(entry.get("box")),
        )
        for entry in result.get("classes") or []
    ]
    if rows:
        lines.append(table(("index", "class", "pixels", "fraction", "box (x1,y1,x2,y2)"), rows))
    return lines


def _multilabel_lines(result: Mapping[str, Any]) -> list[str]:
    chosen = {entry.get("label") for entry in result.get("labels") or []}
    lines = [multilabel_summary(result)]
    scores: Mapping[str, Any] = result.get("scores") or {}
    ordered = sorted(scores.items(), key=lambda entry: -float(entry[1]))
    rows = [(label, score(value), "yes" if label in chosen else "") for label, value in ordered]
    if rows:
        lines.append(table(("label", "score", "chosen"), rows))
    return lines


SUMMARY_ENTRIES = 3


def detection_summary(result: Mapping[str, Any]) -> str:
    """``3 objects: circle 0.98, square 0.95, triangle 0.91`` (the best few), or ``no objects``."""
    detections = list(result.get("detections") or [])
    count = int(result.get("count", len(detections)))
    if not count:
        return "no objects"
    shown = ", ".join(f"{entry.get('label')} {score(entry.get('score'))}" for entry in detections[:SUMMARY_ENTRIES])
    more = f", +{count - min(len(detections), SUMMARY_ENTRIES)} more" if count > SUMMARY_ENTRIES else ""
    return f"{count} object{'s' * (count != 1)}: {shown}{more}"


def segmentation_summary(result: Mapping[str, Any]) -> str:
    """``cell 15.15%, nucleus 3.66%``: each class present but the first (the background), largest first."""
    present = [entry for entry in result.get("classes") or [] if entry.get("index", 0) != 0 and entry.get("pixels")]
    if not present:
        return "only background"
    present.sort(key=lambda entry: -int(entry.get("pixels") or 0))
    return ", ".join(f"{entry.get('label')} {percent(entry.get('fraction'))}" for entry in present)


def multilabel_summary(result: Mapping[str, Any]) -> str:
    chosen = result.get("labels") or []
    if not chosen:
        return "no label above its threshold"
    return ", ".join(f"{entry.get('label')} {score(entry.get('score'))}" for entry in chosen)


def result_summary(result: Mapping[str, Any]) -> str:
    """One predicted outcome in a few words, whatever its task; frame by frame (``frame 0: ...; frame 1: ...``)
    for a multi-frame image predicted per frame."""
    frames = result.get("frames")
    if isinstance(frames, list):
        return "; ".join(f"frame {frame.get('frame')}: {result_summary(frame)}" for frame in frames)
    task = task_of(result)
    if task == "detection":
        return detection_summary(result)
    if task == "segmentation":
        return segmentation_summary(result)
    if task == "multilabel":
        return multilabel_summary(result)
    return f"{result.get('label')} {score(result.get('score'))}"


def _input_summary(spec: Mapping[str, Any]) -> str:
    """``8x8 L NCHW``: the input size the transforms fix (their last sized step), colour mode and layout."""
    size: list[Any] = []
    mode = layout = None
    for step in spec.get("transforms") or []:
        if step.get("op") == "color":
            mode = step.get("mode")
        elif step.get("op") == "layout":
            layout = step.get("layout")
        elif step.get("op") in ("resize", "center_crop", "letterbox") and step.get("size"):
            size = step["size"]
        elif step.get("op") == "resize":
            side = step.get("shorter") or step.get("longer")
            size = [f"~{side}"] if side else size
    shape = "x".join(str(side) for side in size)
    return " ".join(part for part in (shape, mode, layout) if part)


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
            spec.get("task") or "classification",
            _input_summary(spec),
            len(spec.get("labels") or []),
            _shorten(spec.get("description")),
        )
        for spec in specs
    ]
    text = table(("model", "version", "task", "input", "labels", "description"), rows)
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
    lines = [f"  {label:<8} {links[name]}" for name, label in names if links.get(name)]
    files = links.get("errors_files") or {}
    lines += [f"  {'err ' + kind:<8} {files[kind]}" for kind in ("csv", "jsonl") if files.get(kind)]
    return lines


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
    """One row per outcome: a classification's label and score, or for other tasks a summary of the result
    (objects found, classes present with their share of the image, labels chosen)."""
    if not results:
        return "no results"
    summarised = any(
        task_of(result) != "classification" or "frames" in result
        for result in results
        if result.get("status") == "predicted"
    )
    rows = []
    for result in results:
        error = result.get("error") or {}
        outcome = f"{error.get('code')}: {error.get('message')}" if error else ""
        if not summarised:
            shown: tuple[Any, ...] = (result.get("label"), score(result.get("score")))
        else:
            shown = (result_summary(result) if result.get("status") == "predicted" else "",)
        rows.append((result.get("item"), result.get("key"), result.get("status"), *shown, outcome))
    headers = ("result",) if summarised else ("label", "score")
    return table(("item", "key", "status", *headers, "error"), rows)


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


# -- live progress -----------------------------------------------------------------------------------------------
def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h07m``."""
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_bar(progress: Mapping[str, Any], width: int = BAR_WIDTH) -> str:
    """One progress message (or a job document shaped like one) as a bar with percent, counts, rate, ETA, status.

    ``[##########--------------]  41.9%  13/31 (12 predicted, 1 failed)  6.5 img/s  ETA 3s  RUNNING``
    """
    predicted, failed, pending = counts_of(progress)
    done = predicted + failed
    total = int(progress.get("total") or done + pending)
    percent = progress.get("percent")
    if not isinstance(percent, int | float):
        percent = 100.0 * done / total if total else 100.0
    filled = min(max(int(width * float(percent) / 100), 0), width)
    rate = progress.get("rate")
    eta_s = progress.get("eta_s")
    shown_rate = f"{float(rate):.1f} img/s" if isinstance(rate, int | float) else "- img/s"
    shown_eta = f"ETA {duration(float(eta_s))}" if isinstance(eta_s, int | float) else "ETA -"
    return (
        f"[{'#' * filled}{'-' * (width - filled)}] {float(percent):5.1f}%  {done}/{total} "
        f"({predicted} predicted, {failed} failed)  {shown_rate}  {shown_eta}  {progress.get('status')}"
    )


class ProgressLine:
    """The live progress bar on stderr.

    On a terminal the bar is redrawn in place (notes print above it); elsewhere (a log, a pipe) a line is written
    when the status changes, or at most every ``interval_s`` while the counts move.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval_s = interval_s
        self.clock = clock
        self.shown: str | None = None  # the bar on screen (a terminal) or last written
        self.status: Any = None
        self.written_at: float | None = None

    def show(self, progress: Mapping[str, Any]) -> None:
        text = format_bar(progress)
        if self.tty:
            width = max(shutil.get_terminal_size((120, 24)).columns - 1, 20)
            self.shown = text[:width]
            self.stream.write("\r" + self.shown + "\x1b[K")
            self.stream.flush()
            return
        now = self.clock()
        status_changed = progress.get("status") != self.status
        due = self.written_at is None or now - self.written_at >= self.interval_s
        if text != self.shown and (status_changed or due):
            self.stream.write(text + "\n")
            self.stream.flush()
            self.shown, self.status, self.written_at = text, progress.get("status"), now

    def note(self, text: str) -> None:
        """A line of its own (a warning, a notice), without breaking the bar."""
        if self.tty and self.shown is not None:
            self.stream.write("\r\x1b[K" + text + "\n\r" + self.shown)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self.shown is not None:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = None


# -- the error report --------------------------------------------------------------------------------------------
def format_error_summary(report: Mapping[str, Any]) -> str:
    """The report's head: how many images failed and how many per code, most frequent first."""
    summary: Mapping[str, int] = report.get("summary") or {}
    total = sum(summary.values())
    partial = "" if report.get("summary_complete", True) else " (counted so far; the batch is large)"
    lines = [f"{report.get('batch_id')} {report.get('status')}: {total} failed image{'s' * (total != 1)}{partial}"]
    if summary:
        width = max(len(code) for code in summary)
        ordered = sorted(summary.items(), key=lambda entry: (-entry[1], entry[0]))
        lines += [f"  {code:<{width}}  {count}" for code, count in ordered]
    return "\n".join(lines)


def format_errors(entries: Sequence[Mapping[str, Any]]) -> str:
    if not entries:
        return "no failed images"
    rows = [
        (
            entry.get("item"),
            entry.get("key"),
            entry.get("code"),
            entry.get("attempts"),
            entry.get("last_attempt_at"),
            _shorten(entry.get("message"), MESSAGE_WIDTH),
        )
        for entry in entries
    ]
    return table(("item", "key", "code", "attempt", "last attempt", "message"), rows)


def errors_csv(entries: Iterable[Mapping[str, Any]], *, header: bool = True) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ERROR_CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(entries)
    return buffer.getvalue()


def format_retried(started: Mapping[str, Any]) -> str:
    """POST /batches/{id}/retry: the batch id alone on the first line, then the attempt and the links."""
    again = f"{started.get('retried')} images again ({started.get('status')})"
    lines = [str(started.get("batch_id")), f"  attempt  {started.get('attempt')}: {again}"]
    lines += _link_lines(started.get("links") or {})
    return "\n".join(lines)


# -- datasets ----------------------------------------------------------------------------------------------------
def _source(dataset: Mapping[str, Any]) -> str:
    source = dataset.get("source") or {}
    if not source:
        return "uploads"
    return ", ".join(f"{name} {value}" for name, value in source.items())


def format_dataset(dataset: Mapping[str, Any]) -> str:
    """GET /datasets/{id} for people: the id alone on the first line (for scripts), then status, counts, source."""
    lines = [str(dataset.get("dataset_id"))]
    lines.append(f"  name     {dataset.get('name')}")
    lines.append(f"  status   {dataset.get('status')}")
    if dataset.get("source"):
        read = f"{dataset.get('keys_read')} keys read from {_source(dataset)}"
        lines.append(f"  images   {dataset.get('images')} ({read})")
    else:
        lines.append(f"  images   {dataset.get('images')} (uploaded through POST /uploads)")
    if dataset.get("reason"):
        lines.append(f"  reason   {dataset['reason']}")
    when = ", ".join(
        f"{name} {dataset[key]}"
        for key, name in (("created_at", "created"), ("finished_at", "registered"))
        if dataset.get(key)
    )
    if when:
        lines.append(f"  times    {when}")
    return "\n".join(lines)


def format_datasets(datasets: Sequence[Mapping[str, Any]]) -> str:
    if not datasets:
        return "no datasets"
    rows = [
        (dataset.get("dataset_id"), dataset.get("status"), dataset.get("images"), dataset.get("name"))
        for dataset in datasets
    ]
    return table(("dataset", "status", "images", "name"), rows)


def format_images(images: Sequence[Mapping[str, Any]]) -> str:
    if not images:
        return "no images"
    return table(("image", "key"), [(image.get("image_id"), image.get("key")) for image in images])


def format_history(entries: Sequence[Mapping[str, Any]]) -> str:
    """An image's predictions, newest first: when, which batch (or single), model, and what it said."""
    if not entries:
        return "no predictions"
    rows = []
    for entry in entries:
        error = entry.get("error") or {}
        said = f"{error.get('code')}: {error.get('message')}" if error else summary_text(entry.get("summary") or {})
        model = f"{entry.get('model')} {entry.get('version')}"
        rows.append((entry.get("time"), entry.get("batch_id"), model, entry.get("status"), said))
    return table(("time", "batch", "model", "status", "result"), rows)


def summary_text(summary: Mapping[str, Any]) -> str:
    """A history entry's summary in a few words (``7 0.9995``, ``3 found: circle, square``, ``cell 15.2%``)."""
    frames = summary.get("frames")
    if isinstance(frames, list):
        return "; ".join(f"frame {frame.get('frame')}: {summary_text(frame)}" for frame in frames)
    if "count" in summary:
        labels = ", ".join(map(str, summary.get("labels") or []))
        return f"{summary['count']} found" + (f": {labels}" if labels else "")
    if "classes" in summary:
        return ", ".join(f"{entry.get('label')} {percent(entry.get('fraction'))}" for entry in summary["classes"])
    if "label" in summary:
        return f"{summary['label']} {score(summary.get('score'))}".rstrip()
    return ", ".join(map(str, summary.get("labels") or [])) or "-"

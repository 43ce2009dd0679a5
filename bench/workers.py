"""The benchmark's child processes: each measurement that needs a fresh interpreter or its own moto runs here.

Usage (run.py starts these; the environment comes from ``harness.handler_environment``)::

    python bench/workers.py cold-import --model NAME --out FILE
    python bench/workers.py cold-load --model NAME --models-dir DIR --out FILE
    python bench/workers.py warm --model NAME --image PNG --n N --warmup W --out FILE
    python bench/workers.py serve --models-dir DIR --out FILE   # until stdin closes

Only the standard library and ``harness`` (standard library only) are imported at the top: the cold-start
figures must include every heavy import the handler makes.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import harness


def handler_imports() -> list[str]:
    """The modules the handler file imports at its top, in order (``__future__`` left out)."""
    tree = ast.parse(harness.HANDLER_FILE.read_text(), filename=str(harness.HANDLER_FILE))
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__" and node.level == 0:
            names.append(node.module)
    return names


def load_handler() -> ModuleType:
    """Import functions/predict/app.py under a fresh name, as the Lambda runtime imports ``app``."""
    name = f"bench_predict_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, harness.HANDLER_FILE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {harness.HANDLER_FILE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cold_import(args: argparse.Namespace) -> dict[str, Any]:
    """Init phase of a fresh execution environment: the handler's imports, then its module body.

    moto is deliberately not started: it would import boto3 and botocore before the clock starts and hide their
    cost, and the handler makes no AWS call while it initialises (the S3 client is only created).
    """
    modules = handler_imports()
    started = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    imported = time.perf_counter()
    module = load_handler()
    done = time.perf_counter()
    loaded = module.registry.get(args.model)
    return {
        "import_and_load_ms": (done - started) * 1000,
        "imports_ms": (imported - started) * 1000,
        "module_body_ms": (done - imported) * 1000,
        "model_load_in_body_ms": loaded.load_ms,
        "intra_op_threads": module.registry.intra_op_threads,
    }


def cold_load(args: argparse.Namespace) -> dict[str, Any]:
    """``ModelRegistry.get`` in a fresh process, ONNX Runtime already imported (its import is not timed)."""
    from modelrun.models.registry import ModelRegistry

    registry = ModelRegistry(Path(args.models_dir))
    started = time.perf_counter()
    loaded = registry.get(args.model)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return {"get_ms": elapsed_ms, "load_model_ms": loaded.load_ms, "intra_op_threads": registry.intra_op_threads}


def warm(args: argparse.Namespace) -> dict[str, Any]:
    """Warm latency of the handler and of the bare pipeline below it, interleaved round by round.

    Every round runs each variant once, starting with a different one each time, so a burst of load from
    another process touches all variants alike and the paired differences stay meaningful.
    """
    import numpy as np
    from moto import mock_aws

    from modelrun.transforms.pipeline import preprocess

    image = Path(args.image).read_bytes()
    with mock_aws():
        module = load_handler()
        loaded = module.registry.get(args.model)
        limits = module.predictor.limits
        spec = loaded.spec
        session = loaded.session
        feeds_name, output_name = spec.input_name, spec.output.name
        ready_batch = preprocess(image, spec, limits)[np.newaxis]
        encoded_event = json.dumps(harness.prediction_event(image, args.model))

        def handler_args() -> tuple[dict[str, Any], harness.BenchContext]:
            # The runtime hands every invocation a freshly decoded event; decoding it is not the handler's time.
            return json.loads(encoded_event), harness.BenchContext(aws_request_id=str(uuid.uuid4()))

        def run_handler(call: tuple[dict[str, Any], harness.BenchContext]) -> Any:
            return module.lambda_handler(*call)

        def run_predict(data: bytes) -> Any:
            return module.predictor.predict(data, model=args.model)

        def run_pipeline(data: bytes) -> Any:
            return session.run([output_name], {feeds_name: preprocess(data, spec, limits)[np.newaxis]})

        def run_session(batch: Any) -> Any:
            return session.run([output_name], {feeds_name: batch})

        variants: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]] = {
            "handler": (handler_args, run_handler),
            "predict": (lambda: image, run_predict),
            "pipeline": (lambda: image, run_pipeline),
            "session": (lambda: ready_batch, run_session),
        }

        for prepare, run in variants.values():
            for _ in range(args.warmup):
                run(prepare())
        label = check_agreement(run_handler(handler_args()), run_predict(image), run_session(ready_batch), spec.labels)

        names = list(variants)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(args.n):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                prepare, run = variants[name]
                payload = prepare()
                started = time.perf_counter_ns()
                run(payload)
                samples[name].append((time.perf_counter_ns() - started) / 1e6)

    return {
        "label": label,
        "intra_op_threads": module.registry.intra_op_threads,
        "samples_ms": samples,
    }


def check_agreement(response: dict[str, Any], prediction: dict[str, Any], scores: list[Any], labels: list[str]) -> str:
    """The handler, the domain call and the bare session agree on the label; anything else stops the bench."""
    if response.get("statusCode") != 200:
        raise RuntimeError(f"the handler answered {response.get('statusCode')}: {response.get('body')}")
    body = json.loads(response["body"])
    bare_label = labels[int(scores[0].reshape(-1).argmax())]
    if not body["label"] == prediction["label"] == bare_label:
        raise RuntimeError(
            f"labels disagree: handler {body['label']}, predict {prediction['label']}, bare {bare_label}"
        )
    return str(body["label"])


def serve(args: argparse.Namespace) -> dict[str, Any]:
    """The local stack on a free port; writes ``{"url"}`` to ``--ready``, serves until stdin closes."""
    from modelrun_local.runtime import LocalRuntime

    runtime = LocalRuntime(port=0, api_key="k", models_dir=Path(args.models_dir)).start()
    try:
        harness.write_json(Path(args.ready), {"url": runtime.url})
        sys.stdin.read()
        assert runtime.stack is not None
        function = runtime.stack.dispatcher.by_logical_id("PredictFunction")
        # How many execution environments the concurrent run needed (each one was a cold start before warm-up).
        return {"predict_sandboxes": getattr(function, "_created", None)}
    finally:
        runtime.stop()


KINDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "cold-import": cold_import,
    "cold-load": cold_load,
    "warm": warm,
    "serve": serve,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one benchmark measurement in its own process")
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--model", default="digits")
    parser.add_argument("--models-dir")
    parser.add_argument("--image")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--ready", help="serve: where to write the URL once listening")
    args = parser.parse_args(argv)
    result = KINDS[args.kind](args)
    harness.write_json(Path(args.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``modelrun-local``: run the whole stack on this machine (``make run``)."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import quote

from modelrun_local import LOGGER
from modelrun_local.demo import run_demo_batch
from modelrun_local.endpoint import ACCESS_LOG
from modelrun_local.runtime import STATE_FILE, LocalRuntime

# A tenant name as modelrun.tenants accepts it: it goes into S3 keys and table keys.
TENANT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")


def _say(line: str) -> None:
    print(line, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="modelrun-local", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--aws-port", type=int, default=5001, help="port of the local AWS endpoint (moto)")
    parser.add_argument("--ws-port", type=int, default=3001, help="port of the WebSocket API (live batch progress)")
    parser.add_argument("--api-key", help="use this API key (the default tenant's) instead of a fresh random one")
    parser.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="NAME",
        help="create a tenant with its own API key (repeatable); without any, the one key is the default tenant's",
    )
    parser.add_argument(
        "--parameter-overrides",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="template parameters, as for sam deploy (e.g. DefaultModel=digits)",
    )
    parser.add_argument("--models", type=Path, help="folder of models/<name>/<version>/ to serve (default: models/)")
    parser.add_argument("--no-demo", action="store_true", help="do not run the demo batch over the sample images")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show the libraries' records at --log-level (botocore, moto) and the AWS endpoint's line per request",
    )
    args = parser.parse_args(argv)
    for name in args.tenant:
        if not TENANT_NAME.match(name):
            parser.error(f"--tenant {name!r}: use 1 to 40 lower-case letters, digits and inner hyphens")
    return args


def configure_logging(level: str, *, verbose: bool) -> None:
    """The runtime's own records at ``level``; the libraries' only from WARNING unless ``verbose``.

    The functions' records have a logger of their own, shown as they are (``modelrun_local.sandbox``)."""
    logging.basicConfig(
        level=level if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger(LOGGER).setLevel(level)
    if verbose:  # the local endpoint's line per request, which the runtime otherwise keeps quiet
        logging.getLogger(ACCESS_LOG).setLevel(level)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, verbose=args.verbose)
    overrides = dict(item.split("=", 1) for item in args.parameter_overrides)
    runtime = LocalRuntime(
        host=args.host,
        port=args.port,
        aws_port=args.aws_port,
        ws_port=args.ws_port,
        parameter_overrides=overrides,
        models_dir=args.models,
    )
    if args.api_key:
        runtime.api_key = args.api_key
    tenants = {name: runtime.add_tenant(name) for name in dict.fromkeys(args.tenant)}
    runtime.start()
    state = runtime.write_state()
    print(f"modelrun local stack is up: {runtime.url}", flush=True)
    if tenants:
        for name, key in tenants.items():
            print(f"API key ({name}): {key}", flush=True)
    else:
        print(f"API key: {runtime.api_key}", flush=True)
    if runtime.websocket is not None:
        key = quote(runtime.api_key, safe="") if not tenants else "<API key>"
        print(f"WebSocket: {runtime.websocket.url}?api_key={key}", flush=True)
    print(f"Web page: {runtime.url}/ui/ (uploads images, runs a batch, shows progress and results)", flush=True)
    credentials = runtime.aws_credentials
    print(
        f"AWS endpoint: {runtime.aws_endpoint} (aws --endpoint-url ..., signed with these credentials only)", flush=True
    )
    print(
        f"AWS credentials: AWS_ACCESS_KEY_ID={credentials.access_key_id} "
        f"AWS_SECRET_ACCESS_KEY={credentials.secret_access_key} (new at every start)",
        flush=True,
    )
    print("(state is in memory: stopping or restarting the stack forgets every batch and upload)", flush=True)
    print(f"(connection details in {state.relative_to(STATE_FILE.parents[1])}; Ctrl-C stops)", flush=True)
    if not args.no_demo:
        threading.Thread(target=run_demo_batch, args=(runtime,), kwargs={"say": _say}, daemon=True).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        runtime.stop()
        STATE_FILE.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

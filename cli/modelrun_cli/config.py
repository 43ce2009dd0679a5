"""Where the stack is. The first of these that names one wins:

1. flags ``--endpoint URL --api-key KEY`` (with ``--bucket NAME`` and ``--aws-endpoint URL`` for uploads);
2. environment ``MODELRUN_ENDPOINT``, ``MODELRUN_API_KEY`` (and ``MODELRUN_BUCKET``, ``MODELRUN_AWS_ENDPOINT``);
3. ``--stack NAME`` or ``MODELRUN_STACK``: a deployed CloudFormation stack's Outputs, read with the user's
   normal AWS credentials and region;
4. the running local stack's ``.modelrun/local.json`` (``MODELRUN_LOCAL_STATE`` names another file), looked
   for in the current directory and its parents, then in the repository this package belongs to.

An endpoint from a flag and an API key from the environment combine (a flag beats the variable of the same
setting). ``--api-key``, ``--bucket`` and ``--aws-endpoint`` given as flags also override what a stack or the
local state file says.

Uploads through an ``--aws-endpoint`` (the local stack's, which answers only requests signed with the credentials
it prints at start) are signed with the state file's ``AwsAccessKeyId`` and ``AwsSecretAccessKey``, or, for an
endpoint named by flag or environment, with ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` from the environment.

The WebSocket URL for live progress comes from ``--ws-url``, else ``MODELRUN_WS_URL``, else the stack's output or
the local state's ``WebSocketUrl`` (only when the stack itself came from there); without one, waiting polls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modelrun_cli.errors import ConfigError

ENV_ENDPOINT = "MODELRUN_ENDPOINT"
ENV_API_KEY = "MODELRUN_API_KEY"
ENV_BUCKET = "MODELRUN_BUCKET"
ENV_AWS_ENDPOINT = "MODELRUN_AWS_ENDPOINT"
ENV_STACK = "MODELRUN_STACK"
ENV_LOCAL_STATE = "MODELRUN_LOCAL_STATE"
ENV_WS_URL = "MODELRUN_WS_URL"
ENV_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
ENV_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - the variable's name
LOCAL_STATE = Path(".modelrun") / "local.json"
# cli/modelrun_cli/config.py -> the repository root, where `make run` writes .modelrun/local.json.
PACKAGE_REPO = Path(__file__).resolve().parents[2]

START_HINT = (
    "start the local stack with `make run` (or `.venv/bin/modelrun-local`) in the modelrun repository, "
    "or pass --endpoint URL --api-key KEY (env MODELRUN_ENDPOINT, MODELRUN_API_KEY), "
    "or --stack NAME (env MODELRUN_STACK) for a deployed stack"
)


@dataclass(frozen=True)
class Target:
    """A stack the CLI talks to: its API, its key, and where batch images go."""

    endpoint: str
    api_key: str
    source: str  # where these settings came from, for error messages
    bucket: str | None = None
    aws_endpoint: str | None = None  # an S3-compatible endpoint (the local stack's moto server); None on AWS
    region: str | None = None
    local: bool = False
    ws_url: str | None = None  # the WebSocket API for live progress (WebSocketUrl); None: waiting polls
    # The key id and secret to sign requests to aws_endpoint with; None: the user's own AWS configuration.
    aws_credentials: tuple[str, str] | None = None
    # The local stack's run this target was read from (its state file, InstanceId and StartedAt), so a client can
    # tell that the stack restarted since (``local_restart``).
    instance: LocalInstance | None = None
    # The usage plan every tenant's key is in (UsagePlanId output): ``modelrun tenants``.
    usage_plan_id: str | None = None


@dataclass(frozen=True)
class LocalInstance:
    """One run of the local stack: it keeps its state in memory, so a restart forgets every batch."""

    state_path: Path
    instance_id: str | None
    started_at: str | None


@dataclass(frozen=True)
class Flags:
    """The connection flags as given on the command line (None when absent)."""

    endpoint: str | None = None
    api_key: str | None = None
    bucket: str | None = None
    aws_endpoint: str | None = None
    stack: str | None = None
    ws_url: str | None = None


StackReader = Callable[[str], Target]


def discover(
    flags: Flags,
    env: Mapping[str, str],
    cwd: Path,
    *,
    read_stack: StackReader | None = None,
    package_repo: Path = PACKAGE_REPO,
) -> Target:
    """The stack to talk to, by the precedence in this module's docstring; ConfigError when there is none."""
    ws_url = flags.ws_url or env.get(ENV_WS_URL) or None
    explicit = _explicit_target(flags, env)
    if explicit is not None:
        return replace(explicit, ws_url=ws_url)
    stack_name = flags.stack or env.get(ENV_STACK)
    if stack_name:
        target = (read_stack or read_cloudformation_stack)(stack_name)
        return _with_flag_overrides(target, flags, ws_url)
    state = find_local_state(env, cwd, package_repo)
    if state is None:
        searched = ", ".join(str(path) for path in state_candidates(cwd, package_repo))
        raise ConfigError(f"no modelrun stack found: {START_HINT} (looked for {searched})")
    return _with_flag_overrides(load_local_state(state), flags, ws_url)


def _explicit_target(flags: Flags, env: Mapping[str, str]) -> Target | None:
    endpoint = flags.endpoint or env.get(ENV_ENDPOINT)
    if not endpoint:
        return None
    source = "--endpoint" if flags.endpoint else ENV_ENDPOINT
    api_key = flags.api_key or env.get(ENV_API_KEY)
    if not api_key:
        raise ConfigError(
            f"the endpoint comes from {source} but there is no API key: pass --api-key or set {ENV_API_KEY}"
        )
    return Target(
        endpoint=endpoint,
        api_key=api_key,
        source=source,
        bucket=flags.bucket or env.get(ENV_BUCKET) or None,
        aws_endpoint=flags.aws_endpoint or env.get(ENV_AWS_ENDPOINT) or None,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        aws_credentials=_environment_credentials(env),
    )


def _environment_credentials(env: Mapping[str, str]) -> tuple[str, str] | None:
    key_id, secret = env.get(ENV_ACCESS_KEY_ID), env.get(ENV_SECRET_ACCESS_KEY)
    return (key_id, secret) if key_id and secret else None


def _with_flag_overrides(target: Target, flags: Flags, ws_url: str | None = None) -> Target:
    return replace(
        target,
        api_key=flags.api_key or target.api_key,
        bucket=flags.bucket or target.bucket,
        aws_endpoint=flags.aws_endpoint or target.aws_endpoint,
        ws_url=ws_url or target.ws_url,
    )


# -- the local stack ---------------------------------------------------------------------------------------------
def state_candidates(cwd: Path, package_repo: Path) -> Iterator[Path]:
    """Where .modelrun/local.json may be: the current directory and each parent, then this package's repo."""
    seen: set[Path] = set()
    for folder in (cwd.resolve(), *cwd.resolve().parents, package_repo):
        candidate = folder / LOCAL_STATE
        if candidate not in seen:
            seen.add(candidate)
            yield candidate


def find_local_state(env: Mapping[str, str], cwd: Path, package_repo: Path) -> Path | None:
    named = env.get(ENV_LOCAL_STATE)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{ENV_LOCAL_STATE} names {path}, which does not exist: {START_HINT}")
        return path
    return next((path for path in state_candidates(cwd, package_repo) if path.is_file()), None)


def load_local_state(path: Path) -> Target:
    """The local stack as `make run` recorded it; refuses a file left behind by a stack that has stopped."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the local stack's state file {path}: {exc}") from exc
    if not isinstance(state, dict) or not state.get("ApiUrl") or not state.get("ApiKey"):
        raise ConfigError(f"{path} has no ApiUrl and ApiKey: restart the local stack (`make run`)")
    pid = state.get("pid")
    if isinstance(pid, int) and not process_alive(pid):
        raise ConfigError(f"the local stack recorded in {path} (pid {pid}) is not running: {START_HINT}")
    key_id, secret = _optional(state, "AwsAccessKeyId"), _optional(state, "AwsSecretAccessKey")
    return Target(
        endpoint=str(state["ApiUrl"]),
        api_key=str(state["ApiKey"]),
        source=f"local stack state {path}",
        bucket=_optional(state, "ImagesBucketName"),
        aws_endpoint=_optional(state, "AwsEndpoint"),
        region=_optional(state, "Region"),
        local=True,
        ws_url=_optional(state, "WebSocketUrl"),
        aws_credentials=(key_id, secret) if key_id and secret else None,
        instance=LocalInstance(path, _optional(state, "InstanceId"), _optional(state, "StartedAt")),
        usage_plan_id=_optional(state, "UsagePlanId"),
    )


def local_restart(target: Target) -> str | None:
    """What became of the local stack ``target`` was read from, when it is no longer that run: it stopped, or it
    was restarted (the state file names another instance). None while it is the same run, or for any other stack.

    The stack keeps everything in memory, so either way the batches it held are gone.
    """
    if target.instance is None:
        return None
    path = target.instance.state_path
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return "the local stack this command was talking to has stopped"
    if not isinstance(state, dict):
        return "the local stack this command was talking to has stopped"
    pid = state.get("pid")
    if isinstance(pid, int) and not process_alive(pid):
        return "the local stack this command was talking to has stopped"
    if state.get("InstanceId") == target.instance.instance_id:
        return None
    was = f" (started at {target.instance.started_at})" if target.instance.started_at else ""
    started = f" at {state['StartedAt']}" if state.get("StartedAt") else ""
    return f"the local stack this command was talking to{was} was restarted{started}"


def _optional(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return str(value) if value else None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


# -- a deployed stack --------------------------------------------------------------------------------------------
def read_cloudformation_stack(name: str) -> Target:
    """ApiUrl, the API key's value (from ApiKeyId), ImagesBucketName and WebSocketUrl from a deployed stack's
    Outputs."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = boto3.session.Session()
    try:
        stacks = session.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
        outputs = {item["OutputKey"]: item["OutputValue"] for item in stacks[0].get("Outputs", [])}
        missing = [key for key in ("ApiUrl", "ApiKeyId", "ImagesBucketName") if key not in outputs]
        if missing:
            raise ConfigError(f"stack {name!r} has no output(s) {', '.join(missing)}: is it a modelrun stack?")
        key = session.client("apigateway").get_api_key(apiKey=outputs["ApiKeyId"], includeValue=True)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ConfigError(f"stack {name!r}: {error.get('Code', 'error')}: {error.get('Message', exc)}") from exc
    except BotoCoreError as exc:
        raise ConfigError(f"stack {name!r}: {exc} (configure AWS credentials and a region)") from exc
    return Target(
        endpoint=outputs["ApiUrl"],
        api_key=str(key["value"]),
        source=f"stack {name} ({session.region_name})",
        bucket=outputs["ImagesBucketName"],
        region=session.region_name,
        ws_url=outputs.get("WebSocketUrl") or None,
        usage_plan_id=outputs.get("UsagePlanId") or None,
    )

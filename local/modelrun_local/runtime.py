"""The whole local stack in one object: moto started, template deployed, gateway serving."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moto import mock_aws

from modelrun_local import LOGGER
from modelrun_local.endpoint import ACCESS_LOG, LocalAwsEndpoint, LocalCredentials
from modelrun_local.gateway import Gateway, GatewayServer, cors_rule, gateway_response_headers
from modelrun_local.origins import page_origins
from modelrun_local.stack import LocalStack
from modelrun_local.template import DEFAULT_TEMPLATE, Template
from modelrun_local.websocket import LocalWebSocketApi, WebSocketApiRoutes
from modelrun_local.webui import WebUI

log = logging.getLogger(LOGGER)

STATE_FILE = DEFAULT_TEMPLATE.parent / ".modelrun" / "local.json"
# Local mode differs from a default deployment in two documented ways: batches may ask for injected faults (to show
# recovery), and recovery backs off from 1 s instead of 30 s. --parameter-overrides changes either.
LOCAL_PARAMETERS = {"AllowFaultInjection": "true", "RecoveryBackoffSeconds": "1"}
MOTO_CONFIG: Any = {
    "stepfunctions": {"execute_state_machine": True},
    "lambda": {"use_docker": True},  # the Docker path is the one modelrun_local.lambdas patches
    # The stack's own credentials stand in for moto's fake ones (see ``_use_credentials``).
    "core": {"mock_credentials": False, "reset_boto3_session": True},
}
# Variables that would add a session token to the stack's credentials: the endpoint's key pair has none.
SESSION_TOKEN_VARIABLES = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


@dataclass
class LocalRuntime:
    template_path: Path = DEFAULT_TEMPLATE
    host: str = "127.0.0.1"
    port: int = 3000
    api_key: str = field(default_factory=lambda: "local-" + secrets.token_urlsafe(18))
    # More tenants, {name: key value} (``--tenant``): one key each in the usage plan; ``api_key`` is the default's.
    tenant_keys: dict[str, str] = field(default_factory=dict)
    parameter_overrides: Mapping[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    # What the models layer (mounted at /opt/models on Lambda) holds locally; the repo's models/ by default.
    models_dir: Path | None = None
    # The local AWS endpoint: moto's server on the same in-process state, for clients outside this process
    # (the CLI's uploads, `aws --endpoint-url ...`, presigned result links), answering requests signed with
    # aws_credentials only (modelrun_local.endpoint).
    aws_port: int = 5001
    aws_credentials: LocalCredentials = field(default_factory=LocalCredentials.generate)
    # The template's WebSocket API (live batch progress) at ws://host:ws_port/{stage}; 0 picks a free port.
    ws_port: int = 3001
    stack: LocalStack | None = None
    server: GatewayServer | None = None
    websocket: LocalWebSocketApi | None = None
    # Which run of the stack this is: state lives in memory, so a client that finds another instance in
    # .modelrun/local.json knows the stack restarted and forgot everything it held (the CLI says so).
    instance_id: str = field(default_factory=lambda: secrets.token_hex(8))
    started_at: str = ""
    _mock: Any = None
    _aws_server: LocalAwsEndpoint | None = None
    _replaced_environment: dict[str, str | None] = field(default_factory=dict)

    def add_tenant(self, name: str) -> str:
        """A tenant with a fresh key (made in the usage plan at ``start()``); its key value. ``default`` is the
        stack's own key."""
        if name == "default":
            return self.api_key
        return self.tenant_keys.setdefault(name, "local-" + secrets.token_urlsafe(18))

    def start(self) -> LocalRuntime:
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._use_credentials()
        self._mock = mock_aws(config=MOTO_CONFIG)
        self._mock.start()
        self._aws_server = LocalAwsEndpoint(self.aws_credentials, host=self.host, port=self.aws_port).start()
        # A line per AWS call of every function: chatter, shown by `modelrun-local --verbose`.
        access_log = logging.getLogger(ACCESS_LOG)
        if access_log.level == logging.NOTSET:
            access_log.setLevel(logging.WARNING)
        template = Template.load(self.template_path, {**LOCAL_PARAMETERS, **self.parameter_overrides})
        mounts = {"/opt/models": self.models_dir} if self.models_dir else {}
        # The functions run in processes of their own (modelrun_local.sandbox) and reach every AWS service through
        # the local endpoint, with the SDK's own setting (unset on AWS); their presigned links work from outside too.
        overrides = {"AWS_ENDPOINT_URL": self.aws_endpoint}
        self.stack = LocalStack(
            template,
            region=self.region,
            mounts=mounts,
            environment_overrides=overrides,
            api_key=self.api_key,
            tenant_keys=self.tenant_keys,
            credentials=self.aws_credentials.environment(),
        ).deploy()
        api = next((route.api for route in template.api_routes()), "RestApi")
        gateway = Gateway(
            template.api_routes(),
            self.stack.dispatcher,
            stage=str(template.parameters.get("StageName", "v1")),
            key_ids=self.stack.key_id,
            binary_media_types=template.binary_media_types(api),
            function_names={name: self.stack.ref(name) for name in template.functions()},
            # CORS as the template's Cors and GatewayResponses make API Gateway answer it; the web page at /ui/.
            cors=cors_rule(template, api, self.stack.resolver.resolve),
            error_headers=gateway_response_headers(template, api, self.stack.resolver.resolve),
            static=WebUI(self.outputs),
        )
        self.server = GatewayServer(gateway, self.host, self.port).start()
        # Browsers reach the AWS endpoint from the page (presigned uploads, result links), served by the gateway.
        web_origin = template.parameters.get("WebOrigin")
        self._aws_server.allow_origins(page_origins(self.server.http.port, str(web_origin) if web_origin else None))
        self._serve_websocket(template, api)
        self.stack.start_pollers()
        return self

    def _use_credentials(self) -> None:
        """Make the stack's credentials the process's, until ``stop()``.

        The runtime's own clients (deployment, pollers) and a test's in-process clients sign with the stack's key pair
        (moto answers them in process); the user's own AWS credentials are never used (nor sent anywhere) meanwhile.
        """
        wanted: dict[str, str | None] = {**self.aws_credentials.environment()}
        wanted.update(dict.fromkeys(SESSION_TOKEN_VARIABLES))
        for key, value in wanted.items():
            self._replaced_environment.setdefault(key, os.environ.get(key))
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.environ.setdefault("AWS_DEFAULT_REGION", self.region)

    def _serve_websocket(self, template: Template, api: str) -> None:
        """The template's WebSocket API on ``ws_port`` (the first one, if it has several), and the REST API's AWS URL in
        the functions' variables pointed at the local gateway (the links in completed messages)."""
        assert self.stack is not None
        stage = str(template.parameters.get("StageName", "v1"))
        rest_api_url = self.stack.resolver.sub(
            f"https://${{{api}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{stage}"
        )
        self.stack.rebase_environment(rest_api_url, f"{self.url}/{stage}")
        apis = WebSocketApiRoutes.from_template(template)
        if apis:
            # The functions post to connections through the management API at the local endpoint, where moto serves
            # it at /@connections/{id} (its patched backend delivers to this WebSocket server).
            management_url = self.stack.resolver.sub(
                f"https://${{{apis[0].api}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{stage}"
            )
            self.stack.rebase_environment(management_url, self.aws_endpoint)
            self.websocket = LocalWebSocketApi(
                apis[0],
                self.stack.function,
                host=self.host,
                port=self.ws_port,
                stage=stage,
                api_id=self.stack.ref(apis[0].api),
                region=self.region,
            ).start()

    @property
    def aws_endpoint(self) -> str:
        assert self._aws_server is not None, "start() first"
        return self._aws_server.url

    @property
    def url(self) -> str:
        assert self.server is not None, "start() first"
        return self.server.url

    def outputs(self) -> dict[str, str]:
        """What a client needs, as the deployed stack's Outputs give it."""
        assert self.stack is not None
        stage = self.stack.template.parameters.get("StageName", "v1")
        outputs = {"ApiUrl": f"{self.url}/{stage}/", "ApiKey": self.api_key, "Region": self.region}
        outputs["AwsEndpoint"] = self.aws_endpoint
        outputs["AwsAccessKeyId"] = self.aws_credentials.access_key_id
        outputs["AwsSecretAccessKey"] = self.aws_credentials.secret_access_key
        if self.websocket is not None:
            outputs["WebSocketUrl"] = self.websocket.url  # append ?api_key=<ApiKey>, as on AWS
        for name, output in self.stack.template.data.get("Outputs", {}).items():
            value = output.get("Value")
            if isinstance(value, dict) and "Ref" in value and value["Ref"] in self.stack.resolver.refs:
                outputs[name] = self.stack.ref(value["Ref"])
        return outputs

    def write_state(self, path: Path = STATE_FILE) -> Path:
        """Let clients on this machine find the running stack (the CLI reads this file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        instance = {"InstanceId": self.instance_id, "StartedAt": self.started_at, "pid": os.getpid()}
        path.write_text(json.dumps({**self.outputs(), **instance}, indent=2))
        # It holds the AWS endpoint's secret: readable by this user only.
        path.chmod(0o600)
        return path

    def stop(self) -> None:
        if self.websocket is not None:
            # Open connections are closed and get their $disconnect while the functions can still run.
            self.websocket.stop()
            self.websocket = None
        if self.stack is not None:
            self.stack.stop_pollers()
            self.stack.dispatcher.stop()
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._aws_server is not None:
            self._aws_server.stop()
            self._aws_server = None
        if self._mock is not None:
            self._mock.stop()
            self._mock = None
        for key, value in self._replaced_environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._replaced_environment.clear()

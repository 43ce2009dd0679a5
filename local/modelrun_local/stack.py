"""Creating the template's resources on moto and wiring the functions to run in local sandboxes.

Why not moto's CloudFormation: after the SAM transform it drops Layers, ignores DefinitionSubstitutions, does not
really create API Gateway resources and needs every CodeUri uploaded first. Reading the template directly and
creating each resource with the ordinary boto3 call is shorter than patching all of that, and it keeps the
template the single source of truth: table keys, queue settings and routes all come from it.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from modelrun_local import LOGGER
from modelrun_local.lambdas import (
    LOCAL_SANDBOX_CAP,
    Dispatcher,
    LocalFunction,
    lambda_runtime_environment,
    sandbox_threads,
)
from modelrun_local.sqs import SqsPoller
from modelrun_local.streams import StreamPoller
from modelrun_local.template import Resolver, Template, creation_order

log = logging.getLogger(LOGGER)

ACCOUNT_ID = "123456789012"
# The API key tag naming the key's tenant (modelrun.tenants.TENANT_TAG, which local code does not import).
TENANT_TAG = "modelrun:tenant"
# Settings every local function gets on top of its template environment: X-Ray and CloudWatch metrics have no
# local backend (Powertools disables its tracer under AWS_SAM_LOCAL, as under `sam local`).
LOCAL_FUNCTION_SETTINGS = {"AWS_SAM_LOCAL": "true", "POWERTOOLS_METRICS_DISABLED": "true"}


def _physical_name(stack: str, logical_id: str, limit: int = 63) -> str:
    name = f"{stack}-{re.sub(r'(?<!^)(?=[A-Z])', '-', logical_id).lower()}"
    return name[:limit]


def _s3_cors(cors: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's CorsConfiguration in the shape of S3's PutBucketCors (some keys are spelt differently)."""
    renamed = {"Id": "ID", "ExposedHeaders": "ExposeHeaders", "MaxAge": "MaxAgeSeconds"}
    rules = [{renamed.get(key, key): value for key, value in rule.items()} for rule in cors.get("CorsRules", [])]
    for rule in rules:
        if "MaxAgeSeconds" in rule:
            rule["MaxAgeSeconds"] = int(rule["MaxAgeSeconds"])
    return {"CORSRules": rules}


def _stub_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "served by modelrun_local's sandboxes; see local/modelrun_local/lambdas.py\n")
    return buffer.getvalue()


@dataclass
class LocalStack:
    """The template's resources, created on moto. Call ``deploy()`` inside an active moto mock."""

    template: Template
    region: str = "us-east-1"
    stack_name: str = "modelrun-local"
    # Where layer mount points are on this machine: the models layer mounts models/ at /opt/models on Lambda.
    mounts: dict[str, Path] = field(default_factory=dict)
    environment_overrides: dict[str, str] = field(default_factory=dict)
    dispatcher: Dispatcher = field(default_factory=Dispatcher)
    pollers: list[SqsPoller | StreamPoller] = field(default_factory=list)
    # The local API key: the key SAM creates for an API's usage plan gets this value (see ``_api_key``); it is the
    # default tenant's.
    api_key: str | None = None
    # More tenants, {name: key value}: one key each in the usage plan, tagged with its tenant (``modelrun.tenants``).
    tenant_keys: dict[str, str] = field(default_factory=dict)
    # What the functions sign their AWS requests with, as Lambda gives them the role's credentials: the local AWS
    # endpoint's key pair (``modelrun_local.endpoint.LocalCredentials``), since their S3 client goes through it.
    credentials: Mapping[str, str] = field(default_factory=dict)
    resolver: Resolver = field(init=False)
    skipped: list[str] = field(default_factory=list)
    _clients: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _clients_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.resolver = Resolver(
            parameters=dict(self.template.parameters),
            region=self.region,
            account_id=ACCOUNT_ID,
            stack_name=self.stack_name,
        )
        self.mounts.setdefault("/opt/models", self.template.root / "models")

    def client(self, service: str) -> Any:
        """The stack's one client of ``service`` (in-process moto), made on first use: a client costs about 5 ms of
        CPU to make, and the gateway asks the usage plans about the API key at every request. boto3 clients are
        thread-safe once made; making them is not, hence the lock."""
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = boto3.client(service, region_name=self.region)  # type: ignore[call-overload]
            return self._clients[service]

    # -- deployment -----------------------------------------------------------------------------------------
    def deploy(self) -> LocalStack:
        for name, expression in self.template.data.get("Conditions", {}).items():
            self.resolver.conditions[name] = self.resolver.condition(expression)
        creators: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "AWS::S3::Bucket": self._bucket,
            "AWS::DynamoDB::Table": self._table,
            "AWS::SQS::Queue": self._queue,
            "AWS::Serverless::LayerVersion": self._layer,
            "AWS::Serverless::Api": self._api,
            "AWS::ApiGatewayV2::Api": self._websocket_api,
        }
        deferred = {"AWS::Serverless::Function", "AWS::Serverless::StateMachine"}
        # Functions and state machines refer to each other and are named first (below); the rest in dependency order.
        plain = {name: res for name, res in self.template.resources.items() if res.get("Type") not in deferred}
        for logical_id in creation_order(plain):
            resource = plain[logical_id]
            if not self._wanted(resource):
                continue
            kind = resource["Type"]
            if kind in creators:
                creators[kind](logical_id, resource.get("Properties", {}))
            else:
                self.skipped.append(f"{logical_id} ({kind})")
        self._role()
        # Names first: functions and state machines refer to each other (a function starts executions, a state
        # machine invokes functions), and both names are known before either exists, as in CloudFormation.
        functions = [name for name in self.template.of_type("AWS::Serverless::Function") if self._wanted_id(name)]
        machines = [name for name in self.template.of_type("AWS::Serverless::StateMachine") if self._wanted_id(name)]
        for logical_id in functions:
            self._name_function(logical_id)
        for logical_id in machines:
            self._name_state_machine(logical_id)
        for logical_id in functions:
            self._function(logical_id)
        for logical_id in machines:
            self._state_machine(logical_id)
        for logical_id in functions:
            self._event_sources(logical_id)
        self.dispatcher.install()
        if self.skipped:
            log.debug("not created locally (no local behaviour needed): %s", ", ".join(self.skipped))
        return self

    def _wanted_id(self, logical_id: str) -> bool:
        return self._wanted(self.template.resources[logical_id])

    def _wanted(self, resource: Mapping[str, Any]) -> bool:
        condition = resource.get("Condition")
        return condition is None or self.resolver.conditions.get(condition, False)

    def _bucket(self, logical_id: str, props: dict[str, Any]) -> None:
        name = self.resolver.resolve(props.get("BucketName")) or _physical_name(self.stack_name, logical_id)
        s3 = self.client("s3")
        if self.region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})
        cors = self.resolver.resolve(props.get("CorsConfiguration"))
        if cors:
            # Browsers upload with presigned PUTs from the web page's origin: without the bucket's CORS rules moto's
            # server answers their preflight OPTIONS with 403 (it checks it as a signed request).
            s3.put_bucket_cors(Bucket=name, CORSConfiguration=_s3_cors(cors))
        self.resolver.refs[logical_id] = name
        self.resolver.attributes[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"
        self.resolver.attributes[(logical_id, "DomainName")] = f"{name}.s3.amazonaws.com"

    def _table(self, logical_id: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        name = props.get("TableName") or _physical_name(self.stack_name, logical_id, 255)
        request: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        if request["BillingMode"] == "PROVISIONED":
            request["ProvisionedThroughput"] = props["ProvisionedThroughput"]
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes", "StreamSpecification"):
            if key in props:
                request[key] = props[key]
        if "StreamSpecification" in request:
            # CloudFormation's StreamSpecification has no StreamEnabled; the API (and moto) need it to record changes.
            request["StreamSpecification"] = {"StreamEnabled": True, **request["StreamSpecification"]}
        ddb = self.client("dynamodb")
        description = ddb.create_table(**request)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        self.resolver.refs[logical_id] = name
        self.resolver.attributes[(logical_id, "Arn")] = description["TableArn"]
        if "LatestStreamArn" in description:
            self.resolver.attributes[(logical_id, "StreamArn")] = description["LatestStreamArn"]

    def _queue(self, logical_id: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        name = props.pop("QueueName", None) or _physical_name(self.stack_name, logical_id, 80)
        if props.get("FifoQueue") and not name.endswith(".fifo"):
            name += ".fifo"
        attributes = {key: json.dumps(value) if isinstance(value, dict) else str(value) for key, value in props.items()}
        attributes.pop("Tags", None)
        url = self.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{name}"
        self.resolver.refs[logical_id] = url
        self.resolver.attributes.update({(logical_id, "Arn"): arn, (logical_id, "QueueName"): name})
        self.resolver.attributes[(logical_id, "QueueUrl")] = url

    def _layer(self, logical_id: str, props: dict[str, Any]) -> None:
        self.resolver.refs[logical_id] = f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:layer:{logical_id}:1"

    def _api(self, logical_id: str, props: dict[str, Any]) -> None:
        self.resolver.refs[logical_id] = "local"
        self._api_key(logical_id, props)

    def _api_key(self, logical_id: str, props: dict[str, Any]) -> None:
        """The usage plan and key SAM creates for an API (``<Api>UsagePlan``, ``<Api>ApiKey``; ``ServerlessUsagePlan``
        and ``ServerlessApiKey`` if shared), made in moto's API Gateway with the local key's value, and one tagged key
        per extra tenant in the same plan: ``!Ref RestApiApiKey`` is the default tenant's key id, ``!Ref
        RestApiUsagePlan`` the plan every tenant's key is in (``modelrun tenants add`` adds more)."""
        usage_plan = props.get("Auth", {}).get("UsagePlan", {})
        plan = usage_plan.get("CreateUsagePlan")
        key = "ServerlessApiKey" if plan == "SHARED" else f"{logical_id}ApiKey"
        if self.api_key is None or plan not in ("PER_API", "SHARED") or key in self.resolver.refs:
            return
        apigateway = self.client("apigateway")
        throttle = self.resolver.resolve(usage_plan.get("Throttle", {}))
        plan_id = apigateway.create_usage_plan(
            name=f"{self.stack_name}-{key.removesuffix('ApiKey')}UsagePlan",
            throttle={
                "rateLimit": float(throttle.get("RateLimit", 10000)),
                "burstLimit": int(throttle.get("BurstLimit", 5000)),
            },
        )["id"]
        self.resolver.refs[key.removesuffix("ApiKey") + "UsagePlan"] = plan_id
        self.resolver.refs[key] = self._plan_key(plan_id, f"{self.stack_name}-{key}", self.api_key, tenant=None)
        for tenant, value in self.tenant_keys.items():
            self._plan_key(plan_id, f"{self.stack_name}-{tenant}", value, tenant=tenant)

    def _plan_key(self, plan_id: str, name: str, value: str, *, tenant: str | None) -> str:
        """An enabled key with this value in the usage plan (tagged with its tenant, if any); its id."""
        apigateway = self.client("apigateway")
        tags = {TENANT_TAG: tenant} if tenant else {}
        if len(value) >= 20:  # API Gateway's (and moto's) shortest key value
            created = apigateway.create_api_key(name=name, value=value, enabled=True, tags=tags)
        else:
            # Local mode accepts shorter keys (``--api-key``, tests): moto generates a value, replaced on its model.
            from moto.apigateway.models import apigateway_backends

            created = apigateway.create_api_key(name=name, enabled=True, tags=tags)
            apigateway_backends[ACCOUNT_ID][self.region].keys[created["id"]].value = value
        apigateway.create_usage_plan_key(usagePlanId=plan_id, keyId=created["id"], keyType="API_KEY")
        return str(created["id"])

    def key_id(self, value: str) -> str | None:
        """The id of the enabled usage plan key with this value, as API Gateway validates ``x-api-key``; None for any
        other value. Read at every request, so a key ``modelrun tenants add``/``remove`` changes counts at once.

        Read from moto's API Gateway model rather than through its API: two SDK calls cost the gateway about 3 ms of
        CPU per request, a dictionary lookup nothing."""
        from moto.apigateway.models import apigateway_backends

        backend = apigateway_backends[ACCOUNT_ID][self.region]
        plans = [ref for name, ref in self.resolver.refs.items() if name.endswith("UsagePlan")]
        for plan_id in plans:
            for item in list(backend.usage_plan_keys.get(plan_id, {}).values()):
                if item.value != value:
                    continue
                key = backend.keys.get(item.id)  # moto keeps a deleted key in its plans, API Gateway does not
                if key is not None and key.enabled:
                    return str(item.id)
        return None

    def _websocket_api(self, logical_id: str, props: dict[str, Any]) -> None:
        """An API Gateway v2 API, made in moto for its id (``!Ref``); ``modelrun_local.websocket`` serves WebSocket APIs
        (its routes, integrations and stage are read from the template there, not created)."""
        props = self.resolver.resolve(props)
        created = self.client("apigatewayv2").create_api(
            Name=str(props.get("Name") or logical_id),
            ProtocolType=str(props["ProtocolType"]),
            RouteSelectionExpression=str(props.get("RouteSelectionExpression", "$request.method $request.path")),
        )
        self.resolver.refs[logical_id] = created["ApiId"]
        self.resolver.attributes[(logical_id, "ApiEndpoint")] = created["ApiEndpoint"]

    def _role(self) -> None:
        iam = self.client("iam")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
        role = iam.create_role(RoleName=f"{self.stack_name}-lambda", AssumeRolePolicyDocument=json.dumps(trust))
        self._role_arn = role["Role"]["Arn"]

    def _name_function(self, logical_id: str) -> None:
        props = self.template.function_properties(logical_id)
        name = self.resolver.resolve(props.get("FunctionName")) or _physical_name(self.stack_name, logical_id, 64)
        self.resolver.refs[logical_id] = name
        self.resolver.attributes[(logical_id, "Arn")] = f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{name}"

    def _name_state_machine(self, logical_id: str) -> None:
        props = self.template.resources[logical_id].get("Properties", {})
        name = self.resolver.resolve(props.get("Name")) or _physical_name(self.stack_name, logical_id, 80)
        arn = f"arn:aws:states:{self.region}:{ACCOUNT_ID}:stateMachine:{name}"
        self.resolver.refs[logical_id] = arn
        self.resolver.attributes.update({(logical_id, "Arn"): arn, (logical_id, "Name"): name})

    def _state_machine(self, logical_id: str) -> None:
        """The definition file with its DefinitionSubstitutions applied, as SAM does before deploying it."""
        props = self.template.resources[logical_id].get("Properties", {})
        if "DefinitionUri" in props:
            definition = (self.template.root / str(props["DefinitionUri"])).read_text(encoding="utf-8")
        else:
            definition = json.dumps(props["Definition"])
        substitutions = {
            key: str(self.resolver.resolve(value)) for key, value in props.get("DefinitionSubstitutions", {}).items()
        }

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in substitutions:
                raise KeyError(f"{logical_id}: ${{{name}}} has no DefinitionSubstitutions entry in the template")
            return substitutions[name]

        definition = re.sub(r"\$\{([A-Za-z0-9_]+)\}", substitute, definition)
        json.loads(definition)  # a broken definition fails here, naming nothing else
        self.client("stepfunctions").create_state_machine(
            name=self.resolver.attributes[(logical_id, "Name")],
            definition=definition,
            roleArn=self._role_arn,
            type=props.get("Type", "STANDARD"),
        )

    def _function(self, logical_id: str) -> None:
        props = self.template.function_properties(logical_id)
        # Sizes may come from parameters (PredictBatchTimeout): the runtime's variables and the sandbox use the values.
        timeout = int(self.resolver.resolve(props.get("Timeout", 3)))
        memory_mb = int(self.resolver.resolve(props.get("MemorySize", 128)))
        props = {**props, "Timeout": timeout, "MemorySize": memory_mb}
        name = self.resolver.refs[logical_id]
        arn = self.resolver.attributes[(logical_id, "Arn")]
        variables = {key: str(self.resolver.resolve(value)) for key, value in self._variables(props).items()}
        variables = {key: self._mounted(value) for key, value in variables.items()}
        # Reserved concurrency caps a function's environments on AWS; locally it caps its sandboxes the same way.
        reserved = self.resolver.resolve(props.get("ReservedConcurrentExecutions"))
        reserved = int(reserved) if isinstance(reserved, int | str) and str(reserved).isdigit() else 0
        cap = {"max_sandboxes": reserved} if reserved > 0 else {}
        # The sandboxes share this machine's cores: ONNX Runtime's threads sized to fit (a template value wins).
        threads = sandbox_threads(memory_mb, reserved or LOCAL_SANDBOX_CAP)
        environment = {
            **lambda_runtime_environment(props, name=name, region=self.region, credentials=self.credentials),
            **LOCAL_FUNCTION_SETTINGS,
            "INTRA_OP_THREADS": str(threads),
            **variables,
            **self.environment_overrides,
        }
        code_dir = (self.template.root / str(props["CodeUri"])).resolve()
        self.client("lambda").create_function(
            FunctionName=name,
            Runtime=props.get("Runtime", "python3.12"),
            Role=self._role_arn,
            Handler=props["Handler"],
            Code={"ZipFile": _stub_zip()},
            Timeout=timeout,
            MemorySize=memory_mb,
            Environment={"Variables": variables},
        )
        self.dispatcher.register(
            LocalFunction(
                logical_id=logical_id,
                name=name,
                arn=arn,
                code_dir=code_dir,
                handler=props["Handler"],
                environment=environment,
                timeout=float(timeout),
                memory_mb=memory_mb,
                **cap,
            )
        )

    def _event_sources(self, logical_id: str) -> None:
        """SQS events become pollers with Lambda's semantics (``modelrun_local.sqs``), not moto's mapping; S3 events
        become the bucket's notification configuration (``_s3_notification``)."""
        props = self.template.function_properties(logical_id)
        for event_id, event in props.get("Events", {}).items():
            if event.get("Type") == "S3":
                self._s3_notification(logical_id, event_id, event["Properties"])
                continue
            if event.get("Type") == "DynamoDB":
                self._stream_poller(logical_id, event["Properties"])
                continue
            if event.get("Type") != "SQS":
                continue
            event_props = self.resolver.resolve(event["Properties"])
            queue_arn = str(event_props["Queue"])
            queue_name = queue_arn.rsplit(":", 1)[-1]
            sqs = self.client("sqs")
            self.pollers.append(
                SqsPoller(
                    function=self.function(logical_id),
                    sqs=sqs,
                    queue_url=sqs.get_queue_url(QueueName=queue_name)["QueueUrl"],
                    queue_arn=queue_arn,
                    region=self.region,
                    batch_size=int(event_props.get("BatchSize", 10)),
                    report_batch_item_failures="ReportBatchItemFailures"
                    in event_props.get("FunctionResponseTypes", []),
                )
            )

    def _s3_notification(self, logical_id: str, event_id: str, event_props: Mapping[str, Any]) -> None:
        """An S3 event as the notification configuration SAM adds to the bucket (one LambdaFunctionConfiguration per
        event; the bucket's whole configuration is replaced on each put, so the existing entries are kept). moto
        matches event names and prefix/suffix filters itself; ``patches`` makes its delivery S3's (asynchronous, the
        key encoded as S3 encodes it, a sequencer)."""
        props = self.resolver.resolve(dict(event_props))
        bucket = str(props["Bucket"])
        events = props["Events"] if isinstance(props["Events"], list) else [props["Events"]]
        entry: dict[str, Any] = {
            "Id": f"{logical_id}{event_id}",
            "LambdaFunctionArn": self.resolver.attributes[(logical_id, "Arn")],
            "Events": [str(name) for name in events],
        }
        rules = props.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        if rules:
            # CloudFormation's FilterRule names are case-insensitive; the S3 API (and moto) take lower case.
            filter_rules = [{"Name": str(rule["Name"]).lower(), "Value": str(rule["Value"])} for rule in rules]
            entry["Filter"] = {"Key": {"FilterRules": filter_rules}}
        s3 = self.client("s3")
        configuration = s3.get_bucket_notification_configuration(Bucket=bucket)
        configuration.pop("ResponseMetadata", None)
        configuration["LambdaFunctionConfigurations"] = [*configuration.get("LambdaFunctionConfigurations", []), entry]
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=configuration)

    def _stream_poller(self, logical_id: str, event_props: Mapping[str, Any]) -> None:
        """A DynamoDB stream event becomes a poller with Lambda's semantics (``modelrun_local.streams``)."""
        props = self.resolver.resolve(dict(event_props))
        if "FilterCriteria" in props:
            log.warning("%s: FilterCriteria is not applied locally; every record is delivered", logical_id)
        destination = props.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        self.pollers.append(
            StreamPoller(
                function=self.function(logical_id),
                streams=self.client("dynamodbstreams"),
                stream_arn=str(props["Stream"]),
                region=self.region,
                batch_size=int(props.get("BatchSize", 100)),
                batching_window_s=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                starting_position=str(props.get("StartingPosition", "LATEST")),
                maximum_retry_attempts=int(props.get("MaximumRetryAttempts", -1)),
                maximum_record_age_s=int(props.get("MaximumRecordAgeInSeconds", -1)),
                bisect_on_error=str(props.get("BisectBatchOnFunctionError", False)).lower() == "true",
                report_batch_item_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                on_failure=self._queue_destination(str(destination)) if destination else None,
            )
        )

    def _queue_destination(self, arn: str) -> Callable[[dict[str, Any]], None]:
        """An on-failure destination: sends the invocation record to the SQS queue the ARN names."""
        if ":sqs:" not in arn:
            raise ValueError(f"on-failure destination {arn}: the local runtime delivers to SQS queues only")
        sqs = self.client("sqs")
        url = sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"]
        return lambda record: sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))

    def start_pollers(self) -> None:
        for poller in self.pollers:
            poller.start()

    def stop_pollers(self) -> None:
        for poller in self.pollers:
            poller.stop()

    @staticmethod
    def _variables(props: Mapping[str, Any]) -> dict[str, Any]:
        variables: dict[str, Any] = props.get("Environment", {}).get("Variables", {})
        return variables

    def _mounted(self, value: str) -> str:
        for mount, local in self.mounts.items():
            if value == mount or value.startswith(mount + "/"):
                return str(local) + value[len(mount) :]
        return value

    def rebase_environment(self, aws_url: str, local_url: str) -> None:
        """Point variables holding an AWS URL (``aws_url`` or below it) at the local server standing in for it, such as
        the REST API's ``https://{id}.execute-api.{region}.amazonaws.com/{stage}`` at the local gateway. Call it before
        the first invocation: handlers read their configuration at cold start."""
        for function in self.dispatcher.functions.values():
            for name, value in list(function.environment.items()):
                if value == aws_url or value.startswith(aws_url.rstrip("/") + "/"):
                    function.environment[name] = local_url + value[len(aws_url) :]

    # -- lookups --------------------------------------------------------------------------------------------
    def ref(self, logical_id: str) -> str:
        return str(self.resolver.ref(logical_id))

    def function(self, logical_id: str) -> LocalFunction:
        return self.dispatcher.by_logical_id(logical_id)

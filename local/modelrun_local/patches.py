"""The few places where moto differs from AWS in a way that matters to the functions, patched for local mode.

1. moto's Step Functions context object: ``$$.Execution.StartTime`` is a ``datetime`` where AWS gives an ISO-8601
string, so a state that passes it on (``"S.$": "$$.Execution.StartTime"``) fails to serialise; ``install()`` gives it
the string AWS gives.
2. moto's S3 -> Lambda notifications: synchronous inside PutObject and not shaped as S3 shapes them (section 2 below).
3. moto's Step Functions retry counters: the iterations of a Map running at once could grant a state more tries than
its ``Retry`` allows (section 3 below).
4. moto's DynamoDB responses: the same JSON, written without trying each of an attribute value's ten types on every
value (section 4 below), so that reading a batch's outcomes does not cost seconds of the runtime's CPU.
5. moto's Step Functions interpreter: one SDK client per service, not a new one for every Task, and each JSONPath
parsed once, not at every evaluation (section 5 below).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from modelrun_local import LOGGER


def install() -> None:
    """Idempotent; must run before executions start and objects are uploaded."""
    _install_iso_start_time()
    _install_s3_notification_delivery()
    _install_heap_keys_made_once()
    _install_attribute_values_by_their_own_type()
    _install_one_client_per_service()
    _install_json_paths_parsed_once()


def iso8601(moment: datetime) -> str:
    """The timestamp format of the Step Functions context object: ``2026-11-25T04:21:22.153Z``."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _install_iso_start_time() -> None:
    from moto.stepfunctions.parser.backend import execution_worker

    original = execution_worker.ExecutionData
    if getattr(original, "modelrun_patched", False):
        return

    def execution_data(**fields: Any) -> Any:
        if isinstance(fields.get("StartTime"), datetime):
            fields["StartTime"] = iso8601(fields["StartTime"])
        return original(**fields)

    execution_data.modelrun_patched = True  # type: ignore[attr-defined]
    execution_worker.ExecutionData = execution_data  # type: ignore[assignment,misc]


# -- 2. S3 event notifications to Lambda ---------------------------------------------------------------------------
# moto calls a notified function inside PutObject (moto.s3.notifications._invoke_awslambda): an upload waits for the
# function, whose errors vanish. And its record is not the one S3 sends: the key is quote_plus'ed with "/" as %2F, and
# the object's sequencer, userIdentity, requestParameters, responseElements and the bucket's ownerIdentity are
# missing. Replacing that one function makes the delivery S3's: the record as S3 shapes it, handed over as Lambda
# hands over asynchronous (Event) invocations, on background workers, with two retries after a function error (after
# 1 s and 2 s here; about 1 and 2 minutes on AWS), then logged and dropped: a function's on-failure destination
# (DeadLetterQueue) is not served locally. moto still decides which configurations match (event names, prefix and
# suffix filters on the raw key), for uploads through the SDK in-process and through its server alike.

S3_EVENT_WORKERS = 8
S3_EVENT_RETRY_DELAYS = (1.0, 2.0)
_log = logging.getLogger(LOGGER)
# Increasing hex strings, as S3's sequencers are for the writes of one key (and unique per write).
_sequencer = itertools.count(time.time_ns())


def s3_record_as_sent_by_s3(record: dict[str, Any]) -> dict[str, Any]:
    """moto's S3 event record with the key URL-encoded as S3 encodes it and the fields S3 adds."""
    shaped = copy.deepcopy(record)
    s3 = shaped["s3"]
    s3["object"]["key"] = quote_plus(unquote_plus(s3["object"]["key"]), safe="/")
    s3["object"].setdefault("sequencer", f"{next(_sequencer):018X}")
    s3["bucket"].setdefault("ownerIdentity", {"principalId": "LOCALOWNER"})
    shaped.setdefault("userIdentity", {"principalId": "AWS:LOCAL"})
    shaped.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
    request_id = uuid.uuid4().hex[:16].upper()
    shaped.setdefault("responseElements", {"x-amz-request-id": request_id, "x-amz-id-2": f"local/{request_id}"})
    return shaped


class S3EventDelivery:
    """Lambda's queue of asynchronous invocations, for the S3 events of the local stack."""

    def __init__(self, workers: int = S3_EVENT_WORKERS, retry_delays: tuple[float, ...] = S3_EVENT_RETRY_DELAYS):
        self.workers = workers
        self.retry_delays = retry_delays
        self._queue: queue.Queue[tuple[str, dict[str, Any], str, str, int]] = queue.Queue()
        self._lock = threading.Lock()
        self._started = False

    def send(self, account_id: str, event: dict[str, Any], function_arn: str, region: str, attempt: int = 0) -> None:
        with self._lock:
            if not self._started:
                for number in range(self.workers):
                    threading.Thread(target=self._work, name=f"s3-events-{number}", daemon=True).start()
                self._started = True
        self._queue.put((account_id, event, function_arn, region, attempt))

    def _work(self) -> None:
        while True:
            self._deliver(*self._queue.get())

    def _deliver(self, account_id: str, event: dict[str, Any], function_arn: str, region: str, attempt: int) -> None:
        from moto.awslambda.utils import get_backend

        keys = [record["s3"]["object"]["key"] for record in event.get("Records", [])]
        headers: dict[str, str] = {}
        try:
            function = get_backend(account_id, region).get_function(function_arn)
            function.invoke(json.dumps(event), {"x-amz-invocation-type": "Event"}, headers)
        except Exception:
            _log.exception("S3 event for %s not delivered (keys %s)", function_arn, keys)
            return
        if "x-amz-function-error" not in headers:
            return
        if attempt < len(self.retry_delays):
            _log.warning("S3 event for %s failed (keys %s): retry %d", function_arn, keys, attempt + 1)
            retry = threading.Timer(
                self.retry_delays[attempt], self.send, args=(account_id, event, function_arn, region, attempt + 1)
            )
            retry.daemon = True
            retry.start()
        else:
            _log.error("S3 event for %s failed %d times, dropped (keys %s)", function_arn, attempt + 1, keys)


def _install_s3_notification_delivery() -> None:
    from moto.s3 import notifications

    if getattr(notifications._invoke_awslambda, "modelrun_patched", False):
        return
    delivery = S3EventDelivery()

    def invoke_asynchronously(account_id: str, event_body: Any, fn_arn: str, region_name: str) -> None:
        try:
            event = {**event_body, "Records": [s3_record_as_sent_by_s3(record) for record in event_body["Records"]]}
            delivery.send(account_id, event, fn_arn, region_name)
        except Exception:  # never fail the upload itself: S3 accepts the object whatever happens to the event
            _log.exception("S3 event for %s not queued", fn_arn)

    invoke_asynchronously.modelrun_patched = True  # type: ignore[attr-defined]
    notifications._invoke_awslambda = invoke_asynchronously


# -- 3. Step Functions retry counters --------------------------------------------------------------------------------
# moto's interpreter counts a Retry's attempts (MaxAttemptsDecl) and its backoff (BackoffRateDecl) in the heap of the
# frame that runs the state, under a key naming the component: EvalComponent.heap_key, a uuid made on first use. A
# Map's iterations run on threads at once and share one parsed ItemProcessor, so their first failures (a timeout that
# hits every chunk at the same second) read a component's key together. Made without a lock, the key can be made
# twice: one iteration stores its first attempt under the key that is then replaced, finds no count under the new one
# at its next failure, and counts again from zero, so its task is tried more often than MaxAttempts allows. Here the
# key is made once per component, under a lock; every later read takes the lock-free path.

_heap_key_lock = threading.Lock()
# The attribute moto's own heap_key keeps the key in (EvalComponent's private __heap_key, name-mangled).
_HEAP_KEY_ATTRIBUTE = "_EvalComponent__heap_key"


def _heap_key_made_once(component: Any) -> str:
    from moto.stepfunctions.parser.asl.component import eval_component

    key: str | None = component.__dict__.get(_HEAP_KEY_ATTRIBUTE)
    if key is None:
        with _heap_key_lock:
            key = component.__dict__.get(_HEAP_KEY_ATTRIBUTE)
            if key is None:
                key = eval_component.long_uid()
                setattr(component, _HEAP_KEY_ATTRIBUTE, key)
    return key


def _install_heap_keys_made_once() -> None:
    from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent

    if vars(EvalComponent)["heap_key"].fget is _heap_key_made_once:
        return
    EvalComponent.heap_key = property(_heap_key_made_once)  # type: ignore[method-assign,assignment]


# -- 4. DynamoDB attribute values in responses -----------------------------------------------------------------------
# moto writes every response from the service's botocore model: for each member of a structure it looks the value up
# under half a dozen possible names (the member's, its snake_case form, its shape's name, ...). An AttributeValue has
# ten members (S, N, B, SS, NS, BS, M, L, NULL, BOOL) and holds one, and every attribute of every item, nested ones
# included, is one: a query returning 400 outcomes took about a second of CPU, most of it finding nine members absent.
# moto's items are plain dicts keyed by those member names, and no other name the lookup tries can be a key of such a
# dict, so the members that are not keys can only be absent: only the keys are written, each exactly as moto writes
# it, in the model's member order. Any other value (an object, a dict with another key) takes moto's own path.

ATTRIBUTE_VALUE_SHAPE = "AttributeValue"


def _install_attribute_values_by_their_own_type() -> None:
    from moto.core.serialize import BaseJSONSerializer

    original = BaseJSONSerializer._serialize_type_structure
    if getattr(original, "modelrun_patched", False):
        return

    def serialize_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        members = shape.members
        if shape.name != ATTRIBUTE_VALUE_SHAPE or type(value) is not dict or not value.keys() <= members.keys():
            original(self, serialized, value, shape, key)
            return
        wrapper = self.MAP_TYPE() if key else serialized
        for member_key, member_shape in members.items():
            if member_key in value:
                member_shape.parent = shape
                self._serialize_structure_member(wrapper, value, member_shape, member_key)
        if key:
            self._default_serialize(serialized, wrapper, shape, key)

    serialize_structure.modelrun_patched = True  # type: ignore[attr-defined]
    serialize_structure.moto_original = original  # type: ignore[attr-defined]
    BaseJSONSerializer._serialize_type_structure = serialize_structure  # type: ignore[method-assign]


# -- 5. Step Functions' SDK clients ----------------------------------------------------------------------------------
# moto's interpreter makes a new boto3 client (``boto_client_for``) for every Task it runs: every chunk's Lambda
# invocation, every ``sqs:sendMessage`` and ``dynamodb:updateItem``, the Map's ItemReader. Making a client copies the
# session's event hooks and loads the service's model: 2 to 5 ms of CPU alone, and a tenth of the runtime process's
# CPU during a batch of the benchmark model (py-spy). The clients it makes differ only by region and service (the
# credentials it is given are unused, and its settings are fixed), and botocore's clients are safe to share between
# threads, so one is made per region and service and reused. Each module of the interpreter imported the function by
# name, so each is rebound.

_clients_lock = threading.Lock()


def _install_one_client_per_service() -> None:
    import sys

    import moto.stepfunctions.parser.asl.parse.asl_parser  # noqa: F401  (imports every module that makes clients)
    from moto.stepfunctions.parser.asl.utils import boto_client

    original = boto_client.boto_client_for
    if getattr(original, "modelrun_patched", False):
        return
    clients: dict[tuple[str, str, bool], Any] = {}

    def client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        from moto.core.models import botocore_stubber

        key = (region, service, bool(botocore_stubber.enabled))
        client = clients.get(key)
        if client is None:
            with _clients_lock:
                client = clients.get(key)
                if client is None:
                    client = clients[key] = original(region, service, state_credentials)
        return client

    client_for.modelrun_patched = True  # type: ignore[attr-defined]
    for module in list(sys.modules.values()):
        if getattr(module, "boto_client_for", None) is original:
            setattr(module, "boto_client_for", client_for)  # noqa: B010 (a module attribute rebound)


# moto's interpreter also parses a state's JSONPath (InputPath, Parameters, ResultSelector, ResultPath...) with
# jsonpath_ng at every evaluation: 0.7 ms each, some dozen per chunk a batch runs, where evaluating a parsed path takes
# microseconds. A parsed path is not changed by evaluating it, so each distinct path is parsed once.

JSON_PATHS_KEPT = 4096


def _install_json_paths_parsed_once() -> None:
    import functools

    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.utils import json_path

    for module in (json_path, result_path):
        if getattr(module.parse, "modelrun_patched", False):
            continue
        cached = functools.lru_cache(maxsize=JSON_PATHS_KEPT)(module.parse)
        cached.modelrun_patched = True  # type: ignore[attr-defined]
        setattr(module, "parse", cached)  # noqa: B010 (a module attribute rebound)

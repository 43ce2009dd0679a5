"""Static checks of every AWS::Serverless::StateMachine in template.yaml against its definition file.

Nothing runs here: the definition is read as JSON, the template with the local runtime's reader. Each rule is a
small function that takes a parsed definition and returns the problems it finds (empty when the rule holds), so the
same function is run on the real files and, to prove it can fail, on broken copies written to ``tmp_path``.

Why these rules (the project's design notes): the same definition file runs on AWS and on moto's interpreter
locally, so it may only use what both execute; every ARN, name and URL comes through ``DefinitionSubstitutions``; a
chunk that fails after its retries is parked on the dead-letter queue, never dropped; errors are matched by name,
never by message.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelrun_local.template import Template

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
ERRORS_MODULE = REPO_ROOT / "layers" / "modelrun" / "python" / "modelrun" / "errors.py"

PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")
LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
SQS_SEND = "arn:aws:states:::sqs:sendMessage"
FUNCTION_TYPES = frozenset({"AWS::Serverless::Function", "AWS::Lambda::Function"})
QUEUE_TYPE = "AWS::SQS::Queue"

# Errors every Lambda task must retry: the invoke API's throttling and its transient service failures.
LAMBDA_TRANSIENT_ERRORS = ("Lambda.TooManyRequestsException", "Lambda.ServiceException")
# A retrier may not retry for ever: beyond this, a failed chunk belongs on the dead-letter queue.
MAX_ATTEMPTS_BOUND = 10
# ASL's defaults for a retrier field that is left out.
RETRIER_DEFAULTS = {"IntervalSeconds": 1, "MaxAttempts": 3, "BackoffRate": 2.0, "JitterStrategy": "NONE"}
# Prefixes of error names that AWS itself reports (the Lambda invoke integration and the Lambda sandbox).
SERVICE_ERROR_PREFIXES = ("Lambda.", "Sandbox.")
# The States.* names Step Functions defines: a misspelt one would silently never match.
STATES_ERRORS = frozenset(
    {
        "States.ALL",
        "States.BranchFailed",
        "States.DataLimitExceeded",
        "States.ExceedToleratedFailureThreshold",
        "States.HeartbeatTimeout",
        "States.Http.Socket",
        "States.IntrinsicFailure",
        "States.ItemReaderFailed",
        "States.NoChoiceMatched",
        "States.ParameterPathFailure",
        "States.Permissions",
        "States.QueryEvaluationError",
        "States.ResultPathMatchFailure",
        "States.ResultWriterFailed",
        "States.Runtime",
        "States.TaskFailed",
        "States.Timeout",
    }
)
# Distributed Map fields moto's interpreter does not execute (DESIGN.md): the same file must run locally and on AWS.
MAP_FIELDS_MOTO_IGNORES = (
    "ItemBatcher",
    "ResultWriter",
    "ToleratedFailurePercentage",
    "ToleratedFailurePercentagePath",
    "ToleratedFailureCount",
    "ToleratedFailureCountPath",
)

# Identifiers that must come through DefinitionSubstitutions, never be written into the file.
ARN = re.compile(r"arn:aws[a-z-]*:(?P<service>[a-z0-9-]*):(?P<region>[^:\s\"]*):(?P<account>[^:\s\"]*):")
ACCOUNT_ID = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")
REGION = re.compile(
    r"\b(?:us|eu|ap|sa|ca|me|af|il|mx|cn|us-gov|us-iso|us-isob)-"
    r"(?:north|south|east|west|central|northeast|southeast|northwest|southwest)-[0-9]\b"
)
AWS_HOST = re.compile(r"\bamazonaws\.com(?:\.cn)?\b")


# ----------------------------------------------------------------------------------------------------------------
# Reading the template and the definitions
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    logical_id: str
    definition: dict[str, Any]
    substitutions: dict[str, Any]
    policies: list[Any]


def load_definition(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        definition: dict[str, Any] = json.load(handle)
    return definition


def state_machines(template: Template) -> dict[str, Machine]:
    machines = {}
    for logical_id, resource in template.of_type("AWS::Serverless::StateMachine").items():
        props = resource.get("Properties", {})
        if "DefinitionUri" in props:
            uri = props["DefinitionUri"]
            if not isinstance(uri, str):
                raise ValueError(f"{logical_id}: DefinitionUri must be a path in this repository, got {uri!r}")
            definition = load_definition(template.root / uri)
        else:
            definition = props["Definition"]
        machines[logical_id] = Machine(
            logical_id=logical_id,
            definition=definition,
            substitutions=dict(props.get("DefinitionSubstitutions", {})),
            policies=list(props.get("Policies", [])),
        )
    return machines


def referenced_resource(value: Any) -> str | None:
    """The logical id a ``!Ref X`` or ``!GetAtt X.attr`` names; None for anything else."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref" and isinstance(arg, str):
            return arg
        if key == "Fn::GetAtt":
            return str(arg[0] if isinstance(arg, list) else arg.split(".", 1)[0])
    return None


def function_substitutions(substitutions: dict[str, Any], resources: dict[str, Any]) -> dict[str, str]:
    """Placeholder -> logical id, for every substitution that names a Lambda function of the template."""
    functions = {}
    for name, value in substitutions.items():
        target = referenced_resource(value)
        if target is not None and resources.get(target, {}).get("Type") in FUNCTION_TYPES:
            functions[name] = target
    return functions


def dead_letter_queues(resources: dict[str, Any]) -> set[str]:
    """Queues that hold failures: named ``...DeadLetterQueue``, or the redrive target of another queue."""
    queues = {name for name, res in resources.items() if res.get("Type") == QUEUE_TYPE}
    found = {name for name in queues if name.endswith("DeadLetterQueue")}
    for name in queues:
        redrive = resources[name].get("Properties", {}).get("RedrivePolicy", {})
        target = referenced_resource(redrive.get("deadLetterTargetArn")) if isinstance(redrive, dict) else None
        if target in queues:
            found.add(target)
    return found


def domain_exception_names(path: Path = ERRORS_MODULE) -> set[str]:
    """Classes in errors.py that derive (within the module) from Exception."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bases = {
        node.name: {base.id for base in node.bases if isinstance(base, ast.Name)}
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }
    names: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, parents in bases.items():
            if name not in names and parents & (names | {"Exception"}):
                names.add(name)
                changed = True
    return names


# ----------------------------------------------------------------------------------------------------------------
# Walking a definition
# ----------------------------------------------------------------------------------------------------------------


def scopes(definition: dict[str, Any], where: str = "top level") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every StartAt/States block: the machine itself, each Map's item processor, each Parallel branch."""
    yield where, definition
    for name, state in definition.get("States", {}).items():
        if state.get("Type") == "Map":
            processor = state.get("ItemProcessor", state.get("Iterator"))
            if processor is not None:
                yield from scopes(processor, f"{name}.ItemProcessor")
        elif state.get("Type") == "Parallel":
            for index, branch in enumerate(state.get("Branches", [])):
                yield from scopes(branch, f"{name}.Branches[{index}]")


def all_states(definition: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for where, scope in scopes(definition):
        for name, state in scope.get("States", {}).items():
            yield where, name, state


def transitions(state: dict[str, Any]) -> list[str]:
    """The states this one can move to: Next, Default, each Choice rule's Next, each Catch's Next."""
    targets = [state[key] for key in ("Next", "Default") if key in state]
    targets += [rule["Next"] for rule in state.get("Choices", []) if "Next" in rule]
    targets += [catcher["Next"] for catcher in state.get("Catch", []) if "Next" in catcher]
    return targets


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def placeholders(value: Any) -> set[str]:
    return {match for text in strings(value) for match in PLACEHOLDER.findall(text)}


def sole_placeholder(value: Any) -> str | None:
    """``X`` when the value is exactly ``"${X}"``."""
    if isinstance(value, str):
        match = PLACEHOLDER.fullmatch(value)
        if match:
            return match.group(1)
    return None


def is_lambda_task(state: dict[str, Any], function_placeholders: set[str]) -> bool:
    if state.get("Type") != "Task":
        return False
    resource = str(state.get("Resource", ""))
    return (
        resource.startswith(LAMBDA_INVOKE)
        or sole_placeholder(resource) in function_placeholders
        or ":lambda:" in resource
        or ":function:" in resource
    )


def lambda_tasks(
    definition: dict[str, Any], function_placeholders: set[str]
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for where, name, state in all_states(definition):
        if is_lambda_task(state, function_placeholders):
            yield where, name, state


def invoked_placeholder(state: dict[str, Any]) -> str | None:
    """The placeholder naming the function a Lambda task calls (its FunctionName, or its Resource itself)."""
    return sole_placeholder(state.get("Parameters", {}).get("FunctionName")) or sole_placeholder(state.get("Resource"))


def first_matching_retrier(retriers: list[dict[str, Any]], error: str) -> dict[str, Any] | None:
    """The retrier Step Functions applies to ``error``: the first whose ErrorEquals names it or States.ALL."""
    for retrier in retriers:
        names = retrier.get("ErrorEquals", [])
        if error in names or "States.ALL" in names:
            return retrier
    return None


def retrier_value(retrier: dict[str, Any], field: str) -> Any:
    return retrier.get(field, RETRIER_DEFAULTS[field])


# ----------------------------------------------------------------------------------------------------------------
# The rules: each returns the problems it finds, empty when the definition follows it
# ----------------------------------------------------------------------------------------------------------------


def missing_substitutions(definition: dict[str, Any], substitutions: dict[str, Any]) -> list[str]:
    missing = sorted(name for name in placeholders(definition) if name not in substitutions)
    return [f"${{{name}}} has no DefinitionSubstitutions entry" for name in missing]


def unused_substitutions(definition: dict[str, Any], substitutions: dict[str, Any]) -> list[str]:
    used = placeholders(definition)
    return [
        f"substitution {name} is never used by the definition" for name in sorted(substitutions) if name not in used
    ]


def lambda_tasks_without_retry_or_catch(definition: dict[str, Any], function_placeholders: set[str]) -> list[str]:
    problems = []
    for where, name, state in lambda_tasks(definition, function_placeholders):
        problems += [
            f"{where}/{name}: Lambda task without {field}" for field in ("Retry", "Catch") if not state.get(field)
        ]
    return problems


def dangling_transitions(definition: dict[str, Any]) -> list[str]:
    problems = []
    for where, scope in scopes(definition):
        states = scope.get("States", {})
        if scope.get("StartAt") not in states:
            problems.append(f"{where}: StartAt {scope.get('StartAt')!r} is not a state of this scope")
        for name, state in states.items():
            problems += [
                f"{where}/{name}: goes to {target!r}, which is not a state of this scope"
                for target in transitions(state)
                if target not in states
            ]
    return problems


def unreachable_states(definition: dict[str, Any]) -> list[str]:
    problems = []
    for where, scope in scopes(definition):
        states = scope.get("States", {})
        seen: set[str] = set()
        pending: list[str] = [str(scope.get("StartAt"))]
        while pending:
            name = pending.pop()
            if name in states and name not in seen:
                seen.add(name)
                pending += transitions(states[name])
        problems += [f"{where}/{name}: unreachable from StartAt" for name in states if name not in seen]
    return problems


def hard_coded_identifiers(definition: dict[str, Any]) -> list[str]:
    """ARNs with a region or account, account ids, region names and AWS hosts written into the file."""
    problems = []
    for text in strings(definition):
        bare = PLACEHOLDER.sub("", text)
        for arn in ARN.finditer(bare):
            if arn.group("region") or arn.group("account"):
                problems.append(f"hard-coded ARN in {text!r}")
        if ACCOUNT_ID.search(bare):
            problems.append(f"hard-coded account id in {text!r}")
        if REGION.search(bare):
            problems.append(f"hard-coded region in {text!r}")
        if AWS_HOST.search(bare):
            problems.append(f"hard-coded AWS endpoint in {text!r}")
    return problems


def map_states(definition: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(where, name, state) for where, name, state in all_states(definition) if state.get("Type") == "Map"]


def map_problems(definition: dict[str, Any]) -> list[str]:
    """Every Map is a Distributed Map over an ItemReader with bounded concurrency, using only what moto executes."""
    problems = []
    for where, name, state in map_states(definition):
        label = f"{where}/{name}"
        config = state.get("ItemProcessor", {}).get("ProcessorConfig", {})
        if config.get("Mode") != "DISTRIBUTED":
            problems.append(f"{label}: ItemProcessor.ProcessorConfig.Mode is {config.get('Mode')!r}, not DISTRIBUTED")
        if config.get("ExecutionType") == "EXPRESS":
            problems.append(f"{label}: EXPRESS child executions (moto does not run them)")
        if "ItemReader" not in state:
            problems.append(f"{label}: no ItemReader (the items must be read from S3, not carried in the state)")
        if "MaxConcurrency" not in state and "MaxConcurrencyPath" not in state:
            problems.append(f"{label}: neither MaxConcurrency nor MaxConcurrencyPath")
        used = [field for field in MAP_FIELDS_MOTO_IGNORES if field in state]
        problems += [f"{label}: uses {field} (moto does not execute it)" for field in used]
    return problems


def map_catch_problems(definition: dict[str, Any], substitutions: dict[str, Any], queues: set[str]) -> list[str]:
    """Inside each Map iteration, every Catch parks the item with sqs:sendMessage on a dead-letter queue."""
    problems = []
    for _, map_name, state in map_states(definition):
        processor = state.get("ItemProcessor", state.get("Iterator", {}))
        inner = processor.get("States", {})
        targets = [
            (name, catcher.get("Next"))
            for name, inner_state in inner.items()
            for catcher in inner_state.get("Catch", [])
        ]
        if not targets:
            problems.append(f"{map_name}: no Catch inside the iteration, so a failed item is not parked")
        for source, target in targets:
            label = f"{map_name}/{source} catches into {target!r}"
            park = inner.get(target, {})
            if park.get("Type") != "Task" or park.get("Resource") != SQS_SEND:
                problems.append(f"{label}, which is not an {SQS_SEND} task")
                continue
            placeholder = sole_placeholder(park.get("Parameters", {}).get("QueueUrl"))
            if placeholder is None:
                problems.append(f"{label}, whose QueueUrl is not a ${{...}} substitution")
                continue
            queue = referenced_resource(substitutions.get(placeholder))
            if queue not in queues:
                problems.append(
                    f"{label}, whose queue ${{{placeholder}}} is not a dead-letter queue ({sorted(queues)})"
                )
    return problems


def lambda_retry_problems(definition: dict[str, Any], function_placeholders: set[str]) -> list[str]:
    """Throttling and service errors are retried with exponential backoff and full jitter, a bounded number of times."""
    problems = []
    for where, name, state in lambda_tasks(definition, function_placeholders):
        label = f"{where}/{name}"
        retriers = state.get("Retry", [])
        for error in LAMBDA_TRANSIENT_ERRORS:
            retrier = first_matching_retrier(retriers, error)
            if retrier is None:
                problems.append(f"{label}: {error} is not retried")
                continue
            if not retrier_value(retrier, "BackoffRate") > 1:
                problems.append(f"{label}: {error} is retried without exponential backoff (BackoffRate <= 1)")
            if retrier_value(retrier, "JitterStrategy") != "FULL":
                problems.append(f"{label}: {error} is retried without jitter (JitterStrategy is not FULL)")
        for retrier in retriers:
            attempts = retrier_value(retrier, "MaxAttempts")
            if not 1 <= attempts <= MAX_ATTEMPTS_BOUND:
                errors = retrier.get("ErrorEquals")
                problems.append(f"{label}: MaxAttempts {attempts} for {errors} is not within 1..{MAX_ATTEMPTS_BOUND}")
    return problems


def unknown_error_names(definition: dict[str, Any], domain_errors: set[str]) -> list[str]:
    """ErrorEquals names a States.* error, an AWS service error, or a domain exception class (matched by name)."""
    problems = []
    for where, name, state in all_states(definition):
        for handler in (*state.get("Retry", []), *state.get("Catch", [])):
            for error in handler.get("ErrorEquals", []):
                if error.startswith("States."):
                    known = error in STATES_ERRORS
                else:
                    known = error.startswith(SERVICE_ERROR_PREFIXES) or error in domain_errors
                if not known:
                    problems.append(
                        f"{where}/{name}: {error!r} is neither a Step Functions/Lambda error name "
                        "nor an exception class of modelrun.errors"
                    )
    return problems


def invoke_policy_problems(definition: dict[str, Any], policies: list[Any], function_subs: dict[str, str]) -> list[str]:
    """The LambdaInvokePolicy grants name exactly the functions the definition invokes."""
    problems = []
    invoked = set()
    for where, name, state in lambda_tasks(definition, set(function_subs)):
        placeholder = invoked_placeholder(state)
        if placeholder not in function_subs:
            problems.append(f"{where}/{name}: invokes a function that is not a function substitution")
        else:
            invoked.add(function_subs[placeholder])
    granted = set()
    for policy in policies:
        if isinstance(policy, dict) and "LambdaInvokePolicy" in policy:
            target = referenced_resource(policy["LambdaInvokePolicy"].get("FunctionName"))
            if target is None:
                problems.append(f"LambdaInvokePolicy {policy['LambdaInvokePolicy']!r} does not !Ref a function")
            else:
                granted.add(target)
    problems += [f"{function} is invoked but no LambdaInvokePolicy grants it" for function in sorted(invoked - granted)]
    problems += [f"{function} may be invoked but the definition never does" for function in sorted(granted - invoked)]
    return problems


# ----------------------------------------------------------------------------------------------------------------
# The template's state machines follow every rule
# ----------------------------------------------------------------------------------------------------------------

TEMPLATE = Template.load(TEMPLATE_PATH)
RESOURCES = TEMPLATE.resources
MACHINES = state_machines(TEMPLATE)
MACHINE_IDS = sorted(MACHINES)


def function_placeholders_of(machine: Machine) -> set[str]:
    return set(function_substitutions(machine.substitutions, RESOURCES))


def test_the_template_declares_a_state_machine_to_check() -> None:
    assert MACHINE_IDS, "template.yaml has no AWS::Serverless::StateMachine: the checks below would check nothing"


def test_some_state_machine_has_a_map_state_to_check() -> None:
    assert any(map_states(machine.definition) for machine in MACHINES.values())


def test_some_state_machine_has_a_lambda_task_to_check() -> None:
    assert any(
        list(lambda_tasks(machine.definition, function_placeholders_of(machine))) for machine in MACHINES.values()
    )


@pytest.mark.parametrize("logical_id", MACHINE_IDS)
def test_every_placeholder_in_the_definition_has_a_substitution(logical_id: str) -> None:
    machine = MACHINES[logical_id]
    assert missing_substitutions(machine.definition, machine.substitutions) == []


@pytest.mark.parametrize("logical_id", MACHINE_IDS)
def test_every_substitution_is_used_by_the_definition(logical_id: str) -> None:
    machine = MACHINES[logical_id]
    assert unused_substitutions(machine.definition, machine.substitutions) == []


@pytest.mark.parametrize("logical_id", MACHINE_IDS)
def test_every_lambda_task_has_retry_and_catch(logical_id: str) -> None:
    machine = MACHINES[logical_id]
    assert lambda_tasks_without_retry_or_catch(machine.definition, function_placeholders_of(machine)) == []


@pytest.mark.parametrize("logical_id", MACHINE_IDS)
def test_every_start_and_transition_names_a_state_of_its_own_scope(logical_id: str) -> None:
    assert dangling_transitions(MACHINES[logical_id].definition) == []


@pytest.mark.parametrize("logical_id", MACHINE_IDS)
def test_every_state_is_reachable_from_start_at(logical_id: str) -> None:
    assert unreachable_states(MACHINES[logical_id].definition) == []


@pytest.mark.parametrize("logical_id", MACHINE_IDS)
def test_the_definition_hard_codes_no_arn_account_region_or_endpoint(logical_id: str) -> None:
    assert hard_coded_identifiers(MACHINES[logical_id].definition) == []


@pytest.mark.parametrize("logical_id", MACHINE_IDS)
def test_every_map_is_a_distributed_map_that_moto_also_runs(logical_id: str) -> None:
    assert map_problems(MACHINES[logical_id].definition) == []


@pytest.mark.parametrize("logical_id", MACHINE_IDS)
def test_a_failure_inside_a_map_iteration_is_parked_on_the_dead_letter_queue(logical_id: str) -> None:
    machine = MACHINES[logical_id]
    assert map_catch_problems(machine.definition, machine.substitutions, dead_letter_queues(RESOURCES)) == []


@pytest.mark.parametrize("logical_id", MACHINE_IDS)
def test_lambda_tasks_retry_throttling_and_service_errors_with_backoff_and_jitter(logical_id: str) -> None:
    machine = MACHINES[logical_id]
    assert lambda_retry_problems(machine.definition, function_placeholders_of(machine)) == []


@pytest.mark.parametrize("logical_id", MACHINE_IDS)
def test_errors_are_matched_by_aws_error_names_or_domain_exception_classes(logical_id: str) -> None:
    assert unknown_error_names(MACHINES[logical_id].definition, domain_exception_names()) == []


@pytest.mark.parametrize("logical_id", MACHINE_IDS)
def test_the_state_machine_may_invoke_exactly_the_functions_it_invokes(logical_id: str) -> None:
    machine = MACHINES[logical_id]
    function_subs = function_substitutions(machine.substitutions, RESOURCES)
    assert invoke_policy_problems(machine.definition, machine.policies, function_subs) == []


# ----------------------------------------------------------------------------------------------------------------
# Each rule reports a definition that breaks it (a broken copy of a real definition, written to tmp_path)
# ----------------------------------------------------------------------------------------------------------------


def machine_with_a_map() -> Machine:
    """The state machine the broken copies start from (checked above to exist)."""
    for logical_id in MACHINE_IDS:
        if map_states(MACHINES[logical_id].definition):
            return MACHINES[logical_id]
    raise LookupError("no state machine of template.yaml has a Map state to break copies of")


MAP_MACHINE = machine_with_a_map()
MAP_FUNCTIONS = function_substitutions(MAP_MACHINE.substitutions, RESOURCES)


def broken_copy(tmp_path: Path, breaking: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The Map machine's definition, changed by ``breaking``, written to a file and read back as the tests read it."""
    definition = copy.deepcopy(MAP_MACHINE.definition)
    breaking(definition)
    path = tmp_path / "broken.asl.json"
    path.write_text(json.dumps(definition, indent=2), encoding="utf-8")
    return load_definition(path)


def the_map(definition: dict[str, Any]) -> dict[str, Any]:
    return map_states(definition)[0][2]


def iteration_states(definition: dict[str, Any]) -> dict[str, Any]:
    states: dict[str, Any] = the_map(definition)["ItemProcessor"]["States"]
    return states


def first_lambda_task(definition: dict[str, Any], inside_map: bool = False) -> dict[str, Any]:
    for where, _, state in lambda_tasks(definition, set(MAP_FUNCTIONS)):
        if (where != "top level") == inside_map:
            return state
    raise AssertionError("no such Lambda task in the definition")


def the_park_state(definition: dict[str, Any]) -> dict[str, Any]:
    states = iteration_states(definition)
    target = next(catcher["Next"] for state in states.values() for catcher in state.get("Catch", []))
    park: dict[str, Any] = states[target]
    return park


def test_a_placeholder_without_substitution_is_reported(tmp_path: Path) -> None:
    # Given a definition that uses a placeholder the template does not substitute
    definition = broken_copy(tmp_path, lambda d: d.update(Comment="reads ${ResultsBucketName}"))
    # When the substitutions are checked, then that placeholder is named
    assert missing_substitutions(definition, MAP_MACHINE.substitutions) == [
        "${ResultsBucketName} has no DefinitionSubstitutions entry"
    ]


def test_a_substitution_the_definition_no_longer_uses_is_reported(tmp_path: Path) -> None:
    # Given a definition whose dead-letter queue URL was written in by hand
    definition = broken_copy(tmp_path, lambda d: the_park_state(d)["Parameters"].update(QueueUrl="queue"))
    # When the substitutions are checked, then the unused one is named
    (placeholder,) = {sole_placeholder(the_park_state(MAP_MACHINE.definition)["Parameters"]["QueueUrl"])}
    assert unused_substitutions(definition, MAP_MACHINE.substitutions) == [
        f"substitution {placeholder} is never used by the definition"
    ]


@pytest.mark.parametrize("field", ["Retry", "Catch"])
def test_a_lambda_task_without_retry_or_catch_is_reported(tmp_path: Path, field: str) -> None:
    # Given a Lambda task that lost its Retry (or Catch)
    definition = broken_copy(tmp_path, lambda d: first_lambda_task(d, inside_map=True).pop(field))
    # When Lambda tasks are checked, then that task is reported for that field
    problems = lambda_tasks_without_retry_or_catch(definition, set(MAP_FUNCTIONS))
    assert len(problems) == 1
    assert problems[0].endswith(f"Lambda task without {field}")


def test_a_task_whose_resource_is_a_function_placeholder_counts_as_a_lambda_task(tmp_path: Path) -> None:
    # Given a Task that calls a function through its Resource (the short form), with no Retry
    def short_form(definition: dict[str, Any]) -> None:
        task = first_lambda_task(definition)
        task["Resource"] = task["Parameters"].pop("FunctionName")
        task.pop("Retry")

    definition = broken_copy(tmp_path, short_form)
    # When Lambda tasks are checked, then it is reported like a lambda:invoke task
    problems = lambda_tasks_without_retry_or_catch(definition, set(MAP_FUNCTIONS))
    assert len(problems) == 1
    assert problems[0].endswith("Lambda task without Retry")


def test_a_missing_start_state_is_reported(tmp_path: Path) -> None:
    # Given a definition that starts at a state it does not have
    definition = broken_copy(tmp_path, lambda d: d.update(StartAt="Begin"))
    # When transitions are checked, then the StartAt is reported
    assert dangling_transitions(definition) == ["top level: StartAt 'Begin' is not a state of this scope"]


def test_a_catch_into_a_missing_state_is_reported(tmp_path: Path) -> None:
    # Given a Catch whose Next names no state
    definition = broken_copy(tmp_path, lambda d: first_lambda_task(d)["Catch"][0].update(Next="Nowhere"))
    # When transitions are checked, then that target is reported
    problems = dangling_transitions(definition)
    assert len(problems) == 1
    assert "goes to 'Nowhere'" in problems[0]


def test_a_transition_into_another_scope_is_reported(tmp_path: Path) -> None:
    # Given a Map iteration state that jumps to a state of the enclosing machine
    top_level_state = next(iter(MAP_MACHINE.definition["States"]))
    definition = broken_copy(
        tmp_path, lambda d: first_lambda_task(d, inside_map=True)["Catch"][0].update(Next=top_level_state)
    )
    # When transitions are checked, then the jump is reported: Next only moves within its own scope
    problems = dangling_transitions(definition)
    assert len(problems) == 1
    assert f"goes to {top_level_state!r}, which is not a state of this scope" in problems[0]


def test_a_state_nothing_moves_to_is_reported(tmp_path: Path) -> None:
    # Given a state that no StartAt, Next, Default or Catch leads to
    definition = broken_copy(tmp_path, lambda d: d["States"].update(Orphan={"Type": "Succeed"}))
    # When reachability is checked, then the state is reported
    assert unreachable_states(definition) == ["top level/Orphan: unreachable from StartAt"]


@pytest.mark.parametrize(
    ("function_name", "what"),
    [
        ("arn:aws:lambda:us-east-1:123456789012:function:predict", "ARN"),
        ("arn:aws:lambda:${Region}:123456789012:function:predict", "account id"),
        ("modelrun-predict-eu-west-1", "region"),
        ("https://sqs.amazonaws.com/queue", "AWS endpoint"),
    ],
)
def test_a_hard_coded_identifier_is_reported(tmp_path: Path, function_name: str, what: str) -> None:
    # Given a function name written into the definition instead of substituted
    definition = broken_copy(tmp_path, lambda d: first_lambda_task(d)["Parameters"].update(FunctionName=function_name))
    # When the definition is scanned, then the identifier is reported
    assert f"hard-coded {what} in {function_name!r}" in hard_coded_identifiers(definition)


def test_service_integration_arns_are_not_hard_coded_identifiers(tmp_path: Path) -> None:
    # Given the definition as it is (lambda:invoke, sqs:sendMessage, s3:getObject integrations)
    definition = broken_copy(tmp_path, lambda d: None)
    # When it is scanned, then the integration ARNs (no region, no account) are accepted
    assert hard_coded_identifiers(definition) == []


@pytest.mark.parametrize(
    ("breaking", "reported"),
    [
        (lambda m: m["ItemProcessor"]["ProcessorConfig"].update(Mode="INLINE"), "not DISTRIBUTED"),
        (lambda m: m["ItemProcessor"]["ProcessorConfig"].update(ExecutionType="EXPRESS"), "EXPRESS child executions"),
        (lambda m: m.pop("ItemReader"), "no ItemReader"),
        (lambda m: (m.pop("MaxConcurrency", None), m.pop("MaxConcurrencyPath", None)), "neither MaxConcurrency"),
        (lambda m: m.update(ItemBatcher={"MaxItemsPerBatch": 10}), "uses ItemBatcher"),
        (lambda m: m.update(ResultWriter={"Resource": "arn:aws:states:::s3:putObject"}), "uses ResultWriter"),
        (lambda m: m.update(ToleratedFailurePercentage=5), "uses ToleratedFailurePercentage"),
        (lambda m: m.update(ToleratedFailureCount=5), "uses ToleratedFailureCount"),
    ],
    ids=["inline", "express", "no-reader", "unbounded", "batcher", "result-writer", "tolerated-%", "tolerated-count"],
)
def test_a_map_moto_would_not_run_like_aws_is_reported(
    tmp_path: Path, breaking: Callable[[dict[str, Any]], Any], reported: str
) -> None:
    # Given a Map changed in one way
    definition = broken_copy(tmp_path, lambda d: breaking(the_map(d)))
    # When Maps are checked, then exactly that change is reported
    problems = map_problems(definition)
    assert len(problems) == 1
    assert reported in problems[0]


def test_a_catch_inside_the_map_that_does_not_send_to_sqs_is_reported(tmp_path: Path) -> None:
    # Given a Map iteration whose catcher ends in a Fail state instead of parking the chunk
    def fail_instead(definition: dict[str, Any]) -> None:
        park = the_park_state(definition)
        park.clear()
        park.update(Type="Fail", Error="ChunkFailed")

    definition = broken_copy(tmp_path, fail_instead)
    # When the Map's catchers are checked, then the target is reported
    problems = map_catch_problems(definition, MAP_MACHINE.substitutions, dead_letter_queues(RESOURCES))
    assert len(problems) == 1
    assert f"which is not an {SQS_SEND} task" in problems[0]


def test_a_map_iteration_without_catch_is_reported(tmp_path: Path) -> None:
    # Given a Map iteration where no state catches
    def no_catch(definition: dict[str, Any]) -> None:
        for state in iteration_states(definition).values():
            state.pop("Catch", None)

    definition = broken_copy(tmp_path, no_catch)
    # When the Map's catchers are checked, then the missing parking is reported
    problems = map_catch_problems(definition, MAP_MACHINE.substitutions, dead_letter_queues(RESOURCES))
    assert len(problems) == 1
    assert "no Catch inside the iteration" in problems[0]


def test_parking_on_a_queue_url_written_by_hand_is_reported(tmp_path: Path) -> None:
    # Given a parking task whose QueueUrl is literal text
    definition = broken_copy(tmp_path, lambda d: the_park_state(d)["Parameters"].update(QueueUrl="dlq"))
    # When the Map's catchers are checked, then the QueueUrl is reported
    problems = map_catch_problems(definition, MAP_MACHINE.substitutions, dead_letter_queues(RESOURCES))
    assert len(problems) == 1
    assert "QueueUrl is not a ${...} substitution" in problems[0]


def test_parking_on_a_queue_that_is_not_a_dead_letter_queue_is_reported(tmp_path: Path) -> None:
    # Given the parking task's substitution pointing at some other queue of the template
    definition = broken_copy(tmp_path, lambda d: None)
    placeholder = sole_placeholder(the_park_state(definition)["Parameters"]["QueueUrl"])
    assert placeholder is not None
    substitutions = {**MAP_MACHINE.substitutions, placeholder: {"Ref": "WorkQueue"}}
    resources = {**RESOURCES, "WorkQueue": {"Type": QUEUE_TYPE, "Properties": {}}}
    # When the Map's catchers are checked, then the queue is reported
    problems = map_catch_problems(definition, substitutions, dead_letter_queues(resources))
    assert len(problems) == 1
    assert "is not a dead-letter queue" in problems[0]


def test_a_queue_another_queue_redrives_to_is_a_dead_letter_queue() -> None:
    # Given a queue whose RedrivePolicy targets a queue not named ...DeadLetterQueue
    resources = {
        "Work": {
            "Type": QUEUE_TYPE,
            "Properties": {"RedrivePolicy": {"deadLetterTargetArn": {"Fn::GetAtt": ["Parking", "Arn"]}}},
        },
        "Parking": {"Type": QUEUE_TYPE, "Properties": {}},
    }
    # When dead-letter queues are found, then the redrive target is one and the source is not
    assert dead_letter_queues(resources) == {"Parking"}


@pytest.mark.parametrize(
    ("change", "reported"),
    [
        ({"JitterStrategy": "NONE"}, "without jitter"),
        ({"BackoffRate": 1}, "without exponential backoff"),
        ({"MaxAttempts": 0}, "MaxAttempts 0"),
        ({"MaxAttempts": 1000}, "MaxAttempts 1000"),
        ({"ErrorEquals": ["TransientFailure"]}, "is not retried"),
    ],
    ids=["no-jitter", "constant-backoff", "never", "unbounded", "not-covered"],
)
def test_a_lambda_retry_that_does_not_back_off_on_throttling_is_reported(
    tmp_path: Path, change: dict[str, Any], reported: str
) -> None:
    # Given a Lambda task with a single retrier changed in one way
    def breaking(definition: dict[str, Any]) -> None:
        task = first_lambda_task(definition, inside_map=True)
        task["Retry"] = [{**task["Retry"][0], **change}]

    definition = broken_copy(tmp_path, breaking)
    # When Lambda retries are checked, then the change is reported
    problems = lambda_retry_problems(definition, set(MAP_FUNCTIONS))
    assert problems
    assert all(reported in problem for problem in problems)


def test_an_earlier_retrier_without_jitter_shadows_a_later_one_that_has_it(tmp_path: Path) -> None:
    # Given a throttling retrier without jitter placed before a good catch-all retrier
    def breaking(definition: dict[str, Any]) -> None:
        retriers = first_lambda_task(definition, inside_map=True)["Retry"]
        retriers.insert(0, {"ErrorEquals": ["Lambda.TooManyRequestsException"], "MaxAttempts": 2, "BackoffRate": 2})

    definition = broken_copy(tmp_path, breaking)
    # When Lambda retries are checked, then throttling is reported: Step Functions uses the first matching retrier
    problems = lambda_retry_problems(definition, set(MAP_FUNCTIONS))
    assert len(problems) == 1
    assert problems[0].endswith(
        "Lambda.TooManyRequestsException is retried without jitter (JitterStrategy is not FULL)"
    )


@pytest.mark.parametrize("error", ["ValueError", "invalid_image", "Image could not be decoded", "States.Timedout"])
def test_an_error_name_that_is_no_aws_error_or_domain_exception_is_reported(tmp_path: Path, error: str) -> None:
    # Given a catcher matching a name that no AWS error and no modelrun exception carries
    definition = broken_copy(tmp_path, lambda d: first_lambda_task(d)["Catch"][0].update(ErrorEquals=[error]))
    # When error names are checked, then that name is reported
    problems = unknown_error_names(definition, domain_exception_names())
    assert len(problems) == 1
    assert repr(error) in problems[0]


def test_domain_exception_names_come_from_the_errors_module() -> None:
    # Given errors.py, when its exception classes are read, then a base class and a subclass are both there
    names = domain_exception_names()
    assert {"ModelrunError", "TransientFailure", "InvalidJson"} <= names


def test_a_function_the_definition_invokes_without_a_grant_is_reported(tmp_path: Path) -> None:
    # Given the state machine's policies without the grant for the function the Map iteration invokes
    definition = broken_copy(tmp_path, lambda d: None)
    invoked = MAP_FUNCTIONS[invoked_placeholder(first_lambda_task(definition, inside_map=True)) or ""]
    policies = [p for p in MAP_MACHINE.policies if p != {"LambdaInvokePolicy": {"FunctionName": {"Ref": invoked}}}]
    # When the grants are compared with the invocations, then the function is reported
    assert invoke_policy_problems(definition, policies, MAP_FUNCTIONS) == [
        f"{invoked} is invoked but no LambdaInvokePolicy grants it"
    ]


def test_a_grant_for_a_function_the_definition_never_invokes_is_reported(tmp_path: Path) -> None:
    # Given the state machine's policies plus a grant on a function the definition does not call
    definition = broken_copy(tmp_path, lambda d: None)
    policies = [*MAP_MACHINE.policies, {"LambdaInvokePolicy": {"FunctionName": {"Ref": "PredictFunction"}}}]
    # When the grants are compared with the invocations, then the extra grant is reported
    assert invoke_policy_problems(definition, policies, MAP_FUNCTIONS) == [
        "PredictFunction may be invoked but the definition never does"
    ]

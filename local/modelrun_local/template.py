"""Reading template.yaml: CloudFormation YAML tags, Globals, parameters and the intrinsic functions we use."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"

_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in (
            "GetAtt",
            "Sub",
            "If",
            "Equals",
            "Not",
            "And",
            "Or",
            "Join",
            "Select",
            "Split",
            "FindInMap",
            "Base64",
            "ImportValue",
            "GetAZs",
            "Cidr",
            "ToJsonString",
        )
    },
}


class TemplateLoader(yaml.SafeLoader):
    """SafeLoader that turns ``!Ref x`` into ``{"Ref": "x"}`` and ``!GetAtt a.b`` into ``{"Fn::GetAtt": [a, b]}``."""


def _construct(tag: str, full: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if tag == "GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {full: value}

    return construct


for _tag, _full in _TAGS.items():
    TemplateLoader.add_constructor(f"!{_tag}", _construct(_tag, _full))


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=TemplateLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict) or "Resources" not in data:
        raise ValueError(f"{path} is not a CloudFormation template (no Resources)")
    return data


NO_VALUE: Any = object()
"""What ``!Ref AWS::NoValue`` evaluates to: the property or list item that holds it is dropped."""


class UnsupportedIntrinsic(ValueError):
    """The template uses an intrinsic function the local runtime does not evaluate."""


@dataclass
class Resolver:
    """Evaluates intrinsic functions against the physical names the local stack gave each resource."""

    parameters: dict[str, Any]
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    conditions: dict[str, bool] = field(default_factory=dict)
    region: str = "us-east-1"
    account_id: str = "123456789012"
    stack_name: str = "modelrun-local"

    def pseudo(self) -> dict[str, str]:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/local",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        pseudo = self.pseudo()
        if name in pseudo:
            return pseudo[name]
        if name in self.refs:
            return self.refs[name]
        raise KeyError(f"!Ref {name}: no parameter or created resource of that name")

    def get_att(self, name: str, attribute: str) -> str:
        try:
            return self.attributes[(name, attribute)]
        except KeyError:
            raise KeyError(f"!GetAtt {name}.{attribute}: the local stack does not provide it") from None

    def sub(self, template: str, variables: Mapping[str, Any] | None = None) -> str:
        local_vars = dict(variables or {})

        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token.startswith("!"):
                return "${" + token[1:] + "}"
            if token in local_vars:
                return str(self.resolve(local_vars[token]))
            if "." in token and not token.startswith("AWS::"):
                resource, attribute = token.split(".", 1)
                return self.get_att(resource, attribute)
            return str(self.ref(token))

        return re.sub(r"\$\{([^}]+)\}", replace, template)

    def resolve(self, value: Any) -> Any:
        """Evaluate every intrinsic in ``value`` (dicts and lists recursively)."""
        if isinstance(value, list):
            return [item for item in (self.resolve(entry) for entry in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                resource, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(resource, attribute)
            if key == "Fn::Sub":
                if isinstance(arg, list):
                    return self.sub(arg[0], arg[1])
                return self.sub(arg)
            if key == "Fn::Join":
                return str(arg[0]).join(str(self.resolve(part)) for part in self.resolve(arg[1]))
            if key == "Fn::If":
                name, when_true, when_false = arg
                return self.resolve(when_true if self.conditions.get(name, False) else when_false)
            if key == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
            if key == "Fn::Split":
                return str(self.resolve(arg[1])).split(arg[0])
            if key.startswith("Fn::") or key == "Condition":
                raise UnsupportedIntrinsic(f"{key} is not evaluated by the local runtime")
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def condition(self, value: Any) -> bool:
        """Evaluate a Conditions entry (Equals/Not/And/Or/Condition)."""
        if isinstance(value, dict) and len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Fn::Equals":
                left, right = (self.resolve(item) for item in arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self.condition(arg[0])
            if key == "Fn::And":
                return all(self.condition(item) for item in arg)
            if key == "Fn::Or":
                return any(self.condition(item) for item in arg)
            if key == "Condition":
                return self.conditions[arg]
        raise UnsupportedIntrinsic(f"condition {value!r} is not evaluated by the local runtime")


def references(value: Any) -> set[str]:
    """The logical ids and parameters a piece of template refers to (Ref, GetAtt, ${...} in Sub; a Sub's own
    variables are not references)."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= references(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::GetAtt":
                found.add(item[0] if isinstance(item, list) else str(item).split(".", 1)[0])
            elif key == "Fn::Sub":
                text, variables = (item[0], item[1]) if isinstance(item, list) else (item, {})
                names = {name.split(".", 1)[0] for name in re.findall(r"\$\{([^!}][^}]*)\}", str(text))}
                found |= (names - set(variables)) | references(variables)
            else:
                found |= references(item)
    return found


def creation_order(resources: dict[str, dict[str, Any]]) -> list[str]:
    """Logical ids ordered so that each comes after what it refers to, as CloudFormation creates them."""
    depends = {
        name: {ref for ref in references(res.get("Properties", {})) | set(_depends_on(res)) if ref in resources}
        for name, res in resources.items()
    }
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered:
            return
        if name in visiting:
            raise ValueError(f"circular reference through {name}")
        visiting.add(name)
        for dependency in sorted(depends[name]):
            visit(dependency)
        visiting.discard(name)
        ordered.append(name)

    for name in resources:
        visit(name)
    return ordered


def _depends_on(resource: dict[str, Any]) -> list[str]:
    value = resource.get("DependsOn", [])
    return [value] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class ApiRoute:
    function: str
    method: str
    path: str
    api: str
    api_key_required: bool


@dataclass
class Template:
    """The template with Globals merged into each function and parameters resolved to their values."""

    path: Path
    data: dict[str, Any]
    parameters: dict[str, Any]

    @classmethod
    def load(cls, path: Path = DEFAULT_TEMPLATE, overrides: Mapping[str, str] | None = None) -> Template:
        data = load_yaml(path)
        parameters: dict[str, Any] = {}
        for name, definition in data.get("Parameters", {}).items():
            parameters[name] = definition.get("Default")
        for name, value in (overrides or {}).items():
            if name not in parameters:
                raise KeyError(f"parameter override {name!r}: template.yaml has no such parameter")
            parameters[name] = value
        missing = sorted(name for name, value in parameters.items() if value is None)
        if missing:
            raise ValueError(f"parameters without default need a value: {', '.join(missing)}")
        return cls(path=path, data=data, parameters=parameters)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.data["Resources"]
        return resources

    def of_type(self, *types: str) -> dict[str, dict[str, Any]]:
        return {name: res for name, res in self.resources.items() if res.get("Type") in types}

    def function_properties(self, name: str) -> dict[str, Any]:
        """A function's properties with Globals.Function merged in, as SAM does (maps merge, lists add)."""
        merged = copy.deepcopy(self.data.get("Globals", {}).get("Function", {}))
        own = copy.deepcopy(self.resources[name].get("Properties", {}))
        for key, value in own.items():
            if key == "Environment":
                variables = merged.get("Environment", {}).get("Variables", {})
                variables.update(value.get("Variables", {}))
                merged["Environment"] = {"Variables": variables}
            elif key == "Layers":
                merged["Layers"] = merged.get("Layers", []) + value
            else:
                merged[key] = value
        return merged

    def functions(self) -> dict[str, dict[str, Any]]:
        return {name: self.function_properties(name) for name in self.of_type("AWS::Serverless::Function")}

    def api_routes(self) -> list[ApiRoute]:
        """Every ``Api`` event of every function, with the API key rule of its API."""
        routes = []
        for function, props in self.functions().items():
            for event in props.get("Events", {}).values():
                if event.get("Type") != "Api":
                    continue
                event_props = event["Properties"]
                api = event_props.get("RestApiId", {}).get("Ref", "ServerlessRestApi")
                required = self.api_auth(api).get("ApiKeyRequired", False)
                required = event_props.get("Auth", {}).get("ApiKeyRequired", required)
                routes.append(
                    ApiRoute(
                        function=function,
                        method=event_props["Method"].upper(),
                        path=event_props["Path"],
                        api=api,
                        api_key_required=bool(required),
                    )
                )
        return routes

    def api_auth(self, api: str) -> dict[str, Any]:
        auth: dict[str, Any] = self.resources.get(api, {}).get("Properties", {}).get("Auth", {})
        return auth

    def binary_media_types(self, api: str) -> list[str]:
        types = self.resources.get(api, {}).get("Properties", {}).get("BinaryMediaTypes", [])
        return [str(item).replace("~1", "/") for item in types]

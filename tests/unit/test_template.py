"""template.yaml and the code agree: static checks over every AWS::Serverless::Function, so a function added to
the template is covered without touching this file.

Handler code is read with ``ast`` (never imported) except in the one test that imports each handler for real, with
the environment the template gives it, on AWS services mocked by moto.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from modelrun_local.template import Resolver, Template, references
from tests.samtransform import transformed_template

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
LAYER_ROOT = REPO_ROOT / "layers" / "modelrun"
LAYER_PYTHON = LAYER_ROOT / "python"
LAYER_PACKAGE = "modelrun"
LAYER_REQUIREMENTS = LAYER_ROOT / "requirements.txt"
CONSTRAINTS = REPO_ROOT / "requirements" / "constraints.txt"

# Lambda mounts layer content under /opt; the local runtime maps each mount to a folder of this repository.
MOUNTS = {"/opt/models": REPO_ROOT / "models"}
# Set by the Lambda runtime itself: code may require them without the template setting them.
RUNTIME_SET_PREFIXES = ("AWS_", "LAMBDA_")
# Read by libraries (Powertools, the AWS SDK) rather than by our code: the template may set them freely.
LIBRARY_READ_PREFIXES = ("POWERTOOLS_", "AWS_")
# The AWS SDK the Lambda python3.12 runtime ships; the layer leaves it out (see layers/modelrun/requirements.txt).
RUNTIME_DISTRIBUTIONS = frozenset({"boto3", "botocore", "s3transfer", "jmespath", "urllib3", "python-dateutil", "six"})
# The platform the layer is built for, to evaluate dependency markers (extra "" = no extras: pip runs --no-deps).
LAMBDA_MARKER_ENVIRONMENT = {
    "extra": "",
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
# Helpers from modelrun.config that read a variable named by their first argument.
REQUIRED_ENV_HELPERS = frozenset({"require_env"})
OPTIONAL_ENV_HELPERS = frozenset({"int_env"})
ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")

TEMPLATE = Template.load(TEMPLATE_PATH)
FUNCTIONS = TEMPLATE.functions()
FUNCTION_IDS = sorted(FUNCTIONS)


# ----------------------------------------------------------------------------------------------------------------
# Reading the code: which files a handler loads, which variables they read, which modules they import
# ----------------------------------------------------------------------------------------------------------------


def _dotted(node: ast.expr) -> str | None:
    """The dotted name an expression spells (``os.environ``, ``environ``); None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _literal(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _is_type_checking(node: ast.If) -> bool:
    return _dotted(node.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run, i.e. all but the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


@dataclass
class EnvReads:
    """Variable names read by literal name. Required reads fail without the variable; optional ones default."""

    required: set[str] = field(default_factory=set)
    optional: set[str] = field(default_factory=set)

    @property
    def names(self) -> set[str]:
        return self.required | self.optional

    def update(self, other: EnvReads) -> None:
        self.required |= other.required
        self.optional |= other.optional


def env_reads(tree: ast.AST) -> EnvReads:
    """``require_env("X")``, ``os.environ["X"]`` (required); ``int_env("X")``, ``os.environ.get("X")``,
    ``os.getenv("X")`` (optional); and a call that passes the environment along with literal names
    (``_positive_int(env, "X", 1)``, optional), where ``env`` may be a name bound to an expression using
    ``os.environ``."""
    nodes = list(_runtime_nodes(tree))
    environ = {"os.environ"}
    getenv = {"os.getenv"}
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name == "environ":
                    environ.add(alias.asname or alias.name)
                elif alias.name == "getenv":
                    getenv.add(alias.asname or alias.name)

    def mentions_environ(expr: ast.expr) -> bool:
        return any(isinstance(sub, ast.expr) and _dotted(sub) in environ for sub in ast.walk(expr))

    for node in nodes:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None and mentions_environ(node.value):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            environ.update(target.id for target in targets if isinstance(target, ast.Name))

    reads = EnvReads()
    for node in nodes:
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _dotted(node.value) in environ:
            reads.required.update(_names([node.slice]))
        elif isinstance(node, ast.Call):
            reads.update(_call_reads(node, environ, getenv))
    return reads


def _names(nodes: list[ast.expr]) -> set[str]:
    return {value for value in map(_literal, nodes) if value is not None}


def _call_reads(call: ast.Call, environ: set[str], getenv: set[str]) -> EnvReads:
    callee = _dotted(call.func) or ""
    first = _names(call.args[:1])
    environ_get = (
        isinstance(call.func, ast.Attribute) and call.func.attr == "get" and _dotted(call.func.value) in environ
    )
    if callee.rpartition(".")[2] in REQUIRED_ENV_HELPERS:
        return EnvReads(required=first)
    if callee.rpartition(".")[2] in OPTIONAL_ENV_HELPERS or callee in getenv or environ_get:
        return EnvReads(optional=first)
    arguments = [*call.args, *(keyword.value for keyword in call.keywords)]
    if any(_dotted(argument) in environ for argument in arguments):
        return EnvReads(optional={name for name in _names(arguments) if ENV_NAME.fullmatch(name)})
    return EnvReads()


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@dataclass
class CodeScan:
    """What loading one function's handler runs: its files, the layer modules it lacks, other top-level imports."""

    files: list[Path] = field(default_factory=list)
    missing_layer_modules: set[str] = field(default_factory=set)
    external_imports: set[str] = field(default_factory=set)

    @functools.cached_property
    def env(self) -> EnvReads:
        reads = EnvReads()
        for path in self.files:
            reads.update(env_reads(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))))
        return reads


def _imported_modules(tree: ast.AST, package: str | None) -> dict[str, bool]:
    """Absolute names of the modules import statements load, each mapped to whether it must exist:
    ``from a import b`` loads ``a`` and, if there is such a module, ``a.b`` (otherwise ``b`` is an attribute)."""
    modules: dict[str, bool] = {}
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            modules.update((alias.name, True) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if package is None:
                    continue
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            modules[module] = True
            for alias in node.names:
                if alias.name != "*":
                    modules.setdefault(f"{module}.{alias.name}", False)
    return modules


def scan_function(props: dict[str, Any]) -> CodeScan:
    """Follow the handler's imports through its own folder and the layer package (transitively)."""
    code_dir = REPO_ROOT / props["CodeUri"]
    scan = CodeScan()
    pending: list[tuple[Path, str]] = [(code_dir, props["Handler"].rpartition(".")[0])]
    seen: set[tuple[Path, str]] = set()
    while pending:
        root, module = pending.pop()
        if (root, module) in seen:
            continue
        seen.add((root, module))
        path = _module_file(root, module)
        if path is None:
            continue
        scan.files.append(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0] or None
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for imported, required in _imported_modules(tree, package).items():
            top = imported.split(".")[0]
            if top == LAYER_PACKAGE:
                # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
                parts = imported.split(".")
                pending.extend((LAYER_PYTHON, ".".join(parts[:depth])) for depth in range(1, len(parts)))
                if _module_file(LAYER_PYTHON, imported) is not None:
                    pending.append((LAYER_PYTHON, imported))
                elif required:
                    scan.missing_layer_modules.add(imported)
            elif _module_file(code_dir, top) is not None:
                pending.append((code_dir, imported))
            else:
                scan.external_imports.add(top)
    return scan


@functools.cache
def function_scan(logical_id: str) -> CodeScan:
    return scan_function(FUNCTIONS[logical_id])


def own_variables(logical_id: str) -> dict[str, Any]:
    variables: dict[str, Any] = (
        TEMPLATE.resources[logical_id].get("Properties", {}).get("Environment", {}).get("Variables", {})
    )
    return variables


def global_variables() -> dict[str, Any]:
    variables: dict[str, Any] = (
        TEMPLATE.data.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    return variables


def template_variables(logical_id: str) -> dict[str, Any]:
    variables: dict[str, Any] = FUNCTIONS[logical_id].get("Environment", {}).get("Variables", {})
    return variables


def read_by_code(name: str, reads: set[str]) -> bool:
    return name in reads or name.startswith(LIBRARY_READ_PREFIXES)


# ----------------------------------------------------------------------------------------------------------------
# 1. Code locations
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("logical_id", FUNCTION_IDS)
def test_every_function_code_uri_is_a_folder_in_the_repository(logical_id: str) -> None:
    # Given a function in the template
    code_uri = FUNCTIONS[logical_id].get("CodeUri")

    # When its CodeUri is looked up in the repository
    folder = REPO_ROOT / str(code_uri)

    # Then it is a local folder
    assert isinstance(code_uri, str), f"{logical_id}: CodeUri must be a local folder, got {code_uri!r}"
    assert folder.is_dir(), f"{logical_id}: CodeUri {code_uri} is not a folder of the repository"


@pytest.mark.parametrize("logical_id", FUNCTION_IDS)
def test_every_function_handler_file_defines_the_handler_function(logical_id: str) -> None:
    # Given a function's Handler, "<module path>.<function>"
    props = FUNCTIONS[logical_id]
    module, _, name = props["Handler"].rpartition(".")
    path = _module_file(REPO_ROOT / props["CodeUri"], module)
    assert path is not None, f"{logical_id}: no file for handler module {module!r} in {props['CodeUri']}"

    # When the file is parsed
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    defined |= {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    # Then it defines the handler at module level
    assert name in defined, f"{logical_id}: {path.relative_to(REPO_ROOT)} defines no {name}()"


# ----------------------------------------------------------------------------------------------------------------
# 2. Environment variables: what the code reads and what the template sets
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("logical_id", FUNCTION_IDS)
def test_every_layer_module_a_handler_imports_exists_in_the_layer(logical_id: str) -> None:
    # Given the modules a handler imports, followed through the layer package
    scan = function_scan(logical_id)

    # When those of the layer package are looked up in layers/modelrun/python
    missing = sorted(scan.missing_layer_modules)

    # Then every one of them exists
    assert not missing, f"{logical_id} imports layer modules that do not exist: {', '.join(missing)}"


@pytest.mark.parametrize("logical_id", FUNCTION_IDS)
def test_every_variable_a_function_requires_is_set_in_the_template(logical_id: str) -> None:
    # Given the variables the function's code cannot run without
    required = function_scan(logical_id).env.required

    # When they are compared with what the template sets for the function (Globals included)
    unset = sorted(
        name
        for name in required
        if name not in template_variables(logical_id) and not name.startswith(RUNTIME_SET_PREFIXES)
    )

    # Then none is missing
    assert not unset, f"{logical_id} requires variables template.yaml does not set: {', '.join(unset)}"


@pytest.mark.parametrize("logical_id", FUNCTION_IDS)
def test_every_variable_a_function_sets_is_read_by_its_code(logical_id: str) -> None:
    # Given the variables the function's own Environment sets (Globals are checked across all functions)
    own = own_variables(logical_id)

    # When they are compared with what its handler and the layer modules it imports read
    reads = function_scan(logical_id).env.names
    unread = sorted(name for name in own if not read_by_code(name, reads))

    # Then each one is read: an unread variable means the template and the code have drifted apart
    assert not unread, f"{logical_id} sets variables no code of it reads: {', '.join(unread)}"


def test_every_global_variable_is_read_by_some_function() -> None:
    # Given the variables Globals.Function sets for every function
    shared = global_variables()

    # When they are compared with what all functions' code reads
    reads: set[str] = set()
    for logical_id in FUNCTION_IDS:
        reads |= function_scan(logical_id).env.names
    unread = sorted(name for name in shared if not read_by_code(name, reads))

    # Then each one is read by at least one function
    assert not unread, f"Globals sets variables no function reads: {', '.join(unread)}"


# ----------------------------------------------------------------------------------------------------------------
# 3. Every handler imports and initialises with its template environment
# ----------------------------------------------------------------------------------------------------------------


class _PlaceholderAttributes(dict[tuple[str, str], str]):
    """``!GetAtt Resource.Attribute`` of any resource: a recognisable fake value."""

    def __missing__(self, key: tuple[str, str]) -> str:
        resource, attribute = key
        return f"arn:aws:placeholder:us-east-1:123456789012:{resource.lower()}-test/{attribute}"


def _resolved_environment(logical_id: str) -> dict[str, str]:
    """The function's variables as Lambda would see them, with fake physical names and local mount folders."""
    resolver = Resolver(
        parameters=dict(TEMPLATE.parameters),
        # Resources the SAM transform generates count too (RestApiApiKey, from RestApi's usage plan).
        refs={name: f"{name.lower()}-test" for name in [*TEMPLATE.resources, *transformed_template()["Resources"]]},
        attributes=_PlaceholderAttributes(),
    )
    environment: dict[str, str] = {}
    for name, value in template_variables(logical_id).items():
        resolved = str(resolver.resolve(value))
        for mount, folder in MOUNTS.items():
            if resolved == mount or resolved.startswith(f"{mount}/"):
                resolved = str(folder) + resolved[len(mount) :]
        environment[name] = resolved
    return environment


def _missing_default_model(environment: dict[str, str]) -> str | None:
    """The model file a cold start loads, when it is not there yet (it is generated by scripts/train_demo_model.py)."""
    if "MODEL_ROOT" not in environment or "DEFAULT_MODEL" not in environment:
        return None
    folder = Path(environment["MODEL_ROOT"]) / environment["DEFAULT_MODEL"]
    if any(folder.glob("*/model.onnx")):
        return None
    return str((folder / "<version>" / "model.onnx").relative_to(REPO_ROOT, walk_up=True))


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake credentials and a region, Powertools' tracer and metrics switched off, AWS mocked by moto."""
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.mark.usefixtures("aws")
@pytest.mark.parametrize("logical_id", FUNCTION_IDS)
def test_every_handler_imports_and_initialises_with_its_template_environment(
    logical_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the function's environment from the template, and nothing else its code reads
    props = FUNCTIONS[logical_id]
    environment = _resolved_environment(logical_id)
    if (missing := _missing_default_model(environment)) is not None:
        pytest.skip(f"{logical_id} loads its default model at cold start and {missing} does not exist yet")
    for name in function_scan(logical_id).env.names - environment.keys():
        if not name.startswith(RUNTIME_SET_PREFIXES + LIBRARY_READ_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", logical_id)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", str(props.get("MemorySize", 128)))
    # Lambda sets these itself; POWERTOOLS_* from the template must not switch the tracer or metrics back on.
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")

    # When its handler module is imported under a name of its own (module-level initialisation runs)
    code_dir = REPO_ROOT / props["CodeUri"]
    module_name, _, handler_name = props["Handler"].rpartition(".")
    path = _module_file(code_dir, module_name)
    assert path is not None
    unique_name = f"template_check_{logical_id}_{module_name.replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(unique_name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(code_dir))
    monkeypatch.setitem(sys.modules, unique_name, module)
    spec.loader.exec_module(module)

    # Then the handler is there and callable
    assert callable(getattr(module, handler_name, None)), f"{logical_id}: {path.name} has no callable {handler_name}"


# ----------------------------------------------------------------------------------------------------------------
# 4. Layers
# ----------------------------------------------------------------------------------------------------------------


def _layer_with_package() -> str:
    """The layer whose content holds the shared package (the RuntimeLayer)."""
    layers = [
        name
        for name, resource in TEMPLATE.of_type("AWS::Serverless::LayerVersion").items()
        if (REPO_ROOT / str(resource["Properties"].get("ContentUri", "")) / "python" / LAYER_PACKAGE).is_dir()
    ]
    assert len(layers) == 1, f"expected one layer shipping python/{LAYER_PACKAGE}, found {layers}"
    return layers[0]


@pytest.mark.parametrize("logical_id", FUNCTION_IDS)
def test_every_function_uses_the_layer_that_ships_the_shared_package(logical_id: str) -> None:
    # Given the layer that ships the modelrun package
    runtime_layer = _layer_with_package()

    # When the function's layers (Globals included) are listed
    layers = FUNCTIONS[logical_id].get("Layers", [])

    # Then that layer is one of them
    assert {"Ref": runtime_layer} in layers, f"{logical_id} does not list !Ref {runtime_layer} in Layers"


# ----------------------------------------------------------------------------------------------------------------
# 5. Api events need an API key
# ----------------------------------------------------------------------------------------------------------------

API_EVENTS = sorted(
    (logical_id, event_id)
    for logical_id, props in FUNCTIONS.items()
    for event_id, event in props.get("Events", {}).items()
    if event.get("Type") == "Api"
)


@pytest.mark.parametrize(("logical_id", "event_id"), API_EVENTS)
def test_every_api_event_is_served_by_an_api_that_requires_an_api_key(logical_id: str, event_id: str) -> None:
    # Given an Api event of a function
    event_props = FUNCTIONS[logical_id]["Events"][event_id]["Properties"]

    # When the API it names is looked up
    api_ref = event_props.get("RestApiId")
    assert isinstance(api_ref, dict), (
        f"{logical_id}.{event_id} has no RestApiId: it would land on SAM's implicit API, which has no API key"
    )
    assert "Ref" in api_ref, f"{logical_id}.{event_id}: RestApiId must be !Ref to an API of this template"
    api = TEMPLATE.resources.get(api_ref["Ref"], {})

    # Then it is a template API whose Auth requires a key, and the event does not opt out
    assert api.get("Type") == "AWS::Serverless::Api", f"{logical_id}.{event_id}: {api_ref['Ref']} is not an Api"
    assert api.get("Properties", {}).get("Auth", {}).get("ApiKeyRequired") is True, (
        f"{api_ref['Ref']} does not set Auth.ApiKeyRequired: true"
    )
    assert event_props.get("Auth", {}).get("ApiKeyRequired", True) is True, (
        f"{logical_id}.{event_id} sets Auth.ApiKeyRequired: false"
    )


# ----------------------------------------------------------------------------------------------------------------
# 6. Outputs
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output", sorted(TEMPLATE.data.get("Outputs", {})))
def test_every_output_references_an_existing_resource_or_parameter(output: str) -> None:
    # Given an output, after the SAM transform
    transformed = transformed_template()

    # When the names its value refers to are collected
    known = set(transformed["Resources"]) | set(TEMPLATE.parameters)
    unknown = sorted(
        name
        for name in references(transformed["Outputs"][output]["Value"])
        if name not in known and not name.startswith("AWS::")
    )

    # Then each is a resource (as deployed) or a parameter
    assert not unknown, f"output {output} refers to {', '.join(unknown)}, which the stack does not define"


# ----------------------------------------------------------------------------------------------------------------
# 7. What the RuntimeLayer installs
# ----------------------------------------------------------------------------------------------------------------


def layer_requirements() -> list[Requirement]:
    lines = LAYER_REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    return [Requirement(line.split("#", 1)[0]) for line in lines if line.split("#", 1)[0].strip()]


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        name, separator, version = line.split("#", 1)[0].strip().partition("==")
        if separator:
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _pinned_version(requirement: Requirement) -> str | None:
    specifiers = list(requirement.specifier)
    if len(specifiers) == 1 and specifiers[0].operator == "==":
        return specifiers[0].version
    return None


def test_layer_requirements_pin_the_versions_of_the_constraints_file() -> None:
    # Given the layer's requirements and the project's constraints
    pins = constraint_pins()

    # When each requirement's version is compared with the constraint for that package
    mismatches = []
    for requirement in layer_requirements():
        constraint = pins.get(canonicalize_name(requirement.name))
        if _pinned_version(requirement) is None or _pinned_version(requirement) != constraint:
            mismatches.append(f"{requirement} (constraints: {constraint or 'none'})")

    # Then every requirement is an exact pin equal to the constraint
    assert not mismatches, f"{LAYER_REQUIREMENTS.name} and constraints.txt disagree: {'; '.join(mismatches)}"


def test_layer_requirements_include_every_dependency_of_what_they_list() -> None:
    # Given the layer's requirements (installed with --no-deps), as installed in this environment at the same pins
    listed = {canonicalize_name(requirement.name) for requirement in layer_requirements()}

    # When each one's dependencies on Lambda's platform are collected from its installed metadata
    missing = set()
    for name in sorted(listed):
        for line in importlib.metadata.requires(name) or []:
            dependency = Requirement(line)
            if dependency.marker is not None and not dependency.marker.evaluate(LAMBDA_MARKER_ENVIRONMENT):
                continue
            if canonicalize_name(dependency.name) not in listed | RUNTIME_DISTRIBUTIONS:
                missing.add(f"{dependency.name} (needed by {name})")

    # Then each dependency is listed too, or is part of the AWS SDK the Lambda runtime provides
    assert not missing, f"add to {LAYER_REQUIREMENTS.name}: {', '.join(sorted(missing))}"


@pytest.mark.parametrize("logical_id", FUNCTION_IDS)
def test_every_library_a_function_imports_ships_in_the_layer_or_the_runtime(logical_id: str) -> None:
    # Given the top-level modules a handler and the layer modules it loads import, other than the standard library
    imports = function_scan(logical_id).external_imports - set(sys.stdlib_module_names)

    # When each is mapped to the distribution that provides it
    providers = importlib.metadata.packages_distributions()
    shipped = {canonicalize_name(requirement.name) for requirement in layer_requirements()} | RUNTIME_DISTRIBUTIONS
    unshipped = sorted(
        module for module in imports if not {canonicalize_name(dist) for dist in providers.get(module, [])} & shipped
    )

    # Then it ships in the RuntimeLayer or with the Lambda runtime
    assert not unshipped, f"{logical_id} imports modules neither the layer nor the runtime provides: {unshipped}"


# ----------------------------------------------------------------------------------------------------------------
# 7. Parameters
# ----------------------------------------------------------------------------------------------------------------


def test_the_readme_deploy_section_names_every_parameter_of_the_template() -> None:
    # Given the README's Deploy section, which tells a deployer what can be set
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    deploy = readme.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]

    # When the template's parameters are looked for in it
    missing = sorted(name for name in TEMPLATE.data["Parameters"] if f"`{name}`" not in deploy)

    # Then none is left out
    assert missing == []

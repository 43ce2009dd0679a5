"""The local runtime's template reader: YAML tags, parameters, Globals, intrinsic functions, conditions, routes."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from modelrun_local.template import ApiRoute, Resolver, Template, UnsupportedIntrinsic, load_yaml

REPO_TEMPLATE = Path(__file__).resolve().parents[3] / "template.yaml"

SMALL_TEMPLATE = """
Parameters:
  StageName:
    Type: String
    Default: v1
  LogLevel:
    Type: String
    Default: INFO
Globals:
  Function:
    Runtime: python3.12
    Timeout: 29
    MemorySize: 1769
    Layers:
      - !Ref RuntimeLayer
    Environment:
      Variables:
        POWERTOOLS_SERVICE_NAME: modelrun
        LOG_LEVEL: !Ref LogLevel
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: !Ref StageName
      BinaryMediaTypes: [image~1png, application~1octet-stream]
      Auth:
        ApiKeyRequired: true
  OpenApi:
    Type: AWS::Serverless::Api
    Properties:
      StageName: !Ref StageName
  PredictFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.lambda_handler
      Timeout: 10
      Layers:
        - !Ref ExtraLayer
      Environment:
        Variables:
          LOG_LEVEL: DEBUG
          IMAGES_BUCKET: !Ref ImagesBucket
      Events:
        Create:
          Type: Api
          Properties:
            RestApiId: !Ref Api
            Path: /predictions
            Method: post
        Health:
          Type: Api
          Properties:
            RestApiId: !Ref Api
            Path: /health
            Method: get
            Auth:
              ApiKeyRequired: false
        Upload:
          Type: S3
          Properties:
            Bucket: !Ref ImagesBucket
            Events: s3:ObjectCreated:*
  PublicFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      Events:
        Open:
          Type: Api
          Properties:
            RestApiId: !Ref OpenApi
            Path: /models/{name}
            Method: GET
        Implicit:
          Type: Api
          Properties:
            Path: /ping
            Method: any
  ImagesBucket:
    Type: AWS::S3::Bucket
"""


def write(tmp_path: Path, text: str, name: str = "template.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def template(tmp_path: Path) -> Template:
    return Template.load(write(tmp_path, SMALL_TEMPLATE))


@pytest.fixture
def resolver() -> Resolver:
    """Physical names as the local stack would record them after creating the resources."""
    return Resolver(
        parameters={"StageName": "v1", "MaxImageBytes": 1024, "Names": "a,b,c"},
        refs={"ImagesBucket": "modelrun-local-images-bucket", "RestApi": "abc123"},
        attributes={("ImagesBucket", "Arn"): "arn:aws:s3:::modelrun-local-images-bucket"},
        conditions={"IsProd": True, "IsLocal": False},
        region="eu-west-1",
        account_id="111122223333",
    )


# --- YAML tags -----------------------------------------------------------------------------------------------


def load_resource(tmp_path: Path, properties: str) -> dict[str, Any]:
    body = "Resources:\n  Thing:\n    Type: Custom::Thing\n    Properties:\n" + textwrap.indent(properties, "      ")
    props: dict[str, Any] = load_yaml(write(tmp_path, body))["Resources"]["Thing"]["Properties"]
    return props


def test_the_ref_tag_becomes_the_ref_function(tmp_path: Path) -> None:
    # given !Ref, when the YAML is loaded, then it is CloudFormation's JSON form
    assert load_resource(tmp_path, "Value: !Ref ImagesBucket\n") == {"Value": {"Ref": "ImagesBucket"}}


def test_the_getatt_tag_splits_at_the_first_dot_only(tmp_path: Path) -> None:
    # given a dotted attribute name (as for nested stack outputs)
    props = load_resource(tmp_path, "Short: !GetAtt Bucket.Arn\nNested: !GetAtt Stack.Outputs.Url\n")

    # when loaded, then the resource is what comes before the first dot
    assert props == {
        "Short": {"Fn::GetAtt": ["Bucket", "Arn"]},
        "Nested": {"Fn::GetAtt": ["Stack", "Outputs.Url"]},
    }


def test_the_sub_tag_keeps_both_its_scalar_and_list_forms(tmp_path: Path) -> None:
    # given !Sub as a string and as [string, variables]
    props = load_resource(
        tmp_path,
        'Plain: !Sub "${AWS::Region}-x"\nWithVars: !Sub\n  - "${Name}-y"\n  - Name: !Ref StageName\n',
    )

    # when loaded, then the list form keeps its variables, with their own tags converted
    assert props == {
        "Plain": {"Fn::Sub": "${AWS::Region}-x"},
        "WithVars": {"Fn::Sub": ["${Name}-y", {"Name": {"Ref": "StageName"}}]},
    }


def test_condition_tags_become_their_functions(tmp_path: Path) -> None:
    # given !If, !Equals, !Not and !Condition
    props = load_resource(
        tmp_path,
        "Pick: !If [IsProd, a, b]\nSame: !Equals [!Ref StageName, v1]\nNeither: !Not [!Condition IsProd]\n",
    )

    # when loaded, then each is the long form
    assert props == {
        "Pick": {"Fn::If": ["IsProd", "a", "b"]},
        "Same": {"Fn::Equals": [{"Ref": "StageName"}, "v1"]},
        "Neither": {"Fn::Not": [{"Condition": "IsProd"}]},
    }


def test_a_yaml_file_without_resources_is_not_a_template(tmp_path: Path) -> None:
    # given YAML that is not a CloudFormation template
    path = write(tmp_path, "name: modelrun\nversion: 1\n", name="config.yaml")

    # when it is loaded as one, then the error names the file and why
    with pytest.raises(ValueError, match=r"config\.yaml is not a CloudFormation template \(no Resources\)"):
        load_yaml(path)


# --- parameters ----------------------------------------------------------------------------------------------


def test_parameters_take_their_defaults(template: Template) -> None:
    # given a template whose parameters all have defaults
    # when it is loaded without overrides, then each parameter is its default
    assert template.parameters == {"StageName": "v1", "LogLevel": "INFO"}


def test_a_parameter_override_replaces_the_default(tmp_path: Path) -> None:
    # given an override for one parameter
    # when the template is loaded
    template = Template.load(write(tmp_path, SMALL_TEMPLATE), overrides={"LogLevel": "DEBUG"})

    # then that parameter has the override and the others keep their defaults
    assert template.parameters == {"StageName": "v1", "LogLevel": "DEBUG"}


def test_an_override_for_a_parameter_the_template_lacks_is_refused(tmp_path: Path) -> None:
    # given a misspelt parameter name
    # when the template is loaded, then the name is reported
    with pytest.raises(KeyError, match="parameter override 'Loglevel'"):
        Template.load(write(tmp_path, SMALL_TEMPLATE), overrides={"Loglevel": "DEBUG"})


def test_parameters_without_a_default_or_override_are_all_named(tmp_path: Path) -> None:
    # given two parameters without defaults
    path = write(tmp_path, "Parameters:\n  Zeta: {Type: String}\n  Alpha: {Type: String}\nResources: {}\n")

    # when the template is loaded without overrides, then both are listed, sorted
    with pytest.raises(ValueError, match="parameters without default need a value: Alpha, Zeta"):
        Template.load(path)


def test_an_override_supplies_a_parameter_without_default(tmp_path: Path) -> None:
    # given a parameter without default
    path = write(tmp_path, "Parameters:\n  Bucket: {Type: String}\nResources: {}\n")

    # when it is overridden, then the template loads with that value
    assert Template.load(path, overrides={"Bucket": "mine"}).parameters == {"Bucket": "mine"}


# --- Globals -------------------------------------------------------------------------------------------------


def test_function_environment_variables_merge_with_the_global_ones_and_win(template: Template) -> None:
    # given a global LOG_LEVEL and a function-level LOG_LEVEL and IMAGES_BUCKET
    # when the function's properties are read
    variables = template.function_properties("PredictFunction")["Environment"]["Variables"]

    # then both sets are there, the function's value winning
    assert variables == {
        "POWERTOOLS_SERVICE_NAME": "modelrun",
        "LOG_LEVEL": "DEBUG",
        "IMAGES_BUCKET": {"Ref": "ImagesBucket"},
    }


def test_function_layers_come_after_the_global_layers(template: Template) -> None:
    # given a global layer and a function layer
    # when the function's properties are read, then the lists are added, globals first
    assert template.function_properties("PredictFunction")["Layers"] == [
        {"Ref": "RuntimeLayer"},
        {"Ref": "ExtraLayer"},
    ]


def test_a_function_setting_replaces_the_global_one_and_the_rest_is_inherited(template: Template) -> None:
    # given Timeout in Globals and in the function, MemorySize only in Globals
    # when the function's properties are read
    props = template.function_properties("PredictFunction")

    # then the function's Timeout wins and the global MemorySize and Runtime are inherited
    assert (props["Timeout"], props["MemorySize"], props["Runtime"]) == (10, 1769, "python3.12")


def test_a_function_without_its_own_environment_gets_exactly_the_global_one(template: Template) -> None:
    # given a function with no Environment of its own, read after one that has
    template.function_properties("PredictFunction")

    # when the other function's properties are read
    variables = template.function_properties("PublicFunction")["Environment"]["Variables"]

    # then it has the global variables only: nothing leaked from the first function's merge
    assert variables == {"POWERTOOLS_SERVICE_NAME": "modelrun", "LOG_LEVEL": {"Ref": "LogLevel"}}


def test_functions_lists_every_serverless_function_with_globals_merged(template: Template) -> None:
    # given the template's two functions
    # when all are read
    functions = template.functions()

    # then each is there with merged properties
    assert set(functions) == {"PredictFunction", "PublicFunction"}
    assert functions["PublicFunction"]["Timeout"] == 29


# --- routes and binary media types -------------------------------------------------------------------------


def test_api_routes_list_every_api_event_with_the_key_rule_of_its_api(template: Template) -> None:
    # given Api events on a keyed API (one opting out), an open API and the implicit API, and an S3 event
    # when the routes are read
    routes = set(template.api_routes())

    # then every Api event is a route, methods upper-cased; the S3 event is not
    assert routes == {
        ApiRoute("PredictFunction", "POST", "/predictions", "Api", api_key_required=True),
        ApiRoute("PredictFunction", "GET", "/health", "Api", api_key_required=False),
        ApiRoute("PublicFunction", "GET", "/models/{name}", "OpenApi", api_key_required=False),
        ApiRoute("PublicFunction", "ANY", "/ping", "ServerlessRestApi", api_key_required=False),
    }


def test_binary_media_types_are_read_with_the_tilde_escape_undone(template: Template) -> None:
    # given image~1png in the template (CloudFormation's escape for "/")
    # when read, then they are real media types
    assert template.binary_media_types("Api") == ["image/png", "application/octet-stream"]


def test_an_api_without_binary_media_types_has_none(template: Template) -> None:
    # given an API that declares none, and one that does not exist
    # when read, then both have an empty list
    assert (template.binary_media_types("OpenApi"), template.binary_media_types("Nothing")) == ([], [])


def test_the_repository_template_serves_raw_png_uploads_on_the_keyed_rest_api() -> None:
    # given the real template.yaml
    template = Template.load(REPO_TEMPLATE)

    # when the prediction route and the API's binary types are read
    routes = {(route.method, route.path): route for route in template.api_routes()}
    create = routes["POST", "/predictions"]

    # then it is served by PredictFunction on RestApi, requires a key, and PNG bodies arrive as binary
    assert (create.function, create.api, create.api_key_required) == ("PredictFunction", "RestApi", True)
    assert "image/png" in template.binary_media_types("RestApi")


# --- Ref and GetAtt ------------------------------------------------------------------------------------------


def test_ref_to_a_parameter_gives_its_value(resolver: Resolver) -> None:
    assert resolver.resolve({"Ref": "StageName"}) == "v1"


def test_ref_to_a_resource_gives_its_physical_name(resolver: Resolver) -> None:
    assert resolver.resolve({"Ref": "ImagesBucket"}) == "modelrun-local-images-bucket"


@pytest.mark.parametrize(
    ("pseudo", "value"),
    [
        ("AWS::Region", "eu-west-1"),
        ("AWS::AccountId", "111122223333"),
        ("AWS::Partition", "aws"),
        ("AWS::URLSuffix", "amazonaws.com"),
        ("AWS::StackId", "arn:aws:cloudformation:eu-west-1:111122223333:stack/modelrun-local/local"),
    ],
)
def test_ref_to_a_pseudo_parameter_gives_the_local_stack_value(resolver: Resolver, pseudo: str, value: str) -> None:
    assert resolver.resolve({"Ref": pseudo}) == value


def test_ref_to_an_unknown_name_fails_naming_it(resolver: Resolver) -> None:
    with pytest.raises(KeyError, match="!Ref Missing: no parameter or created resource"):
        resolver.resolve({"Ref": "Missing"})


@pytest.mark.parametrize("argument", [["ImagesBucket", "Arn"], "ImagesBucket.Arn"], ids=["list", "dotted"])
def test_getatt_in_either_form_gives_the_attribute(resolver: Resolver, argument: Any) -> None:
    assert resolver.resolve({"Fn::GetAtt": argument}) == "arn:aws:s3:::modelrun-local-images-bucket"


def test_getatt_of_an_attribute_the_local_stack_lacks_fails_naming_it(resolver: Resolver) -> None:
    with pytest.raises(KeyError, match=r"!GetAtt ImagesBucket\.WebsiteURL: the local stack does not provide it"):
        resolver.resolve({"Fn::GetAtt": ["ImagesBucket", "WebsiteURL"]})


# --- Sub -----------------------------------------------------------------------------------------------------


def test_sub_replaces_parameters_resources_and_pseudo_parameters(resolver: Resolver) -> None:
    # given a string with a parameter, a resource and a pseudo parameter
    # when substituted, then each is replaced by its value
    assert (
        resolver.resolve({"Fn::Sub": "https://${RestApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${StageName}/"})
        == "https://abc123.execute-api.eu-west-1.amazonaws.com/v1/"
    )


def test_sub_replaces_a_resource_attribute(resolver: Resolver) -> None:
    assert resolver.resolve({"Fn::Sub": "${ImagesBucket.Arn}/*"}) == "arn:aws:s3:::modelrun-local-images-bucket/*"


def test_sub_leaves_an_escaped_placeholder_as_literal_text(resolver: Resolver) -> None:
    # given ${!Name}, CloudFormation's escape, next to a real placeholder
    # when substituted, then the escape is written as ${Name} and the real one is replaced
    assert resolver.resolve({"Fn::Sub": "${!StageName} is ${StageName}"}) == "${StageName} is v1"


def test_sub_stringifies_numeric_parameters(resolver: Resolver) -> None:
    assert resolver.resolve({"Fn::Sub": "limit=${MaxImageBytes}"}) == "limit=1024"


def test_sub_with_variables_evaluates_them_and_they_shadow_parameters(resolver: Resolver) -> None:
    # given the list form: a variable holding an intrinsic, and one named like a parameter
    expression = {
        "Fn::Sub": [
            "${Bucket}/${StageName}/${AWS::Region}",
            {"Bucket": {"Fn::GetAtt": ["ImagesBucket", "Arn"]}, "StageName": "prod"},
        ]
    }

    # when substituted, then the variables are used (evaluated), and the rest still resolves
    assert resolver.resolve(expression) == "arn:aws:s3:::modelrun-local-images-bucket/prod/eu-west-1"


def test_sub_of_an_unknown_placeholder_fails_naming_it(resolver: Resolver) -> None:
    with pytest.raises(KeyError, match="!Ref Unknown"):
        resolver.resolve({"Fn::Sub": "x-${Unknown}"})


# --- Join, Select, Split, If ---------------------------------------------------------------------------------


def test_join_evaluates_each_part(resolver: Resolver) -> None:
    expression = {"Fn::Join": ["/", ["s3:", "", {"Ref": "ImagesBucket"}, {"Ref": "StageName"}]]}
    assert resolver.resolve(expression) == "s3://modelrun-local-images-bucket/v1"


def test_split_gives_the_pieces_of_an_evaluated_string(resolver: Resolver) -> None:
    assert resolver.resolve({"Fn::Split": [",", {"Ref": "Names"}]}) == ["a", "b", "c"]


def test_select_picks_an_item_of_an_evaluated_list(resolver: Resolver) -> None:
    assert resolver.resolve({"Fn::Select": ["1", {"Fn::Split": [",", {"Ref": "Names"}]}]}) == "b"


def test_join_of_a_split_rejoins_with_another_delimiter(resolver: Resolver) -> None:
    assert resolver.resolve({"Fn::Join": ["-", {"Fn::Split": [",", {"Ref": "Names"}]}]}) == "a-b-c"


@pytest.mark.parametrize(("condition", "expected"), [("IsProd", "warn"), ("IsLocal", "debug")])
def test_if_evaluates_the_branch_its_condition_picks(resolver: Resolver, condition: str, expected: str) -> None:
    # given a condition recorded as true (IsProd) or false (IsLocal), and branches that are intrinsics
    expression = {"Fn::If": [condition, {"Fn::Sub": "warn"}, {"Fn::Join": ["", ["de", "bug"]]}]}

    # when resolved, then only the chosen branch comes back, evaluated
    assert resolver.resolve(expression) == expected


def test_an_if_that_picks_no_value_removes_the_property(resolver: Resolver) -> None:
    # given a property present only when IsLocal holds (it does not)
    properties = {"Name": "x", "Debug": {"Fn::If": ["IsLocal", "true", {"Ref": "AWS::NoValue"}]}}

    # when resolved, then the property is gone
    assert resolver.resolve(properties) == {"Name": "x"}


def test_an_if_that_picks_no_value_removes_the_list_item(resolver: Resolver) -> None:
    # given a layer listed only when IsLocal holds (it does not)
    layers = {"Layers": ["runtime", {"Fn::If": ["IsLocal", "debug-tools", {"Ref": "AWS::NoValue"}]}, "models"]}

    # when resolved, then the item is gone and the others keep their order
    assert resolver.resolve(layers) == {"Layers": ["runtime", "models"]}


def test_ref_no_value_removes_the_property_and_the_list_item(resolver: Resolver) -> None:
    # given AWS::NoValue used directly as a property value and as a list item
    value = {"Keep": ["a", {"Ref": "AWS::NoValue"}, "b"], "Drop": {"Ref": "AWS::NoValue"}}

    # when resolved, then both are removed
    assert resolver.resolve(value) == {"Keep": ["a", "b"]}


def test_nested_properties_are_resolved_recursively(resolver: Resolver) -> None:
    # given intrinsics deep inside ordinary maps and lists
    value = {
        "Environment": {"Variables": {"BUCKET": {"Ref": "ImagesBucket"}}},
        "Tags": [{"Value": {"Ref": "StageName"}}],
    }

    # when resolved, then they are all evaluated and the structure is kept
    assert resolver.resolve(value) == {
        "Environment": {"Variables": {"BUCKET": "modelrun-local-images-bucket"}},
        "Tags": [{"Value": "v1"}],
    }


@pytest.mark.parametrize(
    "expression",
    [{"Fn::FindInMap": ["M", "a", "b"]}, {"Fn::ImportValue": "shared-vpc"}, {"Fn::Base64": "x"}],
    ids=["FindInMap", "ImportValue", "Base64"],
)
def test_an_intrinsic_the_local_runtime_does_not_evaluate_is_reported(resolver: Resolver, expression: Any) -> None:
    # given an intrinsic outside the supported set
    (name,) = expression

    # when resolved, then the error names it instead of passing it through as data
    with pytest.raises(UnsupportedIntrinsic, match=f"{name} is not evaluated"):
        resolver.resolve(expression)


# --- conditions ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("stage", "expected"), [("v1", True), ("v2", False)])
def test_equals_compares_evaluated_values(resolver: Resolver, stage: str, expected: bool) -> None:
    assert resolver.condition({"Fn::Equals": [{"Ref": "StageName"}, stage]}) is expected


def test_equals_compares_numbers_and_strings_by_their_text(resolver: Resolver) -> None:
    # given a Number parameter (an int in YAML) compared with a string, as CloudFormation passes both as text
    assert resolver.condition({"Fn::Equals": [{"Ref": "MaxImageBytes"}, "1024"]}) is True


IS_V1 = {"Fn::Equals": [{"Ref": "StageName"}, "v1"]}
IS_V2 = {"Fn::Equals": [{"Ref": "StageName"}, "v2"]}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ({"Fn::Not": [IS_V2]}, True),
        ({"Fn::And": [IS_V1, IS_V2]}, False),
        ({"Fn::And": [IS_V1, {"Fn::Not": [IS_V2]}]}, True),
        ({"Fn::Or": [IS_V2, IS_V1]}, True),
        ({"Fn::Or": [IS_V2, IS_V2]}, False),
    ],
    ids=["not", "and-false", "and-true", "or-true", "or-false"],
)
def test_not_and_or_combine_conditions(resolver: Resolver, expression: Any, expected: bool) -> None:
    # given the stage is v1, when the combination is evaluated, then it follows boolean logic
    assert resolver.condition(expression) is expected


def test_a_condition_may_refer_to_another_evaluated_condition(resolver: Resolver) -> None:
    assert resolver.condition({"Fn::Not": [{"Condition": "IsProd"}]}) is False


def test_a_condition_that_is_not_a_condition_function_is_reported(resolver: Resolver) -> None:
    with pytest.raises(UnsupportedIntrinsic, match="is not evaluated by the local runtime"):
        resolver.condition({"Ref": "StageName"})

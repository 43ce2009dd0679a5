"""template.yaml after the SAM transform, offline: what CloudFormation would receive (generated resources such as
RestApiApiKey, the S3 events' bucket notifications and permissions). Shared by the template tests."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from modelrun_local.template import load_yaml

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "template.yaml"
LOCAL_URI_PROPERTIES = ("CodeUri", "ContentUri", "DefinitionUri")


@functools.cache
def _transformed(path: Path) -> dict[str, Any]:
    data = load_yaml(path)
    sections = [*data["Resources"].values(), *({"Properties": g} for g in data.get("Globals", {}).values())]
    for section in sections:
        props = section.get("Properties", {})
        for key in LOCAL_URI_PROPERTIES:
            if isinstance(props.get(key), str):
                props[key] = f"s3://placeholder-bucket/{key}"
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name="us-east-1"))
    transformed: dict[str, Any] = translator.translate(data, parameter_values={}, get_managed_policy_map=dict)
    return transformed


def transformed_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """A fresh copy each call (callers may change it); the transform itself runs once per path."""
    return copy.deepcopy(_transformed(path))

"""
The client's dataclasses against the schema the server serves: the same
fields with the same types, so that neither can change without the other.
"""

import datetime
import typing
from typing import Any

import pytest

from videogen_client import REQUEST_FIELDS, Job, Model, Video

pytestmark = pytest.mark.django_db

SIMPLE = {"integer": int, "number": float, "boolean": bool}


def python_type(prop: dict, schemas: dict) -> Any:
    """The Python type a schema property's value has once the client has read it."""
    if "$ref" in prop:
        return python_type(schemas[prop["$ref"].rsplit("/", 1)[-1]], schemas)
    for combined in ("allOf", "oneOf"):
        if combined in prop:
            kinds = {python_type(part, schemas) for part in prop[combined]}
            assert len(kinds) == 1, prop
            kind = kinds.pop()
            break
    else:
        kind = _plain_type(prop, schemas)
    if kind is Any:
        return Any
    if "properties" in prop:
        # An object whose members are all numbers reads as a dict of them (ModelBound).
        assert {python_type(member, schemas) for member in prop["properties"].values()} <= {float, int}
        return dict[str, float]
    return kind | None if prop.get("nullable") else kind


def _plain_type(prop: dict, schemas: dict) -> Any:
    kind = prop.get("type")
    if kind is None and "enum" in prop:
        # An enum without a type: drf-spectacular's BlankEnum, [""].
        kinds = {type(value) for value in prop["enum"]}
        assert len(kinds) == 1, prop
        return kinds.pop()
    if kind is None:
        return Any
    if kind == "string":
        return datetime.datetime if prop.get("format") == "date-time" else str
    if kind == "array":
        return list[python_type(prop["items"], schemas)]
    if kind == "object" and "additionalProperties" in prop:
        return dict[str, python_type(prop["additionalProperties"], schemas)]
    if kind == "object":
        return dict
    return SIMPLE[kind]


@pytest.fixture
def schemas(api) -> dict:
    response = api.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()["components"]["schemas"]


@pytest.mark.parametrize("cls, component", [(Job, "JobStatus"), (Video, "VideoInfo"), (Model, "ModelInfo")])
def test_each_dataclass_has_its_schema_components_fields_and_types(schemas, cls, component):
    properties = schemas[component]["properties"]
    hints = typing.get_type_hints(cls)

    assert list(hints) == list(properties)
    assert {name: python_type(prop, schemas) for name, prop in properties.items()} == hints


def test_the_ints_and_strings_of_enums_and_bounds_read_as_their_python_types(schemas):
    # The reader's own cases, so that the comparison above compares something.
    assert python_type(schemas["JobStatus"]["properties"]["status"], schemas) is str
    assert python_type(schemas["JobStatus"]["properties"]["seed"], schemas) == int | None
    assert python_type(schemas["ModelInfo"]["properties"]["bounds"], schemas) == dict[str, dict[str, float]]


def test_the_clients_request_fields_are_the_servers(schemas):
    # generate()'s **params and the CLI's --flags: the submit body's fields but those given apart.
    properties = schemas["GenerationRequestRequest"]["properties"]
    given_apart = {"prompt", "image", "last_image", "extend_job_id"}

    assert set(REQUEST_FIELDS) == set(properties) - given_apart
    for name, kind in REQUEST_FIELDS.items():
        served = python_type(properties[name], schemas)
        assert (typing.get_origin(served) or served) is kind or served == kind | None, name

"""The OpenAPI document: valid OpenAPI 3.1, in step with the route table, served.

The operations it lists must be exactly those the application registers, with the
security and error answers that the route table implies; every schema in it must be
valid JSON Schema, every reference must resolve, and every ``TALER_EC`` number it
names must exist in the daemon's error table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import jsonschema_rs
import pytest
import schemathesis
import yaml

import merchant_authd
from merchant_authd import PROTOCOL_VERSION, __version__
from merchant_authd.config import Settings
from merchant_authd.errors import EC
from merchant_authd.schemas import INSTANCE_ID, ROUNDING_INTERVALS
from merchant_authd.scopes import ALIASES, REFRESH_SUFFIX, SCOPES
from merchant_authd.web.app import create_app
from merchant_authd.web.middleware import MAX_URI_LENGTH
from merchant_authd.web.protocol import DEFAULT_LIMITS
from merchant_authd.web.routes import INSTANCE_PREFIX, ROUTES, Access, paths

OPENAPI = Path(merchant_authd.__file__).resolve().parent / "openapi.yaml"
DOCUMENT: dict[str, Any] = yaml.safe_load(OPENAPI.read_text("utf-8"))
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) of every operation in the document."""
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


def resolve(value: Any) -> Any:
    """``value``, or what its local ``$ref`` points at."""
    while isinstance(value, dict) and "$ref" in value:
        node: Any = DOCUMENT
        for part in value["$ref"].removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        value = node
    return value


def walk(value: Any) -> Iterator[Any]:
    """Every dict and list nested in ``value``, ``value`` included."""
    yield value
    children = value.values() if isinstance(value, dict) else value
    if isinstance(value, (dict, list)):
        for child in children:
            yield from walk(child)


def test_document_is_valid_openapi_3_1() -> None:
    schema = schemathesis.openapi.from_path(OPENAPI)
    assert schema.raw_schema["openapi"].startswith("3.1.")
    schema.validate()


def test_a_broken_document_is_rejected() -> None:
    broken = yaml.safe_load(OPENAPI.read_text("utf-8"))
    broken["paths"]["/config"]["get"]["responses"]["200"]["content"] = "JSON"
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_reference_resolves() -> None:
    references = [
        node["$ref"]
        for node in walk(DOCUMENT)
        if isinstance(node, dict) and "$ref" in node
    ]
    assert references
    for reference in references:
        assert reference.startswith("#/components/"), reference
        assert resolve({"$ref": reference}) is not None


def test_every_schema_is_valid_json_schema() -> None:
    schemas = list(DOCUMENT["components"]["schemas"].items())
    for node in walk(DOCUMENT):
        if isinstance(node, dict) and isinstance(node.get("schema"), dict):
            schemas.append((node.get("name", "inline"), node["schema"]))
    assert len(schemas) > len(DOCUMENT["components"]["schemas"])
    for name, schema in schemas:
        assert jsonschema_rs.meta.is_valid(schema), name


def test_operations_are_those_the_application_registers(settings: Settings) -> None:
    app = create_app(settings)
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method, path) for method, path, _ in operations()}
    assert documented == registered


def test_operation_ids_are_unique() -> None:
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))


def _statuses(method: str, path: str) -> set[str]:
    return set(DOCUMENT["paths"][path][method.lower()]["responses"])


def _security(method: str, path: str) -> list[str]:
    requirements = DOCUMENT["paths"][path][method.lower()].get("security", [])
    return sorted(name for requirement in requirements for name in requirement)


@pytest.mark.parametrize(
    "route", ROUTES, ids=[f"{route.method} {route.path}" for route in ROUTES]
)
def test_documented_security_and_errors_follow_the_route_table(route: Any) -> None:
    for path in paths(route):
        statuses = _statuses(route.method, path)
        assert {"400", "413", "414", "500"} <= statuses
        if route.access is Access.PUBLIC:
            assert _security(route.method, path) == []
            assert "401" not in statuses
        else:
            expected = (
                ["basicAuth", "bearerAuth"] if route.allow_basic else ["bearerAuth"]
            )
            assert _security(route.method, path) == expected
            assert {"400", "401", "429"} <= statuses
            assert ("403" in statuses) == (route.permission is not None)
        if "{instance}" in path and route.access is not Access.MANAGEMENT:
            assert "308" in statuses, "/instances/default/... is redirected"
        else:
            assert "308" not in statuses


def test_prefixed_paths_mirror_the_admin_paths() -> None:
    for method, path, operation in operations():
        if not path.startswith(INSTANCE_PREFIX + "/") or path.endswith("-password"):
            continue
        twin = DOCUMENT["paths"][path.removeprefix(INSTANCE_PREFIX)][method.lower()]
        assert set(operation["responses"]) == set(twin["responses"]) | {"308"}
        names = [resolve(p)["name"] for p in operation.get("parameters", [])]
        twin_names = [resolve(p)["name"] for p in twin.get("parameters", [])]
        assert names == ["instance", *twin_names]
        assert operation.get("requestBody") == twin.get("requestBody")
        assert operation.get("security") == twin.get("security")


def test_retry_after_is_documented_on_every_429_but_the_confirmation() -> None:
    for _method, path, operation in operations():
        answer = operation["responses"].get("429")
        if answer is None:
            continue
        headers = resolve(answer).get("headers", {})
        if path.endswith("/confirm"):
            assert "Retry-After" not in headers  # the TAN must be re-sent instead
        else:
            assert resolve(headers["Retry-After"])["required"] is True, path


def test_every_error_code_named_exists() -> None:
    known = {int(code) for code in EC}
    named: set[int] = set()
    for node in walk(DOCUMENT):
        if isinstance(node, dict) and isinstance(node.get("code"), dict):
            code = node["code"]
            named |= set(code.get("enum", [])) | (
                {code["const"]} if "const" in code else set()
            )
    assert named
    assert named <= known, sorted(named - known)


def test_versions_and_limits_are_the_daemons() -> None:
    assert DOCUMENT["info"]["version"] == __version__
    description = " ".join(DOCUMENT["info"]["description"].split())
    assert f"`{PROTOCOL_VERSION}`" in description
    assert f"header over {DEFAULT_LIMITS.max_field_size} bytes" in description
    assert f"more than {DEFAULT_LIMITS.max_headers} headers" in description
    assert f"target over {MAX_URI_LENGTH} bytes" in description
    assert f"within {DEFAULT_LIMITS.body_timeout:g} seconds" in description


async def test_enumerations_are_the_daemons() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    assert set(schemas["Scope"]["enum"]) == set(SCOPES)
    requested = {*SCOPES, *ALIASES}
    assert set(schemas["RequestedScope"]["enum"]) == requested | {
        name + REFRESH_SUFFIX for name in requested
    }
    assert schemas["RoundingInterval"]["enum"] == list(ROUNDING_INTERVALS)
    assert schemas["InstanceId"]["pattern"] == INSTANCE_ID.pattern


async def test_the_daemon_serves_this_document(client: Any) -> None:
    response = await client.get("/openapi.yaml")
    assert response.status == 200
    assert response.content_type == "application/yaml"
    text = await response.text()
    assert text == OPENAPI.read_text("utf-8")
    assert yaml.safe_load(text) == DOCUMENT

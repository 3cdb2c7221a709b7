"""Schemathesis against the live OpenAPI document: every documented operation, generated parameters, and the
responses must match the document (status codes, content types, JSON schemas) and never be a server error."""

from __future__ import annotations

import json
import urllib.request

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.api import Api

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def schema(api: Api) -> schemathesis.BaseSchema:
    with urllib.request.urlopen(f"{api.url}/api/v2/openapi.json", timeout=10) as resp:
        document = json.loads(resp.read())
    return schemathesis.openapi.from_dict(document)


def _exercise(operation: schemathesis.APIOperation, url: str, token: str, session: str) -> None:
    @hypothesis.settings(max_examples=8, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(case=operation.as_strategy())
    def check(case: schemathesis.Case) -> None:
        if (case.path_parameters or {}).get("session_id") == "":
            case.path_parameters["session_id"] = session  # an empty path segment is another route
        if (case.path_parameters or {}).get("interception_id") == "":
            case.path_parameters["interception_id"] = "none"  # likewise
        response = case.call(base_url=url, headers={"Coder-Session-Token": token}, timeout=30)
        case.validate_response(response, checks=CHECKS)

    check()


def test_live_server_matches_its_openapi_document(api: Api, schema: schemathesis.BaseSchema) -> None:
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the document describes each operation validly
        operations.append(result.ok())
    assert len(operations) == 24  # 12 operations under each of the two prefixes
    for operation in operations:
        for user in ("root", "alice"):  # an admin and a member
            _exercise(operation, api.url, api.tokens[user], api.data.ended[0].session_id)

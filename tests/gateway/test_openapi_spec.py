"""The served ``/v1/openapi.json``, whole, is a valid OpenAPI 3.1 document (``openapi-spec-validator``).

tests/gateway/test_openapi.py checks responses against the document and its schemas with jsonschema; this checks
the document itself, as a real gateway serves it, against the OpenAPI 3.1 specification: every path, operation,
parameter, media type and component, so a keyword of another version (3.2's ``itemSchema``) or a misplaced one
fails here.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from gateway import schemas

Client = TestClient[Any, Any]


async def served_document(client: Client) -> dict[str, Any]:
    response = await client.get("/v1/openapi.json")
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    document: dict[str, Any] = await response.json()
    return document


async def test_the_served_document_is_valid_openapi_31(client: Client) -> None:
    document = await served_document(client)
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)
    assert list(OpenAPIV31SpecValidator(document).iter_errors()) == []


async def test_the_validator_refuses_a_32_keyword_in_the_served_document(client: Client) -> None:
    """The check above can fail: the same document with 3.2's ``itemSchema`` on the event stream is refused."""
    document = copy.deepcopy(await served_document(client))
    stream = document["paths"]["/v1/orchestrations/{id}/events"]["get"]["responses"]["200"]["content"]
    media = next(iter(stream.values()))
    media["itemSchema"] = media.pop("schema")
    with pytest.raises(OpenAPIValidationError):
        validate(document, cls=OpenAPIV31SpecValidator)


async def test_the_session_search_parameter_is_documented(client: Client) -> None:
    document = await served_document(client)
    parameters = {p["name"]: p for p in document["paths"]["/v1/orchestrations"]["get"]["parameters"]}
    search = parameters["q"]
    assert search["in"] == "query" and not search["required"]
    # As the gateway reads it: an empty q is no filter (like thread_id), a longer one than the limit a 400.
    assert search["schema"] == {"type": "string", "maxLength": schemas.MAX_SEARCH_CHARS}
    assert "case-insensitive" in search["description"] and "(empty: any)" in search["description"]

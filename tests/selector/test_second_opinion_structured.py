"""The second opinion asks for a JSON Schema when the model supports structured outputs, JSON mode otherwise."""

from __future__ import annotations

import json
import uuid
from typing import Any

import jsonschema
import pytest

from orchestratex.domains import DOMAINS
from orchestratex.v1 import providers_pb2, selector_pb2
from services.selector.catalogue import model_from_proto
from services.selector.second_opinion import DOMAIN_SCHEMA, SCHEMA_NAME, build_request, parse_domain
from tests.selector.conftest import FakeProviders, catalogue, model_info, start_fake


def test_structured_request_carries_the_domain_schema() -> None:
    request = build_request("Sort a list in Rust", "dune/small", structured=True)
    rf = request.response_format
    assert rf.type == providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    assert rf.schema_name == SCHEMA_NAME and rf.strict
    schema = json.loads(rf.json_schema)
    assert schema == DOMAIN_SCHEMA
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for domain in DOMAINS:
        reply = {"domain": domain}
        assert validator.is_valid(reply) and parse_domain(json.dumps(reply)) == domain
    for bad in ({"domain": "cooking"}, {}, {"domain": "math", "confidence": 1}, {"domain": 3}):
        assert not validator.is_valid(bad)


def test_unstructured_request_stays_in_json_mode() -> None:
    rf = build_request("Sort a list in Rust", "dune/small").response_format
    assert rf.type == providers_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    assert rf.json_schema == "" and rf.schema_name == ""


@pytest.mark.parametrize("flag", [True, False])
def test_the_catalogue_keeps_the_flag(flag: bool) -> None:
    info = model_info(catalogue()[0])
    info.supports_structured_outputs = flag
    assert model_from_proto(info).supports_structured_outputs is flag


class _StructuredFake(FakeProviders):
    """The fake providers service, where only ``structured`` models support structured outputs."""

    def __init__(self, structured: set[str]) -> None:
        super().__init__(catalogue())
        self.structured = structured

    async def ListModels(self, request: providers_pb2.ListModelsRequest, context: Any) -> Any:
        response = await super().ListModels(request, context)
        for info in response.models:
            info.supports_structured_outputs = info.id in self.structured
        return response


@pytest.mark.parametrize(("model", "expected"), [("dune/small", "schema"), ("cedar/writer", "json_object")])
async def test_the_call_follows_the_models_flag(start_selector, model: str, expected: str) -> None:
    fake = _StructuredFake({"dune/small"})
    server, port = await start_fake(fake)
    try:
        stub, _ = await start_selector(
            port,
            ORX_SELECTOR_SECOND_OPINION="on",
            ORX_SELECTOR_SECOND_OPINION_BELOW="1",
            ORX_SELECTOR_SECOND_OPINION_MODEL=model,
        )
        prompt = f"Tell me about the Fibonacci numbers ({uuid.uuid4().hex[:6]})"
        resp = await stub.SelectModels(selector_pb2.SelectModelsRequest(prompt=prompt), timeout=10)
    finally:
        await server.stop(0)
    assert [r.model for r in fake.generate_requests] == [model]
    rf = fake.generate_requests[0].response_format
    if expected == "schema":
        assert rf.type == providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
        assert json.loads(rf.json_schema) == DOMAIN_SCHEMA
    else:
        assert rf.type == providers_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    assert resp.analysis.second_opinion.applied

"""The OpenAPI 3.1 description of the gateway, served at ``GET /v1/openapi.json``.

Message schemas are generated from the proto descriptors with the same rules as the JSON encoder
(:mod:`gateway.events_json`): proto field names (snake_case, the convention of every name the gateway writes),
int64 as strings, enum names, Timestamp/Duration as strings, unknown fields refused
(``additionalProperties: false``), so the tests can validate every real response against the document with a
JSON Schema 2020-12 validator (the dialect OpenAPI 3.1 uses).
"""

from __future__ import annotations

import functools
from typing import Any, Final

from aiohttp import web
from google.protobuf.descriptor import FieldDescriptor

from gateway import openai_schemas, schemas
from gateway.events_json import _INT64_TYPES
from gateway.inputs import enum_names
from gateway.state import SETTINGS
from orchestratex.v1 import analytics_pb2, common_pb2, orchestrator_pb2, providers_pb2

Schema = dict[str, Any]

PATH: Final = "/v1/openapi.json"
_REF: Final = "#/components/schemas/"
_INT32_TYPES: Final = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_FIXED32,
    }
)
# Doubles are numbers, or the strings json_format writes for non-finite values.
_DOUBLE: Final[Schema] = {"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}


def setup_routes(app: web.Application) -> None:
    """Register ``GET /v1/openapi.json``."""
    app.router.add_get(PATH, serve_document)


async def serve_document(request: web.Request) -> web.Response:
    """``GET /v1/openapi.json``: the OpenAPI 3.1 document."""
    return web.json_response(document(request.app[SETTINGS].common.max_prompt_chars))


def _ref(name: str) -> Schema:
    return {"$ref": _REF + name}


class _SchemaBuilder:
    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def message(self, descriptor: Any) -> Schema:
        name = descriptor.full_name
        if name == "google.protobuf.Timestamp":
            return {"type": "string", "format": "date-time"}
        if name == "google.protobuf.Duration":
            return {"type": "string", "pattern": r"^-?\d+(\.\d{3}|\.\d{6}|\.\d{9})?s$"}
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: recursive types
            properties = {field.name: self.field(field) for field in descriptor.fields}
            schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
            oneofs = [o for o in descriptor.oneofs if not (len(o.fields) == 1 and o.fields[0].has_presence)]
            for oneof in oneofs:
                members = [f.name for f in oneof.fields]
                # At most one member of a oneof is present.
                schema.setdefault("allOf", []).append(
                    {"not": {"anyOf": [{"required": [a, b]} for i, a in enumerate(members) for b in members[i + 1 :]]}}
                )
            self.schemas[name] = schema
        return _ref(name)

    def field(self, field: Any) -> Schema:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = self.single(field.message_type.fields_by_name["value"])
            return {"type": "object", "additionalProperties": value}
        single = self.single(field)
        if field.is_repeated:
            return {"type": "array", "items": single}
        return single

    def single(self, field: Any) -> Schema:
        kind = field.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            return self.message(field.message_type)
        if kind == FieldDescriptor.TYPE_ENUM:
            names = [v.name for v in field.enum_type.values]
            # A number when the value is unknown to this build (a newer peer).
            return {"anyOf": [{"enum": names}, {"type": "integer"}]}
        if kind in _INT64_TYPES:
            return {"type": "string", "pattern": r"^-?\d+$"}
        if kind in _INT32_TYPES:
            return {"type": "integer"}
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return dict(_DOUBLE)
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}


def _json(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


_ERROR_SCHEMA: Final[Schema] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "description": "gRPC status name, or an HTTP-only name"},
                "status": {"type": "integer", "description": "the HTTP status"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the input at fault"},
                "retry_after": {"type": "integer", "minimum": 1, "description": "seconds (with 429)"},
            },
        }
    },
}
# OpenAPI 3.1 has no itemSchema (3.2): for an event stream, the schema describes each event, as parsed
# ({"event", "data", "id", "retry"}), and contentSchema the JSON inside its data.
_SSE_ID: Final[Schema] = {"type": "string", "pattern": "^[0-9]+$", "description": "the event's sequence"}
_SSE_EVENT: Final[Schema] = {
    "description": "One Server-Sent Event: an orchestration event, or an error that ends the stream",
    "oneOf": [
        {
            "type": "object",
            "required": ["event", "data", "id"],
            "additionalProperties": False,
            "properties": {
                "event": {"const": "message"},
                "id": _SSE_ID,
                "retry": {"type": "integer", "minimum": 0},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": "#/components/schemas/orchestratex.v1.OrchestrationEvent"},
                },
            },
        },
        {
            "type": "object",
            "required": ["event", "data"],
            "additionalProperties": False,
            "properties": {
                "event": {"const": "error"},
                "id": _SSE_ID,
                "retry": {"type": "integer", "minimum": 0},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": "#/components/schemas/Error"},
                },
            },
        },
    ],
}
_RETRY_AFTER: Final = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "description": "seconds"}}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "invalid input (the message names the field)",
        401: "missing or invalid API key",
        403: "origin not allowed",
        404: "no such resource (or another tenant's)",
        408: "the request body did not arrive in time (ORX_GATEWAY_BODY_TIMEOUT); the connection is closed",
        409: "the resource is not in the right state",
        413: "request body too large (ORX_GATEWAY_MAX_BODY_BYTES); the connection is closed",
        421: "the Host is not one this gateway answers to (see ORX_GATEWAY_ALLOWED_HOSTS)",
        429: "rate limited",
        502: "a service behind the gateway failed",
        503: "a service behind the gateway is unavailable",
        504: "a service behind the gateway did not answer in time",
    }
    out: dict[str, Any] = {}
    for status in sorted({*statuses, 401, 403, 413, 421, 429, 502, 503, 504}):
        out[str(status)] = _json(_ref("Error"), texts[status], _RETRY_AFTER if status == 429 else None)
    out["default"] = _json(_ref("Error"), "any other error")
    return out


def _openai_errors(*statuses: int) -> dict[str, Any]:
    """The error responses of the OpenAI-compatible surface (OpenAI's shape)."""
    texts = {
        400: "invalid input; param names the parameter",
        401: "missing or invalid API key",
        403: "origin not allowed",
        404: "unknown model",
        408: "the request body did not arrive in time; the connection is closed",
        413: "request body too large (ORX_GATEWAY_MAX_BODY_BYTES); the connection is closed",
        421: "the Host is not one this gateway answers to",
        429: "rate limited; retry after Retry-After seconds",
        502: "a service behind the gateway failed, or the session ended without an answer (x-should-retry: false)",
        503: "a service behind the gateway is unavailable (Retry-After when known)",
        504: "a service behind the gateway did not answer in time",
    }
    out: dict[str, Any] = {}
    for status in sorted({*statuses, 401, 403, 413, 421, 429, 502, 503, 504}):
        headers = _RETRY_AFTER if status in (429, 503) else None
        out[str(status)] = _json(_ref("OpenAIError"), texts[status], headers)
    out["default"] = _json(_ref("OpenAIError"), "any other error")
    return out


def _openai_paths(prefix: str) -> dict[str, Any]:
    """The OpenAI-compatible surface (``/openai/v1``); see docs/gateway.md "OpenAI-compatible API"."""
    session_header = {
        "X-OrchestrateX-Session-Id": {
            "schema": {"type": "string"},
            "description": "the session behind an orchestratex answer (GET /v1/orchestrations/{id})",
        }
    }
    return {
        f"{prefix}/chat/completions": {
            "post": {
                "operationId": "createChatCompletion",
                "summary": "OpenAI's chat completion: orchestratex models run a session, catalogue ids one call",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("OpenAIChatCompletionInput")}},
                },
                "responses": {
                    "200": {
                        "description": "a chat.completion; with stream true, Server-Sent Events: chunks (progress "
                        "as reasoning deltas, then the answer as content, then usage), then data: [DONE]",
                        "headers": session_header,
                        "content": {
                            "application/json": {"schema": _ref("OpenAIChatCompletion")},
                            "text/event-stream": {"schema": _ref("OpenAIServerSentEvent")},
                        },
                    },
                    **_openai_errors(400, 404, 408),
                },
            }
        },
        f"{prefix}/models": {
            "get": {
                "operationId": "listOpenAIModels",
                "summary": "orchestratex, orchestratex/<id> and <id> for each catalogue model",
                "responses": {
                    "200": _json(_ref("OpenAIModelList"), "the models"),
                    **_openai_errors(),
                },
            }
        },
        f"{prefix}/models/{{id}}": {
            "get": {
                "operationId": "getOpenAIModel",
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "description": "a model id (catalogue ids contain '/')",
                        "schema": {"type": "string", "minLength": 1, "examples": ["orchestratex"]},
                    }
                ],
                "responses": {
                    "200": _json(_ref("OpenAIModel"), "the model"),
                    **_openai_errors(404),
                },
            }
        },
    }


def _query(name: str, description: str, schema: Schema | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_ID_PARAM: Final = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "the session id",
    "schema": {"type": "string", "pattern": schemas.ID_PATTERN},
}
_TIME: Final[Schema] = {
    "type": "string",
    "pattern": schemas.TIME_PATTERN,
    "description": f"RFC 3339 (2025-01-31T00:00:00Z), years {schemas.FIRST_YEAR} to {schemas.LAST_YEAR}",
}
_RANGE: Final = [
    _query("start_time", "inclusive start (default: 30 days before the end)", _TIME),
    _query("end_time", "exclusive end (default: now); after start_time, at most 366 days later", _TIME),
]
_SHORT_TEXT: Final[Schema] = {"type": "string", "maxLength": schemas.MAX_ID_CHARS}
# Links from a created session to what can be done with it (Schemathesis follows them in stateful runs).
_SESSION_LINKS: Final = {
    name: {"operationId": operation, "parameters": {"id": "$response.body#/session_id"}}
    for name, operation in (
        ("GetOrchestration", "getOrchestration"),
        ("StreamOrchestrationEvents", "streamOrchestrationEvents"),
        ("CancelOrchestration", "cancelOrchestration"),
        ("SubmitFeedback", "submitFeedback"),
    )
}


@functools.cache
def document(max_prompt_chars: int = 200_000) -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once per prompt limit, ``ORX_MAX_PROMPT_CHARS``)."""
    builder = _SchemaBuilder()
    for message in (
        orchestrator_pb2.OrchestrateRequest,
        orchestrator_pb2.OrchestrationEvent,
        orchestrator_pb2.ListSessionsResponse,
        orchestrator_pb2.GetSessionResponse,
        orchestrator_pb2.CancelSessionResponse,
        providers_pb2.ListModelsResponse,
        analytics_pb2.SubmitFeedbackResponse,
        analytics_pb2.GetModelPerformanceResponse,
        analytics_pb2.GetCostReportResponse,
        analytics_pb2.GetSelectionAccuracyResponse,
        analytics_pb2.GetSatisfactionResponse,
    ):
        builder.message(message.DESCRIPTOR)
    components = builder.schemas
    components["OrchestrateInput"] = schemas.orchestrate_request(max_prompt_chars)
    components["FeedbackInput"] = schemas.FEEDBACK
    components["CancelInput"] = schemas.CANCEL
    components["Error"] = _ERROR_SCHEMA
    components["ServerSentEvent"] = _SSE_EVENT
    components["StartResponse"] = {
        "type": "object",
        "required": ["session_id"],
        "additionalProperties": False,
        "properties": {"session_id": {"type": "string"}},
    }
    components["OpenAIChatCompletionInput"] = openai_schemas.chat_request(max_prompt_chars)
    components["OpenAIChatCompletion"] = openai_schemas.CHAT_COMPLETION
    components["OpenAIChatCompletionChunk"] = openai_schemas.CHAT_COMPLETION_CHUNK
    components["OpenAIServerSentEvent"] = openai_schemas.sse_event(
        _REF + "OpenAIChatCompletionChunk", _REF + "OpenAIError"
    )
    components["OpenAIError"] = openai_schemas.ERROR
    components["OpenAIModel"] = openai_schemas.MODEL
    components["OpenAIModelList"] = openai_schemas.MODEL_LIST
    components["Health"] = {
        "type": "object",
        "required": ["status"],
        "additionalProperties": False,
        "properties": {"status": {"const": "ok"}},
    }
    components["Readiness"] = {
        "type": "object",
        "required": ["status", "checks"],
        "additionalProperties": False,
        "properties": {
            "status": {"enum": ["ready", "not ready"]},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    paths: dict[str, Any] = {
        "/v1/orchestrations": {
            "post": {
                "operationId": "startOrchestration",
                "summary": "Start a session that runs on its own (detached); returns its id",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("OrchestrateInput")}},
                },
                "responses": {
                    "201": {
                        **_json(
                            _ref("StartResponse"),
                            "the session started",
                            {"Location": {"schema": {"type": "string"}, "description": "the session's URL"}},
                        ),
                        "links": _SESSION_LINKS,
                    },
                    **_errors(400, 408),
                },
            },
            "get": {
                "operationId": "listOrchestrations",
                "summary": "Sessions of the caller's tenant, newest first, paged",
                "parameters": [
                    _query("page_size", "default 20", {"type": "integer", "minimum": 1, "maximum": 100}),
                    _query(
                        "page_token",
                        "next_page_token of the previous page",
                        {
                            "type": "string",
                            "maxLength": schemas.MAX_PAGE_TOKEN_CHARS,
                            "pattern": schemas.PAGE_TOKEN_PATTERN,
                        },
                    ),
                    _query(
                        "status",
                        "only sessions in this state",
                        {"enum": enum_names(orchestrator_pb2.SessionStatus.DESCRIPTOR, "SESSION_STATUS_")},
                    ),
                    _query("thread_id", "only this thread (empty: any)", _SHORT_TEXT),
                    _query(
                        "q",
                        "only sessions whose prompt contains this text, case-insensitive, at most "
                        f"{schemas.MAX_SEARCH_CHARS} characters (empty: any)",
                        {"type": "string", "maxLength": schemas.MAX_SEARCH_CHARS},
                    ),
                    *_RANGE,
                ],
                "responses": {
                    "200": _json(_ref("orchestratex.v1.ListSessionsResponse"), "one page"),
                    **_errors(400),
                },
            },
        },
        "/v1/orchestrations/{id}": {
            "get": {
                "operationId": "getOrchestration",
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": _json(_ref("orchestratex.v1.GetSessionResponse"), "the session"),
                    **_errors(400, 404),
                },
            }
        },
        "/v1/orchestrations/{id}/events": {
            "get": {
                "operationId": "streamOrchestrationEvents",
                "summary": "Server-Sent Events: id = sequence, data = OrchestrationEvent; ends after the last event",
                "parameters": [
                    _ID_PARAM,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                        "description": "resume after this sequence",
                    },
                    _query(
                        "after",
                        "resume after this sequence (for clients that cannot set headers)",
                        {"type": "integer", "minimum": 0, "maximum": schemas.MAX_SEQUENCE},
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "the event stream: `retry: 2000`, then per event `id: <sequence>` and "
                        "`data: <OrchestrationEvent JSON>` (components/schemas/orchestratex.v1.OrchestrationEvent); "
                        "`event: error` with `data: <Error JSON>` if the stream fails",
                        "content": {"text/event-stream": {"schema": _ref("ServerSentEvent")}},
                    },
                    "204": {"description": "the session has ended and nothing is left after the resume point"},
                    **_errors(400, 404),
                },
            }
        },
        "/v1/orchestrations/{id}:cancel": {
            "post": {
                "operationId": "cancelOrchestration",
                "parameters": [_ID_PARAM],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("CancelInput")}},
                },
                "responses": {
                    "200": _json(_ref("orchestratex.v1.CancelSessionResponse"), "the session after cancellation"),
                    **_errors(400, 404, 408),
                },
            }
        },
        "/v1/orchestrations/{id}/feedback": {
            "post": {
                "operationId": "submitFeedback",
                "parameters": [_ID_PARAM],
                "summary": "Rate a finished session (409 while it runs)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("FeedbackInput")}}},
                "responses": {
                    "200": _json(_ref("orchestratex.v1.SubmitFeedbackResponse"), "the stored feedback"),
                    **_errors(400, 404, 408, 409),
                },
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "parameters": [
                    _query("include_unavailable", "include models that cannot be called", {"type": "boolean"})
                ],
                "responses": {
                    "200": _json(_ref("orchestratex.v1.ListModelsResponse"), "the catalogue with live health"),
                    **_errors(400),
                },
            }
        },
        "/v1/analytics/performance": {
            "get": {
                "operationId": "getModelPerformance",
                "parameters": [
                    *_RANGE,
                    _query("model", "only this model (empty: any)", _SHORT_TEXT),
                    _query("domain", "only this domain", {"enum": enum_names(common_pb2.Domain.DESCRIPTOR, "DOMAIN_")}),
                ],
                "responses": {
                    "200": _json(_ref("orchestratex.v1.GetModelPerformanceResponse"), "the performance report"),
                    **_errors(400),
                },
            }
        },
        "/v1/analytics/costs": {
            "get": {
                "operationId": "getCostReport",
                "parameters": [
                    *_RANGE,
                    _query("session_limit", "default 100", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
                "responses": {
                    "200": _json(_ref("orchestratex.v1.GetCostReportResponse"), "the cost report"),
                    **_errors(400),
                },
            }
        },
        "/v1/analytics/selection-accuracy": {
            "get": {
                "operationId": "getSelectionAccuracy",
                "parameters": list(_RANGE),
                "responses": {
                    "200": _json(_ref("orchestratex.v1.GetSelectionAccuracyResponse"), "the accuracy report"),
                    **_errors(400),
                },
            }
        },
        "/v1/analytics/satisfaction": {
            "get": {
                "operationId": "getSatisfaction",
                "parameters": list(_RANGE),
                "responses": {
                    "200": _json(_ref("orchestratex.v1.GetSatisfactionResponse"), "the satisfaction report"),
                    **_errors(400),
                },
            }
        },
        **_openai_paths(openai_schemas.PREFIX),
        "/v1/openapi.json": {
            "get": {
                "operationId": "openApi",
                "security": [],
                "responses": {"200": {"description": "this document", "content": {"application/json": {}}}},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "security": [],
                "responses": {"200": _json(_ref("Health"), "the process is up")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "security": [],
                "responses": {
                    "200": _json(_ref("Readiness"), "the services the gateway needs are serving"),
                    "503": _json(_ref("Readiness"), "not ready"),
                },
            }
        },
        "/": {
            "get": {
                "operationId": "page",
                "security": [],
                "responses": {"200": {"description": "the browser app", "content": {"text/html": {}}}},
            }
        },
        "/static/{path}": {
            "get": {
                "operationId": "staticFile",
                "security": [],
                "parameters": [
                    {
                        "name": "path",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "examples": ["app.js", "style.css"]},
                    }
                ],
                "responses": {
                    "200": {"description": "a file of the browser app"},
                    "404": _json(_ref("Error"), "no such file"),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "OrchestrateX gateway",
            "version": "1",
            "description": "REST and Server-Sent Events access to OrchestrateX. Protobuf payloads are "
            "canonical proto3 JSON with the proto field names (what grpcurl prints), and every name the "
            "gateway writes or documents is snake_case; body fields and query parameters may also be spelt "
            "in lowerCamelCase (maxRounds, pageSize). The WebSocket endpoint GET /v1/ws (JSON messages, "
            "described in docs/gateway.md) is outside what OpenAPI describes. Under /openai/v1, an "
            "OpenAI-compatible API (OpenAI's names, objects and error shape) serves OrchestrateX as a model.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key; required when the gateway has keys configured",
                }
            },
        },
    }

"""JSON Schemas (2020-12) of the OpenAI-compatible surface: what clients may send and what they get back.

As with :mod:`gateway.schemas`, the request schema is both published (:mod:`gateway.openapi`) and enforced
(:func:`gateway.openai_request.parse_chat_request`) before any service is called, so the document and the
gateway agree: a body the document calls valid is accepted, one it calls invalid gets 400 naming the parameter.
Rules across messages (the last one is the user's) stay with the orchestrator, which answers INVALID_ARGUMENT
naming the message.

Names are OpenAI's (snake_case, like everything the gateway writes). The loop's settings travel in the
``orchestratex`` object (the SDKs' ``extra_body``), with the limits of ``OrchestrateRequest``.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from gateway import schemas

Schema = dict[str, Any]

#: The path prefix of the surface; SDKs take ``http://host:port/openai/v1`` as their base URL.
PREFIX: Final = "/openai/v1"
#: The orchestrated model; ``orchestratex/<catalogue id>`` pins the primary.
ORCHESTRATEX: Final = "orchestratex"
PINNED_PREFIX: Final = ORCHESTRATEX + "/"
#: Where progress (and a pass-through model's own reasoning) goes in messages and deltas.
REASONING_FIELDS: Final = ("reasoning_content", "reasoning", "none")
DEFAULT_REASONING_FIELD: Final = "reasoning_content"
#: Preference weights (quality, cost, latency) for ``orchestratex.optimize_for``; weights given in
#: ``orchestratex.preferences`` override them one by one.
OPTIMIZE_FOR: Final[dict[str, tuple[float, float, float]]] = {
    "quality": (1.0, 0.1, 0.1),
    "balanced": (1.0, 0.3, 0.2),
    "cost": (0.4, 1.0, 0.2),
    "latency": (0.4, 0.2, 1.0),
}
MAX_MODEL_CHARS: Final = 256
MAX_MESSAGES: Final = 1000
MAX_PARTS: Final = 100
MAX_STOP: Final = 4
MAX_STOP_CHARS: Final = 256
MAX_USER_CHARS: Final = 128
INT32_MAX: Final = 2**31 - 1
#: ``seed``'s range: integers a double holds exactly. JSON parsers read larger numbers as doubles, which would
#: round an out-of-range int64 into range.
MAX_SEED: Final = 2**53 - 1
#: ``response_format.json_schema.name``, as the providers service accepts it.
SCHEMA_NAME_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
#: The loop settings, refused for pass-through models (one call, no loop).
LOOP_SETTINGS: Final = (
    "max_rounds",
    "quality_threshold",
    "critic_count",
    "budget_usd",
    "time_limit_s",
    "plateau_epsilon",
    "patience",
    "shadow_evaluation",
    "optimize_for",
    "preferences",
)

#: Known OpenAI parameters the surface refuses (400 ``unsupported_parameter``) rather than ignores.
UNSUPPORTED: Final = frozenset(
    {
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "parallel_tool_calls",
        "top_logprobs",
        "logit_bias",
        "audio",
        "modalities",
        "prediction",
        "web_search_options",
        "reasoning_effort",
        "reasoning",
        "service_tier",
        "store",
        "metadata",
        "verbosity",
        "prompt_cache_key",
        "safety_identifier",
        "top_k",
        "min_p",
        "repetition_penalty",
        "models",
        "provider",
        "transforms",
        "usage",
    }
)

_NULL: Final[Schema] = {"type": "null"}
_TEXT: Final[Schema] = {"type": "string", "pattern": schemas.NOT_BLANK_PATTERN, "description": "not blank"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, _NULL]}


@functools.cache
def message_schema(max_chars: int) -> Schema:
    """One message of the conversation: a role and text (a string, or an array of text parts)."""
    text = {**_TEXT, "maxLength": max_chars}
    part = {
        "type": "object",
        "additionalProperties": False,
        "required": ["type", "text"],
        "properties": {"type": {"const": "text"}, "text": text},
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["role", "content"],
        "description": "developer is read as system; text parts are joined with newlines. Tool, function, "
        "image, audio and file content are not supported.",
        "properties": {
            "role": {"enum": ["system", "developer", "user", "assistant"]},
            "content": {
                "anyOf": [
                    text,
                    {"type": "array", "minItems": 1, "maxItems": MAX_PARTS, "items": part},
                ]
            },
        },
    }


_RESPONSE_FORMAT: Final[Schema] = {
    "description": "text (the default), any JSON object, or JSON that validates against a schema "
    "(models whose catalogue entry supports structured outputs)",
    "oneOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["type"],
            "properties": {"type": {"enum": ["text", "json_object"]}},
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["type", "json_schema"],
            "properties": {
                "type": {"const": "json_schema"},
                "json_schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "schema"],
                    "properties": {
                        "name": {"type": "string", "pattern": SCHEMA_NAME_PATTERN},
                        "description": {"type": "string", "maxLength": 1000},
                        "schema": {"type": "object", "description": "a JSON Schema for an object"},
                        "strict": {"type": ["boolean", "null"]},
                    },
                },
            },
        },
    ],
}

ORCHESTRATEX_OPTIONS: Final[Schema] = {
    "type": "object",
    "additionalProperties": False,
    "description": "OrchestrateX's own settings (the SDKs' extra_body), with OrchestrateRequest's limits. Only "
    "reasoning_field applies to pass-through models.",
    "properties": {
        "max_rounds": {"type": "integer", "minimum": 1, "maximum": 10, "description": "default 3"},
        "quality_threshold": {"type": "number", "minimum": 0, "maximum": 10, "description": "default 8"},
        "critic_count": {
            "type": "integer",
            "minimum": 0,
            "maximum": 5,
            "description": "default 2; 0 allows only max_rounds 1 (checked by the orchestrator)",
        },
        "budget_usd": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6, "description": "spending cap"},
        "time_limit_s": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 3600,
            "description": "wall-time limit of the session in seconds (default 300)",
        },
        "plateau_epsilon": {"type": "number", "minimum": 0, "maximum": 10, "description": "default 0.25"},
        "patience": {"type": "integer", "minimum": 1, "maximum": 10, "description": "default 1"},
        "shadow_evaluation": {"type": "boolean", "description": "force shadow evaluation on or off"},
        "optimize_for": {
            "enum": list(OPTIMIZE_FOR),
            "description": "preset selection weights; weights in preferences override them one by one",
        },
        "preferences": schemas.PREFERENCES,
        "reasoning_field": {
            "enum": list(REASONING_FIELDS),
            "description": f"where progress goes (default {DEFAULT_REASONING_FIELD}; reasoning is OpenRouter's "
            "field; none sends only the answer)",
        },
    },
}


@functools.cache
def chat_request(max_prompt_chars: int) -> Schema:
    """``POST /openai/v1/chat/completions``'s body."""
    tokens = {"type": ["integer", "null"], "minimum": 1, "maximum": INT32_MAX}
    stop_text = {"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["model", "messages"],
        "description": "OpenAI's chat completion request. Parameters outside this schema are refused with 400 "
        "naming them (tools, n > 1, logprobs, audio, image parts...), never ignored.",
        "examples": [
            {
                "model": ORCHESTRATEX,
                "messages": [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": "Write a Python function that merges two sorted lists"},
                ],
                "orchestratex": {"max_rounds": 2},
            }
        ],
        "properties": {
            "model": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_MODEL_CHARS,
                "description": "orchestratex, orchestratex/<catalogue id> (that model is the primary), or a "
                "catalogue id (one call, no critique); see GET /openai/v1/models",
            },
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_MESSAGES,
                "items": message_schema(max_prompt_chars),
                "description": "the conversation, oldest first; for orchestratex models the last one is the user's",
            },
            "stream": {"type": ["boolean", "null"]},
            "stream_options": _nullable(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"include_usage": {"type": ["boolean", "null"]}},
                }
            ),
            "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
            "top_p": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
            "max_tokens": {**tokens, "description": "output ceiling of each answer (max_completion_tokens too)"},
            "max_completion_tokens": tokens,
            "seed": {"type": ["integer", "null"], "minimum": -MAX_SEED, "maximum": MAX_SEED},
            "stop": _nullable({"anyOf": [stop_text, {"type": "array", "maxItems": MAX_STOP, "items": stop_text}]}),
            "response_format": _nullable(_RESPONSE_FORMAT),
            "user": {"type": ["string", "null"], "maxLength": MAX_USER_CHARS},
            "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 1, "description": "only 1"},
            "logprobs": {"enum": [False, None], "description": "not supported: false or absent"},
            "frequency_penalty": {"anyOf": [{"const": 0}, _NULL], "description": "not supported: 0 or absent"},
            "presence_penalty": {"anyOf": [{"const": 0}, _NULL], "description": "not supported: 0 or absent"},
            "orchestratex": _nullable(ORCHESTRATEX_OPTIONS),
        },
        # One output ceiling, under either name.
        "not": {"required": ["max_tokens", "max_completion_tokens"]},
        # A pass-through model makes one call: the loop's settings do not apply to it.
        "if": {
            "required": ["model"],
            "properties": {"model": {"type": "string", "not": {"pattern": "^orchestratex(/|$)"}}},
        },
        "then": {"properties": {"orchestratex": {"properties": dict.fromkeys(LOOP_SETTINGS, False)}}},
    }


# ---------------------------------------------------------------------------------------------- responses

USAGE: Final[Schema] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["prompt_tokens", "completion_tokens", "total_tokens", "cost"],
    "description": "every call of the session summed (critics and refinements included); cost in US dollars "
    "(OpenRouter's convention)",
    "properties": {
        "prompt_tokens": {"type": "integer", "minimum": 0},
        "completion_tokens": {"type": "integer", "minimum": 0},
        "total_tokens": {"type": "integer", "minimum": 0},
        "cost": {"type": "number", "minimum": 0},
        "prompt_tokens_details": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"cached_tokens": {"type": "integer", "minimum": 0}},
        },
        "completion_tokens_details": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"reasoning_tokens": {"type": "integer", "minimum": 0}},
        },
    },
}

SESSION_INFO: Final[Schema] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["session_id"],
    "description": "the session behind an orchestratex answer (GET /v1/orchestrations/{session_id})",
    "properties": {
        "session_id": {"type": "string"},
        "best_model": {"type": "string"},
        "best_round": {"type": "integer"},
        "rounds_used": {"type": "integer"},
        "final_score": {"type": "number"},
        "unscored": {"type": "boolean"},
        "stop_reason": {"type": "string"},
    },
}

_FINISH: Final[Schema] = {"enum": ["stop", "length", "content_filter"]}
_REASONING: Final[Schema] = {"type": "string", "description": "progress of the loop, or the model's reasoning"}

CHAT_COMPLETION: Final[Schema] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        "id": {"type": "string", "description": "chatcmpl-<session id> for orchestratex models"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string", "description": "the model asked for; for pass-through, the one that served"},
        "choices": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": {"const": 0},
                    "message": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"const": "assistant"},
                            "content": {"type": "string", "description": "the final (best) answer"},
                            "refusal": _NULL,
                            "reasoning_content": _REASONING,
                            "reasoning": _REASONING,
                        },
                    },
                    "finish_reason": _FINISH,
                    "logprobs": _NULL,
                },
            },
        },
        "usage": USAGE,
        "orchestratex": SESSION_INFO,
    },
}

CHAT_COMPLETION_CHUNK: Final[Schema] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion.chunk"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "maxItems": 1,
            "description": "empty on the last chunk, which carries usage",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["index", "delta", "finish_reason"],
                "properties": {
                    "index": {"const": 0},
                    "delta": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "role": {"const": "assistant"},
                            "content": {"type": "string"},
                            "reasoning_content": _REASONING,
                            "reasoning": _REASONING,
                        },
                    },
                    "finish_reason": {"anyOf": [_FINISH, _NULL]},
                    "logprobs": _NULL,
                },
            },
        },
        "usage": USAGE,
        "orchestratex": SESSION_INFO,
    },
}

ERROR: Final[Schema] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["error"],
    "description": "OpenAI's error shape",
    "properties": {
        "error": {
            "type": "object",
            "additionalProperties": False,
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {
                    "enum": [
                        "invalid_request_error",
                        "authentication_error",
                        "permission_error",
                        "not_found_error",
                        "rate_limit_error",
                        "server_error",
                    ]
                },
                "param": {"type": ["string", "null"], "description": "the parameter at fault"},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

MODEL: Final[Schema] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "context_length": {"type": "integer"},
    },
}

MODEL_LIST: Final[Schema] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": MODEL}},
}


def sse_event(chunk_ref: str, error_ref: str) -> Schema:
    """One Server-Sent Event of a streamed completion, as parsed: ``data`` is a chunk, an error, or ``[DONE]``."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["event", "data"],
        "description": "data: a chat.completion.chunk, then [DONE]; or an error (the stream then ends); comment "
        "lines (: keep-alive) in between",
        "properties": {
            "event": {"const": "message"},
            "data": {
                "type": "string",
                "if": {"const": "[DONE]"},
                "else": {
                    "contentMediaType": "application/json",
                    "contentSchema": {"anyOf": [{"$ref": chunk_ref}, {"$ref": error_ref}]},
                },
            },
        },
    }

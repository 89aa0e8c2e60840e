"""What clients may send: JSON Schemas (2020-12, the dialect of OpenAPI 3.1) for bodies and parameters.

The same schemas are published in the OpenAPI document (:mod:`gateway.openapi`) and enforced by the gateway
(:func:`check`) before anything is sent to a service, so the document and the gateway cannot disagree: a request
the document calls valid is accepted, one it calls invalid gets 400 naming the field. The limits are the
services' own (``services/orchestrator/requests.py``, ``services/analytics/requests.py``); rules that span
several fields (``critic_count`` 0 needs ``max_rounds`` 1, a time range's start before its end) stay with the
services, which answer INVALID_ARGUMENT.

Bodies are described with the proto field names; lowerCamelCase spellings are accepted too and renamed before
the check (:func:`proto_names`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Final

import jsonschema

from gateway.errors import invalid

Schema = dict[str, Any]

MAX_ID_CHARS: Final = 128
MAX_REASON_CHARS: Final = 1000
MAX_COMMENT_CHARS: Final = 5000
MAX_PAGE_TOKEN_CHARS: Final = 2048
MAX_SEARCH_CHARS: Final = 200
"""The longest ``q`` of ``GET /v1/orchestrations`` (the orchestrator's ``prompt_contains`` limit)."""
MAX_SEQUENCE: Final = 2**63 - 1
#: Years the services can store: nanoseconds in a signed 64-bit integer reach 1677-09-21 to 2262-04-11;
#: whole years inside that, so that an offset of up to a day never leaves it.
FIRST_YEAR: Final = 1678
LAST_YEAR: Final = 2261

#: Page tokens are base64url (``services.orchestrator.store.base.encode_page_token``).
PAGE_TOKEN_PATTERN: Final = r"^[A-Za-z0-9_=-]*$"
#: Session and thread ids in paths: what the orchestrator issues (hex and dashes), and more.
ID_PATTERN: Final = r"^[A-Za-z0-9._~-]{1,128}$"
#: An RFC 3339 time in the years above, as proto3 JSON writes it (upper-case T and Z, 0-9 fractional digits).
#: Dates are limited to those every month has, plus the 29th/30th/31st where every year has them, so that
#: anything matching exists; the gateway also accepts the few valid dates left out (February 29 of leap years).
TIME_PATTERN: Final = (
    r"^(?:167[89]|16[89][0-9]|1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9]|226[01])"
    r"-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
#: A proto3 JSON Duration above 0 and at most one hour (``"90s"``, ``"1.5s"``).
TIME_LIMIT_PATTERN: Final = (
    r"^(?:(?:[1-9][0-9]{0,2}|[12][0-9]{3}|3[0-5][0-9]{2})(?:\.[0-9]{1,9})?"
    r"|0\.(?=[0-9]*[1-9])[0-9]{1,9}|3600(?:\.0{1,9})?)s$"
)

#: Text that is not blank: it has a character that is white space for neither regex engine that reads the
#: document's patterns (ECMA-262, as Schemathesis and browsers read them, and Python's ``re``, as the gateway
#: does; ``\\S`` differs between them on U+001C-U+001F, U+0085 and U+FEFF).
NOT_BLANK_PATTERN: Final = r"[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"

_MODEL_ID: Final[Schema] = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}
_WEIGHT: Final[Schema] = {"type": "number", "minimum": 0, "maximum": 1e9}

PREFERENCES: Final[Schema] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Selection preferences (orchestratex.v1.Preferences)",
    "properties": {
        "quality_weight": {**_WEIGHT, "description": "weight of expected quality"},
        "cost_weight": {**_WEIGHT, "description": "weight of low cost"},
        "latency_weight": {**_WEIGHT, "description": "weight of low latency"},
        "max_cost_usd": {**_WEIGHT, "description": "models estimated to cost more for this prompt are dropped"},
        "allowed_models": {"type": "array", "maxItems": 100, "items": _MODEL_ID, "description": "only these"},
        "excluded_models": {"type": "array", "maxItems": 100, "items": _MODEL_ID, "description": "never these"},
        "pinned_model": {"type": "string", "maxLength": MAX_ID_CHARS, "description": "use as the primary"},
    },
}


@functools.cache
def orchestrate_request(max_prompt_chars: int) -> Schema:
    """``OrchestrateRequest`` (without ``detached``'s REST meaning: REST sessions always run detached)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt"],
        "description": "An OrchestrateRequest in proto3 JSON (lowerCamelCase names are accepted too). "
        "critic_count 0 allows only max_rounds 1 (checked by the orchestrator).",
        "examples": [{"prompt": "Write a Python function that merges two sorted lists", "max_rounds": 2}],
        "properties": {
            "prompt": {
                "type": "string",
                "minLength": 1,
                "maxLength": max_prompt_chars,
                "pattern": r"\S",
                "description": "the user's prompt; not blank",
            },
            "max_rounds": {"type": "integer", "minimum": 1, "maximum": 10, "description": "default 3"},
            "quality_threshold": {"type": "number", "minimum": 0, "maximum": 10, "description": "default 8"},
            "critic_count": {"type": "integer", "minimum": 0, "maximum": 5, "description": "default 2"},
            "preferences": PREFERENCES,
            "budget_usd": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6, "description": "spending cap"},
            "time_limit": {
                "type": "string",
                "pattern": TIME_LIMIT_PATTERN,
                "description": "wall-time limit, above 0 and at most 3600s (default 300s)",
            },
            "thread_id": {"type": "string", "maxLength": MAX_ID_CHARS, "description": "groups sessions"},
            "detached": {"type": "boolean", "description": "keep running when the stream is dropped"},
            "plateau_epsilon": {"type": "number", "minimum": 0, "maximum": 10, "description": "default 0.25"},
            "patience": {"type": "integer", "minimum": 1, "maximum": 10, "description": "default 1"},
            "shadow_evaluation": {"type": "boolean", "description": "force shadow evaluation on or off"},
        },
    }


FEEDBACK: Final[Schema] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["rating"],
    "description": "A rating of a finished session (user_id may be spelt userId)",
    "examples": [{"rating": 5, "comment": "correct and short"}],
    "properties": {
        "rating": {"type": "integer", "minimum": 1, "maximum": 5, "description": "1 (bad) to 5 (excellent)"},
        "comment": {"type": "string", "maxLength": MAX_COMMENT_CHARS},
        "user_id": {"type": "string", "maxLength": MAX_ID_CHARS, "description": "default anonymous"},
    },
}

CANCEL: Final[Schema] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"reason": {"type": "string", "maxLength": MAX_REASON_CHARS}},
}


def proto_names(
    data: Mapping[str, Any], descriptor: Any, renames: dict[str, str] | None = None, path: str = ""
) -> dict[str, Any]:
    """``data`` with lowerCamelCase keys renamed to the proto field names (recursively for message fields).

    Unknown keys are kept (the schema check names them); both spellings of one field is an error. Each rename is
    recorded in ``renames`` (proto path -> the key the client used), so errors can name what the client sent.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)
        name = field.name if field is not None else key
        here = _join(path, name)
        if name in out:
            raise invalid(key, f"is given twice (as {name} and {key})")
        if renames is not None and name != key:
            renames[here] = key
        if field is not None and field.message_type is not None and isinstance(value, Mapping):
            out[name] = proto_names(value, field.message_type, renames, here)
        else:
            out[name] = value
    return out


# Validators by schema id; the schema is kept beside its validator, so the id stays its own.
_VALIDATORS: dict[int, tuple[Schema, Any]] = {}


def check(schema: Schema, data: Any, where: str = "", renames: Mapping[str, str] | None = None) -> None:
    """Raise INVALID_ARGUMENT naming the field (prefixed with ``where``, spelt as the client did according to
    ``renames`` from :func:`proto_names`) when ``data`` breaks ``schema``."""
    entry = _VALIDATORS.get(id(schema))
    if entry is None:
        entry = _VALIDATORS[id(schema)] = (schema, jsonschema.Draft202012Validator(schema))
    validator = entry[1]
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return
    path = [str(p) if isinstance(p, str) else f"[{p}]" for p in error.absolute_path]
    problem = _problem(error)
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        path.append(missing[0])
        problem = "is required"
    elif error.validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        extra = sorted(str(name) for name in error.instance if name not in known)
        path.append(extra[0][:60])
        problem = f"unknown field; expected one of {', '.join(sorted(known))}"
    field, proto_path = where, ""
    for part in path:
        if part.startswith("["):
            field += part
            proto_path += part
        else:
            proto_path = _join(proto_path, part)
            field = _join(field, (renames or {}).get(proto_path, part))
    raise invalid(field or "body", problem)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


_PATTERN_PROBLEMS: Final = {
    r"\S": "is required and must not be blank",
    NOT_BLANK_PATTERN: "is required and must not be blank",
    TIME_LIMIT_PATTERN: "expected a duration above 0s and at most 3600s, such as 90s or 1.5s",
    TIME_PATTERN: f"expected an RFC 3339 time in the years {FIRST_YEAR} to {LAST_YEAR}, such as 2025-01-31T00:00:00Z",
    ID_PATTERN: "expected 1 to 128 letters, digits, '.', '_', '~' or '-'",
    PAGE_TOKEN_PATTERN: "is not a token returned by a previous page",
}
_TYPES: Final = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "an array",
}


def _problem(error: jsonschema.exceptions.ValidationError) -> str:
    schema: Schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    value = error.instance
    if kind == "type":
        return f"expected {_TYPES.get(str(error.validator_value), error.validator_value)}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        above = "above" if "exclusiveMinimum" in schema else "at least"
        return f"must be {above} {_number(low)} and at most {_number(high)}, got {_number(value)}"
    if kind == "maxLength":
        return f"is {len(value):,} characters; the limit is {schema['maxLength']:,}"
    if kind == "minLength":
        return "must not be empty"
    if kind == "maxItems":
        return f"has {len(value)} items; the limit is {schema['maxItems']}"
    if kind == "pattern":
        return _PATTERN_PROBLEMS.get(str(schema.get("pattern")), "is not in the expected form")
    if kind == "enum":
        return f"must be one of {', '.join(map(str, schema.get('enum', [])))}"
    return "is not valid"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if not isinstance(value, str) else value

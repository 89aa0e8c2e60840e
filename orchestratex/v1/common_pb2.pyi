import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Domain(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOMAIN_UNSPECIFIED: _ClassVar[Domain]
    DOMAIN_CODING: _ClassVar[Domain]
    DOMAIN_MATH: _ClassVar[Domain]
    DOMAIN_REASONING: _ClassVar[Domain]
    DOMAIN_CREATIVE: _ClassVar[Domain]
    DOMAIN_FACTUAL: _ClassVar[Domain]
    DOMAIN_SUMMARIZATION: _ClassVar[Domain]
    DOMAIN_EXTRACTION: _ClassVar[Domain]
    DOMAIN_CLASSIFICATION: _ClassVar[Domain]
    DOMAIN_BRAINSTORMING: _ClassVar[Domain]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_SYSTEM: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_ASSISTANT: _ClassVar[Role]

class CircuitState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CIRCUIT_STATE_UNSPECIFIED: _ClassVar[CircuitState]
    CIRCUIT_STATE_CLOSED: _ClassVar[CircuitState]
    CIRCUIT_STATE_OPEN: _ClassVar[CircuitState]
    CIRCUIT_STATE_HALF_OPEN: _ClassVar[CircuitState]

class FailureKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_KIND_UNSPECIFIED: _ClassVar[FailureKind]
    FAILURE_KIND_RATE_LIMITED: _ClassVar[FailureKind]
    FAILURE_KIND_UPSTREAM_ERROR: _ClassVar[FailureKind]
    FAILURE_KIND_TIMEOUT: _ClassVar[FailureKind]
    FAILURE_KIND_MID_STREAM_ERROR: _ClassVar[FailureKind]
    FAILURE_KIND_INVALID_OUTPUT: _ClassVar[FailureKind]
    FAILURE_KIND_INVALID_REQUEST: _ClassVar[FailureKind]
    FAILURE_KIND_REFUSED: _ClassVar[FailureKind]
    FAILURE_KIND_CIRCUIT_OPEN: _ClassVar[FailureKind]
    FAILURE_KIND_CANCELLED: _ClassVar[FailureKind]
    FAILURE_KIND_AUTH: _ClassVar[FailureKind]
    FAILURE_KIND_CREDITS: _ClassVar[FailureKind]

class CallPurpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALL_PURPOSE_UNSPECIFIED: _ClassVar[CallPurpose]
    CALL_PURPOSE_ANSWER: _ClassVar[CallPurpose]
    CALL_PURPOSE_CRITIQUE: _ClassVar[CallPurpose]
    CALL_PURPOSE_REFINE: _ClassVar[CallPurpose]
    CALL_PURPOSE_CLASSIFY: _ClassVar[CallPurpose]
    CALL_PURPOSE_OTHER: _ClassVar[CallPurpose]
    CALL_PURPOSE_AGGREGATE: _ClassVar[CallPurpose]
DOMAIN_UNSPECIFIED: Domain
DOMAIN_CODING: Domain
DOMAIN_MATH: Domain
DOMAIN_REASONING: Domain
DOMAIN_CREATIVE: Domain
DOMAIN_FACTUAL: Domain
DOMAIN_SUMMARIZATION: Domain
DOMAIN_EXTRACTION: Domain
DOMAIN_CLASSIFICATION: Domain
DOMAIN_BRAINSTORMING: Domain
ROLE_UNSPECIFIED: Role
ROLE_SYSTEM: Role
ROLE_USER: Role
ROLE_ASSISTANT: Role
CIRCUIT_STATE_UNSPECIFIED: CircuitState
CIRCUIT_STATE_CLOSED: CircuitState
CIRCUIT_STATE_OPEN: CircuitState
CIRCUIT_STATE_HALF_OPEN: CircuitState
FAILURE_KIND_UNSPECIFIED: FailureKind
FAILURE_KIND_RATE_LIMITED: FailureKind
FAILURE_KIND_UPSTREAM_ERROR: FailureKind
FAILURE_KIND_TIMEOUT: FailureKind
FAILURE_KIND_MID_STREAM_ERROR: FailureKind
FAILURE_KIND_INVALID_OUTPUT: FailureKind
FAILURE_KIND_INVALID_REQUEST: FailureKind
FAILURE_KIND_REFUSED: FailureKind
FAILURE_KIND_CIRCUIT_OPEN: FailureKind
FAILURE_KIND_CANCELLED: FailureKind
FAILURE_KIND_AUTH: FailureKind
FAILURE_KIND_CREDITS: FailureKind
CALL_PURPOSE_UNSPECIFIED: CallPurpose
CALL_PURPOSE_ANSWER: CallPurpose
CALL_PURPOSE_CRITIQUE: CallPurpose
CALL_PURPOSE_REFINE: CallPurpose
CALL_PURPOSE_CLASSIFY: CallPurpose
CALL_PURPOSE_OTHER: CallPurpose
CALL_PURPOSE_AGGREGATE: CallPurpose

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: Role
    content: str
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., content: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens", "total_tokens", "cost_usd")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int
    total_tokens: int
    cost_usd: float
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ...) -> None: ...

class DomainScore(_message.Message):
    __slots__ = ("domain", "score", "reason")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    domain: Domain
    score: float
    reason: str
    def __init__(self, domain: _Optional[_Union[Domain, str]] = ..., score: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class ModelHealth(_message.Message):
    __slots__ = ("circuit_state", "consecutive_failures", "cooldown_remaining", "in_flight", "unavailable_reason")
    CIRCUIT_STATE_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_REMAINING_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    circuit_state: CircuitState
    consecutive_failures: int
    cooldown_remaining: _duration_pb2.Duration
    in_flight: int
    unavailable_reason: FailureKind
    def __init__(self, circuit_state: _Optional[_Union[CircuitState, str]] = ..., consecutive_failures: _Optional[int] = ..., cooldown_remaining: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., in_flight: _Optional[int] = ..., unavailable_reason: _Optional[_Union[FailureKind, str]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("id", "display_name", "family", "provider", "context_length", "max_output_tokens", "input_price_per_mtok", "output_price_per_mtok", "specialties", "simulated", "supports_json_mode", "health", "typical_ttft", "typical_tokens_per_second", "supports_structured_outputs")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    SPECIALTIES_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_JSON_MODE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    TYPICAL_TTFT_FIELD_NUMBER: _ClassVar[int]
    TYPICAL_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_STRUCTURED_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    family: str
    provider: str
    context_length: int
    max_output_tokens: int
    input_price_per_mtok: float
    output_price_per_mtok: float
    specialties: _containers.RepeatedCompositeFieldContainer[DomainScore]
    simulated: bool
    supports_json_mode: bool
    health: ModelHealth
    typical_ttft: _duration_pb2.Duration
    typical_tokens_per_second: float
    supports_structured_outputs: bool
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., family: _Optional[str] = ..., provider: _Optional[str] = ..., context_length: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., input_price_per_mtok: _Optional[float] = ..., output_price_per_mtok: _Optional[float] = ..., specialties: _Optional[_Iterable[_Union[DomainScore, _Mapping]]] = ..., simulated: _Optional[bool] = ..., supports_json_mode: _Optional[bool] = ..., health: _Optional[_Union[ModelHealth, _Mapping]] = ..., typical_ttft: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., typical_tokens_per_second: _Optional[float] = ..., supports_structured_outputs: _Optional[bool] = ...) -> None: ...

class Preferences(_message.Message):
    __slots__ = ("quality_weight", "cost_weight", "latency_weight", "max_cost_usd", "allowed_models", "excluded_models", "pinned_model")
    QUALITY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    COST_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_MODELS_FIELD_NUMBER: _ClassVar[int]
    PINNED_MODEL_FIELD_NUMBER: _ClassVar[int]
    quality_weight: float
    cost_weight: float
    latency_weight: float
    max_cost_usd: float
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    excluded_models: _containers.RepeatedScalarFieldContainer[str]
    pinned_model: str
    def __init__(self, quality_weight: _Optional[float] = ..., cost_weight: _Optional[float] = ..., latency_weight: _Optional[float] = ..., max_cost_usd: _Optional[float] = ..., allowed_models: _Optional[_Iterable[str]] = ..., excluded_models: _Optional[_Iterable[str]] = ..., pinned_model: _Optional[str] = ...) -> None: ...

class TimeRange(_message.Message):
    __slots__ = ("start_time", "end_time")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

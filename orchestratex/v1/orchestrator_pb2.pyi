import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from orchestratex.v1 import common_pb2 as _common_pb2
from orchestratex.v1 import providers_pb2 as _providers_pb2
from orchestratex.v1 import selector_pb2 as _selector_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATUS_UNSPECIFIED: _ClassVar[SessionStatus]
    SESSION_STATUS_RUNNING: _ClassVar[SessionStatus]
    SESSION_STATUS_COMPLETED: _ClassVar[SessionStatus]
    SESSION_STATUS_FAILED: _ClassVar[SessionStatus]
    SESSION_STATUS_CANCELLED: _ClassVar[SessionStatus]

class StopReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOP_REASON_UNSPECIFIED: _ClassVar[StopReason]
    STOP_REASON_THRESHOLD: _ClassVar[StopReason]
    STOP_REASON_PLATEAU: _ClassVar[StopReason]
    STOP_REASON_MAX_ROUNDS: _ClassVar[StopReason]
    STOP_REASON_BUDGET: _ClassVar[StopReason]
    STOP_REASON_DEADLINE: _ClassVar[StopReason]
    STOP_REASON_CANCELLED: _ClassVar[StopReason]
    STOP_REASON_NO_CRITIQUE: _ClassVar[StopReason]

class RoundDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_DECISION_UNSPECIFIED: _ClassVar[RoundDecision]
    ROUND_DECISION_CONTINUE: _ClassVar[RoundDecision]
    ROUND_DECISION_STOP: _ClassVar[RoundDecision]

class WarningCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WARNING_CODE_UNSPECIFIED: _ClassVar[WarningCode]
    WARNING_CODE_CRITIC_FAILED: _ClassVar[WarningCode]
    WARNING_CODE_ALL_CRITICS_FAILED: _ClassVar[WarningCode]
    WARNING_CODE_SELECTOR_UNAVAILABLE: _ClassVar[WarningCode]
    WARNING_CODE_ANALYTICS_UNAVAILABLE: _ClassVar[WarningCode]
    WARNING_CODE_CONTEXT_TRIMMED: _ClassVar[WarningCode]
    WARNING_CODE_REFINEMENT_FAILED: _ClassVar[WarningCode]
    WARNING_CODE_SHADOW_FAILED: _ClassVar[WarningCode]
    WARNING_CODE_CALL_CANCELLED: _ClassVar[WarningCode]
SESSION_STATUS_UNSPECIFIED: SessionStatus
SESSION_STATUS_RUNNING: SessionStatus
SESSION_STATUS_COMPLETED: SessionStatus
SESSION_STATUS_FAILED: SessionStatus
SESSION_STATUS_CANCELLED: SessionStatus
STOP_REASON_UNSPECIFIED: StopReason
STOP_REASON_THRESHOLD: StopReason
STOP_REASON_PLATEAU: StopReason
STOP_REASON_MAX_ROUNDS: StopReason
STOP_REASON_BUDGET: StopReason
STOP_REASON_DEADLINE: StopReason
STOP_REASON_CANCELLED: StopReason
STOP_REASON_NO_CRITIQUE: StopReason
ROUND_DECISION_UNSPECIFIED: RoundDecision
ROUND_DECISION_CONTINUE: RoundDecision
ROUND_DECISION_STOP: RoundDecision
WARNING_CODE_UNSPECIFIED: WarningCode
WARNING_CODE_CRITIC_FAILED: WarningCode
WARNING_CODE_ALL_CRITICS_FAILED: WarningCode
WARNING_CODE_SELECTOR_UNAVAILABLE: WarningCode
WARNING_CODE_ANALYTICS_UNAVAILABLE: WarningCode
WARNING_CODE_CONTEXT_TRIMMED: WarningCode
WARNING_CODE_REFINEMENT_FAILED: WarningCode
WARNING_CODE_SHADOW_FAILED: WarningCode
WARNING_CODE_CALL_CANCELLED: WarningCode

class OrchestrateRequest(_message.Message):
    __slots__ = ("prompt", "max_rounds", "quality_threshold", "critic_count", "preferences", "budget_usd", "time_limit", "thread_id", "detached", "plateau_epsilon", "patience", "shadow_evaluation", "messages", "author_options")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CRITIC_COUNT_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    PLATEAU_EPSILON_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_EVALUATION_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    max_rounds: int
    quality_threshold: float
    critic_count: int
    preferences: _common_pb2.Preferences
    budget_usd: float
    time_limit: _duration_pb2.Duration
    thread_id: str
    detached: bool
    plateau_epsilon: float
    patience: int
    shadow_evaluation: bool
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatMessage]
    author_options: AuthorOptions
    def __init__(self, prompt: _Optional[str] = ..., max_rounds: _Optional[int] = ..., quality_threshold: _Optional[float] = ..., critic_count: _Optional[int] = ..., preferences: _Optional[_Union[_common_pb2.Preferences, _Mapping]] = ..., budget_usd: _Optional[float] = ..., time_limit: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., thread_id: _Optional[str] = ..., detached: _Optional[bool] = ..., plateau_epsilon: _Optional[float] = ..., patience: _Optional[int] = ..., shadow_evaluation: _Optional[bool] = ..., messages: _Optional[_Iterable[_Union[_common_pb2.ChatMessage, _Mapping]]] = ..., author_options: _Optional[_Union[AuthorOptions, _Mapping]] = ...) -> None: ...

class AuthorOptions(_message.Message):
    __slots__ = ("temperature", "top_p", "max_tokens", "seed", "stop_sequences", "response_format", "end_user")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    END_USER_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    stop_sequences: _containers.RepeatedScalarFieldContainer[str]
    response_format: _providers_pb2.ResponseFormat
    end_user: str
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens: _Optional[int] = ..., seed: _Optional[int] = ..., stop_sequences: _Optional[_Iterable[str]] = ..., response_format: _Optional[_Union[_providers_pb2.ResponseFormat, _Mapping]] = ..., end_user: _Optional[str] = ...) -> None: ...

class OrchestrateResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: OrchestrationEvent
    def __init__(self, event: _Optional[_Union[OrchestrationEvent, _Mapping]] = ...) -> None: ...

class WatchSessionRequest(_message.Message):
    __slots__ = ("session_id", "after_sequence")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    after_sequence: int
    def __init__(self, session_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchSessionResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: OrchestrationEvent
    def __init__(self, event: _Optional[_Union[OrchestrationEvent, _Mapping]] = ...) -> None: ...

class OrchestrationEvent(_message.Message):
    __slots__ = ("session_id", "sequence", "time", "session_started", "model_selected", "response_delta", "response_completed", "critique_completed", "round_completed", "provider_fallback", "warning", "session_completed", "session_failed")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SESSION_STARTED_FIELD_NUMBER: _ClassVar[int]
    MODEL_SELECTED_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_DELTA_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    CRITIQUE_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    ROUND_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    SESSION_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    SESSION_FAILED_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    sequence: int
    time: _timestamp_pb2.Timestamp
    session_started: SessionStarted
    model_selected: ModelSelected
    response_delta: ResponseDelta
    response_completed: ResponseCompleted
    critique_completed: CritiqueCompleted
    round_completed: RoundCompleted
    provider_fallback: ProviderFallback
    warning: SessionWarning
    session_completed: SessionCompleted
    session_failed: SessionFailed
    def __init__(self, session_id: _Optional[str] = ..., sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session_started: _Optional[_Union[SessionStarted, _Mapping]] = ..., model_selected: _Optional[_Union[ModelSelected, _Mapping]] = ..., response_delta: _Optional[_Union[ResponseDelta, _Mapping]] = ..., response_completed: _Optional[_Union[ResponseCompleted, _Mapping]] = ..., critique_completed: _Optional[_Union[CritiqueCompleted, _Mapping]] = ..., round_completed: _Optional[_Union[RoundCompleted, _Mapping]] = ..., provider_fallback: _Optional[_Union[ProviderFallback, _Mapping]] = ..., warning: _Optional[_Union[SessionWarning, _Mapping]] = ..., session_completed: _Optional[_Union[SessionCompleted, _Mapping]] = ..., session_failed: _Optional[_Union[SessionFailed, _Mapping]] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("request", "simulated", "thread_turns")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    THREAD_TURNS_FIELD_NUMBER: _ClassVar[int]
    request: OrchestrateRequest
    simulated: bool
    thread_turns: int
    def __init__(self, request: _Optional[_Union[OrchestrateRequest, _Mapping]] = ..., simulated: _Optional[bool] = ..., thread_turns: _Optional[int] = ...) -> None: ...

class ModelSelected(_message.Message):
    __slots__ = ("primary_model", "critic_models", "candidates", "analysis", "from_defaults", "shadow_models")
    PRIMARY_MODEL_FIELD_NUMBER: _ClassVar[int]
    CRITIC_MODELS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    FROM_DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MODELS_FIELD_NUMBER: _ClassVar[int]
    primary_model: str
    critic_models: _containers.RepeatedScalarFieldContainer[str]
    candidates: _containers.RepeatedCompositeFieldContainer[_selector_pb2.Candidate]
    analysis: _selector_pb2.PromptAnalysis
    from_defaults: bool
    shadow_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, primary_model: _Optional[str] = ..., critic_models: _Optional[_Iterable[str]] = ..., candidates: _Optional[_Iterable[_Union[_selector_pb2.Candidate, _Mapping]]] = ..., analysis: _Optional[_Union[_selector_pb2.PromptAnalysis, _Mapping]] = ..., from_defaults: _Optional[bool] = ..., shadow_models: _Optional[_Iterable[str]] = ...) -> None: ...

class ResponseDelta(_message.Message):
    __slots__ = ("round", "model", "text")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    round: int
    model: str
    text: str
    def __init__(self, round: _Optional[int] = ..., model: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ResponseCompleted(_message.Message):
    __slots__ = ("round", "model", "served_model", "text", "usage", "latency", "time_to_first_token", "shadow", "simulated")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERVED_MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    round: int
    model: str
    served_model: str
    text: str
    usage: _common_pb2.Usage
    latency: _duration_pb2.Duration
    time_to_first_token: _duration_pb2.Duration
    shadow: bool
    simulated: bool
    def __init__(self, round: _Optional[int] = ..., model: _Optional[str] = ..., served_model: _Optional[str] = ..., text: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., time_to_first_token: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., shadow: _Optional[bool] = ..., simulated: _Optional[bool] = ...) -> None: ...

class CritiqueCompleted(_message.Message):
    __slots__ = ("round", "critic_model", "author_model", "score", "rationale", "strengths", "weaknesses", "suggestions", "usage", "latency", "time_to_first_token", "shadow")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    CRITIC_MODEL_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_MODEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    STRENGTHS_FIELD_NUMBER: _ClassVar[int]
    WEAKNESSES_FIELD_NUMBER: _ClassVar[int]
    SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    round: int
    critic_model: str
    author_model: str
    score: float
    rationale: str
    strengths: _containers.RepeatedScalarFieldContainer[str]
    weaknesses: _containers.RepeatedScalarFieldContainer[str]
    suggestions: _containers.RepeatedScalarFieldContainer[str]
    usage: _common_pb2.Usage
    latency: _duration_pb2.Duration
    time_to_first_token: _duration_pb2.Duration
    shadow: bool
    def __init__(self, round: _Optional[int] = ..., critic_model: _Optional[str] = ..., author_model: _Optional[str] = ..., score: _Optional[float] = ..., rationale: _Optional[str] = ..., strengths: _Optional[_Iterable[str]] = ..., weaknesses: _Optional[_Iterable[str]] = ..., suggestions: _Optional[_Iterable[str]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., time_to_first_token: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., shadow: _Optional[bool] = ...) -> None: ...

class RoundCompleted(_message.Message):
    __slots__ = ("round", "aggregate_score", "score_change", "decision", "stop_reason", "reason", "critics_scored", "best_round", "round_cost_usd")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CRITICS_SCORED_FIELD_NUMBER: _ClassVar[int]
    BEST_ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUND_COST_USD_FIELD_NUMBER: _ClassVar[int]
    round: int
    aggregate_score: float
    score_change: float
    decision: RoundDecision
    stop_reason: StopReason
    reason: str
    critics_scored: int
    best_round: int
    round_cost_usd: float
    def __init__(self, round: _Optional[int] = ..., aggregate_score: _Optional[float] = ..., score_change: _Optional[float] = ..., decision: _Optional[_Union[RoundDecision, str]] = ..., stop_reason: _Optional[_Union[StopReason, str]] = ..., reason: _Optional[str] = ..., critics_scored: _Optional[int] = ..., best_round: _Optional[int] = ..., round_cost_usd: _Optional[float] = ...) -> None: ...

class ProviderFallback(_message.Message):
    __slots__ = ("round", "failed_model", "replacement_model", "failure_kind", "reason", "usage", "latency", "time_to_first_token")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    FAILED_MODEL_FIELD_NUMBER: _ClassVar[int]
    REPLACEMENT_MODEL_FIELD_NUMBER: _ClassVar[int]
    FAILURE_KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    round: int
    failed_model: str
    replacement_model: str
    failure_kind: _common_pb2.FailureKind
    reason: str
    usage: _common_pb2.Usage
    latency: _duration_pb2.Duration
    time_to_first_token: _duration_pb2.Duration
    def __init__(self, round: _Optional[int] = ..., failed_model: _Optional[str] = ..., replacement_model: _Optional[str] = ..., failure_kind: _Optional[_Union[_common_pb2.FailureKind, str]] = ..., reason: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., time_to_first_token: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SessionWarning(_message.Message):
    __slots__ = ("code", "message", "round", "model", "failure_kind", "usage", "latency", "purpose")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FAILURE_KIND_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    code: WarningCode
    message: str
    round: int
    model: str
    failure_kind: _common_pb2.FailureKind
    usage: _common_pb2.Usage
    latency: _duration_pb2.Duration
    purpose: _common_pb2.CallPurpose
    def __init__(self, code: _Optional[_Union[WarningCode, str]] = ..., message: _Optional[str] = ..., round: _Optional[int] = ..., model: _Optional[str] = ..., failure_kind: _Optional[_Union[_common_pb2.FailureKind, str]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., purpose: _Optional[_Union[_common_pb2.CallPurpose, str]] = ...) -> None: ...

class ModelUsage(_message.Message):
    __slots__ = ("model", "calls", "usage")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    calls: int
    usage: _common_pb2.Usage
    def __init__(self, model: _Optional[str] = ..., calls: _Optional[int] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ...) -> None: ...

class SessionCompleted(_message.Message):
    __slots__ = ("final_text", "best_round", "best_model", "final_score", "rounds_used", "stop_reason", "stop_detail", "total_cost_usd", "usage", "per_model", "wall_time", "unscored")
    FINAL_TEXT_FIELD_NUMBER: _ClassVar[int]
    BEST_ROUND_FIELD_NUMBER: _ClassVar[int]
    BEST_MODEL_FIELD_NUMBER: _ClassVar[int]
    FINAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_USED_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    STOP_DETAIL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_USD_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    PER_MODEL_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_FIELD_NUMBER: _ClassVar[int]
    UNSCORED_FIELD_NUMBER: _ClassVar[int]
    final_text: str
    best_round: int
    best_model: str
    final_score: float
    rounds_used: int
    stop_reason: StopReason
    stop_detail: str
    total_cost_usd: float
    usage: _common_pb2.Usage
    per_model: _containers.RepeatedCompositeFieldContainer[ModelUsage]
    wall_time: _duration_pb2.Duration
    unscored: bool
    def __init__(self, final_text: _Optional[str] = ..., best_round: _Optional[int] = ..., best_model: _Optional[str] = ..., final_score: _Optional[float] = ..., rounds_used: _Optional[int] = ..., stop_reason: _Optional[_Union[StopReason, str]] = ..., stop_detail: _Optional[str] = ..., total_cost_usd: _Optional[float] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., per_model: _Optional[_Iterable[_Union[ModelUsage, _Mapping]]] = ..., wall_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., unscored: _Optional[bool] = ...) -> None: ...

class SessionFailed(_message.Message):
    __slots__ = ("reason", "status", "total_cost_usd", "usage", "per_model", "best_text", "wall_time")
    REASON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_USD_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    PER_MODEL_FIELD_NUMBER: _ClassVar[int]
    BEST_TEXT_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_FIELD_NUMBER: _ClassVar[int]
    reason: str
    status: SessionStatus
    total_cost_usd: float
    usage: _common_pb2.Usage
    per_model: _containers.RepeatedCompositeFieldContainer[ModelUsage]
    best_text: str
    wall_time: _duration_pb2.Duration
    def __init__(self, reason: _Optional[str] = ..., status: _Optional[_Union[SessionStatus, str]] = ..., total_cost_usd: _Optional[float] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., per_model: _Optional[_Iterable[_Union[ModelUsage, _Mapping]]] = ..., best_text: _Optional[str] = ..., wall_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "status", "request", "create_time", "update_time", "thread_id", "primary_model", "primary_domain", "result", "failure", "last_sequence")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_MODEL_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    status: SessionStatus
    request: OrchestrateRequest
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    thread_id: str
    primary_model: str
    primary_domain: _common_pb2.Domain
    result: SessionCompleted
    failure: SessionFailed
    last_sequence: int
    def __init__(self, session_id: _Optional[str] = ..., status: _Optional[_Union[SessionStatus, str]] = ..., request: _Optional[_Union[OrchestrateRequest, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., thread_id: _Optional[str] = ..., primary_model: _Optional[str] = ..., primary_domain: _Optional[_Union[_common_pb2.Domain, str]] = ..., result: _Optional[_Union[SessionCompleted, _Mapping]] = ..., failure: _Optional[_Union[SessionFailed, _Mapping]] = ..., last_sequence: _Optional[int] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "status", "thread_id", "range", "prompt_contains")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    status: SessionStatus
    thread_id: str
    range: _common_pb2.TimeRange
    prompt_contains: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[SessionStatus, str]] = ..., thread_id: _Optional[str] = ..., range: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ..., prompt_contains: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    next_page_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelSessionRequest(_message.Message):
    __slots__ = ("session_id", "reason")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    reason: str
    def __init__(self, session_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from orchestratex.v1 import common_pb2 as _common_pb2
from orchestratex.v1 import orchestrator_pb2 as _orchestrator_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FailureCount(_message.Message):
    __slots__ = ("kind", "count")
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    kind: _common_pb2.FailureKind
    count: int
    def __init__(self, kind: _Optional[_Union[_common_pb2.FailureKind, str]] = ..., count: _Optional[int] = ...) -> None: ...

class ModelPerformance(_message.Message):
    __slots__ = ("model", "domain", "calls", "successes", "success_rate", "failures", "ttft_p50", "ttft_p95", "latency_p50", "latency_p95", "usage", "mean_score_as_author", "critiques_received", "mean_score_as_critic", "critiques_given")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    TTFT_P50_FIELD_NUMBER: _ClassVar[int]
    TTFT_P95_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MEAN_SCORE_AS_AUTHOR_FIELD_NUMBER: _ClassVar[int]
    CRITIQUES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    MEAN_SCORE_AS_CRITIC_FIELD_NUMBER: _ClassVar[int]
    CRITIQUES_GIVEN_FIELD_NUMBER: _ClassVar[int]
    model: str
    domain: _common_pb2.Domain
    calls: int
    successes: int
    success_rate: float
    failures: _containers.RepeatedCompositeFieldContainer[FailureCount]
    ttft_p50: _duration_pb2.Duration
    ttft_p95: _duration_pb2.Duration
    latency_p50: _duration_pb2.Duration
    latency_p95: _duration_pb2.Duration
    usage: _common_pb2.Usage
    mean_score_as_author: float
    critiques_received: int
    mean_score_as_critic: float
    critiques_given: int
    def __init__(self, model: _Optional[str] = ..., domain: _Optional[_Union[_common_pb2.Domain, str]] = ..., calls: _Optional[int] = ..., successes: _Optional[int] = ..., success_rate: _Optional[float] = ..., failures: _Optional[_Iterable[_Union[FailureCount, _Mapping]]] = ..., ttft_p50: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., ttft_p95: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., latency_p50: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., latency_p95: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., mean_score_as_author: _Optional[float] = ..., critiques_received: _Optional[int] = ..., mean_score_as_critic: _Optional[float] = ..., critiques_given: _Optional[int] = ...) -> None: ...

class GetModelPerformanceRequest(_message.Message):
    __slots__ = ("range", "model", "domain")
    RANGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    range: _common_pb2.TimeRange
    model: str
    domain: _common_pb2.Domain
    def __init__(self, range: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ..., model: _Optional[str] = ..., domain: _Optional[_Union[_common_pb2.Domain, str]] = ...) -> None: ...

class GetModelPerformanceResponse(_message.Message):
    __slots__ = ("models", "by_domain")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    BY_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelPerformance]
    by_domain: _containers.RepeatedCompositeFieldContainer[ModelPerformance]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelPerformance, _Mapping]]] = ..., by_domain: _Optional[_Iterable[_Union[ModelPerformance, _Mapping]]] = ...) -> None: ...

class SessionCost(_message.Message):
    __slots__ = ("session_id", "cost_usd", "calls", "create_time")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    cost_usd: float
    calls: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., cost_usd: _Optional[float] = ..., calls: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ModelCost(_message.Message):
    __slots__ = ("model", "cost_usd", "calls", "usage")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    cost_usd: float
    calls: int
    usage: _common_pb2.Usage
    def __init__(self, model: _Optional[str] = ..., cost_usd: _Optional[float] = ..., calls: _Optional[int] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ...) -> None: ...

class DailyCost(_message.Message):
    __slots__ = ("day", "cost_usd", "calls")
    DAY_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    day: str
    cost_usd: float
    calls: int
    def __init__(self, day: _Optional[str] = ..., cost_usd: _Optional[float] = ..., calls: _Optional[int] = ...) -> None: ...

class GetCostReportRequest(_message.Message):
    __slots__ = ("range", "session_limit")
    RANGE_FIELD_NUMBER: _ClassVar[int]
    SESSION_LIMIT_FIELD_NUMBER: _ClassVar[int]
    range: _common_pb2.TimeRange
    session_limit: int
    def __init__(self, range: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ..., session_limit: _Optional[int] = ...) -> None: ...

class GetCostReportResponse(_message.Message):
    __slots__ = ("total_cost_usd", "calls", "usage", "sessions", "models", "days", "session_count")
    TOTAL_COST_USD_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    SESSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    total_cost_usd: float
    calls: int
    usage: _common_pb2.Usage
    sessions: _containers.RepeatedCompositeFieldContainer[SessionCost]
    models: _containers.RepeatedCompositeFieldContainer[ModelCost]
    days: _containers.RepeatedCompositeFieldContainer[DailyCost]
    session_count: int
    def __init__(self, total_cost_usd: _Optional[float] = ..., calls: _Optional[int] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., sessions: _Optional[_Iterable[_Union[SessionCost, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelCost, _Mapping]]] = ..., days: _Optional[_Iterable[_Union[DailyCost, _Mapping]]] = ..., session_count: _Optional[int] = ...) -> None: ...

class AccuracyEstimate(_message.Message):
    __slots__ = ("sample_size", "hits", "accuracy", "ci_low", "ci_high")
    SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    sample_size: int
    hits: int
    accuracy: float
    ci_low: float
    ci_high: float
    def __init__(self, sample_size: _Optional[int] = ..., hits: _Optional[int] = ..., accuracy: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ...) -> None: ...

class GetSelectionAccuracyRequest(_message.Message):
    __slots__ = ("range",)
    RANGE_FIELD_NUMBER: _ClassVar[int]
    range: _common_pb2.TimeRange
    def __init__(self, range: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ...) -> None: ...

class GetSelectionAccuracyResponse(_message.Message):
    __slots__ = ("shadow", "feedback", "definition", "by_domain")
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    BY_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    shadow: AccuracyEstimate
    feedback: AccuracyEstimate
    definition: str
    by_domain: _containers.RepeatedCompositeFieldContainer[DomainAccuracy]
    def __init__(self, shadow: _Optional[_Union[AccuracyEstimate, _Mapping]] = ..., feedback: _Optional[_Union[AccuracyEstimate, _Mapping]] = ..., definition: _Optional[str] = ..., by_domain: _Optional[_Iterable[_Union[DomainAccuracy, _Mapping]]] = ...) -> None: ...

class DomainAccuracy(_message.Message):
    __slots__ = ("domain", "shadow")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    domain: _common_pb2.Domain
    shadow: AccuracyEstimate
    def __init__(self, domain: _Optional[_Union[_common_pb2.Domain, str]] = ..., shadow: _Optional[_Union[AccuracyEstimate, _Mapping]] = ...) -> None: ...

class Feedback(_message.Message):
    __slots__ = ("session_id", "rating", "comment", "user_id", "create_time", "update_time")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    rating: int
    comment: str
    user_id: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., rating: _Optional[int] = ..., comment: _Optional[str] = ..., user_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitFeedbackRequest(_message.Message):
    __slots__ = ("session_id", "rating", "comment", "user_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    rating: int
    comment: str
    user_id: str
    def __init__(self, session_id: _Optional[str] = ..., rating: _Optional[int] = ..., comment: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class SubmitFeedbackResponse(_message.Message):
    __slots__ = ("feedback", "updated")
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    feedback: Feedback
    updated: bool
    def __init__(self, feedback: _Optional[_Union[Feedback, _Mapping]] = ..., updated: _Optional[bool] = ...) -> None: ...

class RatingCount(_message.Message):
    __slots__ = ("rating", "count")
    RATING_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    rating: int
    count: int
    def __init__(self, rating: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class SatisfactionSummary(_message.Message):
    __slots__ = ("key", "count", "mean", "distribution")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    key: str
    count: int
    mean: float
    distribution: _containers.RepeatedCompositeFieldContainer[RatingCount]
    def __init__(self, key: _Optional[str] = ..., count: _Optional[int] = ..., mean: _Optional[float] = ..., distribution: _Optional[_Iterable[_Union[RatingCount, _Mapping]]] = ...) -> None: ...

class GetSatisfactionRequest(_message.Message):
    __slots__ = ("range",)
    RANGE_FIELD_NUMBER: _ClassVar[int]
    range: _common_pb2.TimeRange
    def __init__(self, range: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ...) -> None: ...

class GetSatisfactionResponse(_message.Message):
    __slots__ = ("overall", "by_model", "by_domain", "by_day")
    OVERALL_FIELD_NUMBER: _ClassVar[int]
    BY_MODEL_FIELD_NUMBER: _ClassVar[int]
    BY_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    BY_DAY_FIELD_NUMBER: _ClassVar[int]
    overall: SatisfactionSummary
    by_model: _containers.RepeatedCompositeFieldContainer[SatisfactionSummary]
    by_domain: _containers.RepeatedCompositeFieldContainer[SatisfactionSummary]
    by_day: _containers.RepeatedCompositeFieldContainer[SatisfactionSummary]
    def __init__(self, overall: _Optional[_Union[SatisfactionSummary, _Mapping]] = ..., by_model: _Optional[_Iterable[_Union[SatisfactionSummary, _Mapping]]] = ..., by_domain: _Optional[_Iterable[_Union[SatisfactionSummary, _Mapping]]] = ..., by_day: _Optional[_Iterable[_Union[SatisfactionSummary, _Mapping]]] = ...) -> None: ...

class IngestEventsRequest(_message.Message):
    __slots__ = ("events", "tenant")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_orchestrator_pb2.OrchestrationEvent]
    tenant: str
    def __init__(self, events: _Optional[_Iterable[_Union[_orchestrator_pb2.OrchestrationEvent, _Mapping]]] = ..., tenant: _Optional[str] = ...) -> None: ...

class IngestEventsResponse(_message.Message):
    __slots__ = ("accepted", "duplicates")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

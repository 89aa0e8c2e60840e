import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from orchestratex.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PromptAnalysis(_message.Message):
    __slots__ = ("domain_probabilities", "primary_domain", "confidence", "estimated_prompt_tokens", "needs_long_context", "models_too_small", "language", "has_code", "has_data", "classifier_version", "second_opinion")
    DOMAIN_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_LONG_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    MODELS_TOO_SMALL_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    HAS_CODE_FIELD_NUMBER: _ClassVar[int]
    HAS_DATA_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_VERSION_FIELD_NUMBER: _ClassVar[int]
    SECOND_OPINION_FIELD_NUMBER: _ClassVar[int]
    domain_probabilities: _containers.RepeatedCompositeFieldContainer[_common_pb2.DomainScore]
    primary_domain: _common_pb2.Domain
    confidence: float
    estimated_prompt_tokens: int
    needs_long_context: bool
    models_too_small: _containers.RepeatedScalarFieldContainer[str]
    language: str
    has_code: bool
    has_data: bool
    classifier_version: str
    second_opinion: SecondOpinion
    def __init__(self, domain_probabilities: _Optional[_Iterable[_Union[_common_pb2.DomainScore, _Mapping]]] = ..., primary_domain: _Optional[_Union[_common_pb2.Domain, str]] = ..., confidence: _Optional[float] = ..., estimated_prompt_tokens: _Optional[int] = ..., needs_long_context: _Optional[bool] = ..., models_too_small: _Optional[_Iterable[str]] = ..., language: _Optional[str] = ..., has_code: _Optional[bool] = ..., has_data: _Optional[bool] = ..., classifier_version: _Optional[str] = ..., second_opinion: _Optional[_Union[SecondOpinion, _Mapping]] = ...) -> None: ...

class SecondOpinion(_message.Message):
    __slots__ = ("model", "domain", "applied", "classifier_domain", "classifier_confidence", "usage", "latency")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    model: str
    domain: _common_pb2.Domain
    applied: bool
    classifier_domain: _common_pb2.Domain
    classifier_confidence: float
    usage: _common_pb2.Usage
    latency: _duration_pb2.Duration
    def __init__(self, model: _Optional[str] = ..., domain: _Optional[_Union[_common_pb2.Domain, str]] = ..., applied: _Optional[bool] = ..., classifier_domain: _Optional[_Union[_common_pb2.Domain, str]] = ..., classifier_confidence: _Optional[float] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class AnalyzePromptRequest(_message.Message):
    __slots__ = ("prompt",)
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    def __init__(self, prompt: _Optional[str] = ...) -> None: ...

class AnalyzePromptResponse(_message.Message):
    __slots__ = ("analysis", "warnings")
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    analysis: PromptAnalysis
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, analysis: _Optional[_Union[PromptAnalysis, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ScoreBreakdown(_message.Message):
    __slots__ = ("specialty", "history", "cost", "latency", "exploration")
    SPECIALTY_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    specialty: float
    history: float
    cost: float
    latency: float
    exploration: float
    def __init__(self, specialty: _Optional[float] = ..., history: _Optional[float] = ..., cost: _Optional[float] = ..., latency: _Optional[float] = ..., exploration: _Optional[float] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("model", "score", "breakdown", "reason", "estimated_cost_usd", "rank", "family")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    model: str
    score: float
    breakdown: ScoreBreakdown
    reason: str
    estimated_cost_usd: float
    rank: int
    family: str
    def __init__(self, model: _Optional[str] = ..., score: _Optional[float] = ..., breakdown: _Optional[_Union[ScoreBreakdown, _Mapping]] = ..., reason: _Optional[str] = ..., estimated_cost_usd: _Optional[float] = ..., rank: _Optional[int] = ..., family: _Optional[str] = ...) -> None: ...

class DroppedModel(_message.Message):
    __slots__ = ("model", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SelectModelsRequest(_message.Message):
    __slots__ = ("prompt", "preferences", "critic_count", "expected_output_tokens", "context_tokens")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    CRITIC_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    preferences: _common_pb2.Preferences
    critic_count: int
    expected_output_tokens: int
    context_tokens: int
    def __init__(self, prompt: _Optional[str] = ..., preferences: _Optional[_Union[_common_pb2.Preferences, _Mapping]] = ..., critic_count: _Optional[int] = ..., expected_output_tokens: _Optional[int] = ..., context_tokens: _Optional[int] = ...) -> None: ...

class SelectModelsResponse(_message.Message):
    __slots__ = ("analysis", "candidates", "primary_model", "critic_models", "dropped", "warnings")
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_MODEL_FIELD_NUMBER: _ClassVar[int]
    CRITIC_MODELS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    analysis: PromptAnalysis
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    primary_model: str
    critic_models: _containers.RepeatedScalarFieldContainer[str]
    dropped: _containers.RepeatedCompositeFieldContainer[DroppedModel]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, analysis: _Optional[_Union[PromptAnalysis, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., primary_model: _Optional[str] = ..., critic_models: _Optional[_Iterable[str]] = ..., dropped: _Optional[_Iterable[_Union[DroppedModel, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

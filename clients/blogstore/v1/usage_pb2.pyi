import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CostReportGroupBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COST_REPORT_GROUP_BY_UNSPECIFIED: _ClassVar[CostReportGroupBy]
    COST_REPORT_GROUP_BY_SERVICE: _ClassVar[CostReportGroupBy]
    COST_REPORT_GROUP_BY_MODEL: _ClassVar[CostReportGroupBy]
    COST_REPORT_GROUP_BY_DAY: _ClassVar[CostReportGroupBy]
    COST_REPORT_GROUP_BY_USER: _ClassVar[CostReportGroupBy]
    COST_REPORT_GROUP_BY_OPERATION: _ClassVar[CostReportGroupBy]
    COST_REPORT_GROUP_BY_STATUS: _ClassVar[CostReportGroupBy]

class UsageStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_STATUS_UNSPECIFIED: _ClassVar[UsageStatus]
    USAGE_STATUS_OK: _ClassVar[UsageStatus]
    USAGE_STATUS_ERROR: _ClassVar[UsageStatus]
    USAGE_STATUS_TIMEOUT: _ClassVar[UsageStatus]
    USAGE_STATUS_RATE_LIMITED: _ClassVar[UsageStatus]

class UsageEventView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_EVENT_VIEW_UNSPECIFIED: _ClassVar[UsageEventView]
    USAGE_EVENT_VIEW_BASIC: _ClassVar[UsageEventView]
    USAGE_EVENT_VIEW_FULL: _ClassVar[UsageEventView]
COST_REPORT_GROUP_BY_UNSPECIFIED: CostReportGroupBy
COST_REPORT_GROUP_BY_SERVICE: CostReportGroupBy
COST_REPORT_GROUP_BY_MODEL: CostReportGroupBy
COST_REPORT_GROUP_BY_DAY: CostReportGroupBy
COST_REPORT_GROUP_BY_USER: CostReportGroupBy
COST_REPORT_GROUP_BY_OPERATION: CostReportGroupBy
COST_REPORT_GROUP_BY_STATUS: CostReportGroupBy
USAGE_STATUS_UNSPECIFIED: UsageStatus
USAGE_STATUS_OK: UsageStatus
USAGE_STATUS_ERROR: UsageStatus
USAGE_STATUS_TIMEOUT: UsageStatus
USAGE_STATUS_RATE_LIMITED: UsageStatus
USAGE_EVENT_VIEW_UNSPECIFIED: UsageEventView
USAGE_EVENT_VIEW_BASIC: UsageEventView
USAGE_EVENT_VIEW_FULL: UsageEventView

class UsageEvent(_message.Message):
    __slots__ = ("id", "user_id", "pipeline_id", "article_id", "service", "model", "operation", "input_tokens", "output_tokens", "cost_micros", "articles_generated", "api_calls", "request_id", "event_time", "create_time", "duration_ms", "status", "error_message", "prompt_name", "prompt_version", "parameters", "input_text", "output_text")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    ARTICLE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    ARTICLES_GENERATED_FIELD_NUMBER: _ClassVar[int]
    API_CALLS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TEXT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    pipeline_id: str
    article_id: str
    service: str
    model: str
    operation: str
    input_tokens: int
    output_tokens: int
    cost_micros: int
    articles_generated: int
    api_calls: int
    request_id: str
    event_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    duration_ms: int
    status: UsageStatus
    error_message: str
    prompt_name: str
    prompt_version: str
    parameters: _struct_pb2.Struct
    input_text: str
    output_text: str
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., pipeline_id: _Optional[str] = ..., article_id: _Optional[str] = ..., service: _Optional[str] = ..., model: _Optional[str] = ..., operation: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ..., articles_generated: _Optional[int] = ..., api_calls: _Optional[int] = ..., request_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_ms: _Optional[int] = ..., status: _Optional[_Union[UsageStatus, str]] = ..., error_message: _Optional[str] = ..., prompt_name: _Optional[str] = ..., prompt_version: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., input_text: _Optional[str] = ..., output_text: _Optional[str] = ...) -> None: ...

class MonthlyUsage(_message.Message):
    __slots__ = ("user_id", "month", "articles_generated", "cost_micros", "input_tokens", "output_tokens", "api_calls", "cost_limit_micros", "article_limit", "remaining_cost_micros", "remaining_articles", "event_count")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MONTH_FIELD_NUMBER: _ClassVar[int]
    ARTICLES_GENERATED_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    API_CALLS_FIELD_NUMBER: _ClassVar[int]
    COST_LIMIT_MICROS_FIELD_NUMBER: _ClassVar[int]
    ARTICLE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_ARTICLES_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    month: str
    articles_generated: int
    cost_micros: int
    input_tokens: int
    output_tokens: int
    api_calls: int
    cost_limit_micros: int
    article_limit: int
    remaining_cost_micros: int
    remaining_articles: int
    event_count: int
    def __init__(self, user_id: _Optional[str] = ..., month: _Optional[str] = ..., articles_generated: _Optional[int] = ..., cost_micros: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., api_calls: _Optional[int] = ..., cost_limit_micros: _Optional[int] = ..., article_limit: _Optional[int] = ..., remaining_cost_micros: _Optional[int] = ..., remaining_articles: _Optional[int] = ..., event_count: _Optional[int] = ...) -> None: ...

class UsageLimits(_message.Message):
    __slots__ = ("user_id", "cost_limit_micros", "article_limit", "effective_cost_limit_micros", "effective_article_limit")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    COST_LIMIT_MICROS_FIELD_NUMBER: _ClassVar[int]
    ARTICLE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_COST_LIMIT_MICROS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_ARTICLE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    cost_limit_micros: int
    article_limit: int
    effective_cost_limit_micros: int
    effective_article_limit: int
    def __init__(self, user_id: _Optional[str] = ..., cost_limit_micros: _Optional[int] = ..., article_limit: _Optional[int] = ..., effective_cost_limit_micros: _Optional[int] = ..., effective_article_limit: _Optional[int] = ...) -> None: ...

class RecordUsageRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "pipeline_id", "article_id", "service", "model", "operation", "input_tokens", "output_tokens", "cost_micros", "articles_generated", "api_calls", "event_time", "duration_ms", "status", "error_message", "prompt_name", "prompt_version", "parameters", "input_text", "output_text")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    ARTICLE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    ARTICLES_GENERATED_FIELD_NUMBER: _ClassVar[int]
    API_CALLS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TEXT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TEXT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    pipeline_id: str
    article_id: str
    service: str
    model: str
    operation: str
    input_tokens: int
    output_tokens: int
    cost_micros: int
    articles_generated: int
    api_calls: int
    event_time: _timestamp_pb2.Timestamp
    duration_ms: int
    status: UsageStatus
    error_message: str
    prompt_name: str
    prompt_version: str
    parameters: _struct_pb2.Struct
    input_text: str
    output_text: str
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., pipeline_id: _Optional[str] = ..., article_id: _Optional[str] = ..., service: _Optional[str] = ..., model: _Optional[str] = ..., operation: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ..., articles_generated: _Optional[int] = ..., api_calls: _Optional[int] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_ms: _Optional[int] = ..., status: _Optional[_Union[UsageStatus, str]] = ..., error_message: _Optional[str] = ..., prompt_name: _Optional[str] = ..., prompt_version: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., input_text: _Optional[str] = ..., output_text: _Optional[str] = ...) -> None: ...

class RecordUsageResponse(_message.Message):
    __slots__ = ("event", "usage")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    event: UsageEvent
    usage: MonthlyUsage
    def __init__(self, event: _Optional[_Union[UsageEvent, _Mapping]] = ..., usage: _Optional[_Union[MonthlyUsage, _Mapping]] = ...) -> None: ...

class CheckQuotaRequest(_message.Message):
    __slots__ = ("user_id", "cost_micros", "articles")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    ARTICLES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    cost_micros: int
    articles: int
    def __init__(self, user_id: _Optional[str] = ..., cost_micros: _Optional[int] = ..., articles: _Optional[int] = ...) -> None: ...

class CheckQuotaResponse(_message.Message):
    __slots__ = ("allowed", "usage")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    usage: MonthlyUsage
    def __init__(self, allowed: _Optional[bool] = ..., usage: _Optional[_Union[MonthlyUsage, _Mapping]] = ...) -> None: ...

class GetMonthlyUsageRequest(_message.Message):
    __slots__ = ("user_id", "month")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MONTH_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    month: str
    def __init__(self, user_id: _Optional[str] = ..., month: _Optional[str] = ...) -> None: ...

class GetMonthlyUsageResponse(_message.Message):
    __slots__ = ("usage",)
    USAGE_FIELD_NUMBER: _ClassVar[int]
    usage: MonthlyUsage
    def __init__(self, usage: _Optional[_Union[MonthlyUsage, _Mapping]] = ...) -> None: ...

class ListMonthlyUsageRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMonthlyUsageResponse(_message.Message):
    __slots__ = ("usage", "next_page_token")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    usage: _containers.RepeatedCompositeFieldContainer[MonthlyUsage]
    next_page_token: str
    def __init__(self, usage: _Optional[_Iterable[_Union[MonthlyUsage, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListUsageEventsRequest(_message.Message):
    __slots__ = ("user_id", "pipeline_id", "service", "start_time", "end_time", "page_size", "page_token", "model", "status", "operation", "prompt_name", "view")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    pipeline_id: str
    service: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    model: str
    status: UsageStatus
    operation: str
    prompt_name: str
    view: UsageEventView
    def __init__(self, user_id: _Optional[str] = ..., pipeline_id: _Optional[str] = ..., service: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., model: _Optional[str] = ..., status: _Optional[_Union[UsageStatus, str]] = ..., operation: _Optional[str] = ..., prompt_name: _Optional[str] = ..., view: _Optional[_Union[UsageEventView, str]] = ...) -> None: ...

class ListUsageEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[UsageEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[UsageEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetCostReportRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "user_id", "group_by")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    user_id: str
    group_by: CostReportGroupBy
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., user_id: _Optional[str] = ..., group_by: _Optional[_Union[CostReportGroupBy, str]] = ...) -> None: ...

class CostReportRow(_message.Message):
    __slots__ = ("key", "cost_micros", "input_tokens", "output_tokens", "event_count", "p50_duration_ms", "p95_duration_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    P50_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    P95_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    key: str
    cost_micros: int
    input_tokens: int
    output_tokens: int
    event_count: int
    p50_duration_ms: int
    p95_duration_ms: int
    def __init__(self, key: _Optional[str] = ..., cost_micros: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., event_count: _Optional[int] = ..., p50_duration_ms: _Optional[int] = ..., p95_duration_ms: _Optional[int] = ...) -> None: ...

class GetCostReportResponse(_message.Message):
    __slots__ = ("rows", "total_cost_micros")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[CostReportRow]
    total_cost_micros: int
    def __init__(self, rows: _Optional[_Iterable[_Union[CostReportRow, _Mapping]]] = ..., total_cost_micros: _Optional[int] = ...) -> None: ...

class GetUsageLimitsRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class GetUsageLimitsResponse(_message.Message):
    __slots__ = ("limits",)
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    limits: UsageLimits
    def __init__(self, limits: _Optional[_Union[UsageLimits, _Mapping]] = ...) -> None: ...

class SetUsageLimitsRequest(_message.Message):
    __slots__ = ("limits",)
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    limits: UsageLimits
    def __init__(self, limits: _Optional[_Union[UsageLimits, _Mapping]] = ...) -> None: ...

class SetUsageLimitsResponse(_message.Message):
    __slots__ = ("limits",)
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    limits: UsageLimits
    def __init__(self, limits: _Optional[_Union[UsageLimits, _Mapping]] = ...) -> None: ...

import datetime

from blogstore.v1 import embeddings_pb2 as _embeddings_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Competitor(_message.Message):
    __slots__ = ("id", "user_id", "domain", "name", "is_active", "check_frequency_hours", "last_check_time", "next_check_time", "last_error", "total_articles_found", "new_articles_30d", "trending_topics", "metadata", "create_time", "update_time", "etag", "lease_expire_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    CHECK_FREQUENCY_HOURS_FIELD_NUMBER: _ClassVar[int]
    LAST_CHECK_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_CHECK_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ARTICLES_FOUND_FIELD_NUMBER: _ClassVar[int]
    NEW_ARTICLES_30D_FIELD_NUMBER: _ClassVar[int]
    TRENDING_TOPICS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    domain: str
    name: str
    is_active: bool
    check_frequency_hours: int
    last_check_time: _timestamp_pb2.Timestamp
    next_check_time: _timestamp_pb2.Timestamp
    last_error: str
    total_articles_found: int
    new_articles_30d: int
    trending_topics: _containers.RepeatedCompositeFieldContainer[TrendingTopic]
    metadata: _struct_pb2.Struct
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    lease_expire_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., domain: _Optional[str] = ..., name: _Optional[str] = ..., is_active: _Optional[bool] = ..., check_frequency_hours: _Optional[int] = ..., last_check_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_check_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., total_articles_found: _Optional[int] = ..., new_articles_30d: _Optional[int] = ..., trending_topics: _Optional[_Iterable[_Union[TrendingTopic, _Mapping]]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., lease_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TrendingTopic(_message.Message):
    __slots__ = ("topic", "count")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    topic: str
    count: int
    def __init__(self, topic: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class CompetitorArticle(_message.Message):
    __slots__ = ("id", "competitor_id", "url", "title", "publish_date", "author", "word_count", "main_topics", "keywords", "social_shares", "backlinks", "discover_time", "analyze_time", "embedding")
    ID_FIELD_NUMBER: _ClassVar[int]
    COMPETITOR_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_DATE_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    WORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAIN_TOPICS_FIELD_NUMBER: _ClassVar[int]
    KEYWORDS_FIELD_NUMBER: _ClassVar[int]
    SOCIAL_SHARES_FIELD_NUMBER: _ClassVar[int]
    BACKLINKS_FIELD_NUMBER: _ClassVar[int]
    DISCOVER_TIME_FIELD_NUMBER: _ClassVar[int]
    ANALYZE_TIME_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    id: str
    competitor_id: str
    url: str
    title: str
    publish_date: _timestamp_pb2.Timestamp
    author: str
    word_count: int
    main_topics: _containers.RepeatedScalarFieldContainer[str]
    keywords: _containers.RepeatedScalarFieldContainer[str]
    social_shares: int
    backlinks: int
    discover_time: _timestamp_pb2.Timestamp
    analyze_time: _timestamp_pb2.Timestamp
    embedding: _embeddings_pb2.Embedding
    def __init__(self, id: _Optional[str] = ..., competitor_id: _Optional[str] = ..., url: _Optional[str] = ..., title: _Optional[str] = ..., publish_date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., author: _Optional[str] = ..., word_count: _Optional[int] = ..., main_topics: _Optional[_Iterable[str]] = ..., keywords: _Optional[_Iterable[str]] = ..., social_shares: _Optional[int] = ..., backlinks: _Optional[int] = ..., discover_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., analyze_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., embedding: _Optional[_Union[_embeddings_pb2.Embedding, _Mapping]] = ...) -> None: ...

class CreateCompetitorRequest(_message.Message):
    __slots__ = ("competitor", "request_id")
    COMPETITOR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    competitor: Competitor
    request_id: str
    def __init__(self, competitor: _Optional[_Union[Competitor, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateCompetitorResponse(_message.Message):
    __slots__ = ("competitor",)
    COMPETITOR_FIELD_NUMBER: _ClassVar[int]
    competitor: Competitor
    def __init__(self, competitor: _Optional[_Union[Competitor, _Mapping]] = ...) -> None: ...

class GetCompetitorRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetCompetitorResponse(_message.Message):
    __slots__ = ("competitor",)
    COMPETITOR_FIELD_NUMBER: _ClassVar[int]
    competitor: Competitor
    def __init__(self, competitor: _Optional[_Union[Competitor, _Mapping]] = ...) -> None: ...

class ListCompetitorsRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token", "is_active")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    IS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    is_active: bool
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., is_active: _Optional[bool] = ...) -> None: ...

class ListCompetitorsResponse(_message.Message):
    __slots__ = ("competitors", "next_page_token")
    COMPETITORS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    competitors: _containers.RepeatedCompositeFieldContainer[Competitor]
    next_page_token: str
    def __init__(self, competitors: _Optional[_Iterable[_Union[Competitor, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateCompetitorRequest(_message.Message):
    __slots__ = ("competitor", "update_mask")
    COMPETITOR_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    competitor: Competitor
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, competitor: _Optional[_Union[Competitor, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateCompetitorResponse(_message.Message):
    __slots__ = ("competitor",)
    COMPETITOR_FIELD_NUMBER: _ClassVar[int]
    competitor: Competitor
    def __init__(self, competitor: _Optional[_Union[Competitor, _Mapping]] = ...) -> None: ...

class DeleteCompetitorRequest(_message.Message):
    __slots__ = ("id", "etag")
    ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    id: str
    etag: str
    def __init__(self, id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteCompetitorResponse(_message.Message):
    __slots__ = ("competitor",)
    COMPETITOR_FIELD_NUMBER: _ClassVar[int]
    competitor: Competitor
    def __init__(self, competitor: _Optional[_Union[Competitor, _Mapping]] = ...) -> None: ...

class ClaimDueCompetitorsRequest(_message.Message):
    __slots__ = ("limit", "lease_seconds")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    limit: int
    lease_seconds: int
    def __init__(self, limit: _Optional[int] = ..., lease_seconds: _Optional[int] = ...) -> None: ...

class ClaimDueCompetitorsResponse(_message.Message):
    __slots__ = ("competitors",)
    COMPETITORS_FIELD_NUMBER: _ClassVar[int]
    competitors: _containers.RepeatedCompositeFieldContainer[Competitor]
    def __init__(self, competitors: _Optional[_Iterable[_Union[Competitor, _Mapping]]] = ...) -> None: ...

class RecordCompetitorCheckRequest(_message.Message):
    __slots__ = ("competitor_id", "check_time", "error")
    COMPETITOR_ID_FIELD_NUMBER: _ClassVar[int]
    CHECK_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    competitor_id: str
    check_time: _timestamp_pb2.Timestamp
    error: str
    def __init__(self, competitor_id: _Optional[str] = ..., check_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class RecordCompetitorCheckResponse(_message.Message):
    __slots__ = ("competitor",)
    COMPETITOR_FIELD_NUMBER: _ClassVar[int]
    competitor: Competitor
    def __init__(self, competitor: _Optional[_Union[Competitor, _Mapping]] = ...) -> None: ...

class UpsertCompetitorArticlesRequest(_message.Message):
    __slots__ = ("competitor_id", "articles")
    COMPETITOR_ID_FIELD_NUMBER: _ClassVar[int]
    ARTICLES_FIELD_NUMBER: _ClassVar[int]
    competitor_id: str
    articles: _containers.RepeatedCompositeFieldContainer[CompetitorArticle]
    def __init__(self, competitor_id: _Optional[str] = ..., articles: _Optional[_Iterable[_Union[CompetitorArticle, _Mapping]]] = ...) -> None: ...

class UpsertCompetitorArticlesResponse(_message.Message):
    __slots__ = ("created_count", "updated_count")
    CREATED_COUNT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_COUNT_FIELD_NUMBER: _ClassVar[int]
    created_count: int
    updated_count: int
    def __init__(self, created_count: _Optional[int] = ..., updated_count: _Optional[int] = ...) -> None: ...

class ListCompetitorArticlesRequest(_message.Message):
    __slots__ = ("competitor_id", "page_size", "page_token", "start_publish_time", "end_publish_time", "keyword")
    COMPETITOR_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    START_PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    END_PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    competitor_id: str
    page_size: int
    page_token: str
    start_publish_time: _timestamp_pb2.Timestamp
    end_publish_time: _timestamp_pb2.Timestamp
    keyword: str
    def __init__(self, competitor_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., start_publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., keyword: _Optional[str] = ...) -> None: ...

class ListCompetitorArticlesResponse(_message.Message):
    __slots__ = ("articles", "next_page_token")
    ARTICLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    articles: _containers.RepeatedCompositeFieldContainer[CompetitorArticle]
    next_page_token: str
    def __init__(self, articles: _Optional[_Iterable[_Union[CompetitorArticle, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

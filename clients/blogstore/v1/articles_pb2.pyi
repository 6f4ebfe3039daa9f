import datetime

from blogstore.v1 import common_pb2 as _common_pb2
from blogstore.v1 import competitors_pb2 as _competitors_pb2
from blogstore.v1 import embeddings_pb2 as _embeddings_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ArticleStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTICLE_STATUS_UNSPECIFIED: _ClassVar[ArticleStatus]
    ARTICLE_STATUS_DRAFT: _ClassVar[ArticleStatus]
    ARTICLE_STATUS_PUBLISHED: _ClassVar[ArticleStatus]
    ARTICLE_STATUS_ARCHIVED: _ClassVar[ArticleStatus]

class ArticleView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTICLE_VIEW_UNSPECIFIED: _ClassVar[ArticleView]
    ARTICLE_VIEW_BASIC: _ClassVar[ArticleView]
    ARTICLE_VIEW_FULL: _ClassVar[ArticleView]

class IfContentExists(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IF_CONTENT_EXISTS_UNSPECIFIED: _ClassVar[IfContentExists]
    IF_CONTENT_EXISTS_CREATE: _ClassVar[IfContentExists]
    IF_CONTENT_EXISTS_RETURN_EXISTING: _ClassVar[IfContentExists]
    IF_CONTENT_EXISTS_FAIL: _ClassVar[IfContentExists]
ARTICLE_STATUS_UNSPECIFIED: ArticleStatus
ARTICLE_STATUS_DRAFT: ArticleStatus
ARTICLE_STATUS_PUBLISHED: ArticleStatus
ARTICLE_STATUS_ARCHIVED: ArticleStatus
ARTICLE_VIEW_UNSPECIFIED: ArticleView
ARTICLE_VIEW_BASIC: ArticleView
ARTICLE_VIEW_FULL: ArticleView
IF_CONTENT_EXISTS_UNSPECIFIED: IfContentExists
IF_CONTENT_EXISTS_CREATE: IfContentExists
IF_CONTENT_EXISTS_RETURN_EXISTING: IfContentExists
IF_CONTENT_EXISTS_FAIL: IfContentExists

class Article(_message.Message):
    __slots__ = ("id", "user_id", "pipeline_id", "title", "slug", "content_markdown", "content_html", "excerpt", "meta_title", "meta_description", "primary_keyword", "secondary_keywords", "tags", "seo_score", "wp_post_id", "wp_url", "wp_status", "status", "word_count", "reading_time_minutes", "internal_links", "external_links", "content_hash", "publish_time", "create_time", "update_time", "delete_time", "etag", "provenance", "wp_modified_time", "wp_synced_version", "embedding")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SLUG_FIELD_NUMBER: _ClassVar[int]
    CONTENT_MARKDOWN_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HTML_FIELD_NUMBER: _ClassVar[int]
    EXCERPT_FIELD_NUMBER: _ClassVar[int]
    META_TITLE_FIELD_NUMBER: _ClassVar[int]
    META_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_KEYWORD_FIELD_NUMBER: _ClassVar[int]
    SECONDARY_KEYWORDS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SEO_SCORE_FIELD_NUMBER: _ClassVar[int]
    WP_POST_ID_FIELD_NUMBER: _ClassVar[int]
    WP_URL_FIELD_NUMBER: _ClassVar[int]
    WP_STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    READING_TIME_MINUTES_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_LINKS_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_LINKS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    WP_MODIFIED_TIME_FIELD_NUMBER: _ClassVar[int]
    WP_SYNCED_VERSION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    pipeline_id: str
    title: str
    slug: str
    content_markdown: str
    content_html: str
    excerpt: str
    meta_title: str
    meta_description: str
    primary_keyword: str
    secondary_keywords: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    seo_score: float
    wp_post_id: int
    wp_url: str
    wp_status: str
    status: ArticleStatus
    word_count: int
    reading_time_minutes: int
    internal_links: int
    external_links: int
    content_hash: str
    publish_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    etag: str
    provenance: Provenance
    wp_modified_time: _timestamp_pb2.Timestamp
    wp_synced_version: int
    embedding: _embeddings_pb2.Embedding
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., pipeline_id: _Optional[str] = ..., title: _Optional[str] = ..., slug: _Optional[str] = ..., content_markdown: _Optional[str] = ..., content_html: _Optional[str] = ..., excerpt: _Optional[str] = ..., meta_title: _Optional[str] = ..., meta_description: _Optional[str] = ..., primary_keyword: _Optional[str] = ..., secondary_keywords: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ..., seo_score: _Optional[float] = ..., wp_post_id: _Optional[int] = ..., wp_url: _Optional[str] = ..., wp_status: _Optional[str] = ..., status: _Optional[_Union[ArticleStatus, str]] = ..., word_count: _Optional[int] = ..., reading_time_minutes: _Optional[int] = ..., internal_links: _Optional[int] = ..., external_links: _Optional[int] = ..., content_hash: _Optional[str] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., wp_modified_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., wp_synced_version: _Optional[int] = ..., embedding: _Optional[_Union[_embeddings_pb2.Embedding, _Mapping]] = ...) -> None: ...

class CreateArticleRequest(_message.Message):
    __slots__ = ("article", "request_id", "pipeline_stage", "if_content_exists")
    ARTICLE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_STAGE_FIELD_NUMBER: _ClassVar[int]
    IF_CONTENT_EXISTS_FIELD_NUMBER: _ClassVar[int]
    article: Article
    request_id: str
    pipeline_stage: str
    if_content_exists: IfContentExists
    def __init__(self, article: _Optional[_Union[Article, _Mapping]] = ..., request_id: _Optional[str] = ..., pipeline_stage: _Optional[str] = ..., if_content_exists: _Optional[_Union[IfContentExists, str]] = ...) -> None: ...

class CreateArticleResponse(_message.Message):
    __slots__ = ("article",)
    ARTICLE_FIELD_NUMBER: _ClassVar[int]
    article: Article
    def __init__(self, article: _Optional[_Union[Article, _Mapping]] = ...) -> None: ...

class GetArticleRequest(_message.Message):
    __slots__ = ("id", "user_id", "slug", "view")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SLUG_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    slug: str
    view: ArticleView
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., slug: _Optional[str] = ..., view: _Optional[_Union[ArticleView, str]] = ...) -> None: ...

class GetArticleResponse(_message.Message):
    __slots__ = ("article",)
    ARTICLE_FIELD_NUMBER: _ClassVar[int]
    article: Article
    def __init__(self, article: _Optional[_Union[Article, _Mapping]] = ...) -> None: ...

class ListArticlesRequest(_message.Message):
    __slots__ = ("user_id", "status", "primary_keyword", "tag", "pipeline_id", "start_create_time", "end_create_time", "start_publish_time", "end_publish_time", "show_deleted", "order_by", "view", "page_size", "page_token", "content_hash", "needs_sync")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_KEYWORD_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    START_CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    END_PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    NEEDS_SYNC_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    status: ArticleStatus
    primary_keyword: str
    tag: str
    pipeline_id: str
    start_create_time: _timestamp_pb2.Timestamp
    end_create_time: _timestamp_pb2.Timestamp
    start_publish_time: _timestamp_pb2.Timestamp
    end_publish_time: _timestamp_pb2.Timestamp
    show_deleted: bool
    order_by: str
    view: ArticleView
    page_size: int
    page_token: str
    content_hash: str
    needs_sync: bool
    def __init__(self, user_id: _Optional[str] = ..., status: _Optional[_Union[ArticleStatus, str]] = ..., primary_keyword: _Optional[str] = ..., tag: _Optional[str] = ..., pipeline_id: _Optional[str] = ..., start_create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., show_deleted: _Optional[bool] = ..., order_by: _Optional[str] = ..., view: _Optional[_Union[ArticleView, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., content_hash: _Optional[str] = ..., needs_sync: _Optional[bool] = ...) -> None: ...

class ListArticlesResponse(_message.Message):
    __slots__ = ("articles", "next_page_token")
    ARTICLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    articles: _containers.RepeatedCompositeFieldContainer[Article]
    next_page_token: str
    def __init__(self, articles: _Optional[_Iterable[_Union[Article, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateArticleRequest(_message.Message):
    __slots__ = ("article", "update_mask", "pipeline_stage", "pipeline_id")
    ARTICLE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_STAGE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    article: Article
    update_mask: _field_mask_pb2.FieldMask
    pipeline_stage: str
    pipeline_id: str
    def __init__(self, article: _Optional[_Union[Article, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., pipeline_stage: _Optional[str] = ..., pipeline_id: _Optional[str] = ...) -> None: ...

class UpdateArticleResponse(_message.Message):
    __slots__ = ("article",)
    ARTICLE_FIELD_NUMBER: _ClassVar[int]
    article: Article
    def __init__(self, article: _Optional[_Union[Article, _Mapping]] = ...) -> None: ...

class PublishArticleRequest(_message.Message):
    __slots__ = ("id", "etag", "wp_post_id", "wp_url", "wp_status", "wp_modified_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    WP_POST_ID_FIELD_NUMBER: _ClassVar[int]
    WP_URL_FIELD_NUMBER: _ClassVar[int]
    WP_STATUS_FIELD_NUMBER: _ClassVar[int]
    WP_MODIFIED_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    etag: str
    wp_post_id: int
    wp_url: str
    wp_status: str
    wp_modified_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., etag: _Optional[str] = ..., wp_post_id: _Optional[int] = ..., wp_url: _Optional[str] = ..., wp_status: _Optional[str] = ..., wp_modified_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PublishArticleResponse(_message.Message):
    __slots__ = ("article",)
    ARTICLE_FIELD_NUMBER: _ClassVar[int]
    article: Article
    def __init__(self, article: _Optional[_Union[Article, _Mapping]] = ...) -> None: ...

class DeleteArticleRequest(_message.Message):
    __slots__ = ("id", "etag")
    ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    id: str
    etag: str
    def __init__(self, id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteArticleResponse(_message.Message):
    __slots__ = ("article",)
    ARTICLE_FIELD_NUMBER: _ClassVar[int]
    article: Article
    def __init__(self, article: _Optional[_Union[Article, _Mapping]] = ...) -> None: ...

class UndeleteArticleRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class UndeleteArticleResponse(_message.Message):
    __slots__ = ("article",)
    ARTICLE_FIELD_NUMBER: _ClassVar[int]
    article: Article
    def __init__(self, article: _Optional[_Union[Article, _Mapping]] = ...) -> None: ...

class SearchArticlesRequest(_message.Message):
    __slots__ = ("query", "user_id", "status", "primary_keyword", "tag", "pipeline_id", "start_create_time", "end_create_time", "start_publish_time", "end_publish_time", "view", "page_size", "page_token")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_KEYWORD_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    START_CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    END_PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    query: str
    user_id: str
    status: ArticleStatus
    primary_keyword: str
    tag: str
    pipeline_id: str
    start_create_time: _timestamp_pb2.Timestamp
    end_create_time: _timestamp_pb2.Timestamp
    start_publish_time: _timestamp_pb2.Timestamp
    end_publish_time: _timestamp_pb2.Timestamp
    view: ArticleView
    page_size: int
    page_token: str
    def __init__(self, query: _Optional[str] = ..., user_id: _Optional[str] = ..., status: _Optional[_Union[ArticleStatus, str]] = ..., primary_keyword: _Optional[str] = ..., tag: _Optional[str] = ..., pipeline_id: _Optional[str] = ..., start_create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., view: _Optional[_Union[ArticleView, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("article", "rank", "snippet")
    ARTICLE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    article: Article
    rank: float
    snippet: str
    def __init__(self, article: _Optional[_Union[Article, _Mapping]] = ..., rank: _Optional[float] = ..., snippet: _Optional[str] = ...) -> None: ...

class SearchArticlesResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ArticleRevision(_message.Message):
    __slots__ = ("id", "article_id", "article", "create_time", "actor_id", "provenance")
    ID_FIELD_NUMBER: _ClassVar[int]
    ARTICLE_ID_FIELD_NUMBER: _ClassVar[int]
    ARTICLE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    article_id: str
    article: Article
    create_time: _timestamp_pb2.Timestamp
    actor_id: str
    provenance: Provenance
    def __init__(self, id: _Optional[str] = ..., article_id: _Optional[str] = ..., article: _Optional[_Union[Article, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor_id: _Optional[str] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ...) -> None: ...

class ListArticleRevisionsRequest(_message.Message):
    __slots__ = ("article_id", "page_size", "page_token")
    ARTICLE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    article_id: str
    page_size: int
    page_token: str
    def __init__(self, article_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListArticleRevisionsResponse(_message.Message):
    __slots__ = ("revisions", "next_page_token")
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    revisions: _containers.RepeatedCompositeFieldContainer[ArticleRevision]
    next_page_token: str
    def __init__(self, revisions: _Optional[_Iterable[_Union[ArticleRevision, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RestoreArticleRevisionRequest(_message.Message):
    __slots__ = ("article_id", "revision_id", "etag", "pipeline_stage", "pipeline_id")
    ARTICLE_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_STAGE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    article_id: str
    revision_id: str
    etag: str
    pipeline_stage: str
    pipeline_id: str
    def __init__(self, article_id: _Optional[str] = ..., revision_id: _Optional[str] = ..., etag: _Optional[str] = ..., pipeline_stage: _Optional[str] = ..., pipeline_id: _Optional[str] = ...) -> None: ...

class RestoreArticleRevisionResponse(_message.Message):
    __slots__ = ("article",)
    ARTICLE_FIELD_NUMBER: _ClassVar[int]
    article: Article
    def __init__(self, article: _Optional[_Union[Article, _Mapping]] = ...) -> None: ...

class BatchCreateArticlesRequest(_message.Message):
    __slots__ = ("articles", "request_id", "view", "pipeline_stage", "if_content_exists")
    ARTICLES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_STAGE_FIELD_NUMBER: _ClassVar[int]
    IF_CONTENT_EXISTS_FIELD_NUMBER: _ClassVar[int]
    articles: _containers.RepeatedCompositeFieldContainer[Article]
    request_id: str
    view: ArticleView
    pipeline_stage: str
    if_content_exists: IfContentExists
    def __init__(self, articles: _Optional[_Iterable[_Union[Article, _Mapping]]] = ..., request_id: _Optional[str] = ..., view: _Optional[_Union[ArticleView, str]] = ..., pipeline_stage: _Optional[str] = ..., if_content_exists: _Optional[_Union[IfContentExists, str]] = ...) -> None: ...

class BatchCreateArticlesResponse(_message.Message):
    __slots__ = ("articles",)
    ARTICLES_FIELD_NUMBER: _ClassVar[int]
    articles: _containers.RepeatedCompositeFieldContainer[Article]
    def __init__(self, articles: _Optional[_Iterable[_Union[Article, _Mapping]]] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("actor_kind", "actor_id", "actor_name", "request_id", "pipeline_id", "pipeline_stage")
    ACTOR_KIND_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_STAGE_FIELD_NUMBER: _ClassVar[int]
    actor_kind: _common_pb2.PrincipalKind
    actor_id: str
    actor_name: str
    request_id: str
    pipeline_id: str
    pipeline_stage: str
    def __init__(self, actor_kind: _Optional[_Union[_common_pb2.PrincipalKind, str]] = ..., actor_id: _Optional[str] = ..., actor_name: _Optional[str] = ..., request_id: _Optional[str] = ..., pipeline_id: _Optional[str] = ..., pipeline_stage: _Optional[str] = ...) -> None: ...

class GetArticleRevisionRequest(_message.Message):
    __slots__ = ("article_id", "revision_id", "view")
    ARTICLE_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    article_id: str
    revision_id: str
    view: ArticleView
    def __init__(self, article_id: _Optional[str] = ..., revision_id: _Optional[str] = ..., view: _Optional[_Union[ArticleView, str]] = ...) -> None: ...

class GetArticleRevisionResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: ArticleRevision
    def __init__(self, revision: _Optional[_Union[ArticleRevision, _Mapping]] = ...) -> None: ...

class DiffArticleRevisionRequest(_message.Message):
    __slots__ = ("article_id", "revision_id", "context_lines")
    ARTICLE_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LINES_FIELD_NUMBER: _ClassVar[int]
    article_id: str
    revision_id: str
    context_lines: int
    def __init__(self, article_id: _Optional[str] = ..., revision_id: _Optional[str] = ..., context_lines: _Optional[int] = ...) -> None: ...

class DiffArticleRevisionResponse(_message.Message):
    __slots__ = ("diff", "diff_coarse", "changed_fields", "revision_etag", "current_etag")
    DIFF_FIELD_NUMBER: _ClassVar[int]
    DIFF_COARSE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    REVISION_ETAG_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ETAG_FIELD_NUMBER: _ClassVar[int]
    diff: str
    diff_coarse: bool
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    revision_etag: str
    current_etag: str
    def __init__(self, diff: _Optional[str] = ..., diff_coarse: _Optional[bool] = ..., changed_fields: _Optional[_Iterable[str]] = ..., revision_etag: _Optional[str] = ..., current_etag: _Optional[str] = ...) -> None: ...

class ListTagsRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token", "order_by", "prefix")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    order_by: str
    prefix: str
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order_by: _Optional[str] = ..., prefix: _Optional[str] = ...) -> None: ...

class Tag(_message.Message):
    __slots__ = ("name", "article_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARTICLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    article_count: int
    def __init__(self, name: _Optional[str] = ..., article_count: _Optional[int] = ...) -> None: ...

class ListTagsResponse(_message.Message):
    __slots__ = ("tags", "next_page_token")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedCompositeFieldContainer[Tag]
    next_page_token: str
    def __init__(self, tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class EmbeddingItem(_message.Message):
    __slots__ = ("article_id", "competitor_article_id", "embedding")
    ARTICLE_ID_FIELD_NUMBER: _ClassVar[int]
    COMPETITOR_ARTICLE_ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    article_id: str
    competitor_article_id: str
    embedding: _embeddings_pb2.Embedding
    def __init__(self, article_id: _Optional[str] = ..., competitor_article_id: _Optional[str] = ..., embedding: _Optional[_Union[_embeddings_pb2.Embedding, _Mapping]] = ...) -> None: ...

class SetEmbeddingsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[EmbeddingItem]
    def __init__(self, items: _Optional[_Iterable[_Union[EmbeddingItem, _Mapping]]] = ...) -> None: ...

class SetEmbeddingsResponse(_message.Message):
    __slots__ = ("set_count", "removed_count")
    SET_COUNT_FIELD_NUMBER: _ClassVar[int]
    REMOVED_COUNT_FIELD_NUMBER: _ClassVar[int]
    set_count: int
    removed_count: int
    def __init__(self, set_count: _Optional[int] = ..., removed_count: _Optional[int] = ...) -> None: ...

class FindSimilarArticlesRequest(_message.Message):
    __slots__ = ("article_id", "embedding", "user_id", "include_competitors", "limit", "max_distance")
    ARTICLE_ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_COMPETITORS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    article_id: str
    embedding: _embeddings_pb2.Embedding
    user_id: str
    include_competitors: bool
    limit: int
    max_distance: float
    def __init__(self, article_id: _Optional[str] = ..., embedding: _Optional[_Union[_embeddings_pb2.Embedding, _Mapping]] = ..., user_id: _Optional[str] = ..., include_competitors: _Optional[bool] = ..., limit: _Optional[int] = ..., max_distance: _Optional[float] = ...) -> None: ...

class SimilarArticle(_message.Message):
    __slots__ = ("article", "competitor_article", "distance")
    ARTICLE_FIELD_NUMBER: _ClassVar[int]
    COMPETITOR_ARTICLE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    article: Article
    competitor_article: _competitors_pb2.CompetitorArticle
    distance: float
    def __init__(self, article: _Optional[_Union[Article, _Mapping]] = ..., competitor_article: _Optional[_Union[_competitors_pb2.CompetitorArticle, _Mapping]] = ..., distance: _Optional[float] = ...) -> None: ...

class FindSimilarArticlesResponse(_message.Message):
    __slots__ = ("results", "model")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SimilarArticle]
    model: str
    def __init__(self, results: _Optional[_Iterable[_Union[SimilarArticle, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

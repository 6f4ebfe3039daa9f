"""The SQL of article pages: List and Search as statements with named parameters.

A statement's text depends only on its shape (which filters are set, the order, whether a
cursor is given, the view), never on the values, so storage/queries.py compiles and
PREPAREs each shape once and runs it in one round trip.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Select,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, REGCONFIG, TSQUERY

from storage.models import Article
from storage.models.articles import ARTICLE_COLUMNS, BASIC_COLUMNS
from storage.repositories.base import OWNER, owned_by
from storage.repositories.paging import after_key

ORDER_BY = ("create_time desc", "publish_time desc", "title")
SEARCH_CANDIDATES = 1000  # rank at most the newest N matches: bounded work for common words
# A query with a quoted phrase looks at the newest PHRASE_SCOPE articles it covers, and tests
# the phrase on at most the newest PHRASE_WINDOW of those holding all its words: the test
# reads an article's whole (TOASTed) search_vector, so both are bounded.
PHRASE_SCOPE = 5000
PHRASE_WINDOW = 1000
# The queries that may be bounded (a quoted phrase, a -negation): they look up where to start.
MAY_BE_BOUNDED = re.compile(r'"|(?:^|\s)-')
# ts_headline's cost grows with its input (~0.11 ms per 1,000 characters per hit, measured):
# snippets come from the excerpt and the text of HEADLINE_CHARS of content_html (~1,500
# characters of text once its tags are stripped), starting HEADLINE_LEAD characters before
# the first occurrence of the query's first term (else at the start). The term is looked
# for in the first HEADLINE_SCAN_CHARS only: search indexes the first 100,000 characters of
# markdown (~105,000 of HTML), and a 2 MiB article then costs a 120,000-character prefix
# (PostgreSQL decompresses only that much of the TOASTed value), not the whole.
HEADLINE_CHARS = 1600
HEADLINE_LEAD = 300
HEADLINE_SCAN_CHARS = 120_000
_QUERY_TERM = re.compile(r"(!?)'((?:[^']|'')+)'")
# A literal in the SQL text, not a parameter: PostgreSQL resolves it when it parses, so the
# functions of :query below are constants it folds when planning (a text parameter cast to
# regconfig is a catalog lookup at run time, which blocks the folding).
_ENGLISH = literal_column("'english'::regconfig", REGCONFIG)
_TSQUERY = func.websearch_to_tsquery(_ENGLISH, bindparam("query", type_=Text))
_QUERY_TEXT = cast(_TSQUERY, Text)
# websearch_to_tsquery builds phrases of lexemes only, so with a phrase's <-> (or <N>) turned
# into & the query becomes one that every match meets and that the GIN index answers without
# reading a vector. A negated phrase, !( 'a' <-> 'b' ), is left as it is: the lookahead skips
# an operator followed, past lexemes (quoted; a URL's may hold parentheses), by ")".
PHRASE_OPERATOR = r"<[0-9-]+>(?!(?:[^()']|'(?:[^']|'')*')*\))"
_WORDS_TEXT = func.regexp_replace(_QUERY_TEXT, PHRASE_OPERATOR, "&", "g")
# Functions of :query alone: PostgreSQL folds them when it plans with the query's value.
# Bounded: any phrase, a negated one too, and a query of negations only (querytree 'T'): over
# common words -"a b" or -a matches almost nothing, and searching it unbounded walked a
# million articles (5-40 s). Under a negated phrase the index step is skipped: PostgreSQL
# estimates such a query at ~1 row and would recheck every article holding the other words.
_BOUNDED_QUERY = or_(func.strpos(_QUERY_TEXT, "<") > 0, cast(func.querytree(_TSQUERY), Text) == "T")
_NEGATED_PHRASE = func.strpos(_QUERY_TEXT, "!(") > 0
_ALL_WORDS = cast(_WORDS_TEXT, TSQUERY)
# What ranking scores: the query without its negated parts (querytree drops them). ts_rank
# of a query with a NOT scores every match ~0 (1e-20), which flattened title and tag hits
# to body-only hits as soon as a query excluded a word. Where nothing positive is left to
# rank on ('T': only negations, or an OR with a negation; '': only stop words), the query
# itself. A function of :query alone, folded to a constant like the others.
_QUERY_TREE = cast(func.querytree(_TSQUERY), Text)
_RANKED_QUERY = case(
    (or_(_QUERY_TREE == "T", _QUERY_TREE == ""), _TSQUERY), else_=cast(_QUERY_TREE, TSQUERY)
)


@dataclass(frozen=True)
class ArticleFilters:
    user_id: uuid.UUID | None = None
    status: str | None = None
    primary_keyword: str | None = None
    tag: str | None = None
    pipeline_id: uuid.UUID | None = None
    start_create_time: dt.datetime | None = None
    end_create_time: dt.datetime | None = None
    start_publish_time: dt.datetime | None = None
    end_publish_time: dt.datetime | None = None
    show_deleted: bool = False
    content_hash: str | None = None  # lower-case hex
    needs_sync: bool = False


# Each filter is a condition on a parameter named after the field.
_FILTER_CONDITIONS = {
    "user_id": Article.user_id == bindparam("user_id"),
    "status": Article.status == bindparam("status"),
    "primary_keyword": Article.primary_keyword == bindparam("primary_keyword"),
    "tag": Article.tags.contains(bindparam("tag")),
    "pipeline_id": Article.pipeline_id == bindparam("pipeline_id"),
    "start_create_time": Article.create_time >= bindparam("start_create_time"),
    "end_create_time": Article.create_time < bindparam("end_create_time"),
    "start_publish_time": Article.publish_time >= bindparam("start_publish_time"),
    "end_publish_time": Article.publish_time < bindparam("end_publish_time"),
    "content_hash": Article.content_hash == bindparam("content_hash"),
}
# needs_sync: storage.models.articles.NEEDS_SYNC, the predicate of ix_articles_needs_sync, as
# an expression (a literal 'published', not a parameter, so the index's predicate is proven).
_NEEDS_SYNC = and_(
    Article.status == literal_column("'published'"),
    Article.delete_time.is_(None),
    (Article.version > Article.wp_synced_version).self_group().is_(True),
)


def filter_values(f: ArticleFilters, owner: uuid.UUID | None) -> dict[str, Any]:
    """The parameters of the filters that are set (`owner`: the caller's scope, if any)."""
    values = {name: getattr(f, name) for name in _FILTER_CONDITIONS if getattr(f, name)}
    if "tag" in values:
        values["tag"] = [values["tag"]]  # tags @> ARRAY[tag]
    if owner is not None:
        values["owner"] = owner
    return values


def _filtered(stmt: Select, f: ArticleFilters, owner: uuid.UUID | None) -> Select:
    """`stmt` limited to the owner's (live, unless show_deleted) rows matching `f`."""
    conditions = [_FILTER_CONDITIONS[name] for name in filter_values(f, None)]
    if owner is not None:
        conditions.append(owned_by(Article.user_id, OWNER))
    if not f.show_deleted:
        conditions.append(Article.delete_time.is_(None))
    if f.needs_sync:
        conditions.append(_NEEDS_SYNC)
    return stmt.where(*conditions)


def shape_flags(f: ArticleFilters) -> tuple[bool, bool]:
    """The filters that change a statement's text but carry no parameter."""
    return f.show_deleted, f.needs_sync


def _columns(full: bool) -> tuple[Any, ...]:
    return ARTICLE_COLUMNS if full else BASIC_COLUMNS


# -- List ------------------------------------------------------------------------------------
def list_statement(
    f: ArticleFilters, owner: uuid.UUID | None, *, order_by: str, after: tuple | None, full: bool
) -> Select:
    """A List page in `order_by` (one of ORDER_BY) after the cursor `after`, LIMIT :limit.

    The cursor's values are the parameters after_0 and after_1 (list_values gives them).
    """
    stmt = _filtered(select(*_columns(full)), f, owner)
    if order_by == "publish_time desc":  # never-published articles last
        if after is not None:
            stmt = stmt.where(_after_publish_time(after[0] is None))
        keys = (Article.publish_time.desc().nulls_last(), Article.id.desc())
    else:
        columns, descending = (
            ((Article.title, Article.id), False)
            if order_by == "title"
            else ((Article.create_time, Article.id), True)
        )
        if after is not None:
            bound = [bindparam(f"after_{i}", type_=c.type) for i, c in enumerate(columns)]
            stmt = stmt.where(after_key(columns, bound, descending=descending))
        keys = tuple(c.desc() for c in columns) if descending else columns
    return stmt.order_by(*keys).limit(bindparam("limit", type_=Integer))


def list_values(
    f: ArticleFilters, owner: uuid.UUID | None, after: tuple | None, limit: int
) -> dict[str, Any]:
    values = {**filter_values(f, owner), "limit": limit + 1}
    if after is not None:
        values.update({f"after_{i}": v for i, v in enumerate(after) if v is not None})
    return values


def list_cursor(order_by: str) -> Callable[[Any], tuple[Any, ...]]:
    """The cursor of a List row in `order_by`."""
    if order_by == "title":
        return lambda a: (a.title, a.id)
    if order_by == "publish_time desc":
        return lambda a: (a.publish_time, a.id)
    return lambda a: (a.create_time, a.id)


def _after_publish_time(after_null: bool) -> Any:
    """Keyset condition for ORDER BY publish_time DESC NULLS LAST, id DESC."""
    after_time = bindparam("after_0", type_=Article.publish_time.type)
    after_id = bindparam("after_1", type_=Article.id.type)
    if after_null:
        return and_(Article.publish_time.is_(None), Article.id < after_id)
    return or_(
        Article.publish_time < after_time,
        and_(Article.publish_time == after_time, Article.id < after_id),
        Article.publish_time.is_(None),
    )


# -- Search ----------------------------------------------------------------------------------
_CANDIDATE_COLUMNS = (Article.id, Article.create_time, Article.rank_vector)


def phrase_scope_statement(f: ArticleFilters, owner: uuid.UUID | None) -> Select:
    """The create_time of the PHRASE_SCOPE-th newest article the search covers, or no row:
    where a phrase search starts. Its parameters are filter_values'."""
    order = (Article.create_time.desc(), Article.id.desc())
    stmt = _filtered(select(Article.create_time), f, owner).order_by(*order)
    return stmt.offset(PHRASE_SCOPE - 1).limit(1)


def search_rank_statement(
    f: ArticleFilters, owner: uuid.UUID | None, *, after: bool, phrase_since: bool
) -> Select:
    """Rank the newest SEARCH_CANDIDATES matches of :query; a page of (id, rank,
    create_time, tree) after the cursor (after_0..2), LIMIT :limit.

    Matching uses search_vector (GIN); ranking the small rank_vector, which lives in the
    row, so ranking reads no TOAST. A phrase is matched in two steps: its words (through the
    index), then the phrase itself on the newest PHRASE_WINDOW of those articles; with
    `phrase_since`, a query with a phrase or only negations looks only at articles created
    at or after :phrase_since. `tree` is
    querytree(:query), for the snippet window. An empty query (only stop words) matches
    nothing.
    """
    matching = (
        _filtered(select(*_CANDIDATE_COLUMNS, Article.search_vector), f, owner)
        .where(
            func.numnode(_TSQUERY) > 0,
            case(
                (_NEGATED_PHRASE, Article.search_vector.op("@@")(_ALL_WORDS).is_(True)),
                (_BOUNDED_QUERY, Article.search_vector.op("@@")(_ALL_WORDS)),
                else_=Article.search_vector.op("@@")(_TSQUERY),
            ),
        )
        .order_by(Article.create_time.desc(), Article.id.desc())
        .limit(case((_BOUNDED_QUERY, PHRASE_WINDOW), else_=SEARCH_CANDIDATES))
    )
    if phrase_since:
        since = Article.create_time >= bindparam("phrase_since", type_=Article.create_time.type)
        matching = matching.where(case((_BOUNDED_QUERY, since), else_=true()))
    matching = matching.subquery("matching")
    phrase_test = matching.c.search_vector.op("@@", is_comparison=True)(_TSQUERY)
    candidates = (
        select(*(matching.c[c.key] for c in _CANDIDATE_COLUMNS))
        .where(case((_BOUNDED_QUERY, phrase_test), else_=true()))
        .order_by(matching.c.create_time.desc(), matching.c.id.desc())
        .limit(SEARCH_CANDIDATES)
        .cte("candidates")
    )
    in_title = func.ts_filter(candidates.c.rank_vector, literal_column("'{a}'")).op(
        "@@", is_comparison=True
    )(_RANKED_QUERY)
    # A title hit scores 1 + (0..1); an excerpt, keyword or tag hit 0..1; a content-only
    # hit 0, so titles lead, then the other fields, then content, newest first. Matching
    # took the whole query; ranking takes its positive part (_RANKED_QUERY).
    rank = (
        case((in_title, 1.0), else_=0.0)
        + cast(func.ts_rank(candidates.c.rank_vector, _RANKED_QUERY, 32), Float)
    ).label("rank")
    ranked = select(candidates.c.id, candidates.c.create_time, rank).subquery()
    stmt = select(
        ranked.c.id, ranked.c.rank, ranked.c.create_time, func.querytree(_TSQUERY).label("tree")
    )
    if after:
        keys = (ranked.c.rank, ranked.c.create_time, ranked.c.id)
        bound = [bindparam(f"after_{i}", type_=k.type) for i, k in enumerate(keys)]
        stmt = stmt.where(after_key(keys, bound, descending=True))
    order = (ranked.c.rank.desc(), ranked.c.create_time.desc(), ranked.c.id.desc())
    return stmt.order_by(*order).limit(bindparam("limit", type_=Integer))


def search_values(
    query: str, f: ArticleFilters, owner: uuid.UUID | None, after: tuple | None, limit: int,
    phrase_since: dt.datetime | None,
) -> dict[str, Any]:  # fmt: skip
    values = {**filter_values(f, owner), "query": query, "limit": limit + 1}
    if phrase_since is not None:
        values["phrase_since"] = phrase_since
    if after is not None:
        values.update({f"after_{i}": v for i, v in enumerate(after)})
    return values


def search_page_statement(*, full: bool, windowed: bool) -> Select:
    """The articles :ids with a highlighted snippet for :query.

    The snippet is ts_headline over the HTML-escaped excerpt and the plain text of
    HEADLINE_CHARS of content_html (the rendered article, so no markdown shows: tags
    stripped, a tag cut at either end of the window dropped, whitespace collapsed, entities
    kept as they are, the output being HTML): from HEADLINE_LEAD characters before the
    first occurrence of :term within the first HEADLINE_SCAN_CHARS when `windowed`, else
    from the start.
    """
    html = Article.content_html
    if windowed:
        head = func.left(html, HEADLINE_SCAN_CHARS)
        found = func.strpos(func.lower(head), bindparam("term", type_=Text))
        start = func.greatest(literal(1), found - HEADLINE_LEAD).label("start")
        # OFFSET 0 keeps PostgreSQL from inlining it (strpos would then run twice a row).
        at = select(start).correlate(Article).offset(0).lateral("at")
        window = func.substr(html, at.c.start, HEADLINE_CHARS)
        # Cut inside a tag: drop its tail ("...="/x">") up to the first ">".
        window = case((at.c.start > 1, func.regexp_replace(window, "^[^<>]*>", "")), else_=window)
    else:
        at = None
        window = func.left(html, HEADLINE_CHARS)
    plain = func.regexp_replace(window, "<[^>]*(>|$)", " ", "g")  # tags; a tag cut at the end
    # Whitespace runs and line breaks to one space ('\s+' would rewrite every single space
    # too: 0.3 ms per article, against 0.01 ms for this).
    plain = func.regexp_replace(func.replace(plain, ">", "&gt;"), r"\s\s+|[\n\r\t]", " ", "g")
    plain = func.btrim(plain)
    excerpt = func.replace(
        func.replace(func.replace(Article.excerpt, "&", "&amp;"), "<", "&lt;"), ">", "&gt;"
    )
    text = func.concat_ws(" ", func.nullif(excerpt, ""), plain)  # no leading space
    snippet = func.btrim(func.ts_headline(
        _ENGLISH, text, _TSQUERY,
        "MaxFragments=2, MinWords=8, MaxWords=24, StartSel=<b>, StopSel=</b>",
    ))  # fmt: skip
    ids = cast(bindparam("ids", type_=ARRAY(Text)), ARRAY(Article.id.type))  # ids as text
    stmt = select(*_columns(full), snippet.label("snippet"))
    if at is not None:
        stmt = stmt.select_from(Article).join(at, true())
    return stmt.where(Article.id == func.any(ids))


def snippet_term(tree: str) -> str:
    """The query's first non-negated term, from querytree()'s text ('seo' & 'tip').

    It is a stem, looked for in the content as a substring; "" when there is none.
    """
    return next((m[2].replace("''", "'") for m in _QUERY_TERM.finditer(tree) if not m[1]), "")

"""Import of the legacy blog-poster JSON files: articles and pipeline history.

A file holding an object is an article (the `data/articles/*.json` shape of seed 000: title,
slug, content_markdown, content_html, excerpt, meta_*, primary_keyword, secondary_keywords
(or keywords), tags, seo_score, wp_*, status, created_at, updated_at, published_at); a file
holding a list (or an object with a "pipelines" list) is pipeline history (status,
input_config, the stage results competitor_data, topic_recommendation, fact_check_report,
wordpress_result, errors, warnings, retry_count, total_cost in dollars, llm_tokens_used,
api_calls_made, started_at, completed_at, execution_time_ms, created_at, updated_at).

Articles pass storage.rules, the API's own rules; pipelines its stage and message rules.
Only finished runs are imported (a run "running" in the old process never finished).
Idempotent: each record's request id is derived from its legacy `id`, else from its content,
and stored as its create_request_id; a record whose id is already there is a duplicate.
Original timestamps are kept. A legacy run's totals are kept on the pipeline; no usage
events are invented for them, so monthly usage and quotas start with blogstore.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from storage import rules
from storage.actors import SYSTEM, Caller
from storage.errors import AlreadyExists, NotFound
from storage.models import Article, Pipeline
from storage.repositories.articles import NewArticle, with_derived
from storage.rules import Violations
from storage.uow import Database, Tx

NAMESPACE = uuid.UUID("1c5f0b8e-6a2d-4e37-9f41-7d3b2c8a9e60")
CHUNK = 100  # records per transaction
ARTICLE_DEFAULTS: dict[str, Any] = {
    "title": "", "slug": "", "content_markdown": "", "content_html": "", "excerpt": "",
    "meta_title": "", "meta_description": "", "primary_keyword": "", "secondary_keywords": [],
    "tags": [], "seo_score": 0.0, "wp_post_id": None, "wp_url": "", "wp_status": "",
    "status": None,
}  # fmt: skip
FINISHED = {
    "completed": "succeeded", "complete": "succeeded", "succeeded": "succeeded",
    "success": "succeeded", "failed": "failed", "error": "failed", "cancelled": "cancelled",
    "canceled": "cancelled",
}  # fmt: skip
UNFINISHED = ("pending", "running")
_COUNTERS = ("retry_count", "execution_time_ms", "llm_tokens_used", "api_calls_made")


@dataclass(frozen=True)
class Problem:
    source: str  # file, or file[index] for an entry of a history file
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.field}: {self.reason}"


@dataclass
class Record:
    kind: str  # "article" or "pipeline"
    source: str
    request_id: uuid.UUID
    values: dict[str, Any]


@dataclass
class ImportReport:
    dry_run: bool
    files: int = 0
    imported: dict[str, int] = field(default_factory=lambda: {"article": 0, "pipeline": 0})
    duplicates: list[str] = field(default_factory=list)
    invalid: list[Problem] = field(default_factory=list)


def legacy_files(path: Path) -> list[Path]:
    """`path` itself, or every *.json below it, in a stable order."""
    return [path] if path.is_file() else sorted(p for p in path.rglob("*.json") if p.is_file())


def import_legacy(
    db: Database,
    path: Path,
    user: str,
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import every legacy file under `path` for the user `user` (an email or a user id).

    NotFound if there is no such user. Records go in CHUNK at a time, one transaction each.
    """
    caller = Caller(SYSTEM, request_id=f"import-json-{uuid.uuid4()}")
    owner = db.run(caller, lambda tx: _find_user(tx, user))
    files = legacy_files(path)
    report = ImportReport(dry_run=dry_run, files=len(files))
    now = dt.datetime.now(dt.UTC)
    seen: dict[str, set[Any]] = {"request_ids": set(), "slugs": set(), "wp_post_ids": set()}
    pending: list[Record] = []
    for done, file in enumerate(files, 1):
        source = str(file.relative_to(path)) if file != path else file.name
        records, problems = read_file(file, source, now)
        report.invalid += problems
        pending += records
        if len(pending) >= CHUNK or done == len(files):
            _flush(db, caller, owner, pending, seen, report)
            pending = []
        if progress:
            progress(done, len(files))
    return report


def read_file(file: Path, source: str, now: dt.datetime) -> tuple[list[Record], list[Problem]]:
    """The valid records in one file, and the problems of the others."""
    try:
        data = json.loads(file.read_bytes())
    except (OSError, UnicodeDecodeError) as error:
        return [], [Problem(source, "file", f"cannot be read: {error}")]
    except json.JSONDecodeError as error:
        return [], [Problem(source, "file", f"is not valid JSON: {error}")]
    if isinstance(data, dict) and isinstance(data.get("pipelines"), list):
        data = data["pipelines"]
    if isinstance(data, dict):
        entries = [(source, data, "pipeline" if "input_config" in data else "article")]
    elif isinstance(data, list):
        entries = [(f"{source}[{i}]", item, "pipeline") for i, item in enumerate(data)]
    else:
        return [], [Problem(source, "file", "must hold an article object or a list of runs")]
    records, problems = [], []
    for where, item, kind in entries:
        if not isinstance(item, dict):
            problems.append(Problem(where, "entry", "must be an object"))
            continue
        v = Violations()
        values = _article(v, item, now) if kind == "article" else _pipeline(v, item, now)
        problems += [Problem(where, name, reason) for name, reason in v.fields.items()]
        if not v.fields:
            records.append(Record(kind, where, _request_id(kind, item), values))
    return records, problems


def _article(v: Violations, data: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    given = {k: data[k] for k in ARTICLE_DEFAULTS if data.get(k) is not None}
    if "secondary_keywords" not in given and data.get("keywords") is not None:
        given["secondary_keywords"] = data["keywords"]
    if isinstance(given.get("status"), str):
        given["status"] = given["status"].strip().lower()
    values = rules.article_values(v, "", {**ARTICLE_DEFAULTS, **given})
    values["status"] = values["status"] or "draft"
    create_time = _time(v, data, "created_at") or now
    publish_time = _time(v, data, "published_at")
    if publish_time is None and values["status"] == "published":
        publish_time = create_time
    values.update(
        create_time=create_time,
        update_time=_time(v, data, "updated_at") or create_time,
        publish_time=publish_time,
    )
    return with_derived(values) if not v.fields else values


def _pipeline(v: Violations, data: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    status = data.get("status", data.get("state"))
    state = FINISHED.get(status.strip().lower()) if isinstance(status, str) else None
    if isinstance(status, str) and status.strip().lower() in UNFINISHED:
        v.add("status", f"is {status!r}: only finished runs are imported")
    elif state is None:
        v.add("status", f"must be one of: {', '.join(sorted(FINISHED))}")
    config = _struct(v, "input_config", data.get("input_config"))
    stages = dict(data["stage_results"]) if isinstance(data.get("stage_results"), dict) else {}
    stages |= {name: data[name] for name in rules.PIPELINE_STAGES if data.get(name) is not None}
    for name in sorted(stages.keys() - rules.PIPELINE_STAGES):
        v.add(
            f"stage_results.{name}", f"must be one of: {', '.join(sorted(rules.PIPELINE_STAGES))}"
        )
    counters = {name: _count(v, data, name) for name in _COUNTERS}
    start, end = _time(v, data, "started_at"), _time(v, data, "completed_at")
    if counters["execution_time_ms"] is None and start and end:
        counters["execution_time_ms"] = int((end - start).total_seconds() * 1000)
    create_time = _time(v, data, "created_at") or start or now
    return {
        "state": state,
        "input_config": config,
        "stage_results": {name: _struct(v, name, r) for name, r in sorted(stages.items())},
        "errors": rules.messages(v, "errors", _texts(data.get("errors"))),
        "warnings": rules.messages(v, "warnings", _texts(data.get("warnings"))),
        **counters,
        "retry_count": counters["retry_count"] or 0,
        "llm_tokens_used": counters["llm_tokens_used"] or 0,
        "api_calls_made": counters["api_calls_made"] or 0,
        "total_cost_micros": _micros(v, data.get("total_cost")),
        "start_time": start,
        "end_time": end,
        "create_time": create_time,
        "update_time": _time(v, data, "updated_at") or end or create_time,
    }


def _struct(v: Violations, name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        v.add(name, "must be an object")
        return {}
    if len(json.dumps(value).encode()) > rules.MAX_STRUCT_BYTES:
        v.add(name, f"must be at most {rules.MAX_STRUCT_BYTES} bytes")
    return value


def _texts(value: Any) -> Any:
    """Messages as strings; structured legacy messages become their compact JSON."""
    if value is None:
        return []
    if isinstance(value, list):
        return [i if isinstance(i, str) else json.dumps(i, sort_keys=True) for i in value]
    return value


def _count(v: Violations, data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        v.add(name, "must be a whole number, 0 or more")
        return None
    return value


def _micros(v: Violations, dollars: Any) -> int:
    if dollars is None:
        return 0
    try:
        if isinstance(dollars, bool) or not isinstance(dollars, int | float | str):
            raise InvalidOperation
        micros = Decimal(str(dollars)) * 1_000_000
        if not micros.is_finite() or micros < 0:
            raise InvalidOperation
    except InvalidOperation:
        v.add("total_cost", "must be an amount of US dollars, 0 or more")
        return 0
    return int(micros.to_integral_value())


def _time(v: Violations, data: dict[str, Any], name: str) -> dt.datetime | None:
    raw = data.get(name)
    if raw is None:
        return None
    try:
        if not isinstance(raw, str):
            raise ValueError
        moment = dt.datetime.fromisoformat(raw.strip())
    except ValueError:
        v.add(name, "must be an ISO 8601 time, e.g. 2024-03-11T16:02:41Z")
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)  # naive: UTC


def _request_id(kind: str, data: dict[str, Any]) -> uuid.UUID:
    legacy = data.get("id")
    if isinstance(legacy, str | int) and not isinstance(legacy, bool) and str(legacy).strip():
        key = f"{kind}:id:{str(legacy).strip()}"
    else:
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        key = f"{kind}:sha256:{hashlib.sha256(canonical.encode()).hexdigest()}"
    return uuid.uuid5(NAMESPACE, key)


def _find_user(tx: Tx, user: str) -> uuid.UUID:
    try:
        return tx.users.get(uuid.UUID(user)).id
    except ValueError:
        found = tx.users.find_by_login(user.strip())
        if found is None:
            raise NotFound("user", user) from None
        return found.id


# -- writing -----------------------------------------------------------------------------
def _flush(
    db: Database,
    caller: Caller,
    owner: uuid.UUID,
    records: list[Record],
    seen: dict[str, set[Any]],
    report: ImportReport,
) -> None:
    """Import one chunk in one transaction (nothing is written on a dry run).

    A slug or WordPress post taken by a concurrent writer between the check and the insert
    fails the chunk; it is then checked and imported again, and that record reported as
    invalid.
    """
    for attempt in (1, 2):
        try:
            outcome = db.run(caller, lambda tx: _import_chunk(tx, owner, records, seen, report))
            break
        except AlreadyExists:
            if attempt == 2:
                raise
    imported, duplicates, invalid = outcome
    for record, slug in imported:
        report.imported[record.kind] += 1
        seen["request_ids"].add(record.request_id)
        if slug:
            seen["slugs"].add(slug)
        if record.kind == "article" and record.values.get("wp_post_id"):
            seen["wp_post_ids"].add(record.values["wp_post_id"])
    report.duplicates += [r.source for r in duplicates]
    report.invalid += invalid


def _import_chunk(
    tx: Tx, owner: uuid.UUID, records: list[Record], seen: dict[str, set[Any]],
    report: ImportReport,
) -> tuple[list[tuple[Record, str | None]], list[Record], list[Problem]]:  # fmt: skip
    ids = [r.request_id for r in records]
    stored = set(tx.session.scalars(select(Article.create_request_id).where(
        Article.user_id == owner, Article.create_request_id.in_(ids))))  # fmt: skip
    stored |= set(tx.session.scalars(select(Pipeline.create_request_id).where(
        Pipeline.user_id == owner, Pipeline.create_request_id.in_(ids))))  # fmt: skip
    given = {r.values["slug"] for r in records if r.kind == "article" and r.values["slug"]}
    live = select(Article.slug).where(Article.user_id == owner, Article.delete_time.is_(None))
    taken = set(tx.session.scalars(live.where(Article.slug.in_(given))))
    taken |= seen["slugs"]
    posts = {r.values.get("wp_post_id") for r in records if r.kind == "article"} - {None}
    live_post = select(Article.wp_post_id).where(
        Article.user_id == owner, Article.delete_time.is_(None)
    )
    posts_taken = set(tx.session.scalars(live_post.where(Article.wp_post_id.in_(posts))))
    posts_taken |= seen["wp_post_ids"]
    ids_seen = set(seen["request_ids"])
    imported, duplicates, invalid = [], [], []
    for record in records:
        if record.request_id in stored or record.request_id in ids_seen:
            duplicates.append(record)
            continue
        ids_seen.add(record.request_id)
        slug = record.values.get("slug")
        if record.kind == "article" and slug and slug in taken:
            invalid.append(Problem(record.source, "slug", f"{slug!r} is taken by another article"))
            continue
        post = record.values.get("wp_post_id") if record.kind == "article" else None
        if post and post in posts_taken:  # one live article per WordPress post (migration 0015)
            problem = f"WordPress post {post} belongs to another article"
            invalid.append(Problem(record.source, "wp_post_id", problem))
            continue
        if post:
            posts_taken.add(post)
        if slug:
            taken.add(slug)
        imported.append(record)
    slugs = _write(tx, owner, imported) if not report.dry_run else {}
    pairs = [(r, slugs.get(r.request_id, r.values.get("slug", ""))) for r in imported]
    return pairs, duplicates, invalid


def _write(tx: Tx, owner: uuid.UUID, records: list[Record]) -> dict[uuid.UUID, str]:
    """Insert the records; the articles' slugs (derived ones included) by request id."""
    slugs: dict[uuid.UUID, str] = {}
    articles = [r for r in records if r.kind == "article"]
    items = [NewArticle({**r.values, "user_id": owner}, request_id=r.request_id) for r in articles]
    for record, article in zip(articles, tx.articles.create_many(items), strict=True):
        slugs[record.request_id] = article.slug
        tx.audit("article.import", "article", article.id, user_id=owner, source=record.source)
    pipelines = {r.request_id: r for r in records if r.kind == "pipeline"}
    if pipelines:
        rows = [{**r.values, "user_id": owner, "create_request_id": r.request_id}
                for r in pipelines.values()]  # fmt: skip
        stmt = insert(Pipeline).on_conflict_do_nothing()
        stmt = stmt.returning(Pipeline.id, Pipeline.create_request_id)
        for row in tx.session.execute(stmt, rows):
            source = pipelines[row.create_request_id].source
            tx.audit("pipeline.import", "pipeline", row.id, user_id=owner, source=source)
    return slugs

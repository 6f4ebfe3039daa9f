"""Retention: what each policy would remove (plan), and removing it in bounded batches (apply).

Every batch is a transaction of its own: pick up to `batch_size` rows in key order after the
last key seen, locked FOR UPDATE SKIP LOCKED (a row a writer holds is left for the next run),
delete what belongs to them, delete them, commit. `lock_timeout` bounds any wait for a
writer's lock (such a batch is retried), so no lock is held for more than one short batch.
A crash loses at most the batch in flight: each batch stands alone, and a rerun walks from
the start and finds only what is left.

Policies run in a fixed order, and plan counts each one as if the ones before it had run,
so plan and apply agree row for row. Monthly usage rollups (usage_monthly) are never touched:
they stay exact when the events behind them go. A purged pipeline's usage events keep their
cost (their pipeline_id is set NULL by the foreign key). One policy clears instead of
deleting: usage_texts sets the logged prompt and completion of old usage events to NULL.

The ledgers are partitioned by month (storage/lifecycle/partitions.py): a month wholly
before the cutoff goes as a partition (DETACH, then DROP: one short lock on the parent,
bounded by lock_timeout like a batch) instead of row by row; the rows left before the
cutoff (the boundary month of audit_events, old rows in a default partition) go in batches
as before. A dropped usage partition's idempotency keys (usage_request_ids) go in batches
between the DETACH and the DROP; they are bookkeeping, not counted.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    delete,
    exists,
    false,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy import exc as sa_exc

from storage.actors import SYSTEM, Actor, Caller
from storage.lifecycle import partitions
from storage.models import (
    Article,
    ArticleRevision,
    AuditEvent,
    CompetitorArticle,
    Pipeline,
    UsageEvent,
    UsageRequestId,
)
from storage.repositories.pipelines import TERMINAL_STATES
from storage.uow import Database

T = TypeVar("T")
Counts = dict[str, int]  # rows deleted per table; _OWN for the policy's own table
_OWN = ""

# lock_not_available (lock_timeout), deadlock, serialization, statement timeout: retry.
RETRYABLE_SQLSTATES = frozenset({"55P03", "40P01", "40001", "57014"})
MAX_ATTEMPTS = 5
ARTICLES_PER_CHUNK = 100  # articles whose surplus revisions one batch looks at
_LIMITS = text(
    "SELECT set_config('lock_timeout', :lock_ms, true),"
    " set_config('statement_timeout', :statement_ms, true)"
)


@dataclass(frozen=True)
class Policies:
    """How long each kind of row is kept; 0 turns that policy off."""

    deleted_article_days: int
    revisions_per_article: int
    revision_days: int
    pipeline_days: int
    usage_event_months: int
    audit_event_days: int
    competitor_article_days: int
    usage_text_days: int = 0  # the call log's input and output texts (cleared, not deleted)


@dataclass
class PolicyResult:
    name: str
    rule: str  # what goes, in words
    enabled: bool
    cutoff: dt.datetime | None  # rows older than this go (revisions: None if only by count)
    rows: int = 0  # rows of the policy's own table, planned or deleted
    related: dict[str, int] = field(default_factory=dict)  # rows deleted along with them
    batches: int = 0
    longest_batch_ms: float = 0.0
    error: str = ""
    partitions: list[str] = field(default_factory=list)  # whole months dropped (or to drop)


@dataclass
class Report:
    run_id: uuid.UUID
    now: dt.datetime
    applied: bool
    complete: bool  # False: stopped by max_batches or an error; a rerun continues
    policies: list[PolicyResult]

    def counts(self) -> dict[str, int]:
        """Rows per policy, and per `policy.table` for rows that went with them."""
        counts: dict[str, int] = {}
        for p in self.policies:
            counts[p.name] = p.rows
            counts.update({f"{p.name}.{table}": n for table, n in p.related.items()})
        return counts


@dataclass(frozen=True)
class _Walk:
    """Rows of one table in key order (an index range scan), and what goes with each."""

    key: tuple[Any, ...]  # order columns, ending with the primary key
    where: Callable[[dt.datetime], ColumnElement[bool]]
    related: tuple[Any, ...] = ()  # foreign-key columns of rows deleted first (and counted)
    clear: tuple[Any, ...] = ()  # set these columns NULL instead of deleting the rows
    partitioned: bool = False  # a ledger: drop whole monthly partitions before the cutoff


_WALKS = {
    "deleted_articles": _Walk(
        (Article.delete_time, Article.id),
        lambda cutoff: Article.delete_time < cutoff,
        related=(ArticleRevision.article_id,),
    ),
    "revisions": _Walk(
        (ArticleRevision.create_time, ArticleRevision.id),
        lambda cutoff: ArticleRevision.create_time < cutoff,
    ),
    "pipelines": _Walk(
        (Pipeline.create_time, Pipeline.id),
        lambda cutoff: and_(Pipeline.create_time < cutoff, Pipeline.state.in_(TERMINAL_STATES)),
    ),
    "usage_texts": _Walk(  # along the partial index of rows that still hold a text
        (UsageEvent.event_time, UsageEvent.id),
        lambda cutoff: and_(
            UsageEvent.event_time < cutoff,
            or_(UsageEvent.input_text.is_not(None), UsageEvent.output_text.is_not(None)),
        ),
        clear=(UsageEvent.input_text, UsageEvent.output_text),
    ),
    "usage_events": _Walk(
        (UsageEvent.event_time, UsageEvent.id),
        lambda cutoff: UsageEvent.event_time < cutoff,
        partitioned=True,
    ),
    "audit_events": _Walk(
        (AuditEvent.create_time, AuditEvent.id),
        lambda cutoff: AuditEvent.create_time < cutoff,
        partitioned=True,
    ),
    "competitor_articles": _Walk(
        (CompetitorArticle.last_seen_time, CompetitorArticle.id),
        lambda cutoff: CompetitorArticle.last_seen_time < cutoff,
    ),
}
ORDER = tuple(_WALKS)


def rules(policies: Policies, now: dt.datetime) -> list[PolicyResult]:
    """Each policy with its cutoff (None when off), in the order apply runs them."""
    p = policies

    def days(name: str, n: int, rule: str) -> PolicyResult:
        cutoff = now - dt.timedelta(days=n) if n else None
        return PolicyResult(name, rule, enabled=bool(n), cutoff=cutoff)

    revisions = days("revisions", p.revision_days, " or ".join(
        rule for rule, on in (
            (f"beyond the newest {p.revisions_per_article} per article", p.revisions_per_article),
            (f"created more than {p.revision_days} days ago", p.revision_days),
        ) if on
    ))  # fmt: skip
    revisions.enabled = bool(p.revision_days or p.revisions_per_article)
    usage_cutoff = month_cutoff(now, p.usage_event_months)
    results = [
        days("deleted_articles", p.deleted_article_days,
             f"soft-deleted more than {p.deleted_article_days} days ago, with their revisions"),
        revisions,
        days("pipelines", p.pipeline_days,
             f"finished, created more than {p.pipeline_days} days ago (usage events keep "
             "their cost)"),
        days("usage_texts", p.usage_text_days,
             f"input and output texts of usage events older than {p.usage_text_days} days "
             "(cleared; the events stay)"),
        PolicyResult("usage_events", f"in the months before {usage_cutoff:%Y-%m} (monthly "
                     "rollups stay)" if usage_cutoff else "", enabled=bool(usage_cutoff),
                     cutoff=usage_cutoff),
        days("audit_events", p.audit_event_days, f"older than {p.audit_event_days} days"),
        days("competitor_articles", p.competitor_article_days,
             f"not seen by a crawler for {p.competitor_article_days} days"),
    ]  # fmt: skip
    for result in results:
        result.related = {c.table.name: 0 for c in _WALKS[result.name].related if result.enabled}
    return results


def month_cutoff(now: dt.datetime, months: int) -> dt.datetime | None:
    """The start (UTC) of the month `months` before now's: events before it go. Always a
    closed month, as the current month counts as the first one kept."""
    if not months:
        return None
    utc = now.astimezone(dt.UTC)
    index = utc.year * 12 + utc.month - 1 - months
    return dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.UTC)


def database_now(db: Database) -> dt.datetime:
    with db.engine.connect() as connection:
        now = connection.scalar(select(func.now()))
    assert now is not None  # now() always answers
    return now


# -- plan ------------------------------------------------------------------------------------
def plan(db: Database, policies: Policies, *, now: dt.datetime | None = None) -> Report:
    """Count what apply would delete now; deletes nothing."""
    now = now or database_now(db)
    results = rules(policies, now)
    with db.engine.connect() as connection, connection.begin():
        # One snapshot for all counts, so they add up like a sequential apply.
        connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        for result in results:
            if result.enabled:
                _count(connection, result, policies, results[0].cutoff)
    return Report(uuid.uuid4(), now, applied=False, complete=True, policies=results)


def _count(
    c: Connection, result: PolicyResult, p: Policies, purge_cutoff: dt.datetime | None
) -> None:
    if result.name == "revisions":
        result.rows = c.scalar(_surplus_revisions(p, result.cutoff, purge_cutoff)) or 0
        return
    assert result.cutoff is not None
    walk = _WALKS[result.name]
    if walk.partitioned:
        result.partitions = [p.name for p in partitions.droppable(c, result.name, result.cutoff)]
    doomed = walk.where(result.cutoff)
    result.rows = c.scalar(select(func.count()).where(doomed)) or 0
    for column in walk.related:
        ids = select(walk.key[-1]).where(doomed)
        count = select(func.count()).select_from(column.table).where(column.in_(ids))
        result.related[column.table.name] = c.scalar(count) or 0


def _surplus_revisions(
    p: Policies, cutoff: dt.datetime | None, purge_cutoff: dt.datetime | None
) -> Any:
    """How many revisions the revisions policy removes, left aside those of articles the
    deleted_articles policy purges first."""
    r = ArticleRevision
    rank = func.row_number().over(
        partition_by=r.article_id, order_by=(r.create_time.desc(), r.id.desc())
    )
    ranked = select(r.create_time, rank.label("rank"))
    if purge_cutoff is not None:
        purged = exists().where(Article.id == r.article_id, Article.delete_time < purge_cutoff)
        ranked = ranked.where(~purged)
    sub = ranked.subquery()
    doomed = [
        sub.c.rank > p.revisions_per_article if p.revisions_per_article else false(),
        sub.c.create_time < cutoff if cutoff is not None else false(),
    ]
    return select(func.count()).select_from(sub).where(or_(*doomed))


# -- apply -----------------------------------------------------------------------------------
@dataclass
class _Run:
    connection: Connection
    batch_size: int
    lock_timeout_ms: int
    statement_timeout_ms: int
    batches_left: float  # max_batches, or infinity
    progress: Callable[[PolicyResult], None] | None

    def batch(self, result: PolicyResult, work: Callable[[], tuple[T, Counts]]) -> T:
        """Run `work` as one short transaction; retried on lock timeouts and deadlocks.

        `work` returns a value and the rows it deleted per table; these count once the
        transaction has committed.
        """
        if self.batches_left <= 0:
            raise _OutOfBatches
        for attempt in range(1, MAX_ATTEMPTS + 1):
            started = time.perf_counter()
            try:
                with self.connection.begin():
                    self.connection.execute(_LIMITS, {
                        "lock_ms": str(self.lock_timeout_ms),
                        "statement_ms": str(self.statement_timeout_ms),
                    })  # fmt: skip
                    value, counts = work()
            except sa_exc.DBAPIError as error:
                code = getattr(error.orig, "pgcode", None)
                if code not in RETRYABLE_SQLSTATES or attempt == MAX_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0, 0.05 * 2**attempt))
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000
            for table, n in counts.items():
                if table == _OWN:
                    result.rows += n
                else:
                    result.related[table] = result.related.get(table, 0) + n
            result.batches += 1
            result.longest_batch_ms = max(result.longest_batch_ms, elapsed_ms)
            self.batches_left -= 1
            if self.progress:
                self.progress(result)
            return value
        raise AssertionError("unreachable")


class _OutOfBatches(Exception):
    pass


def apply(
    db: Database,
    policies: Policies,
    *,
    batch_size: int,
    lock_timeout_ms: int,
    max_batches: int | None = None,
    now: dt.datetime | None = None,
    actor: Actor = SYSTEM,
    progress: Callable[[PolicyResult], None] | None = None,
) -> Report:
    """Delete what plan counts, batch by batch; then write one audit event with the counts.

    `max_batches` stops the run early (complete=False), as a crash would; a rerun goes on.
    A policy whose batches keep failing on locks records the error and the run goes on.
    """
    now = now or database_now(db)
    results = rules(policies, now)
    report = Report(uuid.uuid4(), now, applied=True, complete=True, policies=results)
    with db.engine.connect() as connection:
        run = _Run(
            connection, batch_size, lock_timeout_ms, db.statement_timeout_ms,
            float("inf") if max_batches is None else max_batches, progress,
        )  # fmt: skip
        for result in results:
            if not result.enabled:
                continue
            try:
                if result.name == "revisions":
                    _apply_revisions(run, result, policies)
                else:
                    _apply_walk(run, result, _WALKS[result.name])
            except _OutOfBatches:
                report.complete = False
                break
            except sa_exc.DBAPIError as error:
                result.error = f"{type(error.orig).__name__}: {str(error.orig).strip()[:200]}"
                report.complete = False
    _audit(db, actor, report, policies)
    return report


def _apply_walk(run: _Run, result: PolicyResult, walk: _Walk) -> None:
    """Batches along the walk's index. Where rows take related rows with them (an article's
    revisions), a batch picks as many as the previous batch's ratio says will make about
    batch_size rows deleted in all."""
    assert result.cutoff is not None
    cutoff = result.cutoff
    if walk.partitioned:
        _drop_partitions(run, result, cutoff)
    after: tuple[Any, ...] | None = None
    limit = max(1, run.batch_size // 10) if walk.related else run.batch_size
    while True:
        before = result.rows + sum(result.related.values())
        picked = run.batch(
            result, lambda after=after, limit=limit: _delete_batch(run, walk, cutoff, after, limit)
        )
        if len(picked) < limit:
            return
        after = tuple(picked[-1])
        if walk.related:
            deleted = result.rows + sum(result.related.values()) - before
            limit = max(1, min(run.batch_size, run.batch_size * len(picked) // max(deleted, 1)))


def _delete_batch(
    run: _Run, walk: _Walk, cutoff: dt.datetime, after: tuple | None, limit: int
) -> tuple[Sequence[Any], Counts]:
    pick = select(*walk.key).where(walk.where(cutoff))
    if after is not None:
        pick = pick.where(tuple_(*walk.key) > tuple_(*after))
    pick = pick.order_by(*walk.key).limit(limit).with_for_update(skip_locked=True)
    picked = run.connection.execute(pick).all()
    ids = [row[-1] for row in picked]
    if ids and walk.clear:
        pk = walk.key[-1]
        cleared = update(pk.table).where(pk.in_(ids)).values(dict.fromkeys(walk.clear))
        return picked, {_OWN: run.connection.execute(cleared).rowcount}
    return picked, _delete_ids(run.connection, walk.key[-1], ids, walk.related) if ids else {}


def _delete_ids(c: Connection, pk: Any, ids: list[Any], related: Sequence[Any] = ()) -> Counts:
    counts = {col.table.name: c.execute(delete(col.table).where(col.in_(ids))).rowcount
              for col in related}  # fmt: skip
    if pk.table is UsageEvent.__table__:  # their idempotency keys too (bookkeeping)
        keys = c.execute(
            delete(pk.table)
            .where(pk.in_(ids))
            .returning(UsageEvent.user_id, UsageEvent.request_id, UsageEvent.id)
        ).all()
        counts[_OWN] = len(keys)
        _forget_request_ids(c, keys)
        return counts
    counts[_OWN] = c.execute(delete(pk.table).where(pk.in_(ids))).rowcount
    return counts


def _forget_request_ids(c: Connection, keys: Sequence[Any]) -> None:
    """Delete the usage_request_ids of deleted events (user_id, request_id, id): only those
    still pointing at them (a retry may have claimed the request_id again meanwhile)."""
    if keys:
        r = UsageRequestId
        columns = tuple_(r.user_id, r.request_id, r.event_id)
        c.execute(delete(r).where(columns.in_([tuple(k) for k in keys])))


def _drop_partitions(run: _Run, result: PolicyResult, cutoff: dt.datetime) -> None:
    """Whole months before the cutoff: count, DETACH, forget their request ids, DROP. A
    partition left detached by a crash (named like one, attached to nothing) is finished."""
    table = result.name
    with run.connection.begin():
        todo = partitions.droppable(run.connection, table, cutoff)
        todo += partitions.detached(run.connection, table)
    for partition in todo:

        def detach(p: partitions.Partition = partition) -> tuple[int, Counts]:
            rows = run.connection.scalar(text(f"SELECT count(*) FROM {p.name}")) or 0
            partitions.detach(run.connection, table, p)
            return rows, {}

        rows = run.batch(result, detach)
        if table == "usage_events":
            after: tuple[Any, ...] = ()
            while after is not None:
                after = run.batch(result, lambda a=after, p=partition: _forget_batch(run, p, a))
        run.batch(result, lambda p=partition: (partitions.drop_detached(run.connection, p), {}))
        result.rows += rows
        result.partitions.append(partition.name)


def _forget_batch(run: _Run, p: partitions.Partition, after: tuple) -> tuple[Any, Counts]:
    """One batch of a detached usage partition's request ids; the next key, or None."""
    where = "WHERE (event_time, id) > (:t, :i)" if after else ""
    params = {"t": after[0], "i": after[1]} if after else {}
    keys = run.connection.execute(
        text(
            f"SELECT user_id, request_id, id, event_time FROM {p.name} {where} "
            f"ORDER BY event_time, id LIMIT {run.batch_size}"
        ),
        params,
    ).all()
    _forget_request_ids(run.connection, [k[:3] for k in keys])
    return ((keys[-1][3], keys[-1][2]) if len(keys) == run.batch_size else None), {}


def _apply_revisions(run: _Run, result: PolicyResult, p: Policies) -> None:
    """By age (a walk on create_time), then each article's surplus beyond the newest K."""
    if result.cutoff is not None:
        _apply_walk(run, result, _WALKS["revisions"])
    keep = p.revisions_per_article
    if not keep:
        return
    r = ArticleRevision
    over = select(r.article_id).group_by(r.article_id).having(func.count() > keep)
    articles = run.batch(result, lambda: (run.connection.scalars(over).all(), {}))
    for start in range(0, len(articles), ARTICLES_PER_CHUNK):
        chunk = articles[start : start + ARTICLES_PER_CHUNK]
        rank = func.row_number().over(
            partition_by=r.article_id, order_by=(r.create_time.desc(), r.id.desc())
        )
        ranked = select(r.id, rank.label("rank")).where(r.article_id.in_(chunk)).subquery()
        pick = (
            select(r.id)
            .join(ranked, ranked.c.id == r.id)
            .where(ranked.c.rank > keep)
            .limit(run.batch_size)
            .with_for_update(of=r, skip_locked=True)
        )

        def batch(pick: Any = pick) -> tuple[int, Counts]:
            ids = list(run.connection.scalars(pick).all())
            return len(ids), _delete_ids(run.connection, r.id, ids) if ids else {}

        while run.batch(result, batch) == run.batch_size:
            pass


def _audit(db: Database, actor: Actor, report: Report, policies: Policies) -> None:
    caller = Caller(actor, request_id=str(report.run_id))
    removed = report.counts()
    errors = {p.name: p.error for p in report.policies if p.error}
    db.run(
        caller,
        lambda tx: tx.audit(
            "retention.apply", "retention", report.run_id,
            removed=removed, complete=report.complete, errors=errors,
            policies=asdict(policies), now=report.now.isoformat(),
        ),
    )  # fmt: skip

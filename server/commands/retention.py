"""`blogstore retention [plan|apply]`: count, or delete, what the retention policies remove."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from server.commands import add_data_dir_option, database_url

if TYPE_CHECKING:  # imported when a command runs: `blogstore serve` starts without them
    from server.config import Settings
    from storage.lifecycle import retention


def register(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "retention",
        help="show (plan, the default) or apply the data retention policies",
        description="Policies come from the BLOGSTORE_RETENTION_* settings (README: "
        "Operations, Retention). `plan` deletes nothing; `apply` deletes in short batches "
        "and may run beside live traffic; an interrupted apply is simply run again.",
    )
    command.add_argument(
        "action",
        nargs="?",
        default="plan",
        choices=("plan", "apply"),
        help="plan (default): count what would go, per policy; apply: delete it",
    )
    add_data_dir_option(command)
    command.add_argument(
        "--max-batches",
        type=int,
        metavar="N",
        help="apply: stop after N batches (the next run goes on from there)",
    )
    command.set_defaults(command=retention_command)


def policies(settings: Settings) -> retention.Policies:
    from storage.lifecycle import retention

    return retention.Policies(
        deleted_article_days=settings.retention_deleted_article_days,
        revisions_per_article=settings.retention_revisions_per_article,
        revision_days=settings.retention_revision_days,
        pipeline_days=settings.retention_pipeline_days,
        usage_event_months=settings.retention_usage_event_months,
        audit_event_days=settings.retention_audit_event_days,
        competitor_article_days=settings.retention_competitor_article_days,
        usage_text_days=settings.retention_usage_text_days,
    )


def retention_command(args: argparse.Namespace, settings: Settings) -> int:
    from storage.engine import make_engine
    from storage.lifecycle import retention
    from storage.uow import Database

    if args.max_batches is not None and args.max_batches < 1:
        print("retention: --max-batches must be at least 1", file=sys.stderr)
        return 2
    url = database_url(settings, migrate_embedded=True)
    db = Database(
        make_engine(url, pool_size=1, application_name="blogstore-retention"),
        statement_timeout_ms=settings.statement_timeout_ms,
    )
    try:
        if args.action == "plan":
            report = retention.plan(db, policies(settings))
        else:
            report = retention.apply(
                db,
                policies(settings),
                batch_size=settings.retention_batch_size,
                lock_timeout_ms=settings.retention_lock_timeout_ms,
                max_batches=args.max_batches,
                progress=_progress if sys.stderr.isatty() else None,
            )
    finally:
        db.dispose()
    if sys.stderr.isatty() and report.applied:
        print(file=sys.stderr)
    print(describe(report))
    return 1 if any(p.error for p in report.policies) else 0


def _progress(result: retention.PolicyResult) -> None:
    print(
        f"\r{result.name}: {result.rows} rows in {result.batches} batches ",
        end="",
        file=sys.stderr,
        flush=True,
    )


def describe(report: retention.Report) -> str:
    """The report as an aligned table, one row per policy."""
    verb = "deleted" if report.applied else "would delete"
    lines = [
        f"retention {'apply' if report.applied else 'plan'} at {report.now:%Y-%m-%d %H:%M:%S %Z}"
    ]
    rows = [("policy", "rule", "cutoff", verb)]
    for p in report.policies:
        cutoff = f"{p.cutoff:%Y-%m-%d %H:%M}" if p.cutoff else "-"
        count = str(p.rows) + "".join(f" (+{n} {table})" for table, n in p.related.items())
        if report.applied and p.batches:
            batches = f"{p.batches} batch" + ("es" if p.batches > 1 else "")
            count += f" in {batches}, longest {p.longest_batch_ms:.0f} ms"
        if p.partitions:
            count += f"; whole months: {', '.join(p.partitions)}"
        if p.error:
            count += f"; stopped: {p.error}"
        rows.append((p.name, p.rule if p.enabled else "off", cutoff, count if p.enabled else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, [*widths, 0], strict=True)).rstrip()
              for row in rows]  # fmt: skip
    if report.applied and not report.complete:
        lines.append("stopped before the end: run `blogstore retention apply` again to go on")
    elif not report.applied:
        lines.append("nothing was deleted; `blogstore retention apply` deletes these rows")
    return "\n".join(lines)

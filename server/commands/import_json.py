"""`blogstore import-json PATH --user EMAIL_OR_ID`: import the legacy JSON files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from server.commands import add_data_dir_option, database_url

if TYPE_CHECKING:  # imported when the command runs: `blogstore serve` starts without them
    from server.config import Settings
    from storage.lifecycle.legacy_import import ImportReport

BAR_WIDTH = 30


def register(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "import-json",
        help="import the legacy blog-poster JSON files (articles, pipeline history)",
        description="Reads data/articles/*.json article files and pipeline-history JSON, "
        "checks them with the API's rules and imports them for one user, keeping their "
        "original timestamps. Running it again imports nothing new. Exit status 1 when a "
        "file or record was invalid (each is listed with its field).",
    )
    command.add_argument(
        "path", type=Path, help="a JSON file, or a directory searched for *.json (e.g. data/)"
    )
    command.add_argument(
        "--user", required=True, metavar="EMAIL_OR_ID", help="the user who will own the records"
    )
    command.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    add_data_dir_option(command)
    command.set_defaults(command=import_json_command)


def import_json_command(args: argparse.Namespace, settings: Settings) -> int:
    from storage.engine import make_engine
    from storage.errors import NotFound
    from storage.lifecycle.legacy_import import import_legacy
    from storage.uow import Database

    if not args.path.exists():
        print(f"import-json: {args.path} does not exist", file=sys.stderr)
        return 2
    url = database_url(settings, migrate_embedded=True)
    db = Database(
        make_engine(url, pool_size=1, application_name="blogstore-import-json"),
        statement_timeout_ms=settings.statement_timeout_ms,
    )
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    try:
        report = import_legacy(db, args.path, args.user, dry_run=args.dry_run, progress=bar)
    except NotFound:
        print(f"import-json: there is no user {args.user!r}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
        if bar:
            bar.close()
    print(summary(report, args.path))
    return 1 if report.invalid else 0


class ProgressBar:
    """`[#######.......]  42/100 files` on one terminal line, redrawn in place."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        filled = BAR_WIDTH * done // max(total, 1)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {done}/{total} files")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")


def summary(report: ImportReport, path: Path) -> str:
    verb = "would import" if report.dry_run else "imported"
    lines = [
        f"import-json {path}{' (dry run: nothing written)' if report.dry_run else ''}",
        f"files read: {report.files}",
        f"{verb}: {report.imported['article']} articles, {report.imported['pipeline']} pipelines",
        f"skipped as duplicates (already imported): {len(report.duplicates)}",
        f"invalid: {len(report.invalid)}",
    ]
    lines += [f"  {problem}" for problem in report.invalid]
    return "\n".join(lines)

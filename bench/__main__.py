"""`python -m bench load | run | report` (see BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import dataset

CHECKOUT_HELP = (
    "measure (and migrate with) the server of another blogstore checkout, e.g. to compare "
    "branches; it runs with that checkout's .venv and writes nothing there"
)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    load = commands.add_parser("load", help="create a bench database and load a dataset")
    load.add_argument("--articles", type=int, required=True)
    load.add_argument("--users", type=int, help="default: articles / 100 (at least 10)")
    load.add_argument("--database-url", help="default: .../bench_<articles> on 127.0.0.1:5432")
    load.add_argument(
        "--bulk",
        action="store_true",
        help="COPY articles straight into the table (the path for 1M)",
    )
    load.add_argument("--replace", action="store_true", help="drop the database first")
    load.add_argument(
        "--streams", type=int, default=2, help="with --bulk: parallel generate+COPY processes"
    )
    load.add_argument(
        "--time-limit",
        type=float,
        default=0,
        help="with --bulk: stop after this many seconds (newest articles are loaded first)",
    )
    load.add_argument("--seed", type=int, default=7)
    load.add_argument("--server-checkout", type=Path, help=CHECKOUT_HELP)

    run = commands.add_parser("run", help="measure the scenarios and their limits")
    run.add_argument(
        "--quick",
        action="store_true",
        help="2,000 articles, 2+3 s, 8 in flight, a subset: the CI smoke test",
    )
    run.add_argument(
        "--articles",
        type=int,
        default=10_000,
        help="dataset size when the harness makes its own database",
    )
    run.add_argument("--users", type=int)
    run.add_argument("--database-url", help="use this loaded dataset (from `bench load`)")
    run.add_argument("--bulk", action="store_true", help="load the dataset with COPY")
    run.add_argument("--keep-db", action="store_true", help="keep the database it created")
    run.add_argument("--seed", type=int, default=7)
    run.add_argument("--concurrency", type=_ints, help="calls in flight (default 1,8,32)")
    run.add_argument("--warmup", type=float, help="seconds (default 3)")
    run.add_argument("--duration", type=float, help="measured seconds (default 8)")
    run.add_argument(
        "--scenario",
        action="append",
        dest="scenarios",
        help="a scenario name (repeatable; default all)",
    )
    run.add_argument(
        "--no-workers-compare", action="store_true", help="skip GetArticle with --workers 2"
    )
    run.add_argument("--no-db-limit", action="store_true")
    run.add_argument("--phrase", help="the phrase scenario's query, e.g. '\"seo tips\"'")
    run.add_argument(
        "--metrics-compare",
        action="store_true",
        help="only GetArticle, metrics on vs off (tracing off), in rotating rounds; "
        "prints on/off beside the limit 0.95",
    )
    run.add_argument(
        "--login-flood",
        action="store_true",
        help="only GetCurrentUser, quiet and under a 16-client Authenticate flood, in "
        "alternating rounds; prints p95 flood/quiet beside the limit 3",
    )
    run.add_argument(
        "--baseline-checkout",
        type=Path,
        help="with --metrics-compare or --login-flood: also measure this checkout's server "
        "(e.g. main)",
    )
    run.add_argument(
        "--rounds",
        type=int,
        help="with --metrics-compare or --login-flood: rounds (default 4 and 2)",
    )
    run.add_argument(
        "--rls-compare",
        action="store_true",
        help="only GetArticle and ListArticles, row-level security on vs off, as the service "
        "and as a user, in alternating rounds (--rounds, default 2)",
    )
    run.add_argument(
        "--cache-compare",
        action="store_true",
        help="only GetArticle, with a user's key and a service key, against the no-op (and "
        "--baseline-checkout) in rotating rounds (--rounds, default 3): issue 17's target",
    )
    run.add_argument(
        "--usage-compare",
        action="store_true",
        help="only RecordUsage (one user, a fresh request id per call) against the no-op (and "
        "--baseline-checkout) in rotating rounds (--rounds, default 3): issue 17's target",
    )
    run.add_argument(
        "--pgbouncer-compare",
        action="store_true",
        help="only GetArticle: direct, direct without PREPARE and through a PgBouncer of its "
        "own (transaction mode), in rotating rounds (--rounds, default 2)",
    )
    run.add_argument(
        "--import-rss",
        action="store_true",
        help="only a continuous import: 8 threads of 1000-article BatchCreateArticles calls "
        "for 90 s, the server's RSS every 0.2 s (issue 17: peak < 200 MB); refusals with a "
        "retry hint are sent again",
    )
    run.add_argument("--output", type=Path, help="JSON path (default bench/results/...)")
    run.add_argument("--server-checkout", type=Path, help=CHECKOUT_HELP)
    run.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a BLOGSTORE_* setting for the blogstore servers it starts (repeatable), e.g. "
        "BLOGSTORE_ARTICLE_CACHE_BYTES=268435456",
    )
    table = commands.add_parser("report", help="print a results JSON file as a Markdown table")
    table.add_argument("json", type=Path)
    args = parser.parse_args(argv)
    if getattr(args, "server_checkout", None):
        from bench.servers import use_checkout

        use_checkout(args.server_checkout)
    for setting in getattr(args, "server_env", ()):
        from bench.run import SERVER_ENV

        name, sep, value = setting.partition("=")
        if not sep or not name.startswith("BLOGSTORE_"):
            parser.error(f"--server-env {setting!r}: give BLOGSTORE_<NAME>=<value>")
        SERVER_ENV[name] = value
    if args.command == "report":
        import json

        from bench.report import markdown

        print(markdown(json.loads(args.json.read_text())))
        return 0
    if args.command == "load":
        return _load(args)
    return _run(args)


def _load(args: argparse.Namespace) -> int:
    import json

    from bench.servers import start_server

    url = args.database_url or dataset.url_for(f"bench_{args.articles}")
    dataset.create_database(url, replace=args.replace)
    server = None
    if not args.bulk or dataset.competitors_served():
        server = start_server(url)
    try:
        stats = dataset.load(
            url,
            articles=args.articles,
            users=args.users,
            bulk=args.bulk,
            seed=args.seed,
            server=server,
            streams=args.streams,
            time_limit=args.time_limit,
        )
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(stats, indent=1))
    print(f"loaded into {url}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from bench.run import Harness, Options

    opts = Options(
        quick=args.quick,
        articles=2_000 if args.quick else args.articles,
        users=args.users,
        database_url=args.database_url,
        keep_db=args.keep_db,
        bulk=args.bulk,
        seed=args.seed,
        concurrency=args.concurrency or ((8,) if args.quick else (1, 8, 32)),
        warmup=args.warmup or (2.0 if args.quick else 3.0),
        duration=args.duration or (3.0 if args.quick else 8.0),
        scenarios=tuple(args.scenarios or ()),
        workers_compare=not args.no_workers_compare,
        db_limits=not args.no_db_limit,
        phrase=args.phrase,
        output=args.output,
        metrics_compare=args.metrics_compare,
        baseline_checkout=args.baseline_checkout,
        rounds=args.rounds,
        login_flood=args.login_flood,
        rls_compare=args.rls_compare,
        cache_compare=args.cache_compare,
        usage_compare=args.usage_compare,
        pgbouncer_compare=args.pgbouncer_compare,
        import_rss=args.import_rss,
    )
    return Harness(opts).run()


if __name__ == "__main__":
    sys.exit(main())

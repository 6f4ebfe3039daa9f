"""`python -m bench run`: dataset, servers, scenarios with their limits, report.

For each scenario and number of calls in flight it measures blogstore, then the no-op server
answering the same method with the same reply bytes, then (List, Search) the same SQL through
psycopg2, back to back so that the machine is in the same state for all three.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg2
from blogstore.v1 import articles_pb2, articles_pb2_grpc

from bench import (
    cache_compare,
    compare,
    copylimit,
    dataset,
    flood,
    pgbouncer_compare,
    prepare,
    replica_compare,
    report,
    rls_compare,
)
from bench.jobs import Job
from bench.loadgen import Pool, split
from bench.noop import CONTROL
from bench.scenarios import CATALOG, CHANNEL_OPTIONS, CLIENTS, Scenario
from bench.servers import (
    CHECKOUT,
    Managed,
    RssSampler,
    db_backend_cpu,
    machine_busy,
    start_noop,
    start_server,
    tree_cpu,
)
from storage.lifecycle.pgtools import one_row

QUICK = ["GetArticle", "ListArticles first page", "SearchArticles common word", "RecordUsage"]
# Scenarios whose calls take long: a longer window so that enough of them complete.
# (warm-up, measured) at least this long, so that the pipeline of calls is full and enough of
# them complete; the limits keep the normal window. One BatchCreateArticles call (1000
# articles) costs ~5 s of CPU here, so at 8 in flight a call takes ~40 s.
MIN_WINDOW = {
    ("BatchCreateArticles", 1): (5.0, 15.0),
    ("BatchCreateArticles", 8): (45.0, 45.0),
    ("Authenticate", 32): (10.0, 10.0),
}
# Every blogstore server the harness starts: one service key sends all the batches, and at the
# default share (1 per principal) 7 of 8 in flight would be refused at once rather than queue
# for the BLOGSTORE_MAX_CONCURRENT_BATCHES slots (a continuous import, issue 17).
SERVER_ENV = {"BLOGSTORE_MAX_BATCHES_PER_PRINCIPAL": "8"}
# Not measured, and why (printed in the report).
SKIP = {
    ("BatchCreateArticles", 32): "32 batches of 1000 in flight would take ~3 min per call and "
    "several GB of server memory (2.2 GB at 8 in flight); measured at 1 and 8 only",
}


@dataclass
class Options:
    quick: bool = False
    articles: int = 10_000
    users: int | None = None
    database_url: str | None = None
    keep_db: bool = False
    bulk: bool = False
    seed: int = 7
    concurrency: tuple[int, ...] = (1, 8, 32)
    warmup: float = 3.0
    duration: float = 8.0
    scenarios: tuple[str, ...] = ()
    workers_compare: bool = True
    db_limits: bool = True
    phrase: str | None = None  # the phrase scenario's query instead of a picked one
    output: Path | None = None
    metrics_compare: bool = False  # only GetArticle, metrics on vs off (bench/compare.py)
    baseline_checkout: Path | None = None  # a third side for metrics_compare
    rounds: int | None = None  # metrics_compare's rotating rounds
    login_flood: bool = False  # only GetCurrentUser, quiet vs under a login flood (flood.py)
    rls_compare: bool = False  # only GetArticle and ListArticles, RLS on vs off
    cache_compare: bool = False  # only GetArticle (both keys) vs the no-op, rounds
    usage_compare: bool = False  # only RecordUsage vs the no-op, rounds
    replica_url: str | None = None  # only GetArticle and ListArticles, a replica vs none
    pgbouncer_compare: bool = False  # only GetArticle, through PgBouncer vs direct
    import_rss: bool = False  # only a continuous BatchCreateArticles import, RSS sampled


def machine_info() -> dict:
    info = {
        "cores": os.cpu_count(),
        "python": f"Python {platform.python_version()}",
        "loadavg_start": tuple(round(x, 2) for x in os.getloadavg()),
    }
    for key, where in (("commit", Path(__file__).parent), ("server_commit", CHECKOUT["dir"])):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            info[key] = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
                capture_output=True,
                text=True,
                cwd=where,
                check=True,
            ).stdout.strip()
    info["server_checkout"] = str(CHECKOUT["dir"])
    return info


class Harness:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.url = opts.database_url or dataset.url_for(f"bench_run_{secrets.token_hex(4)}")
        self.dbname = dataset.database_name(self.url)
        self.server: Managed | None = None
        self.noop: Managed | None = None
        self.sql_noop: Managed | None = None  # started for the first db_limit="grpc" scenario
        self.pool: Pool | None = None
        self.params: dict[str, Any] = {}
        self.replies: dict[str, bytes] = {}
        self.report: dict[str, Any] = {
            "started": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": machine_info(),
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
            "dataset": {},
            "results": [],
            "notes": [],
            "problems": [],
        }

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> int:
        started = time.monotonic()
        created = self.opts.database_url is None
        try:
            if created:
                dataset.create_database(self.url)
            self.pool = Pool(2)
            self.server = start_server(self.url, extra_env=SERVER_ENV)
            self.noop = start_noop()
            with psycopg2.connect(self.url) as conn, conn.cursor() as cur:
                cur.execute("SELECT version()")
                self.report["machine"]["postgres"] = " ".join(one_row(cur)[0].split()[:2])
            self.report["server_env"] = dict(SERVER_ENV)
            if created:
                self.log(f"loading {self.opts.articles} articles into {self.dbname} ...")
                self.report["dataset"] = dataset.load(
                    self.url,
                    articles=self.opts.articles,
                    users=self.opts.users,
                    bulk=self.opts.bulk,
                    seed=self.opts.seed,
                    server=self.server,
                )
                self.log(f"loaded: {self.report['dataset']['load']}")
                # A fresh server: the load's 1000-article batches would inflate its RSS.
                self.server.stop()
                self.server = start_server(self.url, key=self.server.key, extra_env=SERVER_ENV)
            self.report["dataset"]["competitors"] = (
                self.report["dataset"].get("competitors", "served")
                if dataset.competitors_served()
                else "not served (scenario skipped)"
            )
            self.prepare()
            if self.opts.metrics_compare:
                compare.metrics_compare(self, self.opts.baseline_checkout, self.opts.rounds)
            elif self.opts.login_flood:
                flood.login_flood(self, self.opts.baseline_checkout, self.opts.rounds)
            elif self.opts.rls_compare:
                rls_compare.rls_compare(self, self.opts.rounds)
            elif self.opts.cache_compare or self.opts.usage_compare:
                cache_compare.cache_compare(
                    self, self.plan(), self.opts.baseline_checkout, self.opts.rounds
                )
            elif self.opts.replica_url:
                replica_compare.replica_compare(self, self.opts.replica_url, self.opts.rounds)
            elif self.opts.pgbouncer_compare:
                pgbouncer_compare.pgbouncer_compare(self, self.opts.rounds)
            elif self.opts.import_rss:
                from bench.import_rss import import_rss  # it imports this module

                import_rss(self)
            else:
                self.measure_all()
        finally:
            for managed in (self.server, self.noop, self.sql_noop):
                if managed is not None:
                    managed.stop()
            if self.pool is not None:
                self.pool.close()
            if created and not self.opts.keep_db:
                dataset.drop_database(self.url)
        self.report["total_seconds"] = round(time.monotonic() - started, 1)
        self.report["machine"]["loadavg_end"] = tuple(round(x, 2) for x in os.getloadavg())
        self.summarize()
        path = report.write_json(self.report, self.opts.output)
        report.print_report(self.report)
        print(f"\nJSON: {path}\ntotal {self.report['total_seconds']} s")
        return 1 if self.report["problems"] else 0

    def measure_all(self) -> None:
        for scenario in self.plan():
            for concurrency in self.opts.concurrency:
                if (scenario.name, concurrency) in SKIP:
                    self.report["notes"].append(
                        f"{scenario.name} x{concurrency} skipped: "
                        f"{SKIP[(scenario.name, concurrency)]}"
                    )
                    continue
                self.measure_row(scenario, concurrency)
        if self.opts.workers_compare and not self.opts.quick:
            self.compare_workers()

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def plan(self) -> list[Scenario]:
        names = self.opts.scenarios or (QUICK if self.opts.quick else [s.name for s in CATALOG])
        names = (
            ["GetArticle"] if self.opts.metrics_compare or self.opts.pgbouncer_compare else names
        )
        names = ["Authenticate"] if self.opts.login_flood else names
        two = self.opts.rls_compare or self.opts.replica_url
        names = ["GetArticle", "ListArticles first page"] if two else names
        if self.opts.cache_compare:
            names = list(cache_compare.CACHE)
        if self.opts.usage_compare:
            names = list(cache_compare.USAGE)
        if self.opts.import_rss:
            names = ["BatchCreateArticles"]
        chosen = [s for s in CATALOG if s.name in names]
        jobs = {"claim", "record"}
        if jobs & {s.client for s in chosen} and not dataset.competitors_served():
            self.log("competitor scenarios skipped: CompetitorsService is not served")
            chosen = [s for s in chosen if s.client not in jobs]
        return chosen

    def prepare(self) -> None:
        need = {s.client for s in self.plan()}
        self.params, facts = prepare.params(
            self.url, self.server, need, self.opts.seed, self.opts.phrase
        )
        self.report["dataset"].update(facts)
        self.log(f"prepared: {facts}")

    # -- one row: blogstore, then the limits ----------------------------------------------
    def measure_row(
        self, scenario: Scenario, concurrency: int, *, workers: int = 1, channels: int = 1
    ) -> dict:
        assert self.server and self.noop
        warmup, duration = self.window_for(scenario, concurrency)
        self.log(f"{scenario.name} x{concurrency} (workers {workers})")
        row: dict[str, Any] = {
            "scenario": scenario.name,
            "concurrency": concurrency,
            "workers": workers,
            "apart": scenario.apart,
            "items_per_call": scenario.items_per_call,
            "warmup": warmup,
            "duration": duration,
        }
        if (warmup, duration) != (self.opts.warmup, self.opts.duration):
            row["window"] = f"{warmup:g}+{duration:g} s window"
        row["server"] = self.measure("grpc", self.server, scenario, concurrency, channels)
        self.set_noop_reply(scenario)
        row["noop"] = self.measure("grpc", self.noop, scenario, concurrency, channels)
        if scenario.db_limit == "grpc" and self.opts.db_limits and workers == 1:
            if self.sql_noop is None:
                self.sql_noop = start_noop(database_url=self.url)
            self.set_noop_reply(scenario, self.sql_noop)
            row["db"] = self.measure("grpc", self.sql_noop, scenario, concurrency, channels)
        elif scenario.db_limit is True and self.opts.db_limits:
            if scenario.client == "batch":
                copylimit.create(self.url)  # empty, like the first time: rows of one row only
            try:
                row["db"] = self.measure("db", None, scenario, concurrency, 1)
            finally:
                if scenario.client == "batch":
                    copylimit.drop(self.url)
        report.ratios(row)
        for kind in ("server", "noop", "db"):
            if report.failed(row.get(kind)):
                s = row[kind]
                self.report["problems"].append(
                    f"{scenario.name} x{concurrency} [{kind}]: ok={s['ok']} errors={s['errors']} "
                    f"{s.get('error_samples', '')} {s.get('failures', '')}"
                    + (f"\nserver log:\n{self.server.log_tail(30)}" if kind == "server" else "")
                )
        self.report["results"].append(row)
        print(report.row_line(row), file=sys.stderr, flush=True)
        return row

    def window_for(self, scenario: Scenario, concurrency: int) -> tuple[float, float]:
        low = MIN_WINDOW.get((scenario.name, concurrency), (0.0, 0.0))
        return max(self.opts.warmup, low[0]), max(self.opts.duration, low[1])

    def measure(
        self,
        kind: str,
        managed: Managed | None,
        scenario: Scenario,
        concurrency: int,
        channels: int,
        *,
        key: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict:
        """`key`, `params`: another principal's credential and requests (default the
        service key's and the prepared ones)."""
        assert self.pool and self.server
        warmup, duration = self.opts.warmup, self.opts.duration
        if managed is self.server or kind == "db":  # a COPY of 1000 takes as long as a batch
            warmup, duration = self.window_for(scenario, concurrency)
        target = managed.target if managed else self.url
        jobs = [
            Job(
                kind,
                target,
                scenario.client,
                self.params if params is None else params,
                slots,
                worker=i,
                warmup=warmup,
                duration=duration,
                key=key or self.server.key,
                channels=channels,
            )
            for i, slots in enumerate(split(concurrency))
        ]
        sampler = RssSampler(managed) if managed else None
        if sampler:
            sampler.start()

        def window(begin: float, end: float) -> dict:
            time.sleep(max(0.0, begin - time.monotonic()))
            procs = managed.processes() if managed else []
            cpu0, db0, m0 = tree_cpu(procs), db_backend_cpu(self.dbname), machine_busy()
            time.sleep(max(0.0, end - time.monotonic()))
            cpu1, db1, m1 = tree_cpu(procs), db_backend_cpu(self.dbname), machine_busy()
            out = {
                "db_cpu_s": sum(v - db0.get(pid, 0.0) for pid, v in db1.items()),
                "machine_s": m1 - m0,
            }
            if managed:
                out["server_cpu_s"] = cpu1 - cpu0
            return out

        results, measured = self.pool.run(jobs, window)
        summary = report.summarize(results, duration)
        if sampler:
            measured["rss_peak_mb"], measured["rss_peak_process_mb"] = sampler.stop()
        if measured:
            report.add_window(summary, measured, duration)
        return summary

    # -- the no-op server's reply ----------------------------------------------------------
    def set_noop_reply(self, scenario: Scenario, noop: Managed | None = None) -> None:
        noop = noop or self.noop
        assert noop
        client = CLIENTS[scenario.client](self.params, 0, 1)
        if scenario.name not in self.replies:
            self.replies[scenario.name] = self.capture(scenario)
        payload = client.method.encode() + b"\0" + self.replies[scenario.name]
        pids: set[bytes] = set()
        options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
        for _ in range(200):
            with grpc.insecure_channel(noop.target, options=options) as channel:
                pids.add(channel.unary_unary(CONTROL)(payload, timeout=30))
            if len(pids) >= noop.workers:
                return
        raise RuntimeError("could not reach every no-op worker")

    def capture(self, scenario: Scenario) -> bytes:
        """A real reply to the scenario's request (the median size of 5 for reads)."""
        assert self.server
        client = CLIENTS[scenario.client](self.params, 0, 1)
        metadata = (("authorization", f"Bearer {self.server.key}"),) if client.metadata else None
        with grpc.insecure_channel(self.server.target, options=CHANNEL_OPTIONS) as channel:
            raw = channel.unary_unary(
                client.method, request_serializer=client.request_cls.SerializeToString
            )
            state = None
            if scenario.client == "update":
                stub = articles_pb2_grpc.ArticlesServiceStub(channel)
                article = stub.GetArticle(
                    articles_pb2.GetArticleRequest(id=self.params["update_ids"][-1]),
                    metadata=metadata,
                ).article
                state = {"id": article.id, "etag": article.etag, "title": article.title, "n": 0}
            reads = scenario.client in ("get", "list_first", "list_deep") or (
                scenario.client.startswith("search")
            )
            replies = [
                raw(client.request(state), metadata=metadata, timeout=300)
                for _ in range(5 if reads else 1)
            ]
        return sorted(replies, key=len)[len(replies) // 2]

    # -- workers 2 vs 1 --------------------------------------------------------------------
    def compare_workers(self) -> None:
        """GetArticle again with `--workers 2` (and a 2-process no-op). Each load process opens
        4 connections so that SO_REUSEPORT spreads them over both workers."""
        assert self.server and self.noop
        self.server.stop()
        self.noop.stop()
        self.server = start_server(self.url, workers=2, key=self.server.key, extra_env=SERVER_ENV)
        self.noop = start_noop(workers=2)
        self.replies.pop("GetArticle", None)
        scenario = next(s for s in CATALOG if s.client == "get")
        for concurrency in self.opts.concurrency:
            self.measure_row(scenario, concurrency, workers=2, channels=4)

    def summarize(self) -> None:
        lines = []
        rows = {(r["scenario"], r["concurrency"], r["workers"]): r for r in self.report["results"]}
        for (name, c, w), row in rows.items():
            if w == 2 and (name, c, 1) in rows:
                one, two = rows[(name, c, 1)]["server"], row["server"]
                if one["ok"]:
                    ratio = two["calls_per_s"] / one["calls_per_s"]
                    row["workers2_vs_1"] = ratio
                    lines.append(
                        f"{name} x{c}: --workers 2 / --workers 1 = {ratio:.2f} "
                        f"({two['calls_per_s']:.0f} vs {one['calls_per_s']:.0f} calls/s)"
                    )
        peaks = [r["server"].get("rss_peak_process_mb", 0) for r in self.report["results"]]
        if peaks:
            lines.append(
                f"server RSS: peak {max(peaks):.0f} MB per process, "
                f"{max(r['server'].get('rss_peak_mb', 0) for r in self.report['results']):.0f}"
                " MB for the whole tree"
            )
        self.report["summary"] = lines

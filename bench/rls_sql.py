"""`python -m bench.rls_sql URL [CALLS]`: PostgreSQL CPU per GetArticle and ListArticles
statement with row-level security on and off, without gRPC (BENCHMARKS.md, issue 14).

One connection runs each statement as Database.query does (settings and EXECUTE in one
round trip), CALLS times per side in 6 alternating rounds, and reads its backend's CPU time
from /proc (the shared machine's scheduling noise does not enter it; 10 ms ticks, so use a
few thousand calls). "on" switches to blogstore_app (user) or blogstore_app_all (service);
"off" to none, the connecting owner, whom RLS leaves alone.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
from typing import Any

import psycopg2

from storage import rls
from storage.lifecycle.pgtools import one_row
from storage.queries import _GET_ARTICLE, _prepare
from storage.repositories.article_reads import ArticleFilters, list_statement, list_values
from storage.uow import Prepared


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:  # a /proc file
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(url: str, calls: int = 6000) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = one_row(cur)[0]
    cur.execute("SELECT user_id FROM articles GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
    owner = one_row(cur)[0]
    cur.execute("SELECT id FROM articles WHERE user_id = %s LIMIT 1", (owner,))
    article = one_row(cur)[0]
    filters = ArticleFilters()

    def listing(name: str, scope: Any) -> Prepared:
        statement = list_statement(filters, scope, order_by="create_time desc", after=None,
                                   full=False)  # fmt: skip
        return dataclasses.replace(_prepare(name, statement), custom_plans=True)

    cases = [
        ("GetArticle", "user", _GET_ARTICLE, {"id": article, "owner": owner}),
        ("ListArticles", "user", listing("rls_list_user", owner),
         list_values(filters, owner, None, 50)),
        ("GetArticle", "service", _GET_ARTICLE, {"id": article, "owner": None}),
        ("ListArticles", "service", listing("rls_list_all", None),
         list_values(filters, None, None, 50)),
    ]  # fmt: skip
    print("| statement | principal | PG CPU us/call, RLS on | RLS off | on - off |")
    print("|---|---|--:|--:|--:|")
    prepared: set[str] = set()
    for name, principal, statement, params in cases:
        values = {**statement.constants, **params}
        base = {f"p{i}": values[p] for i, p in enumerate(statement.params)}
        base.update(timeout_ms="30000", user_id=str(owner) if principal == "user" else "")
        base["scope"] = rls.USER if principal == "user" else rls.ALL
        on_role = rls.APP_ROLE if principal == "user" else rls.ALL_ROLE
        per_side: dict[str, list[float]] = {"on": [], "off": []}
        for r in range(6):
            for side in ("on", "off") if r % 2 == 0 else ("off", "on"):
                args = {**base, "role": on_role if side == "on" else rls.NO_ROLE}
                first = statement.name not in prepared
                prepared.add(statement.name)
                cur.execute(statement.sql(prepare=first), args)
                cur.fetchall()
                start = _cpu(pid)
                for _ in range(calls // 6):
                    cur.execute(statement.sql(prepare=False), args)
                    cur.fetchall()
                per_side[side].append((_cpu(pid) - start) / (calls // 6) * 1e6)
        on, off = statistics.median(per_side["on"]), statistics.median(per_side["off"])
        print(f"| {name} | {principal} | {on:.0f} | {off:.0f} | {on - off:+.0f} |")
    conn.close()


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))

"""`python -m bench.rls_indexes URL [CALLS]`: a user's Search by a rare word and tag filter
with row-level security on and off, and their GIN indexes (BENCHMARKS.md, issue 14).

Under RLS their operators keep the GIN indexes only when marked LEAKPROOF (storage/rls.py);
the marks this database has are printed, so run it once before and once after
`ALTER FUNCTION ... [NOT] LEAKPROOF` to compare. The user is the one owning the most
articles; the word is the first (alphabetically) in exactly 2 of them, the tag the user's
rarest. Each statement runs CALLS times per side, with its values inlined by the client as
the service's custom plans see them; on: as blogstore_app for the user, off: the owner.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from typing import Any

import psycopg2
from sqlalchemy.dialects import postgresql

from storage import rls
from storage.lifecycle.pgtools import one_row
from storage.repositories.article_reads import (
    ArticleFilters,
    list_statement,
    list_values,
    search_rank_statement,
    search_values,
)

_USER = (
    "SELECT set_config('role', %s, true), set_config('blogstore.user_id', %s, true), "
    "set_config('blogstore.scope', %s, true)"
)


def _run(cur: Any, sql: str, values: dict[str, Any], calls: int) -> tuple[float, str]:
    """Median ms of `calls` runs, and the indexes the plan uses."""
    cur.execute(f"EXPLAIN (COSTS OFF) {sql}", values)
    indexes = re.findall(r"(?:using|Index Scan on) (\w+)", "\n".join(r[0] for r in cur))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        cur.execute(sql, values)
        cur.fetchall()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), ", ".join(sorted(set(indexes)))


def main(url: str, calls: int = 200) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT user_id FROM articles GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
    owner = one_row(cur)[0]
    cur.execute(
        "SELECT word FROM ts_stat(format('SELECT search_vector FROM articles "
        "WHERE user_id = %%L', %s::text)) WHERE ndoc = 2 AND word ~ '^[a-z]{5,}$' "
        "ORDER BY word LIMIT 1",
        (str(owner),),
    )
    word = one_row(cur)[0]
    cur.execute(
        "SELECT t FROM articles, unnest(tags) t WHERE user_id = %s GROUP BY t "
        "ORDER BY count(*), t LIMIT 1",
        (owner,),
    )
    tag = one_row(cur)[0]
    cur.execute(
        "SELECT oid::regprocedure, proleakproof FROM pg_proc WHERE oid = ANY(%s::regprocedure[])",
        (list(rls.LEAKPROOF_FUNCTIONS),),
    )
    print("leakproof:", ", ".join(f"{f} {marked}" for f, marked in cur.fetchall()))
    print(f"user {owner}, word {word!r}, tag {tag!r}, {calls} calls per side\n")
    none, tagged = ArticleFilters(), ArticleFilters(tag=tag)
    cases = [
        (f"Search {word!r}", search_rank_statement(none, owner, after=False, phrase_since=False),
         search_values(word, none, owner, None, 20, None)),
        (f"ListArticles tag {tag!r}",
         list_statement(tagged, owner, order_by="create_time desc", after=None, full=False),
         list_values(tagged, owner, None, 50)),
    ]  # fmt: skip
    print("| statement | RLS on ms | indexes | RLS off ms | indexes |")
    print("|---|--:|---|--:|---|")
    for name, statement, params in cases:
        compiled = statement.compile(dialect=postgresql.dialect())
        values = {**compiled.params, **params}
        row = []
        for role in (rls.APP_ROLE, rls.NO_ROLE):
            cur.execute("BEGIN")
            cur.execute(_USER, (role, str(owner), rls.USER))
            median, indexes = _run(cur, str(compiled), values, calls)
            cur.execute("COMMIT")
            row += [f"{median:.2f}", indexes]
        print(f"| {name} | {' | '.join(row)} |")
    conn.close()


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))

"""The schema stays distributable by user_id: the live schema against deploy/citus/README.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import text

PLAN = Path(__file__).resolve().parents[1] / "deploy" / "citus" / "README.md"
KINDS = {
    "reference",
    "local",
    "distributed",
    "distributed, gains user_id",
    "distributed, nullable user_id",
    "distributed, with pgvector",  # made only where the server has pgvector (0018)
}


def plan_tables(schema: dict) -> dict[str, str]:
    """Table -> kind, from the plan's "| Table | Kind | Notes |" table, less the pgvector
    tables where the live schema has none."""
    rows = re.findall(r"^\| (\w+) \| ([a-z_, ]+) \|", PLAN.read_text(), flags=re.MULTILINE)
    plan = {table: kind.strip() for table, kind in rows if table != "Table"}
    assert plan and set(plan.values()) <= KINDS, plan
    return {
        table: kind
        for table, kind in plan.items()
        if table in schema["tables"] or not kind.endswith("with pgvector")
    }


def changing_foreign_keys(plan: dict[str, str]) -> set[tuple[str, str, str]]:
    """(table, column, referenced table) from the plan's list of keys that change."""
    keys = re.findall(r"^   - `(\w+) \((\w+)\) -> (\w+)`", PLAN.read_text(), re.MULTILINE)
    return {key for key in keys if key[0] in plan}


@pytest.fixture(scope="module")
def schema(owner_engine) -> dict:
    """Tables (partitions left out: they follow their parent), user_id columns, unique keys
    (constraints and indexes, with the partition key's columns) and foreign keys."""
    with owner_engine.connect() as connection:
        tables = set(connection.scalars(text(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relkind IN ('r', 'p') AND NOT relispartition"
        )))  # fmt: skip
        user_id = dict(connection.execute(text(
            "SELECT table_name, is_nullable = 'YES' FROM information_schema.columns"
            " WHERE table_schema = 'public' AND column_name = 'user_id'"
        )).all())  # fmt: skip
        unique = connection.execute(text(
            "SELECT t.relname, i.relname, ix.indisprimary,"
            "       array(SELECT a.attname FROM unnest(ix.indkey) k"
            "             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k),"
            "       array(SELECT a.attname FROM pg_partitioned_table p"
            "             CROSS JOIN LATERAL unnest(p.partattrs) k"
            "             JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = k"
            "             WHERE p.partrelid = t.oid)"
            " FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid"
            " JOIN pg_class i ON i.oid = ix.indexrelid"
            " WHERE t.relnamespace = 'public'::regnamespace AND ix.indisunique"
            " AND NOT t.relispartition"
        )).all()  # fmt: skip
        foreign = connection.execute(text(
            "SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text"
            " FROM pg_constraint c JOIN pg_attribute a"
            "   ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
            " JOIN pg_class t ON t.oid = c.conrelid"
            " WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace"
            " AND NOT t.relispartition"
        )).all()  # fmt: skip
    return {"tables": tables, "user_id": user_id, "unique": unique, "foreign": foreign}


def distributed(plan: dict[str, str]) -> set[str]:
    return {table for table, kind in plan.items() if kind.startswith("distributed")}


def test_every_table_has_a_place_in_the_plan(schema):
    plan = plan_tables(schema)
    assert schema["tables"] - plan.keys() == set(), "tables missing from deploy/citus/README.md"
    assert plan.keys() - schema["tables"] == set(), "the plan names tables that do not exist"


def test_distributed_tables_carry_user_id_as_planned(schema):
    plan = plan_tables(schema)
    for table in distributed(plan):
        kind = plan[table]
        if kind == "distributed, gains user_id":
            assert table not in schema["user_id"], f"{table} has user_id now: update the plan"
            continue
        assert table in schema["user_id"], f"{table} is distributed by user_id but lacks it"
        nullable = kind == "distributed, nullable user_id"
        assert schema["user_id"][table] == nullable, f"{table}.user_id nullability vs plan"


def test_unique_keys_of_distributed_tables_include_user_id(schema):
    """Only a one-column primary key (plus the partition key) may lack it: the conversion adds
    it."""
    plan = plan_tables(schema)
    wrong = []
    for table, index, primary, columns, partition_key in schema["unique"]:
        if table not in distributed(plan) or "user_id" in columns:
            continue
        if plan[table] == "distributed, gains user_id":
            continue  # its parent's key column stands in until the conversion adds user_id
        if primary and len(set(columns) - set(partition_key)) == 1:
            continue
        wrong.append(f"{table}: {index} {columns}")
    assert wrong == [], "unique keys Citus could not enforce per shard"


def test_foreign_keys_between_distributed_tables_are_planned(schema):
    plan = plan_tables(schema)
    between = {
        (table, column, referenced)
        for table, column, referenced in schema["foreign"]
        if table in distributed(plan) and referenced in distributed(plan) and column != "user_id"
    }
    assert between == changing_foreign_keys(plan)

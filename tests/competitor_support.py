"""Helpers shared by the CompetitorsService test modules."""

from __future__ import annotations

import datetime as dt
from typing import Any

from blogstore.v1 import competitors_pb2, competitors_pb2_grpc
from google.protobuf import timestamp_pb2
from sqlalchemy import text

from storage.engine import make_engine
from tests.support import unique


def stub(channel) -> competitors_pb2_grpc.CompetitorsServiceStub:
    return competitors_pb2_grpc.CompetitorsServiceStub(channel)


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def domain() -> str:
    return f"{unique('site')}.example.com"


def create(competitors, *, request_id: str = "", **fields: Any) -> competitors_pb2.Competitor:
    fields.setdefault("domain", domain())
    request = competitors_pb2.CreateCompetitorRequest(
        competitor=competitors_pb2.Competitor(**fields), request_id=request_id
    )
    return competitors.CreateCompetitor(request).competitor


def sql(database_url: str, statement: str, **params: Any) -> list[Any]:
    """Run one statement on the test database (outside the server) and return its rows."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()

"""usage call log: a usage event is also the record of the LLM or API call that cost it

- usage_events gains duration_ms, status (ok, error, timeout, rate_limited), error_message,
  prompt_name, prompt_version, parameters (JSONB) and, when the server logs them, input_text
  and output_text. Every new column is nullable or has a constant default: no table rewrite.
  Their CHECKs are added NOT VALID, then validated outside the migration's transaction
  (SHARE UPDATE EXCLUSIVE: writes go on while the ledger is scanned).
- CHECK failed_call_no_articles: only an ok event may carry articles_generated, so a failed
  call never counts against the monthly article limit (its cost still counts).
- blogstore_record_usage() gets a second version with the new arguments (RecordUsage stays
  one round trip). Its one other change: an event adding no article is never refused by the
  article limit (a month already past a lowered limit still records failed calls). The
  20-argument version of migration 0010 stays, so code at 0012 keeps working (expand only).
- Two partial indexes, small and written only by the rows they hold (built CONCURRENTLY):
  ix_usage_events_user_id_status_failed (user_id, status, event_time, id) WHERE
  status <> 'ok', for ListUsageEvents' status filter. At 1M events (a user with 200k, 1-3%
  failed) a user's page of errors took 5 ms through the (user_id, event_time) index, and
  0.6 s for a status the user never had (every event of the user read); with it 0.1-0.2 ms
  either way, for 2 MB of index beside that index's 95 MB. The model, operation and prompt
  filters use the (user_id, event_time) index: quick for values the user has, a walk of the
  user's events for values it has not (a time range bounds it); they get no index, as each
  would cost every RecordUsage. ix_usage_events_event_time_id_with_text serves the
  usage_texts retention walk (empty while texts are not logged).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand only: code at 0012 calls the 20-argument function, which stays, and reads no new column.
compatible_since: str = "0012"

COLUMNS = (
    sa.Column("duration_ms", sa.BigInteger(), nullable=True),
    sa.Column("status", sa.String(length=20), server_default="ok", nullable=False),
    sa.Column("error_message", sa.String(length=2000), server_default="", nullable=False),
    sa.Column("prompt_name", sa.String(length=100), server_default="", nullable=False),
    sa.Column("prompt_version", sa.String(length=100), server_default="", nullable=False),
    sa.Column("parameters", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column("input_text", sa.Text(), nullable=True),
    sa.Column("output_text", sa.Text(), nullable=True),
)
CHECKS = {
    "ck_usage_events_duration_ms_range": "duration_ms BETWEEN 0 AND 86400000",
    "ck_usage_events_status_valid": "status IN ('ok', 'error', 'timeout', 'rate_limited')",
    "ck_usage_events_failed_call_no_articles": "status = 'ok' OR articles_generated = 0",
}
# (name, columns, partial-index WHERE)
INDEXES = (
    ("ix_usage_events_user_id_status_failed", ["user_id", "status", "event_time", "id"],
     "status <> 'ok'"),
    ("ix_usage_events_event_time_id_with_text", ["event_time", "id"],
     "input_text IS NOT NULL OR output_text IS NOT NULL"),
)  # fmt: skip

RECORD_USAGE = """
CREATE FUNCTION blogstore_record_usage(
    p_user_id uuid, p_request_id uuid, p_pipeline_id uuid, p_article_id uuid,
    p_service text, p_model text, p_operation text,
    p_input_tokens bigint, p_output_tokens bigint, p_cost_micros bigint,
    p_articles_generated bigint, p_api_calls bigint,
    p_event_time timestamptz, p_month date,
    p_default_cost_limit bigint, p_default_article_limit bigint,
    p_actor_kind text, p_actor_id uuid, p_actor_name text, p_audit_request_id text,
    p_duration_ms bigint, p_status text, p_error_message text, p_prompt_name text,
    p_prompt_version text, p_parameters jsonb, p_input_text text, p_output_text text
) RETURNS TABLE (
    id uuid, user_id uuid, pipeline_id uuid, article_id uuid, service text, model text,
    operation text, input_tokens bigint, output_tokens bigint, cost_micros bigint,
    articles_generated bigint, api_calls bigint, request_id uuid, event_time timestamptz,
    create_time timestamptz, month date,
    duration_ms bigint, status text, error_message text, prompt_name text,
    prompt_version text, parameters jsonb, input_text text, output_text text,
    month_cost_micros bigint, month_articles_generated bigint, month_input_tokens bigint,
    month_output_tokens bigint, month_api_calls bigint, month_event_count bigint,
    cost_limit_micros bigint, article_limit bigint, created boolean
)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    ev usage_events;
    m usage_monthly;
    v_cost_limit bigint;
    v_article_limit bigint;
    v_subject text := format('user:%s/month:%s', p_user_id, to_char(p_month, 'YYYY-MM'));
    v_violations jsonb := '{}';
BEGIN
    IF p_status <> 'ok' AND p_articles_generated <> 0 THEN
        RAISE EXCEPTION 'articles from a failed call' USING ERRCODE = 'BS400',
            DETAIL = '{"articles_generated": "must be 0 when status is not OK"}';
    END IF;

    SELECT coalesce(l.cost_limit_micros, p_default_cost_limit),
           coalesce(l.article_limit, p_default_article_limit)
      INTO v_cost_limit, v_article_limit
      FROM (SELECT 1) AS one LEFT JOIN usage_limits AS l ON l.user_id = p_user_id;

    -- A concurrent call with the same request_id waits here for the first to finish.
    INSERT INTO usage_events AS e (
        user_id, request_id, pipeline_id, article_id, service, model, operation,
        input_tokens, output_tokens, cost_micros, articles_generated, api_calls,
        event_time, month, duration_ms, status, error_message, prompt_name, prompt_version,
        parameters, input_text, output_text)
    VALUES (
        p_user_id, p_request_id, p_pipeline_id, p_article_id, p_service, p_model, p_operation,
        p_input_tokens, p_output_tokens, p_cost_micros, p_articles_generated, p_api_calls,
        p_event_time, p_month, p_duration_ms, p_status, p_error_message, p_prompt_name,
        p_prompt_version, p_parameters, p_input_text, p_output_text)
    ON CONFLICT (user_id, request_id) DO NOTHING
    RETURNING e.* INTO ev;

    IF NOT FOUND THEN  -- a retry: return the first event and write nothing
        SELECT e.* INTO ev FROM usage_events AS e
         WHERE e.user_id = p_user_id AND e.request_id = p_request_id;
        IF (ev.cost_micros, ev.articles_generated, ev.input_tokens, ev.output_tokens,
            ev.api_calls, ev.service, ev.status) IS DISTINCT FROM
           (p_cost_micros, p_articles_generated, p_input_tokens, p_output_tokens,
            p_api_calls, p_service, p_status)
           OR ev.pipeline_id IS DISTINCT FROM p_pipeline_id THEN
            RAISE EXCEPTION 'request_id reused' USING ERRCODE = 'BS400',
                DETAIL = '{"request_id": "was already used for a different event"}';
        END IF;
        SELECT um.* INTO m FROM usage_monthly AS um
         WHERE um.user_id = ev.user_id AND um.month = ev.month;
        RETURN QUERY SELECT ev.id, ev.user_id, ev.pipeline_id, ev.article_id,
            ev.service::text, ev.model::text, ev.operation::text, ev.input_tokens,
            ev.output_tokens, ev.cost_micros, ev.articles_generated, ev.api_calls,
            ev.request_id, ev.event_time, ev.create_time, ev.month,
            ev.duration_ms, ev.status::text, ev.error_message::text, ev.prompt_name::text,
            ev.prompt_version::text, ev.parameters, ev.input_text, ev.output_text,
            coalesce(m.cost_micros, 0), coalesce(m.articles_generated, 0),
            coalesce(m.input_tokens, 0), coalesce(m.output_tokens, 0),
            coalesce(m.api_calls, 0), coalesce(m.event_count, 0),
            v_cost_limit, v_article_limit, false;
        RETURN;
    END IF;

    IF p_article_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM articles AS a WHERE a.id = p_article_id AND a.user_id = p_user_id
    ) THEN
        RAISE EXCEPTION 'article' USING ERRCODE = 'BS404';
    END IF;

    -- The limit check is the upsert's WHERE, under the month row's lock: no race. An event
    -- adding no article (every failed call) is never held back by the article limit.
    INSERT INTO usage_monthly AS um (
        user_id, month, cost_micros, articles_generated, input_tokens, output_tokens,
        api_calls, event_count)
    SELECT p_user_id, p_month, p_cost_micros, p_articles_generated, p_input_tokens,
           p_output_tokens, p_api_calls, 1
     WHERE p_cost_micros <= v_cost_limit AND p_articles_generated <= v_article_limit
    ON CONFLICT (user_id, month) DO UPDATE SET
        cost_micros = um.cost_micros + excluded.cost_micros,
        articles_generated = um.articles_generated + excluded.articles_generated,
        input_tokens = um.input_tokens + excluded.input_tokens,
        output_tokens = um.output_tokens + excluded.output_tokens,
        api_calls = um.api_calls + excluded.api_calls,
        event_count = um.event_count + 1,
        update_time = now()
    WHERE um.cost_micros + excluded.cost_micros <= v_cost_limit
      AND (excluded.articles_generated = 0
           OR um.articles_generated + excluded.articles_generated <= v_article_limit)
    RETURNING um.* INTO m;

    IF NOT FOUND THEN
        SELECT um.* INTO m FROM usage_monthly AS um
         WHERE um.user_id = p_user_id AND um.month = p_month;
        IF coalesce(m.cost_micros, 0) + p_cost_micros > v_cost_limit THEN
            v_violations := v_violations || jsonb_build_object(
                v_subject || '/cost_micros',
                format('%s + %s exceeds the limit of %s micros',
                       coalesce(m.cost_micros, 0), p_cost_micros, v_cost_limit));
        END IF;
        IF p_articles_generated <> 0
           AND coalesce(m.articles_generated, 0) + p_articles_generated > v_article_limit THEN
            v_violations := v_violations || jsonb_build_object(
                v_subject || '/articles',
                format('%s + %s exceeds the limit of %s articles',
                       coalesce(m.articles_generated, 0), p_articles_generated,
                       v_article_limit));
        END IF;
        RAISE EXCEPTION 'the monthly usage limit would be exceeded'
            USING ERRCODE = 'BS429', DETAIL = v_violations::text;
    END IF;

    IF p_pipeline_id IS NOT NULL THEN  -- totals, and a version bump so watchers see it
        UPDATE pipelines AS p SET
            total_cost_micros = p.total_cost_micros + p_cost_micros,
            llm_tokens_used = p.llm_tokens_used + p_input_tokens + p_output_tokens,
            api_calls_made = p.api_calls_made + p_api_calls,
            version = p.version + 1
         WHERE p.id = p_pipeline_id AND p.user_id = p_user_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'pipeline' USING ERRCODE = 'BS404';
        END IF;
    END IF;

    INSERT INTO audit_events (
        actor_kind, actor_id, actor_name, action, resource_type, resource_id, request_id,
        details, user_id)
    VALUES (p_actor_kind, p_actor_id, p_actor_name, 'usage.record', 'usage_event',
            ev.id::text, p_audit_request_id,
            jsonb_build_object('cost_micros', p_cost_micros, 'status', p_status), p_user_id);

    RETURN QUERY SELECT ev.id, ev.user_id, ev.pipeline_id, ev.article_id, ev.service::text,
        ev.model::text, ev.operation::text, ev.input_tokens, ev.output_tokens,
        ev.cost_micros, ev.articles_generated, ev.api_calls, ev.request_id, ev.event_time,
        ev.create_time, ev.month, ev.duration_ms, ev.status::text, ev.error_message::text,
        ev.prompt_name::text, ev.prompt_version::text, ev.parameters, ev.input_text,
        ev.output_text, m.cost_micros, m.articles_generated, m.input_tokens,
        m.output_tokens, m.api_calls, m.event_count, v_cost_limit, v_article_limit, true;
END
$$
"""

SIGNATURE = (
    "blogstore_record_usage(uuid, uuid, uuid, uuid, text, text, text, bigint, bigint, bigint,"
    " bigint, bigint, timestamptz, date, bigint, bigint, text, uuid, text, text,"
    " bigint, text, text, text, text, jsonb, text, text)"
)


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("usage_events", column)
    for name, condition in CHECKS.items():
        op.execute(f"ALTER TABLE usage_events ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")
    op.execute(RECORD_USAGE)
    # The function runs with its caller's rights: the app roles already hold EXECUTE through
    # PUBLIC (as for the 0010 version), and usage_events' grants cover the new columns.
    with op.get_context().autocommit_block():
        for name in CHECKS:
            op.execute(f"ALTER TABLE usage_events VALIDATE CONSTRAINT {name}")
        for name, columns, where in INDEXES:
            op.create_index(
                name,
                "usage_events",
                columns,
                postgresql_concurrently=True,
                postgresql_where=sa.text(where),
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, _columns, _where in reversed(INDEXES):
            op.drop_index(name, "usage_events", postgresql_concurrently=True)
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    for name in reversed(CHECKS):
        op.drop_constraint(op.f(name), "usage_events", type_="check")
    for column in reversed(COLUMNS):
        op.drop_column("usage_events", column.name)

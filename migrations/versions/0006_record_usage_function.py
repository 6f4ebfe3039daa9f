"""record usage in one round trip: blogstore_record_usage()

RecordUsage is the money path and the hottest write. Doing it in one function call keeps
its transaction to one round trip (and its row lock on the month as short as possible)
while keeping every rule: idempotent by request_id, the month's limit checked by a
conditional upsert, pipeline totals and the audit row in the same transaction.
Errors use blogstore's own SQLSTATEs, translated in storage/errors.py:
BS400 invalid argument (detail: JSON field -> reason), BS404 not found (message: resource),
BS429 quota exceeded (detail: JSON subject -> description).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECORD_USAGE = """
CREATE FUNCTION blogstore_record_usage(
    p_user_id uuid, p_request_id uuid, p_pipeline_id uuid, p_article_id uuid,
    p_service text, p_model text, p_operation text,
    p_input_tokens bigint, p_output_tokens bigint, p_cost_micros bigint,
    p_articles_generated bigint, p_api_calls bigint,
    p_event_time timestamptz, p_month date,
    p_default_cost_limit bigint, p_default_article_limit bigint,
    p_actor_kind text, p_actor_id uuid, p_actor_name text, p_audit_request_id text
) RETURNS TABLE (
    id uuid, user_id uuid, pipeline_id uuid, article_id uuid, service text, model text,
    operation text, input_tokens bigint, output_tokens bigint, cost_micros bigint,
    articles_generated bigint, api_calls bigint, request_id uuid, event_time timestamptz,
    create_time timestamptz, month date,
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
    SELECT coalesce(l.cost_limit_micros, p_default_cost_limit),
           coalesce(l.article_limit, p_default_article_limit)
      INTO v_cost_limit, v_article_limit
      FROM (SELECT 1) AS one LEFT JOIN usage_limits AS l ON l.user_id = p_user_id;

    -- A concurrent call with the same request_id waits here for the first to finish.
    INSERT INTO usage_events AS e (
        user_id, request_id, pipeline_id, article_id, service, model, operation,
        input_tokens, output_tokens, cost_micros, articles_generated, api_calls,
        event_time, month)
    VALUES (
        p_user_id, p_request_id, p_pipeline_id, p_article_id, p_service, p_model, p_operation,
        p_input_tokens, p_output_tokens, p_cost_micros, p_articles_generated, p_api_calls,
        p_event_time, p_month)
    ON CONFLICT (user_id, request_id) DO NOTHING
    RETURNING e.* INTO ev;

    IF NOT FOUND THEN  -- a retry: return the first event and write nothing
        SELECT e.* INTO ev FROM usage_events AS e
         WHERE e.user_id = p_user_id AND e.request_id = p_request_id;
        IF (ev.cost_micros, ev.articles_generated, ev.input_tokens, ev.output_tokens,
            ev.api_calls, ev.service) IS DISTINCT FROM
           (p_cost_micros, p_articles_generated, p_input_tokens, p_output_tokens,
            p_api_calls, p_service)
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

    -- The limit check is the upsert's WHERE, under the month row's lock: no race.
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
      AND um.articles_generated + excluded.articles_generated <= v_article_limit
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
        IF coalesce(m.articles_generated, 0) + p_articles_generated > v_article_limit THEN
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
        details)
    VALUES (p_actor_kind, p_actor_id, p_actor_name, 'usage.record', 'usage_event',
            ev.id::text, p_audit_request_id, jsonb_build_object('cost_micros', p_cost_micros));

    RETURN QUERY SELECT ev.id, ev.user_id, ev.pipeline_id, ev.article_id, ev.service::text,
        ev.model::text, ev.operation::text, ev.input_tokens, ev.output_tokens,
        ev.cost_micros, ev.articles_generated, ev.api_calls, ev.request_id, ev.event_time,
        ev.create_time, ev.month, m.cost_micros, m.articles_generated, m.input_tokens,
        m.output_tokens, m.api_calls, m.event_count, v_cost_limit, v_article_limit, true;
END
$$
"""

SIGNATURE = (
    "blogstore_record_usage(uuid, uuid, uuid, uuid, text, text, text, bigint, bigint, bigint,"
    " bigint, bigint, timestamptz, date, bigint, bigint, text, uuid, text, text)"
)


def upgrade() -> None:
    op.execute(RECORD_USAGE)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")

"""record usage, the plain group in a few statements: blogstore_record_usage_plain()

blogstore_record_usage_batch() (0023) checks a group's events one by one in a PL/pgSQL loop,
two or three queries each (the claim, the article and the pipeline), so that a refusal in the
middle of a group is exact. Most groups need none of that: no article or pipeline to check,
no request_id seen before, and the whole group within the month's limits (then so is every
event before the last, the counts being non-negative). For those this function writes the
group in five statements, with no loop; for any other group it returns what
blogstore_record_usage_batch() returns for it, by calling it, before writing anything.

The month row is written first here, by the guarded upsert (its WHERE re-checks the limits
on the row's newest version): if the month grew meanwhile, nothing is written yet and the
group goes to blogstore_record_usage_batch(), which refuses event by event. A request_id
claimed by another transaction between the check and the claim (another process, the same
request_id) raises 40001 and writes nothing; the caller records each call alone.

Same arguments and result as blogstore_record_usage_batch() (see 0023). The old functions
stay.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Adds a function only: code from 0012 on runs beside it with the functions it knows.
compatible_since: str = "0012"

RECORD_USAGE_PLAIN = """
CREATE FUNCTION blogstore_record_usage_plain(
    p_user_id uuid, p_month date, p_default_cost_limit bigint, p_default_article_limit bigint,
    p_actor_kind text, p_actor_id uuid, p_actor_name text, p_events jsonb)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_cost_limit bigint;
    v_article_limit bigint;
    v_count int;
    v_cost bigint;
    v_articles bigint;
    v_request_ids uuid[];
    v_plain boolean;
    v_claimed int;
    m usage_monthly;
BEGIN
    SELECT count(*), sum(x.cost_micros), sum(x.articles_generated), array_agg(x.request_id),
           bool_and(x.article_id IS NULL AND x.pipeline_id IS NULL
                    AND (x.status = 'ok' OR x.articles_generated = 0))
      INTO v_count, v_cost, v_articles, v_request_ids, v_plain
      FROM jsonb_to_recordset(p_events) AS x(request_id uuid, article_id uuid, pipeline_id uuid,
                                             status text, cost_micros bigint,
                                             articles_generated bigint);
    IF v_plain AND NOT EXISTS (
        SELECT 1 FROM usage_request_ids AS r
         WHERE r.user_id = p_user_id AND r.request_id = ANY (v_request_ids)
    ) THEN
        SELECT coalesce(l.cost_limit_micros, p_default_cost_limit),
               coalesce(l.article_limit, p_default_article_limit)
          INTO v_cost_limit, v_article_limit
          FROM (SELECT 1) AS one LEFT JOIN usage_limits AS l ON l.user_id = p_user_id;
        INSERT INTO usage_monthly AS um (
            user_id, month, cost_micros, articles_generated, input_tokens, output_tokens,
            api_calls, event_count)
        SELECT p_user_id, p_month, sum(x.cost_micros), sum(x.articles_generated),
               sum(x.input_tokens), sum(x.output_tokens), sum(x.api_calls), count(*)
          FROM jsonb_to_recordset(p_events) AS x(cost_micros bigint, articles_generated bigint,
                                                 input_tokens bigint, output_tokens bigint,
                                                 api_calls bigint)
        HAVING sum(x.cost_micros) <= v_cost_limit
           AND (sum(x.articles_generated) = 0 OR sum(x.articles_generated) <= v_article_limit)
        ON CONFLICT (user_id, month) DO UPDATE SET
            cost_micros = um.cost_micros + excluded.cost_micros,
            articles_generated = um.articles_generated + excluded.articles_generated,
            input_tokens = um.input_tokens + excluded.input_tokens,
            output_tokens = um.output_tokens + excluded.output_tokens,
            api_calls = um.api_calls + excluded.api_calls,
            event_count = um.event_count + excluded.event_count,
            update_time = now()
        WHERE um.cost_micros + excluded.cost_micros <= v_cost_limit
          AND (excluded.articles_generated = 0
               OR um.articles_generated + excluded.articles_generated <= v_article_limit)
        RETURNING um.* INTO m;
    END IF;
    IF m.user_id IS NULL THEN  -- not plain, or past a limit: event by event, nothing written
        RETURN blogstore_record_usage_batch(p_user_id, p_month, p_default_cost_limit,
            p_default_article_limit, p_actor_kind, p_actor_id, p_actor_name, p_events);
    END IF;

    WITH claimed AS (
        INSERT INTO usage_request_ids AS r (user_id, request_id, event_id, event_time)
        SELECT p_user_id, x.request_id, x.id, x.event_time
          FROM jsonb_to_recordset(p_events) AS x(request_id uuid, id uuid, event_time timestamptz)
        ON CONFLICT (user_id, request_id) DO NOTHING
        RETURNING 1)
    SELECT count(*) INTO v_claimed FROM claimed;
    IF v_claimed <> v_count THEN
        RAISE EXCEPTION 'a request_id was claimed meanwhile' USING ERRCODE = '40001';
    END IF;

    INSERT INTO usage_events AS ue (
        id, user_id, request_id, pipeline_id, article_id, service, model, operation,
        input_tokens, output_tokens, cost_micros, articles_generated, api_calls,
        event_time, month, duration_ms, status, error_message, prompt_name,
        prompt_version, parameters, input_text, output_text)
    SELECT x.id, p_user_id, x.request_id, NULL, NULL, x.service, x.model, x.operation,
           x.input_tokens, x.output_tokens, x.cost_micros, x.articles_generated, x.api_calls,
           x.event_time, p_month, x.duration_ms, x.status, x.error_message, x.prompt_name,
           x.prompt_version, x.parameters, x.input_text, x.output_text
      FROM jsonb_to_recordset(p_events) AS x(i int, id uuid, request_id uuid, service text,
            model text, operation text, input_tokens bigint, output_tokens bigint,
            cost_micros bigint, articles_generated bigint, api_calls bigint,
            event_time timestamptz, duration_ms bigint, status text, error_message text,
            prompt_name text, prompt_version text, parameters jsonb, input_text text,
            output_text text)
     ORDER BY x.i;

    INSERT INTO audit_events (
        actor_kind, actor_id, actor_name, action, resource_type, resource_id,
        request_id, details, user_id)
    SELECT p_actor_kind, p_actor_id, p_actor_name, 'usage.record', 'usage_event',
           x.id::text, x.audit_request_id,
           jsonb_build_object('cost_micros', x.cost_micros, 'status', x.status), p_user_id
      FROM jsonb_to_recordset(p_events) AS x(i int, id uuid, cost_micros bigint, status text,
                                             audit_request_id text)
     ORDER BY x.i;

    RETURN jsonb_build_object(
        'now', (extract(epoch FROM now()) * 1000000)::bigint,
        'totals', jsonb_build_array(m.cost_micros, m.articles_generated, m.input_tokens,
                                    m.output_tokens, m.api_calls, m.event_count),
        'limits', jsonb_build_array(v_cost_limit, v_article_limit),
        'results', (SELECT jsonb_agg('null'::jsonb) FROM generate_series(1, v_count)));
END
$$
"""

SIGNATURE = "blogstore_record_usage_plain(uuid, date, bigint, bigint, text, uuid, text, jsonb)"


def upgrade() -> None:
    op.execute(RECORD_USAGE_PLAIN)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")

"""record usage in groups: blogstore_record_usage_batch(), one transaction for a user's calls

RecordUsage of one user ran one call at a time: the month row (the limit check) stayed locked
from its upsert through the commit's WAL flush. storage/usage_batch.py gathers the calls of
one user (and month, and principal) that arrive while one of theirs is in the database and
sends them as one call of this function: one transaction, one flush, the month row updated
once. The rules are blogstore_record_usage()'s (0013/0020), applied to each event in order:

- a request_id already claimed returns its first event (created false) or, if the event
  differs, "request_id reused" (BS400); one whose event retention removed is free again;
- an unknown article, or a pipeline not the user's: BS404; past a limit: BS429 with the same
  violations; a refused event writes nothing (its claim is removed);
- each accepted event is checked against the month's totals plus the accepted ones before it,
  so a group never exceeds a limit that calls one at a time would not.

Expected refusals come back per event in the result (jsonb), not raised: the others go on.
The month row is read without a lock and written last, by the same guarded upsert as before
(its WHERE re-checks the limit against the row's newest version): the lock is held only from
that write through the flush. Should another transaction have added to the month meanwhile
so that the group no longer fits, the function raises BS429 and writes nothing; the caller
then records each call alone (a group of one), where BS429 is that call's answer.

Events, audit rows and the pipelines' totals (version + 1 per event) are written in one
statement each. The event ids come from the caller (gen_random_uuid() if absent).

Returns {"now": create_time in microseconds since the epoch, "totals": the month's totals
after the group [cost, articles, input, output, api_calls, events] or null, "limits":
[cost, articles], "results": one per event: null (recorded) or {"code", "message",
"detail"} (refused) or {"event": the first event, "totals": its month's totals} (a retry)}.

The old functions stay (code at 0012 and later calls them).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Adds a function only: code from 0012 on runs beside it with the functions it knows.
compatible_since: str = "0012"

_EVENT_COLUMNS = """i int, id uuid, request_id uuid, pipeline_id uuid, article_id uuid,
        service text, model text, operation text, input_tokens bigint, output_tokens bigint,
        cost_micros bigint, articles_generated bigint, api_calls bigint,
        event_time timestamptz, duration_ms bigint, status text, error_message text,
        prompt_name text, prompt_version text, parameters jsonb, input_text text,
        output_text text, audit_request_id text"""

RECORD_USAGE_BATCH = f"""
CREATE FUNCTION blogstore_record_usage_batch(
    p_user_id uuid, p_month date, p_default_cost_limit bigint, p_default_article_limit bigint,
    p_actor_kind text, p_actor_id uuid, p_actor_name text, p_events jsonb)
RETURNS jsonb
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_cost_limit bigint;
    v_article_limit bigint;
    v_subject text := format('user:%s/month:%s', p_user_id, to_char(p_month, 'YYYY-MM'));
    v_claimed uuid[];
    v_accepted int[] := '{{}}';
    v_refused uuid[] := '{{}}';
    v_results jsonb[] := '{{}}';
    v_cost bigint;
    v_articles bigint;
    v_base_cost bigint;
    v_base_articles bigint;
    v_violations jsonb;
    v_result jsonb;
    v_reclaim boolean;
    v_pipelines int := 0;
    v_seen uuid[] := '{{}}';
    v_updated int;
    e record;
    ev usage_events;
    m usage_monthly;
    o usage_monthly;
BEGIN
    SELECT coalesce(l.cost_limit_micros, p_default_cost_limit),
           coalesce(l.article_limit, p_default_article_limit)
      INTO v_cost_limit, v_article_limit
      FROM (SELECT 1) AS one LEFT JOIN usage_limits AS l ON l.user_id = p_user_id;

    -- A concurrent call with one of these request_ids waits here for the first to finish.
    WITH claimed AS (
        INSERT INTO usage_request_ids AS r (user_id, request_id, event_id, event_time)
        SELECT p_user_id, x.request_id, coalesce(x.id, gen_random_uuid()), x.event_time
          FROM jsonb_to_recordset(p_events) AS x(request_id uuid, id uuid, event_time timestamptz)
        ON CONFLICT (user_id, request_id) DO NOTHING
        RETURNING r.request_id)
    SELECT coalesce(array_agg(c.request_id), '{{}}') INTO v_claimed FROM claimed AS c;

    SELECT um.* INTO m FROM usage_monthly AS um
     WHERE um.user_id = p_user_id AND um.month = p_month;
    v_base_cost := coalesce(m.cost_micros, 0);
    v_base_articles := coalesce(m.articles_generated, 0);
    v_cost := v_base_cost;
    v_articles := v_base_articles;

    FOR e IN SELECT * FROM jsonb_to_recordset(p_events) AS x({_EVENT_COLUMNS}) ORDER BY x.i
    LOOP
        v_result := NULL;
        v_reclaim := false;
        IF e.i <> cardinality(v_seen) OR e.request_id = ANY (v_seen) THEN
            -- numbered from 0, one request_id once: the caller keeps repeats apart
            RAISE EXCEPTION 'a group out of order, or one request_id twice';
        END IF;
        v_seen := v_seen || e.request_id;
        IF e.status <> 'ok' AND e.articles_generated <> 0 THEN
            v_result := jsonb_build_object('code', 'BS400', 'message',
                'articles from a failed call', 'detail',
                '{{"articles_generated": "must be 0 when status is not OK"}}');
        ELSIF NOT (e.request_id = ANY (v_claimed)) THEN
            SELECT ue.* INTO ev FROM usage_request_ids AS r JOIN usage_events AS ue
                ON ue.id = r.event_id AND ue.event_time = r.event_time
             WHERE r.user_id = p_user_id AND r.request_id = e.request_id;
            IF NOT FOUND THEN  -- its event is gone (retention): the request_id is free again
                v_reclaim := true;
            ELSIF (ev.cost_micros, ev.articles_generated, ev.input_tokens, ev.output_tokens,
                   ev.api_calls, ev.service, ev.status) IS DISTINCT FROM
                  (e.cost_micros, e.articles_generated, e.input_tokens, e.output_tokens,
                   e.api_calls, e.service, e.status)
                  OR ev.pipeline_id IS DISTINCT FROM e.pipeline_id THEN
                v_result := jsonb_build_object('code', 'BS400', 'message', 'request_id reused',
                    'detail', '{{"request_id": "was already used for a different event"}}');
            ELSE  -- a retry: its first event, and the totals of that event's month
                o := NULL;
                IF ev.month <> p_month THEN
                    SELECT um.* INTO o FROM usage_monthly AS um
                     WHERE um.user_id = ev.user_id AND um.month = ev.month;
                END IF;
                v_result := jsonb_build_object('event', to_jsonb(ev), 'totals',
                    CASE WHEN ev.month <> p_month THEN jsonb_build_array(
                        coalesce(o.cost_micros, 0), coalesce(o.articles_generated, 0),
                        coalesce(o.input_tokens, 0), coalesce(o.output_tokens, 0),
                        coalesce(o.api_calls, 0), coalesce(o.event_count, 0)) END);
                v_results := v_results || v_result;
                CONTINUE;
            END IF;
        END IF;

        IF v_result IS NULL AND e.article_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM articles AS a WHERE a.id = e.article_id AND a.user_id = p_user_id
        ) THEN
            v_result := jsonb_build_object('code', 'BS404', 'message', 'article');
        END IF;

        -- The limits, against the month's totals plus the events accepted before this one.
        IF v_result IS NULL AND (v_cost + e.cost_micros > v_cost_limit
            OR (e.articles_generated <> 0
                AND v_articles + e.articles_generated > v_article_limit)) THEN
            v_violations := '{{}}';
            IF v_cost + e.cost_micros > v_cost_limit THEN
                v_violations := v_violations || jsonb_build_object(
                    v_subject || '/cost_micros',
                    format('%s + %s exceeds the limit of %s micros',
                           v_cost, e.cost_micros, v_cost_limit));
            END IF;
            IF e.articles_generated <> 0
               AND v_articles + e.articles_generated > v_article_limit THEN
                v_violations := v_violations || jsonb_build_object(
                    v_subject || '/articles',
                    format('%s + %s exceeds the limit of %s articles',
                           v_articles, e.articles_generated, v_article_limit));
            END IF;
            v_result := jsonb_build_object('code', 'BS429', 'message',
                'the monthly usage limit would be exceeded', 'detail', v_violations::text);
        END IF;

        IF v_result IS NULL AND e.pipeline_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM pipelines AS p WHERE p.id = e.pipeline_id AND p.user_id = p_user_id
        ) THEN
            v_result := jsonb_build_object('code', 'BS404', 'message', 'pipeline');
        END IF;

        IF v_result IS NULL THEN
            v_accepted := v_accepted || e.i;
            IF e.pipeline_id IS NOT NULL THEN
                v_pipelines := v_pipelines + 1;
            END IF;
            v_cost := v_cost + e.cost_micros;
            v_articles := v_articles + e.articles_generated;
            IF v_reclaim THEN
                UPDATE usage_request_ids AS r SET event_id = e.id, event_time = e.event_time
                 WHERE r.user_id = p_user_id AND r.request_id = e.request_id;
            END IF;
        ELSIF e.request_id = ANY (v_claimed) THEN
            v_refused := v_refused || e.request_id;
        END IF;
        v_results := v_results || coalesce(v_result, 'null'::jsonb);
    END LOOP;

    IF cardinality(v_refused) > 0 THEN  -- a refused event claims nothing
        DELETE FROM usage_request_ids AS r
         WHERE r.user_id = p_user_id AND r.request_id = ANY (v_refused);
    END IF;

    IF cardinality(v_accepted) > 0 THEN
        INSERT INTO usage_events AS ue (
            id, user_id, request_id, pipeline_id, article_id, service, model, operation,
            input_tokens, output_tokens, cost_micros, articles_generated, api_calls,
            event_time, month, duration_ms, status, error_message, prompt_name,
            prompt_version, parameters, input_text, output_text)
        SELECT x.id, p_user_id, x.request_id, x.pipeline_id, x.article_id, x.service,
               x.model, x.operation, x.input_tokens, x.output_tokens, x.cost_micros,
               x.articles_generated, x.api_calls, x.event_time, p_month, x.duration_ms,
               x.status, x.error_message, x.prompt_name, x.prompt_version, x.parameters,
               x.input_text, x.output_text
          FROM jsonb_to_recordset(p_events) AS x({_EVENT_COLUMNS})
         WHERE x.i = ANY (v_accepted)
         ORDER BY x.i;

        -- Totals, and a version bump per event so watchers see it.
        IF v_pipelines > 0 THEN
        WITH s AS (
            SELECT x.pipeline_id, sum(x.cost_micros) AS cost,
                   sum(x.input_tokens + x.output_tokens) AS tokens,
                   sum(x.api_calls) AS calls, count(*) AS n
              FROM jsonb_to_recordset(p_events) AS x({_EVENT_COLUMNS})
             WHERE x.i = ANY (v_accepted) AND x.pipeline_id IS NOT NULL
             GROUP BY x.pipeline_id)
        UPDATE pipelines AS p SET
            total_cost_micros = p.total_cost_micros + s.cost,
            llm_tokens_used = p.llm_tokens_used + s.tokens,
            api_calls_made = p.api_calls_made + s.calls,
            version = p.version + s.n
          FROM s WHERE p.id = s.pipeline_id AND p.user_id = p_user_id;
        GET DIAGNOSTICS v_updated = ROW_COUNT;
        SELECT count(DISTINCT x.pipeline_id) INTO v_pipelines
          FROM jsonb_to_recordset(p_events) AS x(i int, pipeline_id uuid)
         WHERE x.i = ANY (v_accepted);
        IF v_updated <> v_pipelines THEN  -- one went meanwhile: record them one by one
            RAISE EXCEPTION 'pipeline' USING ERRCODE = 'BS404';
        END IF;
        END IF;

        INSERT INTO audit_events (
            actor_kind, actor_id, actor_name, action, resource_type, resource_id,
            request_id, details, user_id)
        SELECT p_actor_kind, p_actor_id, p_actor_name, 'usage.record', 'usage_event',
               x.id::text, x.audit_request_id,
               jsonb_build_object('cost_micros', x.cost_micros, 'status', x.status), p_user_id
          FROM jsonb_to_recordset(p_events) AS x({_EVENT_COLUMNS})
         WHERE x.i = ANY (v_accepted)
         ORDER BY x.i;

        -- The last write: the month row stays locked from here through the commit only.
        INSERT INTO usage_monthly AS um (
            user_id, month, cost_micros, articles_generated, input_tokens, output_tokens,
            api_calls, event_count)
        SELECT p_user_id, p_month, sum(x.cost_micros), sum(x.articles_generated),
               sum(x.input_tokens), sum(x.output_tokens), sum(x.api_calls), count(*)
          FROM jsonb_to_recordset(p_events) AS x({_EVENT_COLUMNS})
         WHERE x.i = ANY (v_accepted)
        HAVING sum(x.cost_micros) <= v_cost_limit
           AND sum(x.articles_generated) <= v_article_limit
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
        IF NOT FOUND THEN  -- the month grew meanwhile (another process): nothing is written
            SELECT um.* INTO o FROM usage_monthly AS um
             WHERE um.user_id = p_user_id AND um.month = p_month;
            v_violations := '{{}}';
            IF coalesce(o.cost_micros, 0) + v_cost - v_base_cost > v_cost_limit THEN
                v_violations := v_violations || jsonb_build_object(
                    v_subject || '/cost_micros',
                    format('%s + %s exceeds the limit of %s micros',
                           coalesce(o.cost_micros, 0), v_cost - v_base_cost, v_cost_limit));
            END IF;
            IF v_articles <> v_base_articles AND coalesce(o.articles_generated, 0)
               + v_articles - v_base_articles > v_article_limit THEN
                v_violations := v_violations || jsonb_build_object(
                    v_subject || '/articles',
                    format('%s + %s exceeds the limit of %s articles',
                           coalesce(o.articles_generated, 0), v_articles - v_base_articles,
                           v_article_limit));
            END IF;
            RAISE EXCEPTION 'the monthly usage limit would be exceeded'
                USING ERRCODE = 'BS429', DETAIL = v_violations::text;
        END IF;
    END IF;

    RETURN jsonb_build_object(
        'now', (extract(epoch FROM now()) * 1000000)::bigint,
        'totals', CASE WHEN m.user_id IS NOT NULL THEN jsonb_build_array(
            m.cost_micros, m.articles_generated, m.input_tokens, m.output_tokens,
            m.api_calls, m.event_count) END,
        'limits', jsonb_build_array(v_cost_limit, v_article_limit),
        'results', to_jsonb(v_results));
END
$$
"""

SIGNATURE = "blogstore_record_usage_batch(uuid, date, bigint, bigint, text, uuid, text, jsonb)"


def upgrade() -> None:
    op.execute(RECORD_USAGE_BATCH)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")

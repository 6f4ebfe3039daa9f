"""create_server(settings): wiring only. Nothing here runs SQL or holds business rules."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from blogstore.client import MAX_MESSAGE_BYTES
from blogstore.v1 import (
    articles_pb2,
    articles_pb2_grpc,
    competitors_pb2,
    competitors_pb2_grpc,
    pipelines_pb2,
    pipelines_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.article_cache import ArticleCache
from server.auth import Authenticator
from server.config import Settings
from server.convert.usage import TextLog
from server.credential_cache import CredentialCache, UsageCounts
from server.fairness import Shares
from server.health import LIVENESS, SERVING, HealthMonitor, HealthServicer
from server.interceptors import RequestInterceptor
from server.limits import max_request_bytes
from server.login import PasswordHasher, login_throttle
from server.paging import PageTokens
from server.partitions import PartitionMaintainer
from server.reflection import enable_server_reflection
from server.services.articles import BATCH_METHOD, ArticlesServicer
from server.services.competitors import CompetitorsServicer
from server.services.pipelines import PipelinesServicer, pipeline_to_proto
from server.services.usage import UsageServicer
from server.services.users import UsersServicer
from server.telemetry import Telemetry
from server.tls import add_port
from server.watch import WatchHub
from storage import rls
from storage.actors import SYSTEM, Caller
from storage.embeddings import Availability, schema_status
from storage.engine import make_engine, make_replicas, mask_url
from storage.migrate import CodeSchema
from storage.notify import ChangeListener
from storage.repositories.usage import Limits
from storage.secrets import Keyring
from storage.uow import Database

log = logging.getLogger(__name__)


@dataclass
class App:
    """A built server: start() it, stop() it; `port` is the bound port (useful with port 0)."""

    server: grpc.Server
    port: int
    health: HealthMonitor
    watch_hub: WatchHub
    listener: ChangeListener  # the process's one LISTEN connection (watch, credentials, articles)
    usage_counts: UsageCounts
    credentials: CredentialCache
    article_cache: ArticleCache
    db: Database
    settings: Settings
    telemetry: Telemetry
    passwords: PasswordHasher
    partitions: PartitionMaintainer

    def start(self) -> None:
        if self.db.replicas is not None:
            self.db.replicas.start()  # reads go to the primary until a replica is seen fresh
        self.server.start()
        if self.health.check_now():
            self._warn_without_leakproof()
            self._warn_without_embeddings()
        self.health.start()
        self.listener.start()
        self.usage_counts.start()
        self.partitions.start()
        self.telemetry.start()
        log.info("blogstore listening on %s:%d", self.settings.host, self.port)

    def _warn_without_leakproof(self) -> None:
        """Once, at start-up: Search and the tag filter are slow under RLS without these."""
        if self.settings.db_role == rls.NO_ROLE:
            return
        try:
            with self.db.engine.connect() as connection:
                statements = rls.missing_leakproof(connection)
        except Exception:  # noqa: BLE001 - only a warning; health reports the database
            return
        if statements:
            log.warning(
                "row-level security: a user's Search and tag filter cannot use their indexes "
                "(they read all the user's articles); a superuser should run, in this "
                "database: %s",
                "; ".join(statements),
            )

    def _warn_without_embeddings(self) -> None:
        """Once, at start-up: why embedding calls will answer FAILED_PRECONDITION, if they will."""
        try:
            with self.db.engine.connect() as connection:
                status = schema_status(connection, self.settings.embedding_dimensions)
        except Exception:  # noqa: BLE001 - only a warning; health reports the database
            return
        if status.problem:  # info: a server without pgvector is a supported set-up
            log.info("embeddings are off: %s", status.problem)

    def stop(self, grace: float | None = None) -> None:
        """Drain: health NOT_SERVING, new calls refused, in-flight calls get `grace` seconds."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self.health.stop()
        self.listener.stop()
        self.watch_hub.stop()
        self.server.stop(grace).wait()
        self.usage_counts.stop()  # the last counts, after the last call
        self.partitions.stop()
        self.passwords.shutdown()
        self.db.dispose()
        self.telemetry.stop()


def _secret_keyring(settings: Settings) -> Keyring | None:
    keyring = settings.secret_keyring
    if keyring is None:
        log.info("BLOGSTORE_SECRET_KEYS is unset: user secret calls answer FAILED_PRECONDITION")
    else:
        log.info("user secrets: new values under key %r (keys %s)", keyring.current_id,
                 ", ".join(keyring.key_ids))  # fmt: skip
    return keyring


def create_server(settings: Settings, telemetry: Telemetry | None = None) -> App:
    """`telemetry`: what to record (default: from settings and the OTEL_* environment)."""
    if not settings.database_url:
        raise ValueError("create_server needs settings.database_url")
    database_url = settings.database_url.get_secret_value()
    log.info("database %s", mask_url(database_url))
    telemetry = telemetry or Telemetry.from_settings(settings)
    engine = make_engine(
        database_url,
        pool_size=settings.pool_size,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_timeout=settings.db_connect_timeout_seconds,
    )
    telemetry.instrument(engine)
    replicas = make_replicas(
        settings.replica_url_list,
        primary_url=database_url,
        pool_size=settings.pool_size,
        max_lag_ms=settings.replica_max_lag_ms,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_timeout=settings.db_connect_timeout_seconds,
    )
    if replicas is not None:
        log.info("read replicas %s", ", ".join(r.name for r in replicas.replicas))
        telemetry.instrument_replicas(replicas)
    db = Database(
        engine,
        statement_timeout_ms=settings.statement_timeout_ms,
        observe=telemetry.observe_statement,
        role=settings.db_role,
        replicas=replicas,
        prepare=settings.db_prepare,
    )
    page_tokens = PageTokens(settings.page_token_secret.get_secret_value())
    embeddings = Availability(settings.embedding_dimensions)
    shares = Shares.from_settings(settings)
    passwords = PasswordHasher(settings.bcrypt_threads, settings.bcrypt_rounds)
    listener = ChangeListener(settings.direct_url or database_url)  # LISTEN: no pooler
    usage_counts = UsageCounts(
        lambda uses: db.run(
            Caller(SYSTEM, "credential-usage", None), lambda tx: tx.credentials.record_uses(uses)
        )
    )
    credentials = CredentialCache(
        settings.credential_cache_size, settings.credential_cache_ttl_seconds, listener
    )
    authenticator = Authenticator(db, settings.service_keys, cache=credentials, usage=usage_counts)
    article_cache = ArticleCache(
        settings.article_cache_entries, settings.article_cache_bytes, listener
    )
    interceptor = RequestInterceptor(
        authenticator,
        allow_registration=settings.allow_registration,
        telemetry=telemetry,
        calls=shares.calls,
    )
    server = grpc.server(
        ThreadPoolExecutor(max_workers=shares.pool_threads, thread_name_prefix="rpc"),
        interceptors=[interceptor],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
            ("grpc.max_connection_age_ms", settings.max_connection_age_seconds * 1000),
            ("grpc.max_connection_age_grace_ms", int(settings.shutdown_grace_seconds * 1000)),
            ("grpc.max_receive_message_length", max_request_bytes()),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            # Off: a stream's receive window stays at HTTP/2's 64 KB, so a call not reading
            # its body (a batch waiting for its slot) holds 64 KB, not a window grown to ~10 MB.
            ("grpc.http2.bdp_probe", 1 if settings.http2_bdp_probe else 0),
        ],
    )
    users_pb2_grpc.add_UsersServiceServicer_to_server(
        UsersServicer(
            db,
            page_tokens,
            passwords=passwords,
            throttle=login_throttle(db, settings),
            token_ttl_seconds=settings.access_token_ttl_seconds,
            keyring=_secret_keyring(settings),
            credentials_changed=authenticator.credentials_changed,
            flush_usage=usage_counts.flush,
            articles_purged=lambda user_id: article_cache.evict_owner(str(user_id)),
        ),
        server,
    )
    articles = ArticlesServicer(
        db,
        page_tokens,
        max_concurrent_batches=settings.max_concurrent_batches,
        slots=telemetry.batch_slots,
        batch_shares=shares.batches,
        embeddings=embeddings,
        article_cache=article_cache,
    )
    # A batch waits for its slot before its body is read (server/batch_queue.py).
    interceptor.admit(BATCH_METHOD, articles.batch_admission)
    articles_pb2_grpc.add_ArticlesServiceServicer_to_server(articles, server)
    watch_hub = WatchHub(
        db, listener, max_watchers=settings.max_watchers,
        to_message=lambda p: pipelines_pb2.WatchPipelineResponse(pipeline=pipeline_to_proto(p)),
        shares=shares.watchers,
    )  # fmt: skip
    pipelines_pb2_grpc.add_PipelinesServiceServicer_to_server(
        PipelinesServicer(db, page_tokens, watch_hub), server
    )
    competitors_pb2_grpc.add_CompetitorsServiceServicer_to_server(
        CompetitorsServicer(db, page_tokens, embeddings), server
    )
    usage_pb2_grpc.add_UsageServiceServicer_to_server(
        UsageServicer(
            db,
            page_tokens,
            default_limits=Limits(
                cost_micros=settings.default_monthly_cost_limit_micros,
                articles=settings.default_monthly_article_limit,
            ),
            text_log=TextLog(settings.usage_log_text, settings.usage_log_text_max_bytes),
            group_wait_ms=settings.usage_group_wait_ms,
            threads=settings.threads,
            calls=shares.calls,
        ),
        server,
    )
    services = [
        users_pb2.DESCRIPTOR.services_by_name["UsersService"].full_name,
        articles_pb2.DESCRIPTOR.services_by_name["ArticlesService"].full_name,
        pipelines_pb2.DESCRIPTOR.services_by_name["PipelinesService"].full_name,
        usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name,
        competitors_pb2.DESCRIPTOR.services_by_name["CompetitorsService"].full_name,
    ]

    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health = HealthMonitor(
        health_servicer,
        database_url,
        services,
        settings.health_interval_seconds,
        code_schema=CodeSchema(role=settings.db_role),
    )
    db.on_connection_failure = health.recheck_soon  # readiness follows a failed call at once
    health_names = [LIVENESS, *health.readiness_names]
    telemetry.watch_health(
        lambda: {name: health_servicer.status(name) == SERVING for name in health_names}
    )
    telemetry.watch_watchers(lambda: watch_hub.open_watchers)
    enable_server_reflection(
        [*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], server
    )
    port = add_port(server, settings)
    if port == 0:
        raise OSError(f"could not bind {settings.host}:{settings.port}")
    return App(
        server=server, port=port, health=health, watch_hub=watch_hub, listener=listener,
        usage_counts=usage_counts, credentials=credentials, article_cache=article_cache, db=db,
        settings=settings,
        telemetry=telemetry, passwords=passwords,
        partitions=PartitionMaintainer(engine, settings.partitions_ahead),
    )  # fmt: skip

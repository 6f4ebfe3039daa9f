"""The transport limit: a gRPC server that answers any method with pre-serialized bytes.

`python -m bench.noop --port P --threads 16 [--workers N]` builds the server exactly as
server/app.py does (a 16-thread pool, the same concurrency cap and channel options, SO_REUSEPORT
only with several workers), but with one generic handler and no interceptor: no auth, no
parsing, no database. The harness sets the reply of a method with the control method
/bench.Noop/SetResponse (request: method name, NUL, reply bytes), using a real reply captured
from blogstore, so both servers send the same bytes. With several workers, every worker must be
told: the harness sends the control call on fresh connections until each pid has answered.

With `--database-url`, GetArticle first runs the article's primary-key SELECT through raw
psycopg2 (autocommit, one connection per thread) and then answers with the captured bytes:
the issue's "data path as lean as raw psycopg2" reference, measured beside blogstore.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg2
import psycopg2.extras
from blogstore.v1 import articles_pb2

from bench.dblimit import GET_ARTICLE_SQL

CONTROL = "/bench.Noop/SetResponse"
# Same values as server/app.py with the default Settings (keep in step with it).
MAX_CONCURRENT_RPCS = 256
OPTIONS = [
    ("grpc.max_connection_age_ms", 300 * 1000),
    ("grpc.max_connection_age_grace_ms", 20 * 1000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


GET_ARTICLE = "/blogstore.v1.ArticlesService/GetArticle"


class NoopHandler(grpc.GenericRpcHandler):
    def __init__(self, database_url: str | None = None) -> None:
        self.database_url = database_url
        self._local = threading.local()
        self.responses: dict[str, bytes] = {}
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        self._control = grpc.unary_unary_rpc_method_handler(self._set)

    def _set(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        method, _, payload = request.partition(b"\0")
        self.responses[method.decode()] = payload
        return str(os.getpid()).encode()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        if method == CONTROL:
            return self._control
        handler = self._handlers.get(method)
        if handler is None:
            responses = self.responses
            if method == GET_ARTICLE and self.database_url:
                handler = grpc.unary_unary_rpc_method_handler(
                    lambda request, context: self._select(request) or responses.get(method, b"")
                )
            else:
                handler = grpc.unary_unary_rpc_method_handler(
                    lambda request, context: responses.get(method, b"")
                )
            self._handlers[method] = handler
        return handler

    def _select(self, request: bytes) -> None:
        """The article's row through raw psycopg2; the reply stays the captured bytes."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            psycopg2.extras.register_uuid()
            connection = psycopg2.connect(self.database_url, application_name="bench-sqlnoop")
            connection.autocommit = True
            cursor = self._local.cursor = connection.cursor()
        cursor.execute(GET_ARTICLE_SQL, (articles_pb2.GetArticleRequest.FromString(request).id,))
        cursor.fetchall()


def serve(port: int, threads: int, workers: int, database_url: str | None = None) -> None:
    server = grpc.server(
        ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc"),
        handlers=[NoopHandler(database_url)],
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        options=[("grpc.so_reuseport", 1 if workers > 1 else 0), *OPTIONS],
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(0).wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.noop", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database-url", help="GetArticle runs its SELECT here first")
    args = parser.parse_args()
    if args.workers == 1:
        serve(args.port, args.threads, 1, args.database_url)
        return
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(
            target=serve, args=(args.port, args.threads, args.workers, args.database_url)
        )
        for _ in range(args.workers)
    ]
    for proc in procs:
        proc.start()

    def forward(*_: object) -> None:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()


if __name__ == "__main__":
    main()

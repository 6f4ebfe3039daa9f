"""Scenarios: what each call sends (built in the load processes) and what it is compared to.

A scenario's client builds one request per call from plain `params` prepared by the harness
(article ids, users, a deep page token, search words, serialized article templates), so the
same requests go to blogstore and to the no-op server. Each in-flight slot may keep state
(UpdateArticle keeps its article's etag).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

from blogstore.v1 import articles_pb2, usage_pb2, users_pb2
from google.protobuf import field_mask_pb2, struct_pb2

ARTICLES = "/blogstore.v1.ArticlesService/"
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
LIST_PAGE_SIZE = 50
SEARCH_PAGE_SIZE = 20
BATCH_SIZE = 1000
CLAIM_LEASE_SECONDS = 1


@dataclass(frozen=True)
class Scenario:
    name: str
    client: str  # key of CLIENTS
    # True: also the same SQL through psycopg2; "grpc": also the no-op server running the
    # scenario's SELECT through raw psycopg2 before each reply (bench/noop.py --database-url)
    db_limit: bool | str = False
    apart: bool = False  # reported in its own table (bcrypt-bound)
    items_per_call: int = 1


CATALOG = [
    Scenario("GetArticle", "get", db_limit="grpc"),
    # The same calls the way users make them: an API key of the articles' owner (issue 17).
    Scenario("GetArticle (user key)", "get_user"),
    Scenario("ListArticles first page", "list_first", db_limit=True),
    Scenario("ListArticles deep page", "list_deep", db_limit=True),
    Scenario("SearchArticles common word", "search_common", db_limit=True),
    Scenario("SearchArticles rare word", "search_rare", db_limit=True),
    Scenario("SearchArticles phrase", "search_phrase", db_limit=True),
    Scenario("CreateArticle", "create"),
    Scenario("UpdateArticle (etag)", "update"),
    Scenario("RecordUsage", "usage"),
    Scenario("RecordUsage (call log)", "usage_log"),
    Scenario("ClaimDueCompetitors", "claim"),
    Scenario("RecordCompetitorCheck", "record"),
    Scenario("Authenticate", "auth", apart=True),
    # Last: its 1000-article calls leave the server process large for the rest of its life.
    # Its limit: the same 1000 articles by one COPY into a copy of the table (bench/copylimit.py).
    Scenario("BatchCreateArticles", "batch", db_limit=True, items_per_call=BATCH_SIZE),
]
BY_CLIENT = {s.client: s for s in CATALOG}


class Client:
    """Builds requests for one load process; `slot` states are per in-flight call."""

    method = ""
    request_cls: Any = None
    response_cls: Any = None
    metadata = True  # send the service key
    key_param = ""  # else the key in params[key_param] (bench/prepare.py)

    def __init__(self, params: dict, worker: int, slots: int) -> None:
        self.params = params
        self.worker = worker
        self.rng = random.Random(f"{worker}-{uuid.uuid4()}")

    async def setup(self, slot: int, channel: Any, metadata: tuple | None) -> Any:
        return None

    def request(self, state: Any) -> Any:
        raise NotImplementedError

    def done(self, state: Any, response: Any) -> None:
        pass


class Get(Client):
    method = ARTICLES + "GetArticle"
    request_cls, response_cls = articles_pb2.GetArticleRequest, articles_pb2.GetArticleResponse

    def request(self, state: Any) -> Any:
        return self.request_cls(id=self.rng.choice(self.params["article_ids"]))


class GetAsUser(Get):
    key_param = "user_key"

    def request(self, state: Any) -> Any:
        return self.request_cls(id=self.rng.choice(self.params["user_article_ids"]))


class ListFirst(Client):
    method = ARTICLES + "ListArticles"
    request_cls, response_cls = articles_pb2.ListArticlesRequest, articles_pb2.ListArticlesResponse
    token_param = ""

    def __init__(self, params: dict, worker: int, slots: int) -> None:
        super().__init__(params, worker, slots)
        self._request = self.request_cls(
            page_size=LIST_PAGE_SIZE,
            view=articles_pb2.ARTICLE_VIEW_BASIC,
            page_token=params.get(self.token_param, "") if self.token_param else "",
        )

    def request(self, state: Any) -> Any:
        return self._request


class ListDeep(ListFirst):
    token_param = "deep_token"


class Search(Client):
    method = ARTICLES + "SearchArticles"
    request_cls = articles_pb2.SearchArticlesRequest
    response_cls = articles_pb2.SearchArticlesResponse
    query_param = ""

    def request(self, state: Any) -> Any:
        return self.request_cls(
            query=self.params[self.query_param],
            page_size=SEARCH_PAGE_SIZE,
            view=articles_pb2.ARTICLE_VIEW_BASIC,
        )


class SearchCommon(Search):
    query_param = "common_query"


class SearchRare(Search):
    query_param = "rare_query"


class SearchPhrase(Search):
    query_param = "phrase_query"


class _Writer(Client):
    """Article templates (serialized) made unique by a title suffix per call."""

    def __init__(self, params: dict, worker: int, slots: int) -> None:
        super().__init__(params, worker, slots)
        self.templates = [articles_pb2.Article.FromString(b) for b in params["templates"]]
        self.users = params["user_ids"]
        self.tag = uuid.uuid4().hex[:6]
        self.counter = 0

    def article(self) -> Any:
        self.counter += 1
        article = articles_pb2.Article()
        article.CopyFrom(self.rng.choice(self.templates))
        article.title = f"{article.title[:50]} {self.tag}{self.worker}x{self.counter}"
        article.user_id = self.rng.choice(self.users)
        return article


class Create(_Writer):
    method = ARTICLES + "CreateArticle"
    request_cls = articles_pb2.CreateArticleRequest
    response_cls = articles_pb2.CreateArticleResponse

    def request(self, state: Any) -> Any:
        return self.request_cls(article=self.article())


class Batch(_Writer):
    method = ARTICLES + "BatchCreateArticles"
    request_cls = articles_pb2.BatchCreateArticlesRequest
    response_cls = articles_pb2.BatchCreateArticlesResponse

    def request(self, state: Any) -> Any:
        return self.request_cls(articles=[self.article() for _ in range(BATCH_SIZE)])


class Update(Client):
    """Each slot updates its own article: read the etag once, then send the returned one."""

    method = ARTICLES + "UpdateArticle"
    request_cls = articles_pb2.UpdateArticleRequest
    response_cls = articles_pb2.UpdateArticleResponse
    mask = field_mask_pb2.FieldMask(paths=["title", "seo_score"])

    def __init__(self, params: dict, worker: int, slots: int) -> None:
        super().__init__(params, worker, slots)
        self.first_slot = worker * slots

    async def setup(self, slot: int, channel: Any, metadata: tuple | None) -> Any:
        article_id = self.params["update_ids"][self.first_slot + slot]
        get = channel.unary_unary(
            ARTICLES + "GetArticle",
            request_serializer=articles_pb2.GetArticleRequest.SerializeToString,
            response_deserializer=articles_pb2.GetArticleResponse.FromString,
        )
        reply = await get(
            articles_pb2.GetArticleRequest(id=article_id, view=articles_pb2.ARTICLE_VIEW_BASIC),
            metadata=metadata,
        )
        return {"id": article_id, "etag": reply.article.etag, "title": reply.article.title, "n": 0}

    def request(self, state: Any) -> Any:
        state["n"] += 1
        article = articles_pb2.Article(
            id=state["id"],
            etag=state["etag"],
            title=f"{state['title'][:60]} v{state['n']}",
            seo_score=float(state["n"] % 100),
        )
        return self.request_cls(article=article, update_mask=self.mask)

    def done(self, state: Any, response: Any) -> None:
        state["etag"] = response.article.etag


class Usage(Client):
    method = "/blogstore.v1.UsageService/RecordUsage"
    request_cls, response_cls = usage_pb2.RecordUsageRequest, usage_pb2.RecordUsageResponse

    def request(self, state: Any) -> Any:
        return self.request_cls(
            request_id=str(uuid.uuid4()),
            user_id=self.params["usage_user_id"],
            service="openai",
            model="gpt-4o",
            operation="generate",
            input_tokens=1200,
            output_tokens=800,
            cost_micros=23_500,
            api_calls=1,
        )


class UsageLog(Usage):
    """RecordUsage with the call log's fields (issue 16): a failed call in ten, and texts that
    a server with BLOGSTORE_USAGE_LOG_TEXT keeps (others drop them)."""

    def request(self, state: Any) -> Any:
        request = super().request(state)
        failed = self.rng.random() < 0.1
        request.duration_ms = self.rng.randint(200, 20_000)
        request.status = usage_pb2.USAGE_STATUS_ERROR if failed else usage_pb2.USAGE_STATUS_OK
        request.error_message = "upstream 502" if failed else ""
        request.prompt_name, request.prompt_version = "article-draft", "v3"
        request.parameters.CopyFrom(_PARAMETERS)
        request.input_text, request.output_text = _PROMPT, "" if failed else _COMPLETION
        return request


_PARAMETERS = struct_pb2.Struct()
_PARAMETERS.update({"temperature": 0.7, "max_tokens": 4000, "top_p": 1, "stop": ["###"]})
_PROMPT = "Write a 1,500-word article about home espresso for beginners. " * 30  # ~2 KB
_COMPLETION = "Espresso at home starts with fresh beans and a good grinder. " * 150  # ~9 KB


class Auth(Client):
    method = "/blogstore.v1.UsersService/Authenticate"
    request_cls, response_cls = users_pb2.AuthenticateRequest, users_pb2.AuthenticateResponse
    metadata = False

    def request(self, state: Any) -> Any:
        return self.request_cls(
            login=self.params["auth_login"], password=self.params["auth_password"]
        )


class AuthFlood(Client):
    """Right passwords of logins picked at random: a bcrypt check on every call, and no
    login's back-off ever starts (each success resets its own)."""

    method = Auth.method
    request_cls, response_cls = Auth.request_cls, Auth.response_cls
    metadata = False

    def request(self, state: Any) -> Any:
        return self.request_cls(
            login=self.rng.choice(self.params["auth_logins"]), password=self.params["auth_password"]
        )


class CurrentUser(Client):
    """GetCurrentUser as a user (the job's key is that user's access token)."""

    method = "/blogstore.v1.UsersService/GetCurrentUser"
    request_cls = users_pb2.GetCurrentUserRequest
    response_cls = users_pb2.GetCurrentUserResponse

    def request(self, state: Any) -> Any:
        return self.request_cls()


class Claim(Client):
    """Claims of 10 with a 1 s lease over 1,000+ competitors: leases run out and competitors
    fall due again, so claims keep finding work (checked against main's service)."""

    method = "/blogstore.v1.CompetitorsService/ClaimDueCompetitors"

    def __init__(self, params: dict, worker: int, slots: int) -> None:
        super().__init__(params, worker, slots)
        from blogstore.v1 import competitors_pb2  # type: ignore[attr-defined]

        self.request_cls = competitors_pb2.ClaimDueCompetitorsRequest
        self.response_cls = competitors_pb2.ClaimDueCompetitorsResponse

    def request(self, state: Any) -> Any:
        return self.request_cls(limit=10, lease_seconds=CLAIM_LEASE_SECONDS)


class Record(Client):
    """RecordCompetitorCheck: each slot records checks of its own competitor (no row lock
    shared between slots); one check in ten failed."""

    method = "/blogstore.v1.CompetitorsService/RecordCompetitorCheck"

    def __init__(self, params: dict, worker: int, slots: int) -> None:
        super().__init__(params, worker, slots)
        from blogstore.v1 import competitors_pb2  # type: ignore[attr-defined]

        self.request_cls = competitors_pb2.RecordCompetitorCheckRequest
        self.response_cls = competitors_pb2.RecordCompetitorCheckResponse
        self.first_slot = worker * slots

    async def setup(self, slot: int, channel: Any, metadata: tuple | None) -> Any:
        return {"id": self.params["record_ids"][self.first_slot + slot], "n": 0}

    def request(self, state: Any) -> Any:
        state = state or {"id": self.params["record_ids"][-1], "n": 0}  # a captured reply
        state["n"] += 1
        error = "fetch timed out" if state["n"] % 10 == 0 else ""
        return self.request_cls(competitor_id=state["id"], error=error)


CLIENTS: dict[str, type[Client]] = {
    "get": Get,
    "get_user": GetAsUser,
    "list_first": ListFirst,
    "list_deep": ListDeep,
    "search_common": SearchCommon,
    "search_rare": SearchRare,
    "search_phrase": SearchPhrase,
    "create": Create,
    "update": Update,
    "batch": Batch,
    "usage": Usage,
    "usage_log": UsageLog,
    "auth": Auth,
    "auth_flood": AuthFlood,  # bench/flood.py (not in CATALOG)
    "current_user": CurrentUser,  # bench/flood.py (not in CATALOG)
    "claim": Claim,
    "record": Record,
}

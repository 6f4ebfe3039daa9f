"""Typed declarative models; importing this package registers every table on Base.metadata."""

from storage.models.articles import Article, ArticleRevision
from storage.models.audit import AuditEvent
from storage.models.base import Base
from storage.models.competitors import Competitor, CompetitorArticle
from storage.models.pipelines import Pipeline
from storage.models.tags import ArticleTagCount
from storage.models.throttles import LoginThrottle
from storage.models.usage import UsageEvent, UsageLimit, UsageMonth, UsageRequestId
from storage.models.user_settings import UserSecret, UserSettings
from storage.models.users import AccessToken, ApiKey, User

__all__ = [
    "AccessToken",
    "ApiKey",
    "Article",
    "ArticleRevision",
    "ArticleTagCount",
    "AuditEvent",
    "Base",
    "Competitor",
    "CompetitorArticle",
    "LoginThrottle",
    "Pipeline",
    "UsageEvent",
    "UsageLimit",
    "UsageMonth",
    "UsageRequestId",
    "User",
    "UserSecret",
    "UserSettings",
]

"""Typed declarative models; importing this package registers every table on Base.metadata."""

from storage.models.audit import AuditEvent
from storage.models.base import Base
from storage.models.competitors import Competitor, CompetitorArticle
from storage.models.users import AccessToken, ApiKey, User

__all__ = [
    "AccessToken",
    "ApiKey",
    "AuditEvent",
    "Base",
    "Competitor",
    "CompetitorArticle",
    "User",
]

"""Who is acting: the principal resolved by authentication, used for scope and audit."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from storage.errors import PermissionDenied


class ActorKind(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"
    SERVICE = "service"
    ANONYMOUS = "anonymous"
    SYSTEM = "system"  # the CLI (create-admin, retention jobs)


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    user_id: uuid.UUID | None = None
    name: str = ""

    @property
    def is_privileged(self) -> bool:
        """Admins, services and the system may act for any user."""
        return self.kind in (ActorKind.ADMIN, ActorKind.SERVICE, ActorKind.SYSTEM)

    def owner_scope(self) -> uuid.UUID | None:
        """The only user whose rows this actor may touch; None means any user."""
        if self.is_privileged:
            return None
        if self.user_id is None:  # anonymous: never "any user"
            raise PermissionDenied("this call needs credentials")
        return self.user_id


ANONYMOUS = Actor(ActorKind.ANONYMOUS)
SYSTEM = Actor(ActorKind.SYSTEM, name="cli")


@dataclass(frozen=True, slots=True)
class Caller:
    """One call's identity and time budget, handed to every unit of work."""

    actor: Actor
    request_id: str = ""
    deadline: float | None = None  # time.monotonic() value; None means no deadline
    # The consistency token the client sent (a WAL position, storage/replicas.py): a replica
    # serves its reads only once it has replayed this far.
    read_after: int | None = None

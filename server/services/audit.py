"""UsersService.ListAuditEvents: request filters and the AuditEvent message."""

from __future__ import annotations

from typing import Any

from blogstore.v1 import common_pb2, users_pb2
from google.protobuf import struct_pb2

from server.protoconv import datetime_or_none, timestamp
from server.validation import Violations, optional_uuid, owner_id, text_field
from storage.actors import Actor, ActorKind
from storage.models import AuditEvent
from storage.repositories.audit import AuditFilters

ACTOR_KIND_TO_PROTO = {
    ActorKind.USER.value: common_pb2.PRINCIPAL_KIND_USER,
    ActorKind.ADMIN.value: common_pb2.PRINCIPAL_KIND_ADMIN,
    ActorKind.SERVICE.value: common_pb2.PRINCIPAL_KIND_SERVICE,
    ActorKind.ANONYMOUS.value: common_pb2.PRINCIPAL_KIND_ANONYMOUS,
    ActorKind.SYSTEM.value: common_pb2.PRINCIPAL_KIND_SYSTEM,
}


def audit_filters(request: Any, actor: Actor) -> AuditFilters:
    v = Violations()
    resource_type = text_field(v, "resource_type", request.resource_type, max_length=50,
                               required=False)  # fmt: skip
    resource_id = text_field(v, "resource_id", request.resource_id, max_length=100,
                             required=False)  # fmt: skip
    action = text_field(v, "action", request.action, max_length=100, required=False)
    v.check(not resource_id or bool(resource_type), "resource_type", "is required with resource_id")
    actor_id = v.collect(optional_uuid, "actor_id", request.actor_id)
    v.raise_if_any()
    return AuditFilters(
        # A user naming another user gets NOT_FOUND; left empty, the scope is applied by the
        # repository (the user's own events and those about its resources).
        user_id=owner_id("user_id", request.user_id, actor) if request.user_id else None,
        actor_id=actor_id,
        resource_type=resource_type or None,
        resource_id=resource_id or None,
        action=action or None,
        start_time=datetime_or_none(request, "start_time"),
        end_time=datetime_or_none(request, "end_time"),
    )


def audit_event_to_proto(event: AuditEvent) -> users_pb2.AuditEvent:
    details = struct_pb2.Struct()
    details.update(event.details)
    return users_pb2.AuditEvent(
        id=str(event.id),
        create_time=timestamp(event.create_time),
        actor_kind=ACTOR_KIND_TO_PROTO.get(event.actor_kind, common_pb2.PRINCIPAL_KIND_UNSPECIFIED),
        actor_id=str(event.actor_id or ""),
        actor_name=event.actor_name,
        action=event.action,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        user_id=str(event.user_id or ""),
        request_id=event.request_id,
        details=details,
    )

"""Request validation shared by servicers: every failure becomes INVALID_ARGUMENT + BadRequest."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from storage.actors import Actor
from storage.errors import InvalidArgument, NotFound
from storage.rules import Violations

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def parse_uuid(field: str, value: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument({field: "is required"})
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument({field: "must be a UUID"}) from None


def optional_uuid(field: str, value: str) -> uuid.UUID | None:
    return parse_uuid(field, value) if value else None


def owner_id(field: str, value: str, actor: Actor) -> uuid.UUID:
    """A request's user_id; empty means the calling user (services must name one).

    A user principal naming anyone else gets NOT_FOUND here, before any query runs.
    """
    if value:
        user_id = parse_uuid(field, value)
        scope = actor.owner_scope()
        if scope is not None and scope != user_id:
            raise NotFound("user", user_id)
        return user_id
    if actor.user_id is None:
        raise InvalidArgument({field: "is required for service principals"})
    return actor.user_id


def list_owner(field: str, value: str, actor: Actor) -> uuid.UUID | None:
    """A List/Search user_id filter: the named user (scope-checked by owner_id), else the
    caller's own rows for a user principal, or every user's (None) for admins and services."""
    return owner_id(field, value, actor) if value else actor.owner_scope()


def page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument({"page_size": "must not be negative"})
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def mask_paths(mask: FieldMask, *, mutable: Iterable[str], output_only: Iterable[str]) -> set[str]:
    """The update mask's paths; output-only, unknown or missing paths are INVALID_ARGUMENT."""
    paths = set(mask.paths)
    if not paths:
        raise InvalidArgument({"update_mask": "is required"})
    violations = Violations()
    mutable, output_only = set(mutable), set(output_only)
    for path in sorted(paths):
        if path in output_only:
            violations.add("update_mask", f"{path} is output only")
        elif path not in mutable:
            violations.add("update_mask", f"{path} is not a field that can be updated")
    violations.raise_if_any()
    return paths


def text_field(
    violations: Violations, field: str, value: str, *, max_length: int, required: bool = True
) -> str:
    value = value.strip()
    if required and not value:
        violations.add(field, "is required")
    elif len(value) > max_length:
        violations.add(field, f"must be at most {max_length} characters")
    return value


def reject_nul_characters(request: object) -> None:
    """PostgreSQL text cannot hold U+0000: refuse it up front, naming the field."""
    if isinstance(request, Message) and (path := _nul_path(request, "")) is not None:
        raise InvalidArgument({path: "must not contain NUL (U+0000) characters"})


def _nul_path(message: Message, prefix: str) -> str | None:
    """The path of the first string (or map key) in `message` holding U+0000, if any."""
    for field, value in message.ListFields():
        name = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            items: Iterable[tuple[str, Any]] = (
                (f"{name}[{key!r}]", item) for key, item in value.items()
            )
            if any(isinstance(key, str) and "\x00" in key for key in value):
                return name
        elif field.is_repeated:
            items = ((f"{name}[{i}]", item) for i, item in enumerate(value))
        else:
            items = ((name, value),)
        for path, item in items:
            if isinstance(item, str) and "\x00" in item:
                return path
            if isinstance(item, Message) and (found := _nul_path(item, path + ".")) is not None:
                return found
    return None

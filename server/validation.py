"""Request validation shared by servicers: every failure becomes INVALID_ARGUMENT + BadRequest."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import ListValue, Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp

from storage.actors import Actor
from storage.errors import InvalidArgument, NotFound
from storage.rules import Violations

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_STRUCT_DEPTH = 20  # objects and lists inside one another in a Struct (README); protobuf
# itself refuses about 30 (its 100 message levels), which reads as "could not be decoded"
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z, the Timestamp type's range
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
NUL_MESSAGE = "must not contain NUL (U+0000) characters"
_TIMESTAMP = Timestamp.DESCRIPTOR
_VALUE, _STRUCT = Value.DESCRIPTOR, Struct.DESCRIPTOR
_JSON_TYPES = frozenset({_VALUE, _STRUCT, ListValue.DESCRIPTOR})


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


def check_request(request: object) -> None:
    """What no servicer accepts, refused up front naming the field (one walk per request):
    U+0000 in a string (PostgreSQL text cannot hold it), a Timestamp outside
    0001-01-01..9999-12-31 or with nanos outside 0..999,999,999, a NaN or infinite number in a
    Struct (JSON has none), a Struct nested deeper than MAX_STRUCT_DEPTH."""
    if isinstance(request, Message) and (found := _problem(request, "", 0)) is not None:
        raise InvalidArgument(dict((found,)))


def _problem(message: Message, path: str, depth: int) -> tuple[str, str] | None:
    """(field path, what is wrong) for the first thing check_request refuses in `message`."""
    descriptor = message.DESCRIPTOR
    if descriptor is _TIMESTAMP:
        return _timestamp_problem(message, path)  # pyright: ignore[reportArgumentType]  # by its descriptor
    if descriptor in _JSON_TYPES:
        return _json_problem(message, path, depth)
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if any(isinstance(key, str) and "\x00" in key for key in value):
                return name, NUL_MESSAGE
            items: Iterable[tuple[str, Any]] = (
                (f"{name}[{key!r}]", item) for key, item in value.items()
            )
        elif field.is_repeated:
            items = ((f"{name}[{i}]", item) for i, item in enumerate(value))
        else:
            items = ((name, value),)
        for item_path, item in items:
            if isinstance(item, str):
                if "\x00" in item:
                    return item_path, NUL_MESSAGE
            elif isinstance(item, Message) and (found := _problem(item, item_path, depth)):
                return found
    return None


def _timestamp_problem(value: Timestamp, path: str) -> tuple[str, str] | None:
    if not MIN_TIMESTAMP_SECONDS <= value.seconds <= MAX_TIMESTAMP_SECONDS:
        return path, "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
    if not 0 <= value.nanos <= 999_999_999:
        return path, "must have nanos between 0 and 999,999,999"
    return None


def _json_problem(message: Message, path: str, depth: int) -> tuple[str, str] | None:
    """A Struct, ListValue or Value: finite numbers, nesting at most MAX_STRUCT_DEPTH."""
    if message.DESCRIPTOR is _VALUE:
        kind = message.WhichOneof("kind")  # type: ignore[attr-defined]
        if kind == "number_value":
            if not math.isfinite(message.number_value):  # type: ignore[attr-defined]
                return path, "must be a finite number (JSON has no NaN or Infinity)"
            return None
        if kind not in ("struct_value", "list_value"):
            return None
        return _json_problem(getattr(message, kind), path, depth)
    depth += 1
    if depth > MAX_STRUCT_DEPTH:
        return path, f"must not nest objects and lists more than {MAX_STRUCT_DEPTH} deep"
    if message.DESCRIPTOR is _STRUCT:
        fields = message.fields  # type: ignore[attr-defined]
        if any("\x00" in key for key in fields):
            return path, NUL_MESSAGE
        items: Iterable[tuple[str, Any]] = ((f"{path}.{k}", v) for k, v in fields.items())
    else:
        items = ((f"{path}[{i}]", v) for i, v in enumerate(message.values))  # type: ignore[attr-defined]
    for item_path, value in items:
        if (found := _json_problem(value, item_path, depth)) is not None:
            return found
    return None

"""Every method of the five blogstore services, from their descriptors, for the input tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from blogstore.v1 import articles_pb2, competitors_pb2, pipelines_pb2, usage_pb2, users_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor

MODULES = (users_pb2, articles_pb2, pipelines_pb2, usage_pb2, competitors_pb2)
WELL_KNOWN = {"google.protobuf.Timestamp", "google.protobuf.Struct", "google.protobuf.FieldMask"}


@dataclass(frozen=True)
class Method:
    descriptor: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"

    @property
    def request_class(self) -> type:
        return message_factory.GetMessageClass(self.descriptor.input_type)

    @property
    def response_class(self) -> type:
        return message_factory.GetMessageClass(self.descriptor.output_type)

    def callable(self, channel: grpc.Channel) -> Callable[..., Any]:
        """The method as a client calls it: unary or server-streaming (read to its end)."""
        args = (self.path, self.request_class.SerializeToString, self.response_class.FromString)
        if self.descriptor.server_streaming:
            stream = channel.unary_stream(*args)
            return lambda request, **kw: list(stream(request, **kw))
        return channel.unary_unary(*args)

    def raw(self, channel: grpc.Channel) -> Callable[..., Any]:
        """The method taking undecoded bytes."""
        if self.descriptor.server_streaming:
            stream = channel.unary_stream(self.path)
            return lambda body, **kw: list(stream(body, **kw))
        return channel.unary_unary(self.path)

    def __str__(self) -> str:
        return self.path.rsplit(".", 1)[1]


def all_methods() -> list[Method]:
    return [
        Method(method)
        for module in MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


def fields_of_type(
    descriptor: Descriptor, full_name: str, path: str = "", seen: frozenset = frozenset()
) -> Iterator[tuple[str, bool]]:
    """(path, repeated somewhere on the way) of every field of type `full_name`."""
    for field in descriptor.fields:
        kind = field.message_type
        if kind is None or kind.GetOptions().map_entry:
            continue
        name = f"{path}.{field.name}" if path else field.name
        if kind.full_name == full_name:
            yield name, field.is_repeated
        elif kind.full_name not in WELL_KNOWN and kind.full_name not in seen:
            for inner, repeated in fields_of_type(kind, full_name, name, seen | {kind.full_name}):
                yield inner, repeated or field.is_repeated


def set_at(request: Any, path: str) -> tuple[Any, str]:
    """The message at `path` inside `request` (one item added to repeated fields on the
    way), and the path as the server names it (`articles[0].publish_time`)."""
    target, named = request, []
    for part in path.split("."):
        field = target.DESCRIPTOR.fields_by_name[part]
        if field.is_repeated:
            target = getattr(target, part).add()
            named.append(f"{part}[0]")
        else:
            target = getattr(target, part)
            named.append(part)
    return target, ".".join(named)

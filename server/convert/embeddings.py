"""Embeddings from protobuf: vector checks, SetEmbeddings items, what write responses echo."""

from __future__ import annotations

import math

from blogstore.v1 import articles_pb2, embeddings_pb2

from server.validation import Violations, parse_uuid
from storage.embeddings import MAX_MODEL_CHARS
from storage.repositories.embeddings import Target

MAX_ITEMS = 1000
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
# Below this squared length pgvector's float32 sums underflow to 0: no direction to compare.
_MIN_SQUARED_NORM = 1e-30

# (model, values): an embedding to store; None: remove it.
Value = tuple[str, list[float]]


def embedding_value(
    v: Violations, prefix: str, message: embeddings_pb2.Embedding, dimensions: int, *,
    required: bool = False,
) -> Value | None:  # fmt: skip
    """The embedding's (model, values), or None when it is empty (both fields unset).

    Violations name `<prefix>model` and `<prefix>values`: a wrong length, NaN or infinity,
    and a zero vector (it has no direction: its cosine distance is undefined).
    """
    model = message.model.strip()
    values = list(message.values)
    if not model and not values and not required:
        return None
    if not model:
        v.add(prefix + "model", "is required")
    elif len(model) > MAX_MODEL_CHARS:
        v.add(prefix + "model", f"must be at most {MAX_MODEL_CHARS} characters")
    if len(values) != dimensions:
        v.add(
            prefix + "values",
            f"must hold {dimensions} values (BLOGSTORE_EMBEDDING_DIMENSIONS), not {len(values)}",
        )
    elif not all(math.isfinite(x) for x in values):
        v.add(prefix + "values", "must be finite numbers (no NaN or infinity)")
    elif math.fsum(x * x for x in values) < _MIN_SQUARED_NORM:
        v.add(prefix + "values", "must not be a zero vector (it has no direction)")
    return model, values


def set_items(
    request: articles_pb2.SetEmbeddingsRequest, dimensions: int
) -> dict[Target, Value | None]:
    """SetEmbeddings' items by target, checked; INVALID_ARGUMENT names `items[i].<field>`."""
    v = Violations()
    if not 1 <= len(request.items) <= MAX_ITEMS:
        v.add("items", f"must hold 1 to {MAX_ITEMS} items")
    items: dict[Target, Value | None] = {}
    first: dict[Target, int] = {}
    for i, item in enumerate(request.items):
        prefix = f"items[{i}]."
        kind = item.WhichOneof("target")
        if kind is None:
            v.add(prefix + "article_id", "give an article_id or a competitor_article_id")
            continue
        target_id = v.collect(parse_uuid, prefix + kind, getattr(item, kind))
        value = embedding_value(v, prefix + "embedding.", item.embedding, dimensions)
        if target_id is None:
            continue
        target = Target(target_id, competitor=kind == "competitor_article_id")
        if target in first:
            v.add(prefix + kind, f"repeats items[{first[target]}].{kind}")
        first.setdefault(target, i)
        items[target] = value
    v.raise_if_any()
    return items


def echo(value: Value | None) -> embeddings_pb2.Embedding | None:
    """What a write's response shows of a stored embedding: the model and the dimension."""
    if value is None:
        return None
    return embeddings_pb2.Embedding(model=value[0], dimensions=len(value[1]))

"""JSON-schema helpers the LLM layer needs, free of Spark: a schema from a dict or pydantic model,
and a copy of a schema bounded so that its answers fit a completion budget.

``apwa_spark.plan.schema`` maps these schemas to Spark types and re-exports :class:`SchemaError`
and :func:`json_schema_of`.
"""

from __future__ import annotations

import json
from typing import Any


class SchemaError(ValueError):
    """An output schema apwa-spark cannot use (not a schema, nested too deep, or with no Spark type); says
    which part and why."""


def json_schema_of(schema: Any) -> dict[str, Any]:
    """A JSON schema dict from a dict or a pydantic model class."""
    if isinstance(schema, dict):
        return schema
    if hasattr(schema, "model_json_schema"):
        return schema.model_json_schema()
    raise SchemaError(f"output schema must be a JSON schema dict or a pydantic model, got {type(schema).__name__}")


#: ``maxItems`` given to an array without one in a token-bounded schema (:func:`bounded_by_tokens`).
BOUNDED_ARRAY_ITEMS = 8
#: The shortest ``maxLength`` :func:`bounded_by_tokens` gives a string, characters.
MIN_STRING_CHARS = 8
_MAX_DEPTH = 32


def bounded_by_tokens(schema: Any, max_tokens: int) -> dict[str, Any]:
    """A copy of ``schema`` whose answers fit in ``max_tokens`` completion tokens.

    Every string without ``maxLength``, ``enum`` or ``const`` gets ``maxLength`` = an
    equal share of the budget left after the fixed parts, and every array without ``maxItems`` gets
    ``maxItems`` = :data:`BOUNDED_ARRAY_ITEMS`. The share counts one token per character at worst (a
    generated token is never empty); fixed parts are ``len(key) + 4`` characters per property, 2 per
    string's quotes, 4 per null, 8 per number or boolean, the longest value of an enum. Whitespace that a grammar
    lets the model pad with is not counted, and no share is below :data:`MIN_STRING_CHARS`, so for a
    budget smaller than the fixed parts the bound is best effort.

    Used for the repair of an answer that ``max_tokens`` cut inside its JSON (a base model looping in a
    string): a grammar-constrained endpoint (llama.cpp ``json_schema``) must then close every string
    in time.

    Args:
        schema: a JSON schema dict or a pydantic model class.
        max_tokens: the completion cap, tokens.

    Returns:
        the bounded JSON schema (a new dict; ``schema`` is not changed). An answer valid under it is
        valid under ``schema``.

    Raises:
        SchemaError: ``schema`` is not a dict or pydantic model, or nests deeper than 32 levels.
    """
    bounded = json.loads(json.dumps(json_schema_of(schema)))
    fixed, free = _cost(bounded, bounded.get("$defs", {}), 0)
    share = max(MIN_STRING_CHARS, (max_tokens - fixed) // max(free, 1))
    _bound(bounded, share)
    return bounded


def _cost(node: Any, defs: dict[str, Any], depth: int) -> tuple[int, int]:
    """(fixed characters, unbounded strings) of the longest answer ``node`` allows."""
    if depth > _MAX_DEPTH:
        raise SchemaError(f"schema nests deeper than {_MAX_DEPTH} levels")
    if not isinstance(node, dict):
        return 8, 0
    if "$ref" in node:
        return _cost(defs.get(node["$ref"].rsplit("/", 1)[-1], {}), defs, depth + 1)
    if "enum" in node or "const" in node:
        return max(len(json.dumps(v)) for v in node.get("enum", [node.get("const")])), 0
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        costs = [_cost(o, defs, depth + 1) for o in options]
        return max(c[0] for c in costs), max(c[1] for c in costs)
    kinds = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
    if "object" in kinds:
        parts = [_cost(v, defs, depth + 1) for v in (node.get("properties") or {}).values()]
        keys = sum(len(k) + 4 for k in node.get("properties") or {})
        return 2 + keys + sum(p[0] for p in parts), sum(p[1] for p in parts)
    if "array" in kinds:
        items = node.get("maxItems", BOUNDED_ARRAY_ITEMS)
        fixed, free = _cost(node.get("items", {}), defs, depth + 1)
        return 2 + items * (fixed + 1), items * free
    if "string" in kinds:
        return (2 + node["maxLength"], 0) if "maxLength" in node else (2, 1)
    return (4, 0) if kinds == ["null"] else (8, 0)


def _bound(node: Any, share: int) -> None:
    """Give every unbounded string ``maxLength`` ``share`` and every unbounded array ``maxItems`` (in place)."""
    if isinstance(node, list):
        for item in node:
            _bound(item, share)
        return
    if not isinstance(node, dict):
        return
    kinds = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
    if "string" in kinds and not {"maxLength", "enum", "const"} & node.keys():
        node["maxLength"] = share
    if "array" in kinds and "maxItems" not in node:
        node["maxItems"] = BOUNDED_ARRAY_ITEMS
    for value in node.values():
        _bound(value, share)

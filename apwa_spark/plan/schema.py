"""Output schemas: JSON schema (or a pydantic model) ──► Spark ``StructType``.

Mapping: ``string`` ──► StringType, ``integer`` ──► LongType, ``number`` ──► DoubleType,
``boolean`` ──► BooleanType, ``object`` with ``properties`` ──► StructType (nested),
``array`` with ``items`` ──► ArrayType. ``["T", "null"]`` and ``anyOf`` with ``null`` (what pydantic
writes for ``Optional``) become nullable T. ``$ref`` to ``$defs`` is resolved (pydantic nested models).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pyspark.sql.types import (ArrayType, BooleanType, DataType, DoubleType, LongType, StringType, StructField,
                               StructType)

SCALARS: dict[str, DataType] = {"string": StringType(), "integer": LongType(), "number": DoubleType(),
                                "boolean": BooleanType()}


class SchemaError(ValueError):
    """An output schema apwa-spark cannot map to a Spark type; says which part and why."""


def json_schema_of(schema: Any) -> dict[str, Any]:
    """A JSON schema dict from a dict or a pydantic model class."""
    if isinstance(schema, dict):
        return schema
    if hasattr(schema, "model_json_schema"):
        return schema.model_json_schema()
    raise SchemaError(f"output schema must be a JSON schema dict or a pydantic model, got {type(schema).__name__}")


def json_schema_to_spark(schema: Any) -> StructType:
    """The Spark struct for a JSON schema of an object.

    Raises:
        SchemaError: not an object schema, or a part without a mappable type.
    """
    schema = json_schema_of(schema)
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict) or not schema["properties"]:
        raise SchemaError(f"output schema must be an object with properties, got {str(schema)[:200]}")
    result = _convert(schema, schema.get("$defs", {}), "$")
    assert isinstance(result, StructType)
    return result


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str) -> DataType:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name not in defs:
            raise SchemaError(f"{path}: unresolved $ref {node['$ref']!r}")
        return _convert(defs[name], defs, path)
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        non_null = [o for o in options if o.get("type") != "null"]
        if len(non_null) != 1:
            raise SchemaError(f"{path}: only a single type or an optional type is supported, got {options}")
        return _convert(non_null[0], defs, path)
    kind = node.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        if len(non_null) != 1:
            raise SchemaError(f"{path}: union types {kind} are not supported")
        kind = non_null[0]
    if kind in SCALARS:
        return SCALARS[kind]
    if kind == "array":
        if not isinstance(node.get("items"), dict):
            raise SchemaError(f"{path}: an array needs an 'items' schema")
        return ArrayType(_convert(node["items"], defs, path + "[]"))
    if kind == "object":
        props = node.get("properties")
        if not isinstance(props, dict) or not props:
            raise SchemaError(f"{path}: an object needs 'properties'")
        return StructType([StructField(k, _convert(v, defs, f"{path}.{k}"), True) for k, v in props.items()])
    raise SchemaError(f"{path}: unsupported or missing type {kind!r} (use string, integer, number, boolean, object, array)")


def coerce(value: Any, dtype: DataType) -> Any:
    """A parsed JSON value shaped to ``dtype`` for Arrow (missing fields ──► None, wrong types ──► None)."""
    if value is None:
        return None
    if isinstance(dtype, StructType):
        if not isinstance(value, dict):
            return None
        return {f.name: coerce(value.get(f.name), f.dataType) for f in dtype.fields}
    if isinstance(dtype, ArrayType):
        return [coerce(v, dtype.elementType) for v in value] if isinstance(value, list) else None
    if isinstance(dtype, BooleanType):
        return value if isinstance(value, bool) else None
    if isinstance(dtype, LongType):
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if isinstance(dtype, DoubleType):
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return value if isinstance(value, str) else str(value)


#: Spark DDL type names ──► JSON schema (``DECIMAL``, ``DATE`` and ``TIMESTAMP`` come back as number / ISO string).
DDL_TYPES: dict[str, dict[str, str]] = {
    **{t: {"type": "string"} for t in ("STRING", "VARCHAR", "CHAR", "DATE", "TIMESTAMP", "TIMESTAMP_NTZ")},
    **{t: {"type": "integer"} for t in ("INT", "INTEGER", "BIGINT", "LONG", "SMALLINT", "SHORT", "TINYINT", "BYTE")},
    **{t: {"type": "number"} for t in ("DOUBLE", "FLOAT", "REAL", "DECIMAL", "DEC", "NUMERIC")},
    **{t: {"type": "boolean"} for t in ("BOOLEAN", "BOOL")},
}
_DDL_TOKEN = re.compile(r"\s*(`[^`]+`|[A-Za-z_][A-Za-z0-9_]*|\d+|'[^']*'|[<>(),:])")


def schema_from_string(text: str) -> dict[str, Any]:
    """A JSON schema (object) from a Spark DDL string (``'name STRING, tags ARRAY<STRING>,
    author STRUCT<name: STRING, year: INT>'``) or a JSON schema document (text starting with ``{``).

    Raises:
        SchemaError: the text is neither; the message points at the offending part.
    """
    text = (text or "").strip()
    if text.startswith("{"):
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"schema is not valid JSON: {exc}") from None
        json_schema_to_spark(schema)
        return schema
    tokens = _ddl_tokens(text)
    schema, rest = _ddl_fields(tokens, end=None)
    if rest:
        raise SchemaError(f"malformed schema {text!r}: unexpected {' '.join(rest[:3])!r}")
    return schema


def _ddl_tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(text.rstrip()):
        match = _DDL_TOKEN.match(text, pos)
        if not match:
            raise SchemaError(f"malformed schema {text!r}: cannot read {text[pos:pos + 12]!r}")
        tokens.append(match.group(1))
        pos = match.end()
    if not tokens:
        raise SchemaError("schema is empty; give Spark DDL like 'name STRING, year INT' or a JSON schema")
    return tokens


def _ddl_fields(tokens: list[str], end: str | None) -> tuple[dict[str, Any], list[str]]:
    properties: dict[str, Any] = {}
    while tokens and tokens[0] != end:
        name = tokens.pop(0).strip("`")
        if not re.match(r"^[^<>(),:']+$", name) or not tokens:
            raise SchemaError(f"malformed schema: expected 'name TYPE', got {name!r}")
        if tokens[0] == ":":
            tokens.pop(0)
        properties[name], tokens = _ddl_type(tokens)
        while tokens and tokens[0].upper() in ("NOT", "NULL", "COMMENT") or (tokens and tokens[0].startswith("'")):
            tokens.pop(0)
        if tokens and tokens[0] == ",":
            tokens.pop(0)
    if not properties:
        raise SchemaError("malformed schema: no fields")
    if end is not None:
        if not tokens:
            raise SchemaError(f"malformed schema: missing {end!r}")
        tokens = tokens[1:]
    return {"type": "object", "properties": properties}, tokens


def _ddl_type(tokens: list[str]) -> tuple[dict[str, Any], list[str]]:
    if not tokens:
        raise SchemaError("malformed schema: a type is missing")
    name = tokens.pop(0).upper()
    if name == "ARRAY" and tokens[:1] == ["<"]:
        items, tokens = _ddl_type(tokens[1:])
        if tokens[:1] != [">"]:
            raise SchemaError("malformed schema: ARRAY<...> is not closed")
        return {"type": "array", "items": items}, tokens[1:]
    if name == "STRUCT" and tokens[:1] == ["<"]:
        return _ddl_fields(tokens[1:], end=">")
    if name not in DDL_TYPES:
        raise SchemaError(f"malformed schema: unsupported type {name!r} (use {', '.join(sorted(DDL_TYPES))}, ARRAY<T>, STRUCT<...>)")
    if tokens[:1] == ["("]:  # VARCHAR(10), DECIMAL(10, 2)
        close = tokens.index(")") if ")" in tokens else None
        if close is None:
            raise SchemaError(f"malformed schema: {name}( is not closed")
        tokens = tokens[close + 1:]
    return dict(DDL_TYPES[name]), tokens


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

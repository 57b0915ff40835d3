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

from apwa_spark.llm.json_schema import SchemaError, json_schema_of  # noqa: F401 (re-exported)

SCALARS: dict[str, DataType] = {"string": StringType(), "integer": LongType(), "number": DoubleType(),
                                "boolean": BooleanType()}


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

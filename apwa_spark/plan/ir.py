"""The plan IR: a small, typed, versioned program of steps (APWA's subtask templates over a table).

A :class:`Plan` is an ordered list of steps; each step reads columns of the table as it stands
after the steps before it and adds (or, for ``filter`` and ``chunk``, selects or explodes) rows and
columns. Plans serialize to JSON and YAML and carry ``version``; a plan from a newer IR version is
rejected with a clear error.

Templates name columns with placeholders, ``{text}``. :meth:`Plan.check` validates every step
against the input schema before anything runs: an unknown placeholder or column is an error that
names it and lists the columns.
"""

from __future__ import annotations

import enum
import hashlib
import json
import string
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

IR_VERSION = 1


class PlanError(ValueError):
    """A plan that cannot run: the message says what is wrong and what was expected."""


class Cardinality(str, enum.Enum):
    """Rows out per row in (DocETL's operator cardinalities); a promise the tests check."""

    ONE_TO_ONE = "one-to-one"
    SELECTION = "selection"
    ONE_TO_MANY = "one-to-many"
    MANY_TO_ONE = "many-to-one"


def placeholders(template: str) -> list[str]:
    """Column names a template's ``{placeholders}`` refer to, in order of first use.

    Raises:
        PlanError: a malformed template (unbalanced braces, positional ``{}``).
    """
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise PlanError(f"malformed template {template!r}: {exc}") from None
    if "" in names:
        raise PlanError(f"template {template!r} has an empty placeholder {{}}; name a column, e.g. {{text}}")
    return list(dict.fromkeys(names))


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="step name, for provenance; defaults to <kind><index>")

    def reads(self) -> list[str]:
        """Columns the step reads."""
        return []

    def writes(self) -> list[str]:
        """Columns the step adds."""
        return []


class _TemplateStep(_Step):
    template: str = Field(..., description="subtask template with {column} placeholders")
    max_tokens: int = Field(128, ge=1, le=8192, description="completion cap per row, tokens")

    @field_validator("template")
    @classmethod
    def _has_placeholder(cls, value: str) -> str:
        if not placeholders(value):
            raise ValueError(f"template {value!r} names no column; add a placeholder such as {{text}}")
        return value

    def reads(self) -> list[str]:
        return placeholders(self.template)


class MapStep(_TemplateStep):
    """Template ──► a new free-text column (one-to-one)."""

    kind: Literal["map"] = "map"
    output: str = Field(..., description="new column")
    cardinality: ClassVar[Cardinality] = Cardinality.ONE_TO_ONE

    def writes(self) -> list[str]:
        return [self.output]


class FilterStep(_TemplateStep):
    """Predicate template ──► keep the rows the executor agent answers true for (selection)."""

    kind: Literal["filter"] = "filter"
    max_tokens: int = 4
    cardinality: ClassVar[Cardinality] = Cardinality.SELECTION


class ClassifyStep(_TemplateStep):
    """Template + closed label set ──► a label column, always one of ``labels`` (one-to-one).

    ``batch_rows > 1`` compiles to ``mapInPandas``: one executor-agent call labels up to
    ``batch_rows`` rows of a partition at once (a numbered list in, a JSON array of labels out).
    """

    kind: Literal["classify"] = "classify"
    labels: list[str] = Field(..., min_length=2, description="the allowed labels")
    output: str = "label"
    max_tokens: int = 16
    batch_rows: int = Field(1, ge=1, le=64, description="rows per LLM call; > 1 runs per partition (mapInPandas)")
    cardinality: ClassVar[Cardinality] = Cardinality.ONE_TO_ONE

    @field_validator("labels")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or any(not v.strip() for v in value):
            raise ValueError(f"labels must be distinct and non-empty, got {value}")
        return value

    def writes(self) -> list[str]:
        return [self.output]


class ExtractStep(_TemplateStep):
    """Template + JSON schema of an object ──► a typed struct column (one-to-one)."""

    kind: Literal["extract"] = "extract"
    output_schema: dict[str, Any] = Field(..., description="JSON schema of an object")
    output: str = "extracted"
    max_tokens: int = 256
    cardinality: ClassVar[Cardinality] = Cardinality.ONE_TO_ONE

    @field_validator("output_schema")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        from apwa_spark.plan.schema import json_schema_to_spark

        json_schema_to_spark(value)  # raises SchemaError with the reason
        return value

    def writes(self) -> list[str]:
        return [self.output]


#: the redact step's tools unless a plan names others: rule detectors, and name candidates for the model.
REDACT_TOOLS = ("pii_rules", "name_candidates")


class RedactStep(_Step):
    """Entity types ──► redacted text plus the spans found (one-to-one). Detector tools from the
    capability registry find structured entities; the model, when ``use_model``, finds names,
    choosing among the strings of a ``candidates`` tool (``name_candidates``) when one is listed."""

    kind: Literal["redact"] = "redact"
    column: str = "text"
    entities: list[str] = Field(default_factory=lambda: ["person", "email", "phone", "address", "id_number"])
    tools: list[str] = Field(default_factory=lambda: list(REDACT_TOOLS))
    use_model: bool = True
    output: str = "redacted"
    cardinality: ClassVar[Cardinality] = Cardinality.ONE_TO_ONE

    def reads(self) -> list[str]:
        return [self.column]

    def writes(self) -> list[str]:
        return [self.output, f"{self.output}_spans"]


class ChunkStep(_Step):
    """Split long text into ordered pieces, by size or at Markdown headings (one-to-many, explode)."""

    kind: Literal["chunk"] = "chunk"
    column: str = "text"
    max_chars: int = Field(4000, ge=16)
    by_headings: bool = False
    output: str = "chunk"
    cardinality: ClassVar[Cardinality] = Cardinality.ONE_TO_MANY

    def reads(self) -> list[str]:
        return [self.column]

    def writes(self) -> list[str]:
        return [self.output, f"{self.output}_index"]


class ReduceStep(_TemplateStep):
    """Group keys + template + token budget ──► one row per group, by multi-round hierarchical
    reduce over Delta tables (many-to-one). The template's placeholder names the text column."""

    kind: Literal["reduce"] = "reduce"
    group_by: list[str] = Field(default_factory=list, description="group keys; empty: the whole table")
    order_by: str | None = Field(None, description="document order of the children")
    token_budget: int = Field(1200, ge=64)
    output: str = "summary"
    cardinality: ClassVar[Cardinality] = Cardinality.MANY_TO_ONE

    def reads(self) -> list[str]:
        return placeholders(self.template) + self.group_by + ([self.order_by] if self.order_by else [])

    def writes(self) -> list[str]:
        return [self.output]


Step = Annotated[Union[MapStep, FilterStep, ClassifyStep, ExtractStep, RedactStep, ChunkStep, ReduceStep],
                 Field(discriminator="kind")]
STEP_KINDS = ("map", "filter", "classify", "extract", "redact", "chunk", "reduce")


class PlanProvenance(BaseModel):
    """How the planner arrived at a plan: which stage decided each choice.

    ``decided_by`` maps a choice (``kind``, ``step0.labels``, ``step0.column`` …) to ``model`` (the
    planner model chose it, grammar-constrained), ``model-repair`` (chosen in the repair round),
    ``default:<rule>`` (a deterministic default from the table metadata or the query) or
    ``rule:<name>`` (a rule-based fallback after the model's answer failed validation).
    """

    model_config = ConfigDict(extra="forbid")

    planner: str = "staged"
    model: str = ""
    action: str = Field("", description="the action word the model chose in the kind stage")
    decided_by: dict[str, str] = Field(default_factory=dict)
    llm_calls: int = 0


class Plan(BaseModel):
    """An ordered list of steps over one input table.

    Example (YAML)::

        version: 1
        steps:
          - kind: classify
            template: "Is this review positive or negative? {text}"
            labels: [positive, negative]
            output: sentiment
    """

    model_config = ConfigDict(extra="forbid")

    version: int = IR_VERSION
    query: str = ""
    steps: list[Step] = Field(..., min_length=1)
    provenance: PlanProvenance | None = Field(None, description="set by the planner; not part of plan_id")

    @field_validator("version")
    @classmethod
    def _supported(cls, value: int) -> int:
        if value > IR_VERSION:
            raise ValueError(f"plan IR version {value} is newer than this apwa-spark understands ({IR_VERSION}); upgrade apwa-spark")
        return value

    @property
    def plan_id(self) -> str:
        """sha256 (16 hex digits) of the plan's JSON, without ``provenance``."""
        return hashlib.sha256(self.model_dump_json(exclude={"provenance"}).encode()).hexdigest()[:16]

    def named_steps(self) -> list[tuple[str, Step]]:
        """(name, step) pairs; unnamed steps are called ``<kind><index>``."""
        return [(s.name or f"{s.kind}{i}", s) for i, s in enumerate(self.steps)]

    def check(self, columns: list[str], tools: set[str] | None = None) -> None:
        """Validate the plan against the input's columns (and the registry's tool names).

        Raises:
            PlanError: naming the step, the unknown column or tool, and what exists.
        """
        available = list(columns)
        for name, step in self.named_steps():
            missing = [c for c in step.reads() if c not in available]
            if missing:
                raise PlanError(f"step {name!r} ({step.kind}) names unknown column(s) {missing}; "
                                f"columns at that point: {available}")
            for tool in getattr(step, "tools", []):
                if tools is not None and tool not in tools:
                    raise PlanError(f"step {name!r} uses unknown tool {tool!r}; registered tools: {sorted(tools)}")
            if isinstance(step, ReduceStep):
                available = step.group_by + step.writes()
            else:
                available += [c for c in step.writes() if c not in available]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(self.model_dump_json()), sort_keys=False, allow_unicode=True)

    @classmethod
    def parse(cls, text: str) -> "Plan":
        """A plan from JSON or YAML text.

        Raises:
            PlanError: not a valid plan; the message lists what pydantic rejected.
        """
        try:
            data = yaml.safe_load(text)
            return cls.model_validate(data)
        except (yaml.YAMLError, ValidationError) as exc:
            raise PlanError(f"invalid plan: {exc}") from None

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The plan's JSON schema (the planner's response format)."""
        return TypeAdapter(cls).json_schema()

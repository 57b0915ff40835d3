"""The plan IR: a small, typed, versioned program of steps (APWA's subtask templates over a table).

A :class:`Plan` is an ordered list of steps; each step reads columns of the table as it stands
after the steps before it and adds (or, for ``filter`` and ``chunk``, selects or explodes) rows and
columns. Each step's config is the pydantic model of its kind, found in the step-kind registry
(:func:`apwa_spark.plan.step.step_kinds`: one module per kind in :mod:`apwa_spark.steps`). Plans
serialize to JSON and YAML and carry ``version``; a plan from a newer IR version is rejected with a
clear error.

Templates name columns with placeholders, ``{text}``. :meth:`Plan.check` validates every step
against the input schema before anything runs: an unknown placeholder or column is an error that
names it and lists the columns.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator

from apwa_spark.plan.step import Cardinality, PlanError, StepConfig, placeholders, step_kind, step_kinds

__all__ = ["IR_VERSION", "Cardinality", "Plan", "PlanError", "PlanProvenance", "placeholders"]

IR_VERSION = 1


class PlanProvenance(BaseModel):
    """How the planner arrived at a plan: which stage decided each choice.

    ``decided_by`` maps a choice per step (``step0.kind``, ``step0.labels``, ``step1.column`` …) to ``model`` (the
    planner model chose it, grammar-constrained), ``model-repair`` (chosen in the repair round),
    ``default:<rule>`` (a deterministic default from the table metadata or the query) or
    ``rule:<name>`` (a rule: a fallback after the model's answer failed validation, or a cheap
    step kind taking a clause the columns answer, ``rule:where-instead-of-filter``).
    """

    model_config = ConfigDict(extra="forbid")

    planner: str = Field("staged", description="staged (clause by clause) or whole (one call with the plan's schema)")
    model: str = ""
    clauses: list[str] = Field(default_factory=list, description="the query's clauses, one step planned for each (staged)")
    actions: list[str] = Field(default_factory=list, description="the action word the model chose per clause (staged)")
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
    steps: list[SerializeAsAny[StepConfig]] = Field(..., min_length=1)
    provenance: PlanProvenance | None = Field(None, description="set by the planner; not part of plan_id")

    @field_validator("steps", mode="before")
    @classmethod
    def _step_configs(cls, value: Any) -> Any:
        """Each step (a dict or a config) ──► the config model of its kind, from the registry."""
        if not isinstance(value, list):
            return value
        out = []
        for i, step in enumerate(value):
            if isinstance(step, StepConfig):
                out.append(step)
            elif isinstance(step, dict) and "kind" in step:
                out.append(step_kind(str(step["kind"])).config.model_validate(step))
            else:
                raise ValueError(f"step {i} needs a 'kind', one of: {', '.join(sorted(step_kinds()))}")
        return out

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

    def named_steps(self) -> list[tuple[str, StepConfig]]:
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
            available = step.columns_after(available)

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
        """The plan's JSON schema (the planner's response format): ``steps`` items are one of the
        registered kinds' configs (``$defs`` by class name)."""
        defs: dict[str, Any] = {}
        for kind in step_kinds().values():
            schema = kind.config.model_json_schema(ref_template="#/$defs/{model}")
            defs.update(schema.pop("$defs", {}))
            defs[kind.config.__name__] = schema
        steps = {"oneOf": [{"$ref": f"#/$defs/{k.config.__name__}"} for k in step_kinds().values()]}
        return {"$defs": defs, "type": "object", "additionalProperties": False, "required": ["steps"],
                "properties": {"version": {"type": "integer", "default": IR_VERSION}, "query": {"type": "string"},
                               "steps": {"type": "array", "items": steps, "minItems": 1}}}

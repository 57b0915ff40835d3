"""The step-kind contract and its registry: what one module of :mod:`apwa_spark.steps` provides.

A step kind is one module holding a :class:`StepKind`:

* ``config``: its pydantic model (a :class:`StepConfig` with a ``kind`` literal and a ``cardinality``);
* ``compile``: ``(df, name, step, run) ──► DataFrame``, lazy for per-row steps, materialized over
  Delta tables for reducing ones;
* ``estimate``: ``(step, InputStats) ──► Estimate``, what it would cost, spending nothing;
* ``planner``: a :class:`PlannerSpec`, the action words, few-shot examples, the narrowed JSON
  schema of the fields the planner model fills, and how a step is built from them (``None``: the
  planner never picks the kind; plans name it by hand).

The compiler, ``explain`` and the planner loop over :func:`step_kinds`: the built-in modules of
:mod:`apwa_spark.steps` (found by :mod:`pkgutil`, so adding a kind is adding one file) and those
registered under the entry-point group ``apwa_spark.steps``, as tools are::

    [project.entry-points."apwa_spark.steps"]
    my_step = "my_package.steps:MY_STEP"      # a StepKind
"""

from __future__ import annotations

import enum
import importlib
import pkgutil
import re
import string
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from apwa_spark.delta import TableStore
    from apwa_spark.incremental import Increment
    from apwa_spark.runs import CommitQueue, JobContext, TableStats

ENTRY_POINT_GROUP = "apwa_spark.steps"
#: characters per token for estimates only (runs count with the endpoint's tokenizer).
CHARS_PER_TOKEN = 3.0
BUILTIN_PACKAGE = "apwa_spark.steps"


class PlanError(ValueError):
    """A plan that cannot run: the message says what is wrong and what was expected."""


class Cardinality(str, enum.Enum):
    """Rows out per row in (DocETL's operator cardinalities); a promise the tests check."""

    ONE_TO_ONE = "one-to-one"
    SELECTION = "selection"
    ONE_TO_MANY = "one-to-many"
    MANY_TO_ONE = "many-to-one"
    SOURCE = "source"  # reads its own input; the rows before it are not used


def placeholders(template: str) -> list[str]:
    """Column names a template's ``{placeholders}`` refer to, in order of first use.

    A placeholder is a bare column name: format specs (``{text:>999}``), conversions (``{text!r}``)
    and attribute or index access (``{text.x}``, ``{text[0]}``) are rejected, since they would let a
    plan allocate huge strings or reach into objects instead of naming a column.

    Raises:
        PlanError: a malformed template (unbalanced braces, positional ``{}``) or a placeholder that
            is not a bare column name; the message names the placeholder.
    """
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        raise PlanError(f"malformed template {template!r}: {exc}") from None
    for name, spec, conversion in fields:
        if name == "":
            raise PlanError(f"template {template!r} has an empty placeholder {{}}; name a column, e.g. {{text}}")
        if spec or conversion or re.search(r"[.\[\]]", name):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise PlanError(f"template placeholder {shown} is not a bare column name: format specs, conversions and "
                            f"attribute or index access are not allowed; write {{{re.split(r'[.[]', name)[0]}}}")
    return list(dict.fromkeys(name for name, _, _ in fields))


class StepConfig(BaseModel):
    """A step's configuration (a subclass per kind sets ``kind: Literal[...]`` and ``cardinality``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="step name, for provenance; defaults to <kind><index>")
    materialize: bool = Field(False, description="write the step's output as the Delta table <name> of the run; later "
                                                 "steps read the rows that write computed (a local checkpoint), so they "
                                                 "do not compute it again")
    cardinality: ClassVar[Cardinality] = Cardinality.ONE_TO_ONE

    def reads(self) -> list[str]:
        """Columns the step reads."""
        return []

    def writes(self) -> list[str]:
        """Columns the step adds."""
        return []

    def drops(self) -> list[str]:
        """Columns the step removes."""
        return []

    def row_key(self) -> list[str]:
        """A source step's columns whose values name one of its rows (an incremental run's
        ``input_key``, :mod:`apwa_spark.incremental`); [] for other steps."""
        return []

    def columns_after(self, available: list[str]) -> list[str]:
        """The columns the next step sees, given the ``available`` ones before this step."""
        kept = [c for c in available if c not in self.drops()]
        return kept + [c for c in self.writes() if c not in kept]

    def text_output(self) -> str | None:
        """The text column this step leaves for the next step to work on (the planner's default text
        column after it); None: the text column stays what it was."""
        return None

    def key_outputs(self) -> dict[str, list[str]]:
        """Low-cardinality columns this step adds, which later steps may group or select rows by,
        with their known values (a classify step's labels); empty: none."""
        return {}


class PromptConfig(BaseModel):
    """The shared, row-independent part of a step's prompt (an :class:`apwa_spark.llm.prompts.Template`),
    for a step whose template is only the row's input: instruction, completion cue, the answer's
    prefix the cue already says, chat example turns; ``tidy`` collapses whitespace and drops repeated
    sentences from the answer (small base models loop until the token cap)."""

    model_config = ConfigDict(extra="forbid")

    instruction: str = Field(..., min_length=1)
    cue: str = "Answer:"
    answer_prefix: str = ""
    examples: list[tuple[str, str]] = Field(default_factory=list, description="chat style: (input, answer) turns")
    tidy: bool = False

    def template(self):
        from apwa_spark.llm.prompts import Template

        return Template(self.instruction, self.cue, self.answer_prefix, tuple(tuple(e) for e in self.examples))


class TemplateStepConfig(StepConfig):
    """A step whose executor agent expands a subtask template per row."""

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


class AgentStepConfig(TemplateStepConfig):
    """A template step whose executor agent may be equipped with tools from the capability registry."""

    tools: list[str] = Field(default_factory=list,
                             description="registry tools whose findings on each prompt are added to it (detector or "
                                         "candidates tools)")


@dataclass(frozen=True)
class RunContext:
    """What a compile function gets on the driver: the job (plain data, shipped into UDF closures),
    the run's table store (driver only: reducing and materialized steps write their tables there),
    ``writers`` (column ──► the step that wrote it, so a step finds the ``<step>_meta`` of its input)
    ``tables`` (what the run has written so far, in order; appended to by the steps), for a plan
    that ends in a reduce, its ``increment`` (:class:`apwa_spark.incremental.Increment`: what the
    run keeps of the output's last run), and ``commits``, where a re-run queues the commits of its
    tables (:class:`apwa_spark.runs.CommitQueue`)."""

    job: "JobContext"
    store: "TableStore | None" = None
    writers: dict[str, str] = field(default_factory=dict)
    tables: list["TableStats"] = field(default_factory=list)
    increment: "Increment | None" = None
    commits: "CommitQueue | None" = None

    def input_meta(self, column: str) -> str | None:
        """``<step>_meta`` of the step that wrote ``column``; None for an input column."""
        return f"{self.writers[column]}_meta" if column in self.writers else None


@dataclass(frozen=True)
class InputStats:
    """What an estimate knows of the rows entering a step: ``rows``, the total characters per column,
    where a step before knows them the number of groups per tuple of group keys, and, where the
    estimate ran the steps before over the whole input (:mod:`apwa_spark.plan.estimate`), those
    rows themselves (``frame``: a step may measure its groups on it)."""

    rows: int
    chars: dict[str, int]
    groups: dict[tuple[str, ...], int] = field(default_factory=dict)
    frame: "DataFrame | None" = None


@dataclass(frozen=True)
class Estimate:
    """A step's cost, spending nothing: LLM calls, prompt and completion tokens, and the rows it
    hands on (upper bounds where the data decides), with the assumption it rests on."""

    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    rows_out: int
    chars_out: dict[str, int] = field(default_factory=dict)
    assumption: str = ""
    groups: dict[tuple[str, ...], int] = field(default_factory=dict)  #: groups per key tuple, where the step knows them
    cached_calls: int = 0  #: calls the response cache answers (free; the measured estimate)


@dataclass
class PlanningContext:
    """What the planner tells a step kind while it plans one clause: the clause (``query``), its
    words and numbers, the columns the step before leaves (``columns``: name ──► Spark type), the
    default text column, whether answers are free text (chat style), and ``decided`` (choice ──►
    who decided it, for provenance)."""

    query: str
    words: list[str]
    numbers: list[int]
    columns: dict[str, str]
    text_column: str
    free: bool
    key_columns: list[str] = field(default_factory=list)
    decided: dict[str, str] = field(default_factory=dict)
    prefix: str = "step0"
    values: dict[str, list[str]] = field(default_factory=dict)  #: key column ──► its known values (classify labels)

    def decide(self, choice: str, by: str) -> None:
        self.decided[f"{self.prefix}.{choice}"] = by

    def named_columns(self) -> list[str]:
        """The columns the clause names as a word (``_`` read as a space), in the clause's order."""
        found = [(m.start(), c) for c in self.columns for m in [self.mention(c)] if m]
        return [c for _, c in sorted(found)]

    def mention(self, column: str) -> re.Match | None:
        """Where the clause names ``column`` (None: it does not)."""
        return re.search(rf"(?<!\w){re.escape(column.lower().replace('_', ' '))}(?!\w)", self.query.lower())


@dataclass(frozen=True)
class PlannerSpec:
    """How the planner picks and fills a step kind.

    Attributes:
        actions: action words that name this kind (``classify``, ``label`` …).
        examples: (request, action word) pairs for the action stage's few-shot prompt.
        field_examples: (request, fields) pairs for the field stage's few-shot prompt.
        field_schema: the JSON schema of the fields the model fills, narrowed to the context
            (query words, columns); ``None``: nothing to fill.
        build: (context, fields) ──► the step's config as a dict.
        description: one line the planner shows for the kind.
        rank: the place of the kind's examples in the planner's prompts (lowest first).
        route: (context, kind the action stage chose) ──► True when this kind takes the clause
            instead, by rule: the cheap path (``where``, ``select``: no LLM call) for a clause that
            the columns can answer. Kinds with a route and no actions are reached only by it.
    """

    actions: tuple[str, ...]
    examples: tuple[tuple[str, str], ...]
    build: Callable[[PlanningContext, dict], dict]
    field_schema: Callable[[PlanningContext], dict | None] = lambda ctx: None
    field_examples: tuple[tuple[str, dict], ...] = ()
    description: str = ""
    rank: int = 100
    route: Callable[[PlanningContext, str], bool] | None = None


@dataclass(frozen=True)
class StepKind:
    """One step kind: its config model, compile function, estimate and planner spec."""

    config: type[StepConfig]
    compile: Callable[["DataFrame", str, Any, RunContext], "DataFrame"]
    estimate: Callable[[Any, InputStats], Estimate]
    planner: PlannerSpec | None = None

    @property
    def name(self) -> str:
        return self.config.model_fields["kind"].default


@lru_cache(maxsize=1)
def step_kinds() -> dict[str, StepKind]:
    """Kind name ──► :class:`StepKind`: every module of :mod:`apwa_spark.steps` that defines ``KIND``,
    then the entry-point group ``apwa_spark.steps`` (which may not replace a built-in).

    Raises:
        TypeError: an entry point names something that is not a :class:`StepKind`.
        ValueError: two kinds share a name.
    """
    package = importlib.import_module(BUILTIN_PACKAGE)
    found = [getattr(importlib.import_module(f"{BUILTIN_PACKAGE}.{m.name}"), "KIND", None)
             for m in pkgutil.iter_modules(package.__path__)]
    kinds: dict[str, StepKind] = {}
    for kind in [k for k in found if k is not None] + [_load(ep) for ep in entry_points(group=ENTRY_POINT_GROUP)]:
        if kind.name in kinds:
            raise ValueError(f"two step kinds are called {kind.name!r}; rename one of them")
        kinds[kind.name] = kind
    return kinds


def _load(ep) -> StepKind:
    kind = ep.load()
    if not isinstance(kind, StepKind):
        raise TypeError(f"entry point {ep.name!r} in {ENTRY_POINT_GROUP} must name an apwa_spark.plan.step.StepKind")
    return kind


def step_kind(name: str) -> StepKind:
    """The kind called ``name``.

    Raises:
        PlanError: unknown kind; the message lists the registered ones.
    """
    kinds = step_kinds()
    if name not in kinds:
        raise PlanError(f"unknown step kind {name!r}; registered kinds: {', '.join(sorted(kinds))}")
    return kinds[name]

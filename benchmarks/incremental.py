"""Incremental hierarchical runs (issue 18): what a re-run pays after an edit, against a full run.

Two cases, each a full summarize run into an output folder and then a re-run into the same folder
after a change to the input, with the embedded model (or ``--base-url``) behind the proxy that
counts every completion request:

* **edit one scene**: Romeo and Juliet, whole; one scene's text is changed (a line added at its
  end) and the job re-run. Expected calls: that scene's chunks, plus the calls of its scene, act
  and play nodes (a node over one child passes it up without a call).
* **add one play**: a corpus of three plays (the first ``--scenes`` scenes of each), then a fourth
  play added after them. Expected calls: the new play's tree plus the corpus level.

For each case it reports the calls counted at the proxy, the calls the re-run's rows record per
table (only rows the re-run made; kept rows were made by the first run), the expected calls
computed from the tables' structure, cache hits (0: nothing is found by re-sending prompts), and
the wall times. Writes ``results/incremental.{json,md}``.

    python benchmarks/incremental.py [--scenes 4] [--base-url URL] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import bench_session, endpoint_settings, machine, results_dir, write_results

from apwa_spark.delta import read_delta
from apwa_spark.plays import available_plays
from apwa_spark.summarize import summarize_plays
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

EDITED_SCENE = ("ACT III", "SCENE II")
CORPUS = ["romeo-and-juliet", "macbeth", "hamlet"]
ADDED = "othello"


def _run(spark, plays, output, settings, proxy, max_scenes=None) -> dict:
    before = proxy.requests
    started = time.perf_counter()
    result = summarize_plays(plays, output, spark, settings, max_scenes)
    return {"result": result, "seconds": time.perf_counter() - started, "requests": proxy.requests - before}


def _remade(spark, result) -> dict[str, list[dict]]:
    """Table ──► the rows the run made (its run id), for every node table it wrote."""
    out = {}
    for level in result.levels:
        if "node_id" in level.columns:
            rows = read_delta(spark, level.path).filter(f"run_id = '{result.run_id}'").collect()
            out[level.table] = [r.asDict() for r in rows]
    return out


def _figures(spark, first: dict, rerun: dict, expected: int, expected_basis: str) -> dict:
    remade = _remade(spark, rerun["result"])
    return {
        "full_run": {"seconds": round(first["seconds"], 1), "calls": first["requests"]},
        "rerun": {"seconds": round(rerun["seconds"], 1), "calls": rerun["requests"],
                  "time_share_of_full": round(rerun["seconds"] / first["seconds"], 3),
                  "cache_hits": sum(l.cache_hits for l in rerun["result"].levels),
                  "versions_written": sum(l.committed for l in rerun["result"].levels)},
        "calls_by_table": {t: sum(r["llm_calls"] or 0 for r in rows) for t, rows in remade.items()},
        "nodes_remade_by_table": {t: len(rows) for t, rows in remade.items()},
        "expected_calls": expected, "expected_basis": expected_basis,
        "matches_expected": rerun["requests"] == expected,
    }


def edit_one_scene(spark, settings, proxy, work: Path) -> dict:
    source = available_plays()["romeo-and-juliet"].read_text(encoding="utf-8")
    play = work / "romeo-and-juliet.md"
    play.write_text(source, encoding="utf-8")
    output = work / "rj"
    first = _run(spark, [str(play)], output, settings, proxy)
    act, scene = EDITED_SCENE
    head = f"## {act}"
    start = source.index(f"### {scene}", source.index(head))
    end = source.find("\n### ", start + 1)
    edited = source[:end] + "\n\nNURSE. And so, good night: the torches wait below.\n" + source[end:]
    play.write_text(edited, encoding="utf-8")
    rerun = _run(spark, [str(play)], output, settings, proxy)
    remade = _remade(spark, rerun["result"])
    scene_id = f"romeo-and-juliet/{act}/{scene}"
    chunks = [r for r in remade["chunk"] if r["node_id"].startswith(f"chunk:{scene_id}#")]
    nodes = sum(r["llm_calls"] or 0 for t, rows in remade.items() if t != "chunk" for r in rows
                if scene_id in r["node_id"] or f":romeo-and-juliet/{act}:" in r["node_id"]
                or r["node_id"].startswith("play:"))
    basis = (f"{len(chunks)} chunks of {scene_id} (one call each) + {nodes} calls of its scene, act and play "
             "nodes")
    figures = _figures(spark, first, rerun, len(chunks) + nodes, basis)
    figures["edited_scene"] = scene_id
    figures["other_rows_remade"] = sum(len(rows) for rows in remade.values()) - len(chunks) - sum(
        1 for t, rows in remade.items() if t != "chunk" for r in rows
        if scene_id in r["node_id"] or f":romeo-and-juliet/{act}:" in r["node_id"] or r["node_id"].startswith("play:"))
    return figures


def add_one_play(spark, settings, proxy, work: Path, scenes: int) -> dict:
    output = work / "corpus"
    first = _run(spark, CORPUS, output, settings, proxy, scenes)
    rerun = _run(spark, CORPUS + [ADDED], output, settings, proxy, scenes)
    remade = _remade(spark, rerun["result"])
    own = sum(r["llm_calls"] or 0 for rows in remade.values() for r in rows
              if f"{ADDED}" in r["node_id"] and not r["node_id"].startswith("corpus:"))
    corpus = sum(r["llm_calls"] or 0 for t, rows in remade.items() for r in rows if r["node_id"].startswith("corpus:"))
    figures = _figures(spark, first, rerun, own + corpus, f"{own} calls of {ADDED}'s tree + {corpus} of the corpus level")
    figures["other_rows_remade"] = sum(1 for rows in remade.values() for r in rows
                                       if ADDED not in r["node_id"] and not r["node_id"].startswith("corpus:"))
    figures["plays"] = {"first": CORPUS, "added": ADDED, "scenes_per_play": scenes}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=4, help="scenes per play in the corpus case")
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint (default: the embedded one)")
    parser.add_argument("--results-dir", help="default: $APWA_BENCH_RESULTS or benchmarks/results")
    parser.add_argument("--only", choices=["edit", "add"], help="run one case (the other's results stay)")
    args = parser.parse_args()
    spark = bench_session()
    work = Path(tempfile.mkdtemp(prefix="apwa-incremental-"))
    cases = {}
    with endpoint_settings(args.base_url) as settings, FaultyEndpoint(settings.llm.base_url) as proxy:
        counted = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
        if args.only in (None, "edit"):
            cases["edit_one_scene"] = edit_one_scene(spark, counted, proxy, work)
        if args.only in (None, "add"):
            cases["add_one_play"] = add_one_play(spark, counted, proxy, work, args.scenes)
    previous = results_dir(args.results_dir) / "incremental.json"
    if args.only and previous.exists():  # one case re-run: the other case's figures stay
        cases = {**json.loads(previous.read_text())["cases"], **cases}
    data = {"machine": machine(), "endpoint": "given" if args.base_url else "embedded", "cases": cases}
    lines = ["# Incremental re-runs: what a change costs", "",
             "| case | full run: calls / s | re-run: calls / s | share of full time | expected calls | "
             "cache hits | versions written |", "|---|---:|---:|---:|---|---:|---:|"]
    for name, c in cases.items():
        lines.append(f"| {name} | {c['full_run']['calls']} / {c['full_run']['seconds']} | {c['rerun']['calls']} / "
                     f"{c['rerun']['seconds']} | {c['rerun']['time_share_of_full']:.1%} | {c['expected_calls']} "
                     f"({c['expected_basis']}) | {c['rerun']['cache_hits']} | {c['rerun']['versions_written']} |")
    lines += ["", "Calls per table in the re-run: " + "; ".join(
        f"{name}: " + ", ".join(f"{t} {n}" for t, n in c["calls_by_table"].items()) for name, c in cases.items())]
    write_results("incremental", data, "\n".join(lines), args.results_dir)


if __name__ == "__main__":
    main()

"""Full-size hierarchical summarization of one play (default: Romeo and Juliet, 149 kB).

Runs the real job (local[2] Spark, Delta tables, the embedded model unless --base-url is given) and
writes wall seconds, LLM calls, tokens, rows per level, errors and scene coverage (every scene
reachable from the root through lineage) to results/summarize_<play>.{json,md}.

    python benchmarks/summarize_play.py [--play romeo-and-juliet] [--base-url URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import endpoint_settings, machine, write_results

from apwa_spark.delta import read_delta
from apwa_spark.plays import read_play
from apwa_spark.session import get_session
from apwa_spark.summarize import iter_lineage, summarize_play


def coverage(spark, result, play: str) -> dict:
    tables = {l.table: read_delta(spark, l.path).toPandas() for l in result.levels[1:]}
    reachable = set(iter_lineage(tables, result.root["node_id"]))
    covered = {nid.split(":", 1)[1].rsplit("#", 1)[0] for nid in reachable if nid.startswith("chunk:")}
    scenes = {r.scene_id for r in read_play(spark, play).select("scene_id").collect()}
    return {"scenes": len(scenes), "scenes_covered": len(scenes & covered), "missing": sorted(scenes - covered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--play", default="romeo-and-juliet")
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint (default: the embedded one)")
    parser.add_argument("--output", help="run directory (default: a temporary one)")
    args = parser.parse_args()
    spark = get_session(conf={"spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    output = args.output or tempfile.mkdtemp(prefix="apwa-bench-")
    with endpoint_settings(args.base_url) as settings:
        started = time.perf_counter()
        result = summarize_play(args.play, output, spark, settings)
        wall = time.perf_counter() - started
    data = {
        "play": args.play, "machine": machine(), "wall_seconds": round(wall, 1),
        "settings": settings.as_keys() | {"spark.apwa.llm.baseUrl": "embedded" if not args.base_url else "given"},
        "llm_calls": sum(l.llm_calls for l in result.levels),
        "prompt_tokens": sum(l.prompt_tokens for l in result.levels),
        "completion_tokens": sum(l.completion_tokens for l in result.levels),
        "cached_tokens": sum(l.cached_tokens for l in result.levels),
        "error_rows": sum(l.errors for l in result.levels),
        "rounds": len(result.levels) - 2,
        "coverage": coverage(spark, result, args.play),
        "levels": [{k: v for k, v in vars(l).items() if k not in ("input_files", "path")} for l in result.levels],
        "root_status": result.root.get("status"), "summary": result.summary,
    }
    cov = data["coverage"]
    md = "\n".join([
        f"# Hierarchical summarization: {args.play}", "",
        f"Command: `python benchmarks/summarize_play.py --play {args.play}` ({data['machine']['cpus']} CPUs, "
        f"{data['machine']['date']}, embedded Gemma 3 270M via llama-server)" , "",
        f"Wall time {data['wall_seconds']} s; {data['llm_calls']} LLM calls; {data['prompt_tokens']} prompt tokens "
        f"({data['cached_tokens']} cached), {data['completion_tokens']} completion tokens; "
        f"{data['error_rows']} error rows; {cov['scenes_covered']}/{cov['scenes']} scenes reachable from the root.", "",
        result.table(), "", f"Final summary ({data['root_status']}):", "", f"> {result.summary}",
    ])
    write_results(f"summarize_{args.play}", data, md)


if __name__ == "__main__":
    main()

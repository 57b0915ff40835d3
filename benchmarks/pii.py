"""PII redaction benchmark (APWA's PII workload): three pipelines on the same seeded multi-locale texts.

Rows come from :mod:`data.pii_texts` (Faker, four locales, 11 entity types, exact gold spans). Each
pipeline is one ``redact`` step run by :func:`apwa_spark.plan.run.run_plan` on the session's Spark
(local[2]), over the embedded model unless ``--base-url`` is given:

* ``rules``: the registry tool ``pii_rules`` only (``use_model=False``), no LLM call;
* ``model``: no candidates tool, the model names a person in free text (``use_model=True``); the
  redact step asks the model for names only and always runs ``pii_rules`` first (rules are never
  optional), so this pipeline differs from ``tools+model`` in how names are found only;
* ``tools+model``: ``pii_rules`` and ``name_candidates``: the model chooses the person's name among
  the capitalized word runs the rules did not take (a JSON-schema enum), and is asked again for
  another person while candidates remain.

Metrics per entity type and overall (characters compared are letters and digits only):

* recall: gold spans whose every letter and digit lies inside some predicted span (of any type);
* precision: predicted spans that overlap some gold span, per *predicted* type;
* leak rate: gold values that still occur verbatim in the redacted text (an error row's text counts
  as leaked: nothing redacted it);
* side-store leaks: gold values found verbatim in anything else the run wrote: every file under its
  output folder but the result table (response cache, dead letters, manifests, logs; Parquet decoded),
  the result table's other columns (spans, meta), and the shared response cache
  (:mod:`apwa_spark.testing.leaks`). The target is 0.

    python benchmarks/pii.py --size small|full [--pipelines rules,model,tools+model] [--base-url URL] [--results-dir DIR] [--name NAME]

Sizes: small 50 rows, full 2,000 rows. Results: ``pii_<size>.{json,md}``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))

from _common import bench_parser, bench_session, endpoint_settings, machine, meta_column, write_results  # noqa: E402
from pii_texts import ENTITY_TYPES, LOCALES, PiiText, generate  # noqa: E402

from apwa_spark.plan.ir import Plan  # noqa: E402
from apwa_spark.steps.redact import RedactStep
from apwa_spark.plan.run import run_plan  # noqa: E402
from apwa_spark.testing.leaks import file_texts, scan_texts  # noqa: E402

SIZES = {"small": 50, "full": 2000}
PIPELINES = {
    "rules": {"tools": ["pii_rules"], "use_model": False},
    "tools+model": {"tools": ["pii_rules", "name_candidates"], "use_model": True},
    "model": {"tools": [], "use_model": True},
}
#: the rule detector's labels ──► this benchmark's entity types
LABELS = {"date": "date_of_birth", "id_number": "national_id"}


def score(rows: list[PiiText], outputs: dict[int, dict]) -> dict:
    """Precision, recall and leak rate per entity type and overall.

    Args:
        rows: the generated texts with gold spans.
        outputs: row id ──► ``{"redacted": str | None, "spans": [{"start", "end", "entity", "text"}], "status": str}``.
    """
    counts = {e: {"gold": 0, "recalled": 0, "leaked": 0, "predicted": 0, "true_predicted": 0} for e in ENTITY_TYPES}
    other = {"predicted": 0, "true_predicted": 0}
    for row in rows:
        out = outputs[row.id]
        spans = out["spans"] or []
        covered = {i for s in spans for i in range(s["start"], s["end"])}
        for gold in row.spans:
            c = counts[gold.entity]
            c["gold"] += 1
            c["recalled"] += all(i in covered for i in range(gold.start, gold.end) if row.text[i].isalnum())
            c["leaked"] += out["redacted"] is None or gold.value in out["redacted"]
        for s in spans:
            c = counts.get(LABELS.get(s["entity"], s["entity"]), other)
            c["predicted"] += 1
            c["true_predicted"] += any(s["start"] < g.end and g.start < s["end"] for g in row.spans)

    def rates(c: dict) -> dict:
        return {"gold": c["gold"], "predicted": c["predicted"],
                "precision": round(c["true_predicted"] / c["predicted"], 4) if c["predicted"] else None,
                "recall": round(c["recalled"] / c["gold"], 4) if c["gold"] else None,
                "leak_rate": round(c["leaked"] / c["gold"], 4) if c["gold"] else None}

    total = {k: sum(c[k] for c in counts.values()) + other.get(k, 0) for k in counts["person"]}
    return {"per_type": {e: rates(c) for e, c in counts.items()}, "overall": rates(total)}


def side_store_leaks(output: Path, cache: Path, values: list[str]) -> dict:
    """Gold values found in what a run wrote besides its redacted text (see the module doc)."""
    texts = [t for t in file_texts(output, skip_columns=["redacted"])
             if not (t[0].startswith(str(output / "result")) and not t[0].endswith("#rows"))]
    texts += list(file_texts(cache)) if cache.exists() else []
    hits = {v: where for v, where in scan_texts(texts, values).items() if where}
    return {"side_store_leaks": len(hits), "side_store_files_scanned": len(texts),
            "side_store_leak_places": sorted({w.split("#")[0].removeprefix(str(output.parent) + "/")
                                              for where in hits.values() for w in where})[:10]}


def run_pipeline(spark, df, name: str, settings, workdir: Path, values: list[str] = ()) -> tuple[dict, dict]:
    """One redact step over ``df``; returns (row id ──► output, run figures), side-store leaks of
    ``values`` (gold values) included."""
    step = RedactStep(column="text", entities=list(ENTITY_TYPES), output="redacted", **PIPELINES[name])
    started = time.perf_counter()
    output = workdir / name.replace("+", "_")
    result = run_plan(df, Plan(steps=[step]), output, settings)
    rows = result.select("id", "redacted", "redacted_spans", meta_column(result).alias("meta")).collect()
    seconds = time.perf_counter() - started
    outputs = {r["id"]: {"redacted": r["redacted"], "status": r["meta"]["status"],
                         "spans": [s.asDict() for s in (r["redacted_spans"] or [])]} for r in rows}
    metas = [r["meta"] for r in rows]
    prompt = sum(m["prompt_tokens"] or 0 for m in metas)
    figures = {
        "rows": len(rows), "wall_seconds": round(seconds, 1), "rows_per_second": round(len(rows) / seconds, 2),
        "error_rows": sum(m["status"] != "ok" for m in metas),
        "errors_by_class": _count(m["error_class"] for m in metas if m["status"] != "ok"),
        "llm_calls": sum(m["llm_calls"] or 0 for m in metas),
        "cache_hits": sum(bool(m["from_cache"]) for m in metas),
        "prompt_tokens": prompt, "completion_tokens": sum(m["completion_tokens"] or 0 for m in metas),
        "prompt_tokens_per_call": round(prompt / max(1, sum(m["llm_calls"] or 0 for m in metas)), 1),
        "cached_share": round(sum(m["cached_tokens"] or 0 for m in metas) / prompt, 3) if prompt else None,
        **side_store_leaks(output, Path(settings.cache.path), list(values)),
    }
    return outputs, figures


def _count(items) -> dict:
    out: dict = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def run(spark, settings, size: str = "small", rows: int | None = None, results_dir=None, seed: int = 0,
        pipelines: tuple[str, ...] = tuple(PIPELINES), name: str | None = None) -> dict:
    """Generate ``rows`` texts (default: the size's), run every pipeline, score, write results; returns the data."""
    n = rows or SIZES[size]
    texts = generate(n, seed)
    df = spark.createDataFrame([(t.id, t.locale, t.text) for t in texts], "id long, locale string, text string").repartition(2)
    workdir = Path(tempfile.mkdtemp(prefix="apwa-bench-pii-"))
    shared = settings.with_overrides(**{"spark.apwa.cache.path": str(workdir / "_llm_cache")})
    data = {"benchmark": "pii", "size": size, "rows": n, "seed": seed, "locales": list(LOCALES),
            "entity_types": list(ENTITY_TYPES), "machine": machine(), "model": settings.llm.model,
            "gold_spans": sum(len(t.spans) for t in texts), "pipelines": {},
            "sample": {"text": texts[0].text}}
    for pipeline in pipelines:
        outputs, figures = run_pipeline(spark, df, pipeline, shared, workdir, [g.value for t in texts for g in t.spans])
        data["pipelines"][pipeline] = {**figures, **score(texts, outputs)}
        data["sample"][pipeline] = outputs[texts[0].id]["redacted"]
    write_results(name or f"pii_{size}", data, markdown(data), results_dir)
    return data


def markdown(data: dict) -> str:
    names = list(data["pipelines"])
    cell = lambda r: " / ".join("–" if r[k] is None else f"{r[k]:.3f}" for k in ("precision", "recall", "leak_rate"))
    lines = [f"# PII redaction: {data['rows']} rows, {len(data['locales'])} locales, {len(data['entity_types'])} entity types", "",
             f"Command: `python benchmarks/pii.py --size {data['size']}` ({data['machine']['cpus']} CPUs, load "
             f"{data['machine']['load_average_1m']} at start, {data['machine']['date']}, model {data['model']}, Spark local[2]). "
             f"{data['gold_spans']} gold spans, seed {data['seed']}. Timings depend on the machine's load (above).", "",
             "Cells: precision / recall / leak rate. Recall: every letter and digit of the gold value inside a predicted span; "
             "precision: predicted spans (by predicted type) that overlap a gold span; leak: the gold value survives verbatim.", "",
             "| entity type | gold | " + " | ".join(names) + " |", "|---|---:|" + "---|" * len(names)]
    for entity in data["entity_types"]:
        gold = data["pipelines"][names[0]]["per_type"][entity]["gold"]
        lines.append(f"| {entity} | {gold} | " + " | ".join(cell(data["pipelines"][p]["per_type"][entity]) for p in names) + " |")
    lines.append("| **overall** | " + str(data["gold_spans"]) + " | "
                 + " | ".join(f"**{cell(data['pipelines'][p]['overall'])}**" for p in names) + " |")
    lines += ["", "| pipeline | wall s | rows/s | LLM calls | cache hits | prompt tok/call | cached share | error rows | "
              "side-store leaks (files scanned) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in names:
        f = data["pipelines"][p]
        lines.append(f"| {p} | {f['wall_seconds']} | {f['rows_per_second']} | {f['llm_calls']} | {f['cache_hits']} | "
                     f"{f['prompt_tokens_per_call']} | {f['cached_share']} | {f['error_rows']} {f['errors_by_class'] or ''} | "
                     f"{f.get('side_store_leaks')} ({f.get('side_store_files_scanned')}) |")
    lines += ["", "Side-store leaks: gold values found verbatim in anything the run wrote besides the redacted text "
              "(response cache, dead letters, manifests, logs, the result's spans and meta; Parquet decoded)."]
    if "model" in names:
        lines += ["", "The model is asked for person names only (the redact step's design); every pipeline's redact step "
                  "runs the rule detectors first, so `model` differs from `tools+model` in how names are found. `model` answers in free text; `tools+model` constrains each answer "
                  "to the `name_candidates` strings or `nobody`, so they share no cached answer; but both prompts begin with the "
                  "same instruction and text, so `model`, which runs after `tools+model`, finds much of each prompt in the "
                  "server's prefix cache (its cached share)."]
    if set(names) != set(PIPELINES):
        lines += ["", f"Pipelines run: {', '.join(names)} (`--pipelines`); the others were not run at this size."]
    lines += ["", "The rule detectors (`pii_rules` in `apwa_spark/tools.py`) were written against the formats these Faker "
              "locales emit; a text in another country's formats would score lower.", "",
              "Sample (row 0):", "", f"> {data['sample']['text']}", ""]
    for p in names:
        lines.append(f"- {p}: {data['sample'].get(p)}")
    return "\n".join(lines)


def main() -> None:
    parser = bench_parser(__doc__, SIZES)
    parser.add_argument("--rows", type=int, help="override the size's row count")
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help=f"comma-separated subset of {','.join(PIPELINES)}")
    parser.add_argument("--name", help="results file name, without extension (default pii_<size>)")
    args = parser.parse_args()
    pipelines = tuple(args.pipelines.split(","))
    if set(pipelines) - set(PIPELINES):
        parser.error(f"unknown pipelines {sorted(set(pipelines) - set(PIPELINES))}; choose from {list(PIPELINES)}")
    spark = bench_session()
    with endpoint_settings(args.base_url) as settings:
        run(spark, settings, args.size, args.rows, args.results_dir, pipelines=pipelines, name=args.name)


if __name__ == "__main__":
    main()

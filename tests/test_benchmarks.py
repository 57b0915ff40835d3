"""Each workload benchmark runs at a tiny size against the real Spark session and embedded model,
and writes well-formed results (JSON + Markdown, the throughput plot) to a temporary folder.

No figure is asserted: timings and scores belong to the committed benchmark results, not to tests.
What is asserted is the shape: every row accounted for, the metrics present and in range.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import delta_commit  # noqa: E402
import extraction  # noqa: E402
import floor  # noqa: E402
import pii  # noqa: E402
import summarize_engine  # noqa: E402
import summarize_sizes  # noqa: E402
import throughput  # noqa: E402

from apwa_spark.testing.instant_endpoint import InstantEndpoint  # noqa: E402


def written(directory: Path, name: str) -> dict:
    data = json.loads((directory / f"{name}.json").read_text())
    assert (directory / f"{name}.md").read_text().startswith("# ")
    return data


def in_unit_range(value) -> bool:
    return value is None or 0.0 <= value <= 1.0


def test_pii_generator_is_seeded_and_its_gold_spans_are_exact():
    from pii_texts import ENTITY_TYPES, generate

    rows = generate(40, seed=3)
    assert rows == generate(40, seed=3) and rows != generate(40, seed=4)
    assert {s.entity for r in rows for s in r.spans} == set(ENTITY_TYPES)
    assert all(r.text[s.start:s.end] == s.value for r in rows for s in r.spans)


def test_pii_benchmark_small(spark, settings, tmp_path):
    data = pii.run(spark, settings, rows=8, results_dir=tmp_path, name="pii_test")
    assert written(tmp_path, "pii_test") == json.loads(json.dumps(data, default=str))
    assert set(data["pipelines"]) == {"rules", "model", "tools+model"}
    for name, p in data["pipelines"].items():
        assert p["rows"] == 8, name
        assert set(p["per_type"]) == set(data["entity_types"]) and len(data["entity_types"]) >= 10
        assert all(in_unit_range(p["overall"][k]) for k in ("precision", "recall", "leak_rate"))
        assert sum(t["gold"] for t in p["per_type"].values()) == data["gold_spans"]
    assert data["pipelines"]["rules"]["llm_calls"] == 0
    assert data["pipelines"]["model"]["llm_calls"] > 0


def test_extraction_benchmark_small(spark, settings, tmp_path):
    data = extraction.run(spark, settings, count=4, results_dir=tmp_path, name="extraction_test")
    assert written(tmp_path, "extraction_test")["documents"] == 4
    assert data["overall"]["documents"] == 4 and in_unit_range(data["overall"]["validity"])
    assert set(data["overall"]["field_accuracy"]) == set(extraction.FIELDS)
    assert sum(b["documents"] for b in data["per_format"].values()) == 4


def test_extraction_documents_hold_their_gold_values():
    for doc in extraction.documents(12):
        for field, value in doc["gold"].items():
            if value is not None and doc["format"] in ("headers", "markdown", "csv"):
                assert value in doc["document"], (doc["format"], field)
    assert {d["format"] for d in extraction.documents(12)} == set(extraction.FORMATS)


def test_extraction_documents_are_the_pinned_distributions_only():
    pinned = extraction.DISTRIBUTIONS
    names = [re.sub(r"[-_.]+", "-", d["gold"]["name"]).lower() for d in extraction.documents(2 * len(pinned))]
    assert names == list(pinned) * 2  # pip, setuptools, py-spy … installed here are not documents


def test_summarize_benchmark_small(spark, settings, small_play, tmp_path):
    plays = [str(small_play), "macbeth"]
    data = summarize_sizes.run(spark, settings, "small", max_scenes=1, results_dir=tmp_path, name="summarize_test",
                               plays=plays)
    assert written(tmp_path, "summarize_test")["size"] == "small"
    assert [p["coverage"]["scenes"] for p in data["plays"]] == [1, 1] and all(p["llm_calls"] > 0 for p in data["plays"])
    assert in_unit_range(data["failure_rate"]) and in_unit_range(data["coverage"])
    corpus = data["corpus"]  # the corpus job: per-play answers come from the merged caches, the corpus level is new
    assert corpus["coverage"]["scenes"] == 2 and corpus["root_level"] == "corpus"
    assert corpus["merged_cache_answers"] > 0 and corpus["cache_hits"] > 0 and corpus["corpus_llm_calls"] > 0
    assert corpus["plays_without_cache"] == []
    if data["error_rows"] == 0:  # error rows are not cached, so the corpus job would call for them again
        assert corpus["llm_calls"] == corpus["corpus_llm_calls"]
    # a run stopped after some plays leaves ``complete`` false; --resume keeps their figures and runs only the rest
    path = tmp_path / "summarize_test.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "complete": False, "corpus": None}))
    again = summarize_sizes.run(spark, settings, "small", max_scenes=1, results_dir=tmp_path, name="summarize_test",
                                plays=plays, resume=True)
    assert again["plays"] == data["plays"] and again["resumed_plays"] == 2 and written(tmp_path, "summarize_test")["complete"]
    assert again["corpus"]["coverage"] == corpus["coverage"]


def test_summarize_engine_benchmark_small(spark, tmp_path):
    data = summarize_engine.run(spark, max_scenes=2, warm=1, results_dir=tmp_path, name="engine_test")
    assert written(tmp_path, "engine_test")["code"]
    runs = [data["cold"], *data["warm_runs"]]
    assert len(runs) == 2 and all(r["llm_calls"] > 0 and r["seconds"] > 0 for r in runs)
    assert list(data["cold"]["tables"])[:2] == ["chunks", "chunk"] and "play_r1" in data["cold"]["tables"]
    assert data["warm"]["tables"] == data["warm_runs"][0]["tables"]  # the median of one run is that run


def test_summarize_resume_keeps_unfinished_runs_only(tmp_path):
    def previous(**fields):
        (tmp_path / "s.json").write_text(json.dumps({"size": "all", "max_scenes": None, "plays": [{"play": "a"}], **fields}))
        return summarize_sizes._unfinished(tmp_path, "s", "all", None)

    assert previous(complete=False, plays_of_size=3) == [{"play": "a"}]
    assert previous(complete=True, plays_of_size=3, corpus=None) == [{"play": "a"}]  # plays done, corpus job not
    assert previous(complete=True, plays_of_size=3, corpus={"llm_calls": 1}) == []
    assert previous(complete=True) == []  # written before plays_of_size and the corpus job existed: one play
    assert previous(complete=False, plays_of_size=3, size="histories") == []


def test_throughput_benchmark_small(spark, settings, tmp_path):
    data = throughput.run(spark, settings, results_dir=tmp_path, name="throughput_test", prompts=4, pairs=2,
                          instant_rows=[40], instant_concurrency=[1, 8])
    assert written(tmp_path, "throughput_test")["b_over_a"] == data["b_over_a"] > 0
    assert len(data["pairs"]) == 2 and all(p["b"]["rows"] == 4 == p["a"]["rows"] for p in data["pairs"])
    assert data["b_over_a"] == statistics.median(p["ratio"] for p in data["pairs"])
    for p in data["pairs"]:  # the benchmark's read of the result, after the job returned, is timed apart and reported
        assert p["b"]["readback_seconds"] > 0 and p["ratio_with_readback"] < p["ratio"]
    assert (tmp_path / "throughput_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [lv["concurrency"] for lv in data["ceiling"]] == list(throughput.CEILING_CONCURRENCY)
    assert all(lv["rows"] == 4 and lv["prompt_tokens_per_row"] > 0 for lv in data["ceiling"])
    assert data["through_spark"]["rows"] == 4  # errors possible: a loaded machine times calls out; every row is counted
    assert len(data["engine"]["map_step"]) == 4 and all(r["errors"] == 0 for r in data["engine"]["map_step"])


def test_instant_endpoint_answers_every_route():
    import httpx

    with InstantEndpoint(answer="fine.") as endpoint:
        root = endpoint.base_url[: -len("/v1")]
        with httpx.Client() as http:
            assert http.get(root + "/health").json() == {"status": "ok"}
            assert http.get(endpoint.base_url + "/models").json()["data"][0]["id"] == "instant"
            assert http.post(root + "/tokenize", json={"content": "a b c"}).json()["tokens"] == [0, 1, 2]
            done = http.post(endpoint.base_url + "/completions", json={"prompt": "one two three", "max_tokens": 4}).json()
            assert done["choices"][0]["text"] == "fine." and done["usage"]["prompt_tokens"] == 3
            chat = http.post(endpoint.base_url + "/chat/completions",
                             json={"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}).json()
            assert chat["choices"][0]["message"]["content"] == "{}"
            assert http.get(root + "/nowhere").status_code == 404
        assert endpoint.requests == 2


def test_floor_times_a_one_call_level_by_the_server_log_of_each_run(tmp_path):
    prompt = ("1.44.020.017 I slot print_timing: id  3 | task {task} | prompt eval time =     {p} ms /   {pn} tokens "
              "(    1.38 ms per token,   725.00 tokens per second)")
    generation = ("1.44.020.018 I slot print_timing: id  3 | task {task} |        eval time =    {e} ms /    {en} tokens "
                  "(   26.39 ms per token,    37.89 tokens per second)")
    total = "1.44.020.019 I slot print_timing: id  3 | task {task} |       total time =    {ms} ms /   413 tokens"
    timing = "\n".join([prompt, generation, total])
    job, replay = tmp_path / "job.log", tmp_path / "replay.log"
    job.write_text("\n".join([timing.format(task=1, p="500.50", pn=300, e="2000.00", en=80, ms="2500.50"),
                              "srv  log_server_r: request: POST /tokenize",
                              timing.format(task=12, p="100.00", pn=50, e="800.00", en=40, ms="900.00"),
                              timing.format(task=2, p="300.25", pn=356, e="800.00", en=96, ms="1100.25"),
                              "main: server is listening",  # a restarted server counts its tasks from 0 again
                              timing.format(task=1, p="10.00", pn=7, e="20.00", en=3, ms="30.00")]))
    replay.write_text("\n".join([timing.format(task=7, p="400.00", pn=280, e="2000.00", en=80, ms="2400.00"),
                                 timing.format(task=8, p="50.00", pn=20, e="800.00", en=96, ms="850.00"),
                                 prompt.format(task=9, p="40.00", pn=20), total.format(task=9, ms="45.00")]))
    calls = floor.call_timings(job)
    assert [c["seconds"] for c in calls] == [2.5005, 0.9, 1.10025, 0.03]
    # the parts are matched by task id (task 2's lines are not task 12's), each to the total that follows them
    assert calls[2] == {"seconds": 1.10025, "prompt_seconds": 0.30025, "prompt_tokens": 356, "eval_seconds": 0.8, "eval_tokens": 96}
    assert calls[3]["prompt_tokens"] == 7 and calls[0]["prompt_tokens"] == 300
    assert floor.call_text(floor.call_timings(replay)[2]) == "0.04 s (prompt 0.04 s for 20 tokens, generation ?)"
    levels = [{"level": "act", "job_calls": 2, "requests": 1}, {"level": "play", "job_calls": 1, "requests": 1}]
    # act's two job calls (one a retry) are the first two entries; play's one call is the next in each log
    single = floor.one_call_levels(levels, calls, floor.call_timings(replay))
    assert single["play"]["job_call"]["seconds"] == 1.10025 and single["play"]["replay_call"]["prompt_tokens"] == 20
    assert floor.call_text(single["play"]["replay_call"]) == "0.85 s (prompt 0.05 s for 20 tokens, generation 0.80 s for 96 tokens)"
    assert floor.one_call_levels(levels, calls[:1], []) == {"play": {"job_call": None, "replay_call": None}}
    assert floor.call_text(None) == "not in the log"


def test_delta_commit_benchmark_times_each_way_of_writing_one_row(spark, tmp_path):
    data = delta_commit.run(spark, writes=1, results_dir=tmp_path, name="delta_commit_test")
    assert written(tmp_path, "delta_commit_test")["ways"].keys() == set(delta_commit.WAYS)
    for way in data["ways"].values():
        assert len(way["seconds"]) == 1 and way["median_seconds"] > 0 and way["median_processes_created"] >= -1
    assert isinstance(data["hadoop_native_library"], bool) and data["subprocess_seconds"] > 0

"""Incremental hierarchical runs (issue 18, item 1): a re-run of the summarize job into the same
output recomputes only the changed leaves and their ancestors, updates the level tables with
MERGE, keeps every other node as it was, and writes no version when nothing changed. Real Spark,
native Delta, the real embedded model behind the proxy that counts every completion request."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from deltalake import DeltaTable

from apwa_spark.plays import available_plays
from apwa_spark.runs import CACHE
from apwa_spark.summarize import summarize_play
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

pytestmark = pytest.mark.model

#: The node tables of a two-act play whose groups each fit one round, and the result.
TABLES = ["chunks", "chunk", "scene_r1", "act_r1", "play_r1", "result"]


def _play(path: Path, scenes: dict[str, dict[str, str]]) -> Path:
    """A play file: act ──► scene heading ──► text."""
    lines = ["# Romeo and Juliet (incremental)", ""]
    for act, acts in scenes.items():
        lines += [f"## {act}", ""] + [f"### {name}\n\n{text}\n" for name, text in acts.items()]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Four short passages of real text (Romeo and Juliet's opening scene), about a chunk each."""
    source = available_plays()["romeo-and-juliet"].read_text(encoding="utf-8")
    scene = source.split("\n## ")[1].split("\n### ")[2]
    body = scene[scene.index("\n"):]
    return [body[i * 330:(i + 1) * 330].strip() for i in range(4)]


def _scenes(texts: list[str], edited: str | None = None, without: str | None = None) -> dict:
    scenes = {"ACT I": {"SCENE I. Verona.": texts[0], "SCENE II. A street.": texts[1]},
              "ACT II": {"SCENE I. A lane.": texts[2], "SCENE II. A garden.": texts[3]}}
    if edited:
        scenes["ACT II"]["SCENE II. A garden."] = edited
    if without:
        del scenes["ACT I"][without]
    return scenes


def _versions(out: Path) -> dict[str, int]:
    """Every Delta table under ``out`` (the job's tables, its cache and dead letter) ──► its version."""
    return {p.parent.name: DeltaTable(str(p.parent)).version() for p in out.glob("*/_delta_log")}


def _rows(spark, out: Path, table: str) -> dict[str, dict]:
    return {r["node_id"]: r.asDict() for r in spark.read.format("delta").load(str(out / table)).collect()}


def test_an_edit_recomputes_its_leaves_and_ancestors_only_an_unchanged_rerun_writes_nothing_and_a_deletion_merges(
        spark, settings, endpoint, texts, tmp_path):
    play, out = tmp_path / "romeo-incremental.md", tmp_path / "out"
    with FaultyEndpoint(endpoint.base_url) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
        first = summarize_play(str(_play(play, _scenes(texts))), out, spark, local)
        assert first.root["status"] == "ok" and proxy.requests > 0
        before = _versions(out)
        assert set(TABLES) <= set(before)

        paid = proxy.requests
        again = summarize_play(str(play), out, spark, local)  # nothing changed
        assert proxy.requests == paid  # no call, not even one answered by the cache
        assert _versions(out) == before  # no table, cache or dead letter got a version
        assert again.root["node_id"] == first.root["node_id"] and again.root["summary"] == first.root["summary"]
        assert all(not t.committed and t.kept == t.rows for t in again.levels if t.table != "chunks")

        old = {t: _rows(spark, out, t) for t in TABLES[1:-1]}
        edited = summarize_play(str(_play(play, _scenes(texts, edited=texts[3][::-1]))), out, spark, local)
        calls = proxy.requests - paid

        # a full run of the edited input into a new output, not incremental, with the same response cache:
        # every node is computed again and every call is answered by the cache
        full, paid = tmp_path / "full", proxy.requests
        whole = local.with_overrides(**{"spark.apwa.cache.path": str(out / CACHE), "spark.apwa.run.incremental": "false"})
        again = summarize_play(str(play), full, spark, whole)
        assert proxy.requests == paid and sum(t.llm_calls for t in again.levels) == 0
        assert sum(t.cache_hits for t in again.levels) > 0
    new = {t: _rows(spark, out, t) for t in TABLES[1:-1]}
    remade = {t: sorted(i for i, r in rows.items() if r["run_id"] == edited.run_id) for t, rows in new.items()}
    # the edited scene's leaves, its scene node, its act and the play: nothing else was made again
    scene = "romeo-incremental/ACT II/SCENE II"
    assert remade["chunk"] == sorted(i for i in new["chunk"] if i.startswith(f"chunk:{scene}#")) != []
    assert remade["scene_r1"] == [f"scene:romeo-incremental/ACT II/{scene}:r1"]
    assert remade["act_r1"] == ["act:romeo-incremental/ACT II:r1"]
    assert remade["play_r1"] == ["play:romeo-incremental:r1"] == list(new["play_r1"])
    # what the run paid is exactly what those rows record; the edited leaves' prompts are new, so none of their
    # answers came from the cache (a node above may meet a prompt of the first run again: the 270M model can
    # summarize the edited text as it did the old one, and that answer is the cache's, without a call)
    remade_rows = [new[t][i] for t, ids in remade.items() for i in ids]
    assert calls == sum(r["llm_calls"] for r in remade_rows) > 0
    assert not any(new["chunk"][i]["from_cache"] for i in remade["chunk"])
    assert all(r["llm_calls"] == 0 for r in remade_rows if r["from_cache"])
    # every other node is the first run's row, as it was
    for table, rows in new.items():
        for node_id, row in rows.items():
            if node_id not in remade[table]:
                assert row == old[table][node_id], (table, node_id)
    # each level table got one commit (a MERGE), and the history says so
    after = _versions(out)
    assert all(after[t] == before[t] + 1 for t in TABLES), (before, after)
    history = spark.sql(f"DESCRIBE HISTORY delta.`{out / 'scene_r1'}` LIMIT 1").first()
    assert history["operation"] == "MERGE" and history["operationMetrics"]["numTargetRowsUpdated"] == "1"
    # result was written while the queue made the level commits: its commit names this run, and it holds the new root
    result = spark.sql(f"DESCRIBE HISTORY delta.`{out / 'result'}` LIMIT 1").first()
    assert json.loads(result["userMetadata"]) == {"run_id": edited.run_id}
    assert [r["summary"] for r in spark.read.format("delta").load(str(out / "result")).collect()] == [
        new["play_r1"]["play:romeo-incremental:r1"]["summary"]]

    # the full run of the edited input (same answers, from the shared cache) gave the same tables
    for table in TABLES[1:-1]:
        mine, theirs = new[table], _rows(spark, full, table)
        assert set(mine) == set(theirs), table
        for node_id in mine:
            for column in ("children", "summary", "status", "content_hash", "ordinal"):
                assert mine[node_id][column] == theirs[node_id][column], (table, node_id, column)

    _delete_a_scene(spark, settings, texts, play, out)


def _delete_a_scene(spark, settings, texts, play: Path, out: Path) -> None:
    """A scene deleted from the input leaves the tables and its ancestors' lineage (one MERGE each)."""
    scene = "romeo-incremental/ACT I/SCENE II"
    assert any(scene in i for i in _rows(spark, out, "scene_r1"))
    version = DeltaTable(str(out / "scene_r1")).version()
    rerun = summarize_play(str(_play(play, _scenes(texts, edited=texts[3][::-1], without="SCENE II. A street."))), out,
                           spark, settings)
    scenes, acts = _rows(spark, out, "scene_r1"), _rows(spark, out, "act_r1")
    assert not any(scene in i for i in scenes) and not any("ACT I/SCENE II" in i for i in _rows(spark, out, "chunk"))
    act = next(r for i, r in acts.items() if i.startswith("act:romeo-incremental/ACT I:"))
    assert act["run_id"] == rerun.run_id and not any("SCENE II" in c for c in act["children"])
    assert all(c in scenes for c in act["children"])
    # the scene table's change feed shows the deleted node, by the MERGE that deleted it
    changes = (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", version + 1)
               .load(str(out / "scene_r1")).filter("_change_type = 'delete'").select("node_id").collect())
    assert [r["node_id"] for r in changes] == [f"scene:romeo-incremental/ACT I/{scene}:r1"]


DOCS = ["The harbour froze in January and the ferries stopped.", "Fishermen mended nets in the old church hall.",
        "A storm tore the roof off the lighthouse keeper's house.", "The bakery now sells bread made with seaweed.",
        "Tourists queue for an hour for the cliff-top cafe.", "The new bike lane runs along the sea wall."]
PLAN = ("steps:\n"
        "  - {kind: map, template: 'Name the topic in three words: {text}', output: topic, max_tokens: 12}\n"
        "  - {kind: reduce, template: 'Summarize these topics in one sentence: {topic}', group_by: [town], order_by: id,"
        " output: summary, max_tokens: 24}\n")


def test_a_delta_input_is_diffed_through_its_change_data_feed(spark, settings, endpoint, tmp_path, capsys):
    from apwa_spark.delta import write_delta
    from apwa_spark.inputs import read_input, source_of
    from apwa_spark.plan.ir import Plan
    from apwa_spark.plan.run import execute_plan

    docs, out = str(tmp_path / "docs"), tmp_path / "out"
    rows = [(i, "Avon" if i <= 3 else "Bree", text) for i, text in enumerate(DOCS, 1)]
    write_delta(spark.createDataFrame(rows, "id long, town string, text string"), docs)  # Change Data Feed on
    plan = Plan.parse(PLAN)
    with FaultyEndpoint(endpoint.base_url) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
        run = lambda: execute_plan(spark, read_input(spark, docs), plan, str(out), local, source=source_of(spark, docs))
        run()
        paid = proxy.requests
        failed = {i for i, r in _rows(spark, out, "reduce1_r0").items() if r["status"] == "error"}  # retried, too
        spark.sql(f"UPDATE delta.`{docs}` SET text = 'The ferry to the island now runs at night.' WHERE id = 5")
        capsys.readouterr()
        second = run()
        calls = proxy.requests - paid
        assert "1 input rows changed since version 0" in capsys.readouterr().out  # read from the feed, not a diff
        leaves, groups = _rows(spark, out, "reduce1_r0"), _rows(spark, out, "reduce1_r1")
        remade = sorted(i for t in (leaves, groups) for i, r in t.items() if r["run_id"] == second.run_id)
        redone = failed | {"reduce1:5#1"}  # the edited row (and rows whose call failed); others kept as they were
        towns = {"Avon" if int(i.split(":")[1].split("#")[0]) <= 3 else "Bree" for i in redone}
        # the edited row's group; a group whose retried row failed again has unchanged children, so it is kept
        assert "reduce1:Bree:r1" in remade and set(remade) - redone <= {f"reduce1:{t}:r1" for t in towns}
        assert set(remade) & set(leaves) == redone
        assert calls == sum(t[i]["llm_calls"] for t in (leaves, groups) for i in remade if i in t) >= 2

        paid, versions = proxy.requests, _versions(out)
        third = run()  # the input is unchanged since the second run
        assert "0 input rows changed" in capsys.readouterr().out
    failed = sorted(i for i, r in leaves.items() if r["status"] == "error")  # a failed call is retried, nothing else
    again = sorted(i for i, r in _rows(spark, out, "reduce1_r0").items() if r["run_id"] == third.run_id)
    assert again == failed
    if not failed:
        assert proxy.requests == paid and _versions(out) == versions


def test_a_row_without_text_is_kept_by_an_unchanged_rerun_and_made_again_once_it_has_text(
        spark, settings, endpoint, tmp_path):
    """A NULL text fails with no call (``NullInput``) and would fail the same way again: unlike a failed
    call, its leaf is not retried, so an unchanged re-run writes nothing; once the row has text, it is made."""
    from apwa_spark.plan.ir import Plan
    from apwa_spark.plan.run import execute_plan

    out, plan = tmp_path / "out", Plan.parse(PLAN)
    rows = [(1, "Avon", DOCS[0]), (2, "Avon", None), (3, "Bree", DOCS[1])]
    with FaultyEndpoint(endpoint.base_url) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
        run = lambda r: execute_plan(spark, spark.createDataFrame(r, "id long, town string, text string"),  # noqa: E731
                                     plan, str(out), local, key="id")
        first = run(rows)
        empty = _rows(spark, out, "reduce1_r0")["reduce1:2#1"]
        assert (empty["status"], empty["error_class"], empty["llm_calls"]) == ("error", "NullInput", 0)
        failed = {i for t in ("reduce1_r0", "reduce1_r1") for i, r in _rows(spark, out, t).items()
                  if r["status"] == "error" and i != "reduce1:2#1"}  # failed calls: retried by design
        paid, versions = proxy.requests, _versions(out)
        second = run(rows)
        assert _rows(spark, out, "reduce1_r0")["reduce1:2#1"]["run_id"] == first.run_id  # kept, not made again
        if not failed:
            assert proxy.requests == paid and _versions(out) == versions and second.tables
        third = run([(i, town, DOCS[2] if i == 2 else text) for i, town, text in rows])
    filled = _rows(spark, out, "reduce1_r0")["reduce1:2#1"]
    assert filled["run_id"] == third.run_id and filled["error_class"] != "NullInput"
    assert _rows(spark, out, "reduce1_r1")["reduce1:Avon:r1"]["run_id"] == third.run_id  # its group, made again


@pytest.mark.parametrize("engine", ["native", "deltars"])
def test_a_merge_write_commits_once_what_changed_and_nothing_when_nothing_did(spark, tmp_path, engine):
    from apwa_spark.delta import TableStore
    from apwa_spark.runs import CommitQueue, write_table

    store, tables = TableStore.create(spark, str(tmp_path / "out"), engine), []
    rows = lambda *r: spark.createDataFrame([(*x, 1, 0, 0, 0, False) for x in r],  # noqa: E731
                                            "node_id string, run_id string, status string, summary string, llm_calls int, "
                                            "prompt_tokens long, completion_tokens long, cached_tokens long, from_cache boolean")
    version = lambda: DeltaTable(str(tmp_path / "out" / "t")).version()
    write_table(store, tables, "t", rows(("a", "r1", "ok", "A"), ("b", "r1", "ok", "B"), ("c", "r1", "ok", "C")),
                how="merge", run_id="r1")
    first = version()
    write_table(store, tables, "t", rows(("a", "r1", "ok", "A"), ("b", "r1", "ok", "B"), ("c", "r1", "ok", "C")),
                how="merge", run_id="r2")  # every row kept from run r1
    assert version() == first and not tables[-1].committed and tables[-1].kept == 3
    write_table(store, tables, "t", rows(("a", "r1", "ok", "A"), ("b", "r3", "ok", "B2"), ("d", "r3", "ok", "D")),
                how="merge", run_id="r3")  # b made again, c gone, d new
    assert version() == first + 1 and tables[-1].committed and tables[-1].kept == 1 and tables[-1].llm_calls == 2
    assert sorted(tuple(r)[:4] for r in store.read("t").collect()) == [
        ("a", "r1", "ok", "A"), ("b", "r3", "ok", "B2"), ("d", "r3", "ok", "D")]
    history = DeltaTable(str(tmp_path / "out" / "t")).history(1)[0]
    assert history["operation"] == "MERGE"
    with CommitQueue(spark) as commits:  # a re-run's write, queued: its rows come back, computed, not read back
        staged = write_table(store, tables, "t", rows(("a", "r4", "ok", "A2"), ("b", "r3", "ok", "B2"), ("d", "r3", "ok", "D")),
                             how="merge", run_id="r4", commits=commits)
        assert sorted(r["summary"] for r in staged.collect()) == ["A2", "B2", "D"] and tables[-1].llm_calls == 1
    assert version() == first + 2 and sorted(r["summary"] for r in store.read("t").collect()) == ["A2", "B2", "D"]


@pytest.mark.parametrize("engine", ["native", "deltars", "catalog"])
def test_an_overwrite_observes_its_figures_in_the_write_job_and_they_are_the_tables(spark, tmp_path, engine):
    from pyspark.sql import functions as F

    from apwa_spark.delta import TableStore
    from apwa_spark.runs import _as_totals, _figure_columns, _totals, observed, status_columns, status_counts, write_table

    catalog = engine == "catalog"  # saveAsTable: the observation completes with an empty row, so the table is aggregated
    store = TableStore.create(spark, str(tmp_path / "out"), "native" if catalog else engine, "observed_db" if catalog else None)
    tables = []
    df = spark.createDataFrame([("a", "r0", "ok", 1, 10, 2, 0, False), ("b", "r1", "ok", 1, 11, 3, 0, True),
                                ("c", "r1", "error", 3, 12, 0, 0, False), ("d", "r1", "unevaluated", 0, 0, 0, 0, False)],
                               "node_id string, run_id string, status string, llm_calls int, prompt_tokens long, "
                               "completion_tokens long, cached_tokens long, from_cache boolean")
    groups = F.count_if(F.col("node_id") != "d")
    watched, figures = observed(df, _figure_columns(df.columns, "r1", groups))
    assert figures() is None  # nothing delivered before the write job runs (and asking does not wait)
    store.write(watched, "t")
    expected = _totals(store.read("t"), "r1", groups)  # the read-back aggregate the observation replaces
    assert figures() is None if catalog else _as_totals(figures()) == expected
    assert expected == dict(rows=4, llm_calls=4, prompt_tokens=23, completion_tokens=3, cached_tokens=0, errors=1,
                            cache_hits=1, unevaluated=1, kept=1, groups=3)
    write_table(store, tables, "t2", df, run_id="r1", groups=groups)
    stats = tables[-1]
    assert (stats.rows, stats.llm_calls, stats.errors, stats.kept, stats.groups) == (4, 4, 1, 1, 3)
    # a plan's result: its status counts per step come with its write too
    result = df.select("node_id", F.struct("status").alias("map1_meta"), F.struct(F.lit("ok").alias("status")).alias("map2_meta"))
    watched, counted = observed(result, status_columns(result.columns, ["map1", "map2", "gone"]))
    store.write(watched, "result")
    counts = status_counts(store.read("result"), ["map1", "map2", "gone"])
    assert counts == {"rows": 4, "map1": {"ok": 2, "partial": 0, "error": 1, "unevaluated": 1},
                      "map2": {"ok": 4, "partial": 0, "error": 0, "unevaluated": 0}}
    assert counted() is None if catalog else status_counts(store.read("result"), ["map1", "map2", "gone"], counted()) == counts


@pytest.mark.parametrize("engine", ["native", "deltars", "catalog"])
def test_a_written_table_gives_its_rows_from_its_write_job_and_its_sources_files_as_lineage(spark, tmp_path, engine):
    import shutil

    from apwa_spark.delta import TableStore
    from apwa_spark.runs import write_table

    catalog = engine == "catalog"
    store = TableStore.create(spark, str(tmp_path / "out"), "native" if catalog else engine, "lineage_db" if catalog else None)
    tables = []
    below = write_table(store, tables, "below", spark.range(6).selectExpr("id", "id % 2 AS grp").repartition(3))
    assert tables[-1].input_files == []  # computed from no table of the store
    # the table's files, listed independently: Spark's scan of the catalog table, or the folder's Parquet files
    files = store.read("below").inputFiles() if catalog else [str(f) for f in (tmp_path / "out" / "below").glob("*.parquet")]
    assert len(files) == 3
    above = write_table(store, tables, "above", below.groupBy("grp").count(), source="below")
    assert sorted(urlsplit(f).path for f in tables[-1].input_files) == sorted(urlsplit(f).path for f in files)
    assert sorted(tuple(r) for r in store.read("above").collect()) == [(0, 3), (1, 3)]
    # the rows come from the write job's checkpoint, not from the table: gone, they are still there
    if catalog:
        spark.sql("DROP TABLE lineage_db.above")
    else:
        shutil.rmtree(tmp_path / "out" / "above")
    assert sorted(tuple(r) for r in above.collect()) == [(0, 3), (1, 3)]


def test_queued_commits_are_made_in_order_and_the_first_failure_stops_the_rest_and_is_raised(spark):
    from apwa_spark.runs import CommitQueue

    made = []

    def fail():
        raise OSError("the object store refused the commit")

    with pytest.raises(OSError, match="refused the commit"):
        with CommitQueue(spark) as commits:
            commits.submit(lambda: made.append("leaves"))
            commits.submit(fail)
            commits.submit(lambda: made.append("scenes"))  # after a failed commit: not made
    assert made == ["leaves"]


def test_a_write_with_a_note_keeps_it_while_another_commit_holds_the_session_note(spark, tmp_path):
    """The run writes ``result`` while its queue may still be making a commit whose ``userMetadata`` is
    the session conf (the leaf table's input version): the result's commit keeps its own note."""
    from delta.tables import DeltaTable as SparkDeltaTable

    from apwa_spark.delta import TableStore, commit_metadata

    store = TableStore.create(spark, str(tmp_path / "out"), "native")
    with commit_metadata(spark, json.dumps({"input_version": 7})):  # what a queued leaf MERGE sets meanwhile
        store.write(spark.createDataFrame([("a", "A")], "node_id string, summary string"), "result",
                    note=json.dumps({"run_id": "r9"}))
        store.write(spark.createDataFrame([("a", "A")], "node_id string, summary string"), "leaf")
    note = lambda name: SparkDeltaTable.forPath(spark, str(tmp_path / "out" / name)).history(1).first()["userMetadata"]  # noqa: E731
    assert json.loads(note("result")) == {"run_id": "r9"}
    assert json.loads(note("leaf")) == {"input_version": 7}

"""The summarize job on a real slice of Romeo and Juliet, with the real embedded model."""

import shutil
from urllib.parse import urlsplit

import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable

from apwa_spark.delta import read_delta
from apwa_spark.runs import CACHE
from apwa_spark.hierarchy import pack_children
from apwa_spark.summarize import NODE_SCHEMA, iter_lineage, summarize_play, summarize_plays

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def run(small_run):
    return small_run


def _table(spark, run, name):
    return read_delta(spark, next(l.path for l in run.levels if l.table == name))


def test_every_level_is_a_delta_table_that_reads_back_the_same(spark, run):
    for level in run.levels:
        table = DeltaTable(level.path)
        assert_df_equality(read_delta(spark, level.path), spark.createDataFrame(table.to_pandas(), read_delta(spark, level.path).schema),
                           ignore_row_order=True, ignore_nullable=True)
    names = [l.table for l in run.levels]
    assert names[:3] == ["chunks", "chunk", "scene_r1"]
    assert names[-1].startswith("play_r")


def test_the_response_cache_has_change_data_feed_on_like_every_table(spark, run):
    cache = f"{run.output}/{CACHE}"
    assert DeltaTable(cache).metadata().configuration.get("delta.enableChangeDataFeed") == "true"
    changes = spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 0).load(cache)
    assert changes.filter("_change_type = 'insert'").count() == DeltaTable(cache).to_pyarrow_table().num_rows > 0


def test_row_counts_per_level(spark, run):
    chunks = _table(spark, run, "chunks")
    assert chunks.select("scene_id").distinct().count() == 4  # every scene, the empty one too
    assert chunks.filter("scene = 'SCENE I' and act = 'ACT I'").count() >= 3  # the oversize scene was chunked
    assert _table(spark, run, "chunk").count() == chunks.count()  # level 0: one row per chunk
    final = {}
    for level in run.levels[2:]:
        final[level.table.split("_r")[0]] = level.rows
    assert final == {"scene": 4, "act": 2, "play": 1}
    for level in run.levels[1:]:
        schema = read_delta(spark, level.path).schema
        nodes = [(f.name, f.dataType) for f in schema if not f.name.startswith("order_")]
        assert nodes == [(f.name, f.dataType) for f in NODE_SCHEMA], level.table
        # the leaves keep their order_by values (ordinal, chunk_index), so an incremental run ranks new ones among them
        assert [f.name for f in schema if f.name.startswith("order_")] == (["order_0", "order_1"] if level.table == "chunk" else [])


def test_every_scene_is_reachable_from_the_root(spark, run):
    tables = {l.table: read_delta(spark, l.path).toPandas() for l in run.levels[1:]}
    reachable = set(iter_lineage(tables, run.root["node_id"]))
    chunk_ids = set(tables["chunk"]["node_id"])
    assert chunk_ids <= reachable
    scene_ids = {cid.split(":", 1)[1].rsplit("#", 1)[0] for cid in chunk_ids}
    assert len(scene_ids) == 4


def test_each_round_read_the_previous_rounds_delta_table(run):
    for previous, current in zip(run.levels[1:], run.levels[2:]):
        assert current.input_files, current.table
        read = {urlsplit(uri).path for uri in current.input_files}
        assert read == {urlsplit(uri).path for uri in DeltaTable(previous.path).file_uris()}, current.table


def test_chunks_are_summarized_and_the_empty_scene_is_an_error_row(spark, run):
    level0 = _table(spark, run, "chunk").toPandas()
    empty = level0[level0["scene_id"] == "romeo-slice/ACT II/SCENE I"]
    assert len(empty) == 1 and empty.iloc[0]["status"] == "error" and "EmptyInput" in empty.iloc[0]["error"]
    others = level0[level0["scene_id"] != "romeo-slice/ACT II/SCENE I"]
    assert (others["status"] == "ok").all(), others[["node_id", "error"]]
    assert others["summary"].str.len().min() > len("In this part,")


def test_rows_carry_provenance(spark, run, settings):
    for level in run.levels[1:]:
        df = read_delta(spark, level.path).toPandas()
        assert (df["model"] == settings.llm.model).all()
        assert df["template_hash"].str.len().eq(16).all()
        assert df["plan_id"].str.len().eq(16).all() and df["run_id"].eq(run.run_id).all()
        assert df["endpoint_host"].str.startswith("127.0.0.1:").all()
        assert df["status"].isin(["ok", "partial", "error"]).all()
        called = df[df["llm_calls"] > 0]
        assert (called["prompt_tokens"] > 0).all() and (called["completion_tokens"] > 0).all()


def test_root_is_one_play_summary_that_states_the_empty_scene_it_leaves_out(spark, run):
    # the slice's empty scene is the one failed input: its scene node is an error, and every
    # ancestor is `partial` with the count (the engine's failure policy), never silently `ok`
    assert run.root["level"] == "play" and run.root["status"] == "partial"
    assert run.root["failed_inputs"] == 1 and run.root["error_class"] == "ChildrenFailed"
    scene = _table(spark, run, "scene_r1").filter("scene_id = 'romeo-slice/ACT II/SCENE I'").first()
    assert scene.status == "error" and scene.failed_inputs == 1 and "ChildrenFailed: all 1 children" in scene.error
    acts = {r.act: r for r in _table(spark, run, [l.table for l in run.levels if l.table.startswith("act_r")][-1]).collect()}
    assert acts["ACT I"].status == "ok" and acts["ACT I"].failed_inputs == 0
    assert acts["ACT II"].status == "partial" and acts["ACT II"].failed_inputs == 1
    assert run.summary and run.summary.startswith("In this ")
    assert "| chunk |" in run.table()


def test_several_plays_reduce_to_one_corpus_root_reusing_a_previous_jobs_answers(spark, run, settings, small_play, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(f"{run.output}/{CACHE}", cache)  # the small run's answers: its first scene costs no call here
    result = summarize_plays([str(small_play), "macbeth"], tmp_path / "out", spark,
                             settings.with_overrides(**{"spark.apwa.cache.path": str(cache)}), max_scenes=1)
    assert result.plays == ["romeo-slice", "macbeth"] and result.play == "corpus of 2 plays"
    assert [l.table for l in result.levels][-1].startswith("corpus_r")
    plays = [l for l in result.levels if l.table.startswith("play_r")][-1]
    assert plays.rows == 2 and plays.errors == 0
    assert result.root["level"] == "corpus" and result.root["play"] is None and result.root["status"] == "ok"
    assert result.summary.startswith("In this collection,")
    tables = {l.table: read_delta(spark, l.path).toPandas() for l in result.levels[1:]}
    reachable = set(iter_lineage(tables, result.root["node_id"]))
    assert {nid.split(":", 1)[1].split("/", 1)[0] for nid in reachable if nid.startswith("chunk:")} == {"romeo-slice", "macbeth"}
    chunk = tables["chunk"]
    assert chunk.loc[chunk["play"] == "romeo-slice", "from_cache"].all()
    assert not chunk.loc[chunk["play"] == "macbeth", "from_cache"].any()


def test_chunks_with_one_text_get_one_answer_from_one_call(spark, settings, tmp_path):
    gower = "(Enter GOWER)"
    scenes = [("ACT I", i, gower) for i in ("I", "II", "III")] + [("ACT II", i, gower) for i in ("I", "II", "III")]
    text = "# Dup\n\n" + "".join(
        (f"## {act}\n\n" if n == "I" else "") + f"### SCENE {n}\n\n{body}\n\n" for act, n, body in scenes)
    play = tmp_path / "dup.md"
    play.write_text(text + "### SCENE IV\n\nPERICLES: To Tharsus, and away.\n")
    result = summarize_play(str(play), tmp_path / "out", spark, settings)
    chunk = read_delta(spark, next(l.path for l in result.levels if l.table == "chunk")).toPandas().sort_values("ordinal")
    repeated = chunk[chunk["node_id"].str.contains("/SCENE I#|/SCENE II#|/SCENE III#")]
    assert len(repeated) == 6 and repeated["summary"].nunique() == 1 and (repeated["status"] == "ok").all()
    called = repeated["llm_calls"].gt(0).tolist()
    assert called == [True] + [False] * 5, repeated[["node_id", "llm_calls"]]  # six chunks, one call, on the first
    assert (repeated["prompt_tokens"].iloc[1:] == 0).all() and repeated["from_cache"].eq(False).all()


def test_pack_children_respects_the_budget_and_keeps_order():
    assert pack_children([40, 40, 40, 40], 90) == [[0, 1], [2, 3]]
    assert pack_children([40, 40, 40], 90) == [[0, 1, 2]]  # a lone last child joins the batch before it
    assert pack_children([200, 200], 90) == [[0, 1]]  # at least two a batch, so rounds converge
    assert pack_children([10], 90) == [[0]]
    batches = pack_children([30] * 10, 100)
    assert [i for b in batches for i in b] == list(range(10))

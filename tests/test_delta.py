"""Delta tables on both paths: native delta-spark (the shared session has it) and the delta-rs fallback."""

import json
from pathlib import Path

import pyarrow as pa
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable, write_deltalake
from pyspark.sql.types import LongType, StructField, StructType

from apwa_spark.delta import CDF, INDEXED_COLUMNS, DeltaRsDataSource, TableStore, has_native_delta, read_delta, resolve_engine, write_delta

ENGINES = ["native", "deltars"]


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    return request.param


def _history(spark, path) -> list[str]:
    return [r.operation for r in spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()]


def test_sessions_apwa_spark_creates_have_native_delta(spark):
    assert has_native_delta(spark)
    assert resolve_engine(spark) == "native" and resolve_engine(spark, "auto") == "native"
    assert resolve_engine(spark, "deltars") == "deltars"
    with pytest.raises(ValueError, match="auto, native, deltars"):
        resolve_engine(spark, "rust")


def test_round_trip_reads_back_the_same_through_spark_and_deltalake(spark, tmp_path, engine):
    df = spark.range(25).selectExpr("id", "cast(id * 2 as string) as s", "array(id, id + 1) as arr").repartition(3)
    write_delta(df, tmp_path / "t", engine=engine)
    table = DeltaTable(str(tmp_path / "t"))
    assert table.version() == 0
    assert sorted(table.to_pandas()["id"].tolist()) == list(range(25))
    assert_df_equality(read_delta(spark, tmp_path / "t", engine=engine), df, ignore_row_order=True, ignore_nullable=True)
    if engine == "deltars":
        assert len(table.file_uris()) == 3  # one Parquet file per Spark task, one commit
        assert read_delta(spark, tmp_path / "t", engine=engine).rdd.getNumPartitions() == 3  # one per file


def test_native_writes_are_one_commit_each_with_change_data_feed_on(spark, tmp_path):
    path = str(tmp_path / "t")
    write_delta(spark.range(10), path, engine="native")
    write_delta(spark.range(4), path, mode="overwrite", engine="native")
    write_delta(spark.range(3), path, mode="append", engine="native")
    assert _history(spark, path) == ["WRITE", "WRITE", "WRITE"]
    assert spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first().properties[CDF] == "true"
    changes = spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 2).load(path)
    assert sorted(r.id for r in changes.filter("_change_type = 'insert'").collect()) == [0, 1, 2]


def test_change_data_feed_is_on_in_a_session_without_the_default(spark, tmp_path):
    """A session the user brings may lack apwa-spark's CDF default: the table property is set on write."""
    key = "spark.databricks.delta.properties.defaults.enableChangeDataFeed"
    spark.conf.unset(key)
    try:
        write_delta(spark.range(2), tmp_path / "t", engine="native")
    finally:
        spark.conf.set(key, "true")
    assert spark.sql(f"DESCRIBE DETAIL delta.`{tmp_path / 't'}`").first().properties.get(CDF) == "true"
    assert DeltaTable(str(tmp_path / "t")).metadata().configuration.get(CDF) == "true"


def test_overwrite_and_append_are_new_versions(spark, tmp_path, engine):
    path = tmp_path / "t"
    write_delta(spark.range(10), path, engine=engine)
    write_delta(spark.range(4), path, mode="overwrite", engine=engine)
    assert read_delta(spark, path, engine=engine).count() == 4
    write_delta(spark.range(3), path, mode="append", engine=engine)
    assert read_delta(spark, path, engine=engine).count() == 7
    assert DeltaTable(str(path)).version() == 2


def test_empty_dataframe_makes_an_empty_table_with_its_schema(spark, tmp_path, engine):
    df = spark.range(5).selectExpr("id", "'x' as s").limit(0)
    write_delta(df, tmp_path / "e", engine=engine)
    back = read_delta(spark, tmp_path / "e", engine=engine)
    assert back.count() == 0
    assert back.columns == ["id", "s"]


def test_missing_table_and_bad_mode_are_clear_errors(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="no Delta table"):
        read_delta(spark, tmp_path / "nothing", engine="deltars")
    with pytest.raises(ValueError, match="overwrite"):
        write_delta(spark.range(1), tmp_path / "x", mode="upsert")


def test_fallback_reads_partition_columns_through_the_delta_log(spark, tmp_path):
    """A partitioned table written by another Delta writer: the partition column comes from the log."""
    path = str(tmp_path / "p")
    write_deltalake(path, pa.table({"a": [1, 2, 3, 4], "p": ["x", "x", "y", "y"]}), partition_by=["p"])
    write_deltalake(path, pa.table({"a": [5], "p": ["y"]}), mode="overwrite", predicate="p = 'y'")
    rows = {(r.a, r.p) for r in read_delta(spark, path, engine="deltars").collect()}
    assert rows == {(1, "x"), (2, "x"), (5, "y")}  # the version's files only, not every file in the folder


def test_fallback_reads_deletion_vectors_and_column_mapping_like_spark(spark, tmp_path):
    """Tables another writer made with Delta features: rows deleted through a deletion vector stay
    deleted, and a renamed column (column mapping) keeps its values."""
    dv, cm = str(tmp_path / "dv"), str(tmp_path / "cm")
    spark.range(10).coalesce(1).write.format("delta").option("delta.enableDeletionVectors", "true").save(dv)
    spark.sql(f"DELETE FROM delta.`{dv}` WHERE id < 3")
    (spark.range(5).selectExpr("id", "id * 10 AS tens").write.format("delta")  # Delta blocks renames under CDF
     .option(CDF, "false").option("delta.columnMapping.mode", "name").option("delta.minReaderVersion", "2")
     .option("delta.minWriterVersion", "5").save(cm))
    spark.sql(f"ALTER TABLE delta.`{cm}` RENAME COLUMN tens TO by_ten")
    for path in (dv, cm):
        assert_df_equality(read_delta(spark, path, engine="deltars"), spark.read.format("delta").load(path),
                           ignore_row_order=True, ignore_nullable=True)
    assert read_delta(spark, dv, engine="deltars").count() == 7


def _task_files(writer, batches_per_task: list[list[int]]):
    """Run the fallback writer's task side as Spark would, one call per task (real files, real delta-rs)."""
    return [writer.write(iter([pa.record_batch({"id": pa.array(values, pa.int64())})])) for values in batches_per_task]


def test_fallback_commit_is_idempotent_and_abort_after_a_commit_keeps_the_version(tmp_path):
    """Spark may call ``abort`` after a ``commit`` whose log entry was written (a failure after it), or
    run a commit twice: the committed version stays whole, and the retried commit adds nothing."""
    path = str(tmp_path / "t")
    schema = StructType([StructField("id", LongType())])
    writer = DeltaRsDataSource({"path": path}).writer(schema, overwrite=True)
    messages = _task_files(writer, [[1, 2], [3]])
    writer.commit(messages)
    writer.commit(messages)  # retried commit of the same write: a no-op (txn action)
    writer.abort(messages)  # the job is aborted after its commit landed
    table = DeltaTable(path)
    assert table.version() == 0
    assert table.transaction_version(writer.app_id) == 0
    assert sorted(table.to_pandas()["id"]) == [1, 2, 3]
    assert all(Path(uri.removeprefix("file://")).is_file() for uri in table.file_uris())


def test_fallback_abort_without_a_commit_deletes_the_writes_files(tmp_path):
    path = tmp_path / "t"
    write_deltalake(str(path), pa.table({"id": pa.array([0], pa.int64())}))
    before = {p.name for p in path.iterdir()}
    writer = DeltaRsDataSource({"path": str(path)}).writer(StructType([StructField("id", LongType())]), overwrite=False)
    messages = _task_files(writer, [[1], [2]])
    assert len({p.name for p in path.iterdir()} - before) == 2
    writer.abort(messages)
    assert {p.name for p in path.iterdir()} == before
    assert DeltaTable(str(path)).to_pandas()["id"].tolist() == [0]


@pytest.mark.parametrize("schema", [None, "apwa_test_stats"])
def test_a_step_table_has_record_counts_but_no_column_stats_and_other_tables_keep_them(spark, tmp_path, schema):
    """A run's step tables are written with ``column_stats=False``; its result and dead letters are not."""
    store = TableStore.create(spark, str(tmp_path / "run"), "auto", schema=schema)
    df = spark.range(5).selectExpr("id", "cast(id as string) as s").coalesce(1)

    def stats(name: str) -> tuple[str | None, dict]:
        """The table's INDEXED_COLUMNS property and its latest commit's file statistics, from the log."""
        detail = spark.sql(f"DESCRIBE DETAIL {store.location(name) if schema else f'delta.`{store.location(name)}`'}").first()
        log = Path(detail.location.removeprefix("file:")) / "_delta_log"
        [add] = [json.loads(line)["add"] for line in sorted(log.glob("*.json"))[-1].read_text().splitlines() if '"add"' in line]
        return detail.properties.get(INDEXED_COLUMNS), json.loads(add["stats"])

    store.write(df, "scene_r1", column_stats=False)
    store.write(df, "result")
    assert stats("scene_r1") == ("0", {"numRecords": 5})
    assert stats("result")[0] is None and stats("result")[1]["minValues"] == {"id": 0, "s": "0"}
    store.write(df, "result", column_stats=False)  # a table that exists keeps its properties
    assert stats("result")[0] is None and "minValues" in stats("result")[1]


@pytest.mark.parametrize("engine,schema", [("native", None), ("deltars", None), ("native", "apwa_test_head")])
def test_head_gives_a_small_tables_first_rows_as_spark_would_and_a_path_table_without_a_spark_job(
        spark, tmp_path, engine, schema):
    store = TableStore.create(spark, str(tmp_path / "run"), engine, schema=schema)
    row = ("play", None, 1, 7, ["act:1", "act:2"], True, "The summary.")
    df = spark.createDataFrame([row], "play string, act string, round int, ordinal long, children array<string>, "
                                      "from_cache boolean, summary string")
    store.write(df, "result")
    expected = [r.asDict(recursive=True) for r in store.read("result").collect()]
    group = f"head-{engine}-{schema}"
    spark.sparkContext.setJobGroup(group, "TableStore.head")
    try:
        [head] = store.head("result", 1)
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    typed = lambda d: [(k, type(v), v) for k, v in d.items()]  # noqa: E731  (True == 1: compare the types too)
    assert typed(head) == typed(expected[0]) == typed(dict(zip(df.columns, row)))
    jobs = spark.sparkContext.statusTracker().getJobIdsForGroup(group)
    assert (len(jobs) > 0) if schema else jobs == []  # a catalog table is read by Spark; a path by delta-rs
    store.write(df.limit(0), "result")  # the current version only: the overwritten file is not read
    assert store.head("result") == []
    if engine == "deltars":
        with pytest.raises(FileNotFoundError):
            store.head("nothing")


def test_catalog_output_makes_managed_delta_tables_with_change_data_feed(spark, tmp_path):
    store = TableStore.create(spark, str(tmp_path / "run"), "auto", schema="apwa_test_store")
    store.write(spark.range(3), "chunk")
    store.write(spark.range(2), "scene_r1")
    store.write(spark.range(1), "_dead_letter", mode="append")
    tables = {t.name: t.tableType for t in spark.catalog.listTables("apwa_test_store") if not t.isTemporary}
    assert tables == {"chunk": "MANAGED", "scene_r1": "MANAGED", "_dead_letter": "MANAGED"}
    detail = spark.sql("DESCRIBE DETAIL apwa_test_store.chunk").first()
    assert detail.format == "delta" and detail.properties[CDF] == "true"
    assert store.read("scene_r1").count() == 2
    assert not (tmp_path / "run" / "chunk").exists()  # the folder keeps only the run's files (cache, manifests)
    with pytest.raises(ValueError, match="needs native Delta"):
        TableStore.create(spark, str(tmp_path / "run"), "deltars", schema="apwa_test_store")


def test_deltars_uri_opens_dbfs_through_its_mount_and_leaves_others_alone():
    from apwa_spark.storage import deltars_uri

    assert deltars_uri("dbfs:/runs/notes/_llm_cache") == "/dbfs/runs/notes/_llm_cache"
    assert deltars_uri("s3a://bucket/runs/x/") == "s3a://bucket/runs/x"
    assert deltars_uri("/Volumes/main/default/runs") == "/Volumes/main/default/runs"
    assert deltars_uri("file:///tmp/x") == "/tmp/x"


def test_an_overwrite_with_new_columns_replaces_the_table_as_a_rerun_of_a_newer_version_does(spark, tmp_path, engine):
    path = str(tmp_path / "t")
    write_delta(spark.range(3).selectExpr("id"), path, engine=engine)
    write_delta(spark.range(2).selectExpr("id", "id * 2 AS failed_inputs"), path, engine=engine)
    back = read_delta(spark, path, engine)
    assert back.columns == ["id", "failed_inputs"] and back.count() == 2


def test_a_new_tables_commit_runs_no_job_over_the_empty_table_it_replaces(spark, tmp_path):
    """``allFilesInCrc`` is off in the sessions apwa-spark starts (``session.DELTA_DEFAULTS``): with it on,
    delta-spark 4.4 runs one more Spark job per new table, to list the empty table's files."""
    key, sc = "spark.databricks.delta.allFilesInCrc.enabled", spark.sparkContext
    assert spark.conf.get(key) == "false"

    def jobs_of_a_new_table(name: str) -> int:
        sc.setJobGroup(f"write-{name}", "one new table")
        try:
            write_delta(spark.range(3).coalesce(1), tmp_path / name, engine="native")
        finally:
            sc.setLocalProperty("spark.jobGroup.id", None)
        return len(sc.statusTracker().getJobIdsForGroup(f"write-{name}"))

    default = jobs_of_a_new_table("a")
    spark.conf.set(key, "true")
    try:
        listed = jobs_of_a_new_table("b")
    finally:
        spark.conf.set(key, "false")
    assert default == 1  # the write job alone (a new table is written with errorifexists: no listing of an empty one)
    assert listed == default + 1
    assert read_delta(spark, tmp_path / "a").count() == 3 == read_delta(spark, tmp_path / "b").count()


def test_a_new_table_is_written_by_its_write_job_alone_and_an_existing_one_is_still_replaced(spark, tmp_path):
    """An overwrite where no table exists yet is made with mode ``errorifexists`` (``delta._new_table_mode``):
    delta-spark then runs no job over the empty table it would replace. Over an existing table the
    write is still an overwrite: its rows and its schema are replaced."""
    sc = spark.sparkContext

    def jobs(group: str, df) -> int:
        sc.setJobGroup(group, "one write")
        try:
            write_delta(df.coalesce(1), tmp_path / "t", engine="native")
        finally:
            sc.setLocalProperty("spark.jobGroup.id", None)
        return len(sc.statusTracker().getJobIdsForGroup(group))

    new = jobs("new", spark.range(3))
    replaced = jobs("replaced", spark.range(5).selectExpr("id", "'x' AS s"))
    assert new == 1  # the write job
    assert replaced > new  # an overwrite lists the files of the table it replaces
    back = read_delta(spark, tmp_path / "t")
    assert back.columns == ["id", "s"] and back.count() == 5
    modes = spark.sql(f"DESCRIBE HISTORY delta.`{tmp_path / 't'}`").orderBy("version").select("operationParameters.mode").collect()
    assert [r[0] for r in modes] == ["ErrorIfExists", "Overwrite"]

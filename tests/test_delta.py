import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable

from apwa_spark.delta import has_native_delta, read_delta, write_delta


def test_no_delta_jars_here_so_delta_rs_path_is_used(spark):
    assert not has_native_delta(spark)


def test_round_trip_opens_with_deltalake_and_reads_back_the_same_rows(spark, tmp_path):
    df = spark.range(25).selectExpr("id", "cast(id * 2 as string) as s", "array(id, id + 1) as arr").repartition(3)
    write_delta(df, tmp_path / "t")
    table = DeltaTable(str(tmp_path / "t"))
    assert table.version() == 0
    assert len(table.file_uris()) == 3  # one Parquet file per Spark task, one commit
    assert sorted(table.to_pandas()["id"].tolist()) == list(range(25))
    assert_df_equality(read_delta(spark, tmp_path / "t"), df, ignore_row_order=True, ignore_nullable=True)


def test_overwrite_and_append_are_new_versions(spark, tmp_path):
    path = tmp_path / "t"
    write_delta(spark.range(10), path)
    write_delta(spark.range(4), path, mode="overwrite")
    assert read_delta(spark, path).count() == 4
    write_delta(spark.range(3), path, mode="append")
    assert read_delta(spark, path).count() == 7
    assert DeltaTable(str(path)).version() == 2


def test_empty_dataframe_makes_an_empty_table_with_its_schema(spark, tmp_path):
    df = spark.range(5).selectExpr("id", "'x' as s").limit(0)
    write_delta(df, tmp_path / "e")
    back = read_delta(spark, tmp_path / "e")
    assert back.count() == 0
    assert back.columns == ["id", "s"]


def test_missing_table_and_bad_mode_are_clear_errors(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="no Delta table"):
        read_delta(spark, tmp_path / "nothing")
    with pytest.raises(ValueError, match="overwrite"):
        write_delta(spark.range(1), tmp_path / "x", mode="upsert")

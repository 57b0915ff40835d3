import pytest

from apwa_spark.llm.client import LLMClient
from apwa_spark.plays import (PLAY_STRIDE, SCENE_SCHEMA, UnknownPlayError, available_plays, parse_play, read_play, read_plays,
                              resolve_play, resolve_plays)
from apwa_spark.tools import chunk_text, chunk_texts, count_chars, split_text


def test_romeo_and_juliet_has_its_26_scenes_in_order():
    scenes = parse_play(available_plays()["romeo-and-juliet"].read_text())
    assert len(scenes) == 26
    assert (scenes[0].act, scenes[0].scene) == ("ACT I", "PROLOGUE")
    assert (scenes[-1].act, scenes[-1].scene) == ("ACT V", "SCENE III")
    assert [s.act for s in scenes].count("ACT III") == 5
    assert scenes[1].text.startswith("(Enter SAMPSON and GREGORY")
    assert "SAMPSON: Gregory, o' my word" in scenes[1].text  # speaker markup compacted


def test_all_plays_parse_without_losing_text():
    plays = available_plays()
    assert len(plays) >= 37
    for name, path in plays.items():
        raw = path.read_text()
        scenes = parse_play(raw)
        assert scenes, name
        # every spoken word survives: the last line of the file is in the last scene
        last_line = [l for l in raw.splitlines() if l.strip()][-1].strip("*_ ")
        assert last_line.split()[-1].strip("*_") in scenes[-1].text or not scenes[-1].text, name


def test_unknown_play_lists_the_choices():
    with pytest.raises(UnknownPlayError) as err:
        resolve_play("romeo-and-julia")
    assert "romeo-and-juliet" in str(err.value) and "hamlet" in str(err.value)


def test_empty_scene_is_kept():
    scenes = parse_play("# T\n\n## ACT I\n\n### SCENE I. Nowhere.\n\n### SCENE II. Here.\n\nA: hello\n")
    assert [(s.scene, s.text) for s in scenes] == [("SCENE I", ""), ("SCENE II", "A: hello")]


def test_a_section_heading_without_text_is_a_marker_not_a_scene():
    interval = parse_play("# T\n\n## ACT III\n\n### SCENE I\n\nA: one\n\n# INTERMISSION\n\n### SCENE II\n\nB: two\n"
                          "\n# EPILOGUE\n\nC: farewell\n")
    assert [(s.act, s.scene, s.text) for s in interval] == [
        ("ACT III", "SCENE I", "A: one"), ("ACT III", "SCENE II", "B: two"), ("EPILOGUE", "EPILOGUE", "C: farewell")]
    induction = parse_play("# T\n\n## PROLOGUE\n\n### SCENE I\n\nA: one\n\n## ACT I\n\n### SCENE I\n\nB: two\n")
    assert [(s.act, s.scene) for s in induction] == [("PROLOGUE", "SCENE I"), ("ACT I", "SCENE I")]
    edward = parse_play(available_plays()["edward-iii"].read_text())
    assert all(s.text for s in edward)  # session 3's histories run had an empty INTERMISSION "scene" here
    assert [s.scene for s in edward if s.act == "ACT III"] == ["SCENE I", "SCENE II", "SCENE III", "SCENE IV", "SCENE V"]


def test_read_play_dataframe(spark, small_play):
    df = read_play(spark, str(small_play))
    assert df.schema == SCENE_SCHEMA
    rows = df.orderBy("ordinal").collect()
    assert [r.scene_id for r in rows] == ["romeo-slice/ACT I/PROLOGUE", "romeo-slice/ACT I/SCENE I",
                                          "romeo-slice/ACT II/PROLOGUE", "romeo-slice/ACT II/SCENE I"]
    assert read_play(spark, "romeo-and-juliet", max_scenes=3).count() == 3


def test_resolve_plays_expands_all_keeps_order_and_rejects_bad_names(small_play, monkeypatch):
    assert resolve_plays("all") == list(available_plays())
    assert resolve_plays(["macbeth", "hamlet", "macbeth"]) == ["macbeth", "hamlet"]
    with pytest.raises(UnknownPlayError, match="hamlett"):
        resolve_plays(["macbeth", "hamlett"])
    with pytest.raises(ValueError, match="no play"):
        resolve_plays([])
    same_name = small_play.parent / "sub" / small_play.name
    same_name.parent.mkdir(exist_ok=True)
    same_name.write_text(small_play.read_text())
    with pytest.raises(ValueError, match="one name"):
        resolve_plays([str(small_play), str(same_name)])
    hamlet = str(available_plays()["hamlet"])
    assert resolve_plays(["hamlet", hamlet]) == ["hamlet"]  # one file, named two ways
    monkeypatch.chdir(small_play.parent)
    assert resolve_plays([small_play.name]) == [str(small_play.resolve())]  # a file is kept by its absolute path


def test_read_plays_orders_plays_as_given(spark, small_play):
    rows = read_plays(spark, [str(small_play), "macbeth"], max_scenes=2).orderBy("ordinal").collect()
    assert [(r.play, r.scene_id.split("/", 1)[1]) for r in rows] == [
        ("romeo-slice", "ACT I/PROLOGUE"), ("romeo-slice", "ACT I/SCENE I"), ("macbeth", "ACT I/SCENE I"),
        ("macbeth", "ACT I/SCENE II")]
    assert [r.ordinal // PLAY_STRIDE for r in rows] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="at least 1"):
        read_plays(spark, ["macbeth"], max_scenes=0)
    with pytest.raises(ValueError, match="read_plays"):
        read_play(spark, "all")


@pytest.mark.model
def test_oversize_text_is_chunked_in_order_without_loss(settings):
    client = LLMClient(settings)
    text = parse_play(available_plays()["romeo-and-juliet"].read_text())[1].text[:6000]
    chunks = chunk_text(text, 200, client.count_tokens)
    assert len(chunks) >= 6
    assert "".join(piece for piece, _ in chunks) == text
    assert all(0 < tokens <= 200 for _, tokens in chunks)
    assert [t for _, t in chunks] == client.count_tokens([p for p, _ in chunks])


@pytest.mark.model
def test_single_line_longer_than_the_budget_is_cut(settings):
    client = LLMClient(settings)
    text = "word " * 400  # one line, no blank lines
    chunks = chunk_text(text, 50, client.count_tokens)
    assert "".join(p for p, _ in chunks) == text
    assert all(t <= 50 for _, t in chunks)


def test_one_chunker_cuts_by_characters_or_tokens_at_headings_without_loss():
    text = "# One\n\nalpha beta\n\n" + "gamma " * 30 + "\n# Two\n\ndelta\n"
    [pieces] = chunk_texts([text], 40, count_chars, by_headings=True)
    assert "".join(p for p, _ in pieces) == text and all(n == len(p) <= 40 for p, n in pieces)
    assert pieces[0][0].startswith("# One") and any(p.startswith("# Two") for p, _ in pieces)
    assert split_text(text, 40, by_headings=True) == [p for p, _ in pieces]  # the chunk_text tool is the same chunker
    assert chunk_texts(["", "short"], 40, count_chars) == [[("", 0)], [("short", 5)]]  # empty text: one empty piece

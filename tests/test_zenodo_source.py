"""Tests of the zenodo source: a real build of a planted-defect release."""

import json
import os
import re
import sys
import warnings

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ctxtag import audio
from ctxtag import datasets
from ctxtag import errors
from ctxtag import input_pipeline
from ctxtag import labels
from ctxtag import run
from ctxtag.sources import assemble
from ctxtag.sources import build_report
from ctxtag.sources import csv_files
from ctxtag.sources import mels
from ctxtag.sources import user_embeddings
from ctxtag.sources import zenodo
from tests import zenodo_fixture as fixture
from tfds_builders import contextual_tags

VERSION = str(contextual_tags.Builder.VERSION)

OPTIONS = f"excerpt_seconds={fixture.EXCERPT_SECONDS}"


def _records(dataset_path: str, split: str) -> dict[int, dict]:
  source = tfds.builder_from_directory(dataset_path).as_data_source(split)
  return {int(source[i]["song_id"]): source[i] for i in range(len(source))}


def _kept(records: dict) -> list[tuple]:
  return sorted(
      (song, int(u), labels.LABELS[int(c)])
      for song, record in records.items()
      for u, c in zip(record["pairs"]["user_id"], record["pairs"]["label"]))


@pytest.fixture(scope="module")
def audio_build(tmp_path_factory):
  root = tmp_path_factory.mktemp("zenodo")
  manual = fixture.write_release(str(root / "manual"))
  path = datasets.build("contextual_tags/zenodo", str(root / "data"), manual,
                      OPTIONS, workers=2)
  return manual, path


@pytest.mark.slow
def test_keeps_exactly_the_good_pairs(audio_build):
  _, path = audio_build
  for split, expected in fixture.EXPECTED_KEPT.items():
    records = _records(path, split)
    assert _kept(records) == sorted(expected)
    for record in records.values():
      for user, vector in zip(record["pairs"]["user_id"],
                              record["pairs"]["user_embedding"]):
        np.testing.assert_array_equal(vector, fixture.embedding_of(int(user)))
  assert "context_probs" not in _records(path, "train")[11]["pairs"]
  assert "tensorflow" not in sys.modules


@pytest.mark.slow
def test_every_drop_is_counted_under_its_reason(audio_build):
  _, path = audio_build
  with open(os.path.join(path, build_report.REPORT_FILE)) as f:
    report = json.load(f)
  dropped = {reason: (e["tracks"], e["pairs"], e["users"])
             for reason, e in report["dropped"].items()}
  assert dropped == fixture.EXPECTED_DROPPED
  assert report["padded"] == 1
  assert report["splits"]["validation"] == {"tracks": 3, "pairs": 3}
  kept = sum(s["pairs"] for s in report["splits"].values())
  rows = sum(len(rows) for rows in fixture.SPLIT_ROWS.values())
  assert kept + sum(p for _, p, _ in dropped.values()) == rows
  assert report["dropped"]["audio_missing"]["examples"] == [
      fixture.MISSING_TRACK]
  assert report["dropped"]["label_not_one_hot"]["examples"] == [
      "train_set.csv:10", "train_set.csv:11"]
  assert "user_embedding_invalid" in datasets.build_report_text(path)


@pytest.mark.slow
def test_mels_equal_the_front_end_of_each_file(audio_build):
  manual, path = audio_build
  records = _records(path, "train")
  for song, extension in fixture.GOOD_TRACKS.items():
    file = os.path.join(manual, "audio", f"{song}.{extension}")
    mel, padded = audio.excerpt_from_file(file, fixture.EXCERPT_SECONDS,
                                          max_padding_seconds=1.0)
    assert (padded > 0) == (song == fixture.PADDED_TRACK)
    np.testing.assert_array_equal(records[song]["mel"],
                                  mel.astype(np.float16))
  assert records[11]["mel"].shape == (audio.num_frames(2.0), audio.N_MELS)


@pytest.mark.slow
def test_npz_mels_are_log_compressed_and_wrong_shapes_counted(tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"), "spectrograms")
  path = datasets.build("contextual_tags/zenodo", str(tmp_path / "data"),
                      manual, workers=1)
  records = _records(path, "train")
  for song in fixture.GOOD_TRACKS:
    with np.load(os.path.join(manual, "spectrograms",
                              f"mels{song}.npz")) as npz:
      expected = np.log(1 + 100 * npz["arr_0"][0])
    np.testing.assert_allclose(records[song]["mel"].astype(np.float32),
                               expected, rtol=1e-3, atol=1e-6)
    assert records[song]["mel"].shape == (646, 96)
  with open(os.path.join(path, build_report.REPORT_FILE)) as f:
    dropped = json.load(f)["dropped"]
  assert dropped["spectrogram_wrong_shape"]["examples"] == [
      fixture.TOO_SHORT_TRACK]
  assert dropped["audio_unreadable"]["examples"] == [
      fixture.UNREADABLE_TRACK]
  assert dropped["audio_missing"]["tracks"] == 1


@pytest.mark.slow
def test_strict_stops_at_the_first_defect_naming_file_and_line(tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"))
  with pytest.raises(build_report.DefectError,
                     match=r"train_set.csv line 10: the context columns are"
                           " not one-hot"):
    datasets.build("contextual_tags/zenodo", str(tmp_path / "data"), manual,
                 OPTIONS, strict=True, workers=1)
  assert not os.path.exists(input_pipeline.dataset_dir(
      tmp_path / "data", "contextual_tags/zenodo-excerpt_seconds2.0",
      VERSION))


@pytest.mark.slow
@pytest.mark.slow
def test_a_split_without_rows_is_refused_before_any_audio_is_decoded(
    tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"))
  path = os.path.join(manual, "test_set.csv")
  with open(path) as f:
    header = f.readline()
  with open(path, "w") as f:
    f.write(header)
  data = tmp_path / "data"
  with pytest.raises(errors.DatasetError,
                     match=f"^{re.escape(path)}: no usable row"):
    datasets.build("contextual_tags/zenodo", str(data), manual, OPTIONS)
  assert not (data / "downloads" / "ctxtag_mels").exists()  # none decoded


def test_missing_csv_or_column_is_always_an_error(tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"))
  os.remove(os.path.join(manual, "test_set.csv"))
  with pytest.raises(csv_files.CsvError, match="test_set.csv: no such file"):
    datasets.build("contextual_tags/zenodo", str(tmp_path / "data"), manual,
                 OPTIONS)
  path = os.path.join(manual, "test_set.csv")
  with open(path, "w") as f:
    f.write("song_id,user_id,car,gym\n1,2,1,0\n")
  with pytest.raises(csv_files.CsvError, match="missing column.*happy"):
    datasets.build("contextual_tags/zenodo", str(tmp_path / "data"), manual,
                 OPTIONS)


def test_embedding_literals_are_parsed_never_evaluated():
  vector = user_embeddings.parse_vector("[" + ", ".join(["1e-3"] * 256) + "]")
  assert vector.shape == (256,) and vector[0] == np.float32(1e-3)
  spaced = user_embeddings.parse_vector("[" + " ".join(["2"] * 256) + "]")
  assert spaced.sum() == 512
  for text, message in [("[1, 2]", "has 2 numbers, expected 256"),
                        ("__import__('os')", "not a list literal"),
                        ("[" + ", ".join(["x"] * 256) + "]", "not a number"),
                        ("[" + ", ".join(["inf"] * 256) + "]", "NaN or inf")]:
    with pytest.raises(ValueError, match=message):
      user_embeddings.parse_vector(text)


@pytest.mark.slow
def test_mels_are_cached_and_a_rebuild_decodes_nothing(tmp_path, monkeypatch):
  manual = fixture.write_release(str(tmp_path / "manual"))
  data = str(tmp_path / "data")
  path = datasets.build("contextual_tags/zenodo", data, manual, OPTIONS,
                      workers=1)
  first = _records(path, "test")
  calls = []
  real = audio.excerpt_from_file
  monkeypatch.setattr(audio, "excerpt_from_file",
                      lambda *a, **k: calls.append(a) or real(*a, **k))
  os.rename(path, path + ".old")
  again = datasets.build("contextual_tags/zenodo", data, manual, OPTIONS,
                       workers=1)
  assert calls == []
  for song, record in _records(again, "test").items():
    np.testing.assert_array_equal(record["mel"], first[song]["mel"])
  os.utime(os.path.join(manual, "audio", "11.wav"))  # a changed file
  os.rename(again, again + ".older")
  datasets.build("contextual_tags/zenodo", data, manual, OPTIONS, workers=1)
  assert [os.path.basename(str(c[0])) for c in calls] == ["11.wav"]


@pytest.mark.slow
def test_beam_build_equals_plain_build(tmp_path, audio_build):
  beam_options = pytest.importorskip("apache_beam.options.pipeline_options")
  manual, plain = audio_build
  beam = datasets.build(
      "contextual_tags/zenodo", str(tmp_path / "beam"), manual, OPTIONS,
      beam_options=beam_options.PipelineOptions(["--runner=DirectRunner"]))
  for split in ("train", "validation", "test"):
    ours, theirs = _records(beam, split), _records(plain, split)
    assert sorted(ours) == sorted(theirs)
    for song in ours:
      np.testing.assert_array_equal(ours[song]["mel"], theirs[song]["mel"])
      for key in ("user_id", "label", "user_embedding"):
        np.testing.assert_array_equal(ours[song]["pairs"][key],
                                      theirs[song]["pairs"][key])
  with open(os.path.join(beam, build_report.REPORT_FILE)) as f:
    beam_report = json.load(f)
  with open(os.path.join(plain, build_report.REPORT_FILE)) as f:
    assert beam_report == json.load(f)


@pytest.mark.slow
def test_reproduction_runs_on_the_release_at_646_frames(tmp_path):
  from ctxtag.configs import smoke  # pylint: disable=g-import-not-at-top
  manual = fixture.write_synthetic_release(
      str(tmp_path / "manual"), num_tracks=16, seconds=30.0, mono_22k=True)
  config = smoke.get_config()
  config.models = ("audio_user",)  # reads the mels and the embeddings
  config.dataset = "contextual_tags/zenodo"
  config.manual_dir = manual
  workdir = str(tmp_path / "run")
  results = run.reproduce(config, workdir)
  path = open(os.path.join(workdir, "dataset_path.txt")).read()
  assert path.endswith(os.path.join("contextual_tags", "zenodo", VERSION))
  assert _records(path, "test")[1]["mel"].shape == (646, 96)
  assert set(results["satisfaction"]) == {"audio_user"}
  report = open(os.path.join(workdir, "report.md")).read()
  assert "the paper's own public release (Zenodo record 3961560)" in report
  assert "0 dropped" in report


@pytest.mark.slow
def test_a_killed_build_leaves_no_dataset_and_resumes_its_mels(
    tmp_path, monkeypatch):
  manual = fixture.write_release(str(tmp_path / "manual"))
  data = str(tmp_path / "data")
  real = audio.excerpt_from_file
  calls = []

  def killed_after_three(*args, **kwargs):
    if len(calls) == 3:
      raise KeyboardInterrupt("simulated kill")
    calls.append(os.path.basename(str(args[0])))
    return real(*args, **kwargs)

  monkeypatch.setattr(audio, "excerpt_from_file", killed_after_three)
  with pytest.raises(KeyboardInterrupt):
    datasets.build("contextual_tags/zenodo", data, manual, OPTIONS, workers=1)
  path = input_pipeline.dataset_dir(
      data, "contextual_tags/zenodo-excerpt_seconds2.0", VERSION)
  assert not os.path.exists(path)
  done, calls[:] = list(calls), []
  monkeypatch.setattr(audio, "excerpt_from_file",
                      lambda *a, **k: calls.append(
                          os.path.basename(str(a[0]))) or real(*a, **k))
  built = datasets.build("contextual_tags/zenodo", data, manual, OPTIONS,
                       workers=1)
  assert built == path
  assert not set(done) & set(calls)  # finished mels are not decoded again
  assert len(done) + len(calls) == 8  # every file with pairs, once


@pytest.mark.slow
def test_a_random_resplit_keeps_every_good_pair_once(tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"))
  path = datasets.build("contextual_tags/zenodo", str(tmp_path / "data"),
                      manual, OPTIONS, workers=1,
                      split=assemble.SplitSettings("random", seed=2))
  assert "zenodo-excerpt_seconds2.0-random_seed2" in path
  kept = sum((_kept(_records(path, s)) for s in ("train", "validation",
                                                  "test")), [])
  assert sorted(kept) == sorted(
      sum(fixture.EXPECTED_KEPT.values(), []))
  with open(os.path.join(path, build_report.REPORT_FILE)) as f:
    report = json.load(f)
  assert report["dropped"]["audio_missing"]["pairs"] == 2
  assert sum(s["pairs"] for s in report["splits"].values()) == 15


@pytest.mark.slow
@pytest.mark.parametrize("key,value,message", [
    ("dataset_options", "offset_seconds=-1", "offset_seconds must be >= 0"),
    ("dataset_options", "colour=red", "unknown zenodo setting 'colour'"),
    ("manual_dir", "/no/such/dir", "manual_dir='/no/such/dir': no such"),
])
def test_bad_dataset_settings_are_refused_before_the_config_is_saved(
    tmp_path, key, value, message):
  from ctxtag.configs import smoke  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  config.dataset = "contextual_tags/zenodo"
  config.manual_dir = str(tmp_path)
  config[key] = value
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=message):
    run.prepare_run(config, str(workdir))
  assert not (workdir / "config.json").exists()


# Every defect counted: conflicting user rows, npz values beyond float32.


def _embedding_row(user: int, vector) -> str:
  return f'{user},"[{", ".join(repr(float(v)) for v in vector)}]"'


def test_a_user_listed_with_two_vectors_is_conflicting(tmp_path):
  path = tmp_path / "user_embeddings.csv"
  one, two = fixture.embedding_of(1), fixture.embedding_of(2)
  path.write_text("\n".join([
      "user_id,embedding",
      _embedding_row(1, one), _embedding_row(2, two),
      _embedding_row(1, one),              # the same again: kept, silently
      _embedding_row(2, one),              # another vector: conflicting
      _embedding_row(3, one), '3,"[1, 2]"',  # valid, then not: conflicting
      '4,"[nan]"', '4,"[1]"',              # invalid twice: invalid
      _embedding_row(2, two),              # a third row changes nothing
  ]) + "\n")
  embeddings = user_embeddings.read(path)
  assert sorted(embeddings.row_of_user) == [1]
  np.testing.assert_array_equal(embeddings.lookup(1), one)
  assert embeddings.conflicting == {
      2: ((3, 5), "listed twice with different vectors"),
      3: ((6, 7), "listed twice, once with a valid vector and once without")}
  assert sorted(embeddings.invalid) == [4]


@pytest.mark.slow
def test_conflicting_users_are_dropped_with_their_pairs_and_counted(
    tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"), "spectrograms")
  with open(os.path.join(manual, "user_embeddings.csv"), "a") as f:
    f.write(_embedding_row(1, fixture.embedding_of(99)) + "\n")  # differs
    f.write(_embedding_row(2, fixture.embedding_of(2)) + "\n")   # the same
  path = datasets.build("contextual_tags/zenodo", str(tmp_path / "data"),
                        manual, workers=1)
  with open(os.path.join(path, build_report.REPORT_FILE)) as f:
    dropped = json.load(f)["dropped"]
  # User 1's rows: (11, car), (12, happy), (21, car); its repeat of (11,
  # 1) is a duplicate_pair first. Users are judged before tracks.
  assert dropped[assemble.USER_EMBEDDING_CONFLICTING] == {
      "tracks": 0, "pairs": 3, "users": 1, "examples": [1]}
  kept_users = {int(u) for record in _records(path, "train").values()
                for u in record["pairs"]["user_id"]}
  assert 1 not in kept_users and 2 in kept_users


@pytest.mark.slow
def test_strict_stops_at_a_conflicting_user_naming_both_lines(tmp_path):
  manual = fixture.write_synthetic_release(
      str(tmp_path / "manual"), num_tracks=6, seconds=3.0, mono_22k=True)
  embeddings = os.path.join(manual, "user_embeddings.csv")
  with open(embeddings) as f:
    lines = f.read().splitlines()
  user = int(lines[1].partition(",")[0])
  with open(embeddings, "a") as f:
    f.write(_embedding_row(user, fixture.embedding_of(10**6)) + "\n")
  with pytest.raises(build_report.DefectError,
                     match=rf"user_embeddings.csv lines 2 and {len(lines) + 1}:"
                           rf" user {user} is listed twice with different"
                           " vectors"):
    datasets.build("contextual_tags/zenodo", str(tmp_path / "data"), manual,
                   OPTIONS, strict=True, workers=1)


def test_npz_values_beyond_float32_or_nan_are_invalid_not_inf(tmp_path):
  frames = audio.num_frames(audio.PAPER_EXCERPT_SECONDS)
  front_end = zenodo.Options().front_end()
  shape = (1, frames, audio.N_MELS)
  huge = np.full(shape, 0.01, np.float64)
  huge[0, 3, 5] = 1e300  # finite in float64, inf in float32
  near = np.full(shape, 0.01, np.float32)
  near[0, 0, 0] = 1e37  # finite in float32, inf once compressed (x 100)
  nan = np.full(shape, 0.01, np.float32)
  nan[0, 1, 1] = np.nan
  statuses = {}
  for song, power in ((1, huge), (2, near), (3, nan),
                      (4, np.full(shape, 0.01, np.float64))):
    path = str(tmp_path / f"mels{song}.npz")
    np.savez(path, power)
    task = mels.Task(song, path, "spectrograms", str(tmp_path / "cache"))
    os.makedirs(task.cache_dir, exist_ok=True)
    with warnings.catch_warnings():
      warnings.simplefilter("error")  # no overflow RuntimeWarning either
      statuses[song] = mels.extract(task, front_end)
  assert [statuses[s]["status"] for s in (1, 2, 3, 4)] == [
      mels.SPECTROGRAM_INVALID] * 3 + [mels.OK]
  assert "float32" in statuses[1]["message"]
  assert "NaN" in statuses[3]["message"]
  assert np.all(np.isfinite(mels.load(str(tmp_path / "cache"), 4)))


def test_npz_statuses_cached_before_the_float32_check_are_remade(tmp_path):
  path = str(tmp_path / "mels1.npz")
  power = np.full((1, 646, audio.N_MELS), 0.01, np.float64)
  power[0, 0, 0] = 1e300
  np.savez(path, power)
  task = mels.Task(1, path, "spectrograms", str(tmp_path))
  status = mels.extract(task, zenodo.Options().front_end())
  # What an older ctxtag cached for it: ok, without the check's mark.
  old = dict(status, status=mels.OK, message="")
  del old["npz_checks"]
  with open(tmp_path / "1.json", "w") as f:
    json.dump(old, f)
  np.save(tmp_path / "1.npy", np.zeros((646, audio.N_MELS), np.float16))
  assert mels.cached_status(task) is None
  assert mels.extract(task, zenodo.Options().front_end())["status"] == (
      mels.SPECTROGRAM_INVALID)


@pytest.mark.parametrize("text", ["١٢", "１２", "-3", "+5", "1_000", "1e3",
                                  "12.0", "0x1f", "", "1 2", str(2**63)])
def test_ids_are_ascii_whole_numbers_by_one_rule(text):
  with pytest.raises(ValueError):
    csv_files.parse_id(text)
  with pytest.raises(ValueError):
    csv_files.parse_id(text, positive=True)


def test_song_ids_are_positive_user_ids_may_be_zero():
  assert csv_files.parse_id(" 12\t") == 12
  assert csv_files.parse_id("007", positive=True) == 7
  assert csv_files.parse_id("0") == 0
  with pytest.raises(ValueError, match="not a song id"):
    csv_files.parse_id("0", positive=True)


def test_a_split_row_with_a_song_id_the_fetcher_skips_is_counted(tmp_path):
  path = tmp_path / "train_set.csv"
  contexts = ",".join(labels.LABELS)
  one_hot = ",".join(["1"] + ["0"] * (labels.NUM_LABELS - 1))
  path.write_text(f"song_id,user_id,{contexts}\n"
                  f"5,7,{one_hot}\n١٢,7,{one_hot}\n0,7,{one_hot}\n"
                  f"-3,7,{one_hot}\n6,0,{one_hot}\n", encoding="utf-8")
  report = build_report.BuildReport()
  pairs = zenodo.read_split(str(path), report)
  assert sorted(pairs.song_id.tolist()) == [5, 6]
  assert report.dropped[zenodo.ROW_UNPARSABLE]["pairs"] == 3

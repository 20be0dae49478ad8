"""Tests of the zenodo source: a real build of a planted-defect release."""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ctxtag import audio
from ctxtag import input_pipeline
from ctxtag import labels
from ctxtag.sources import assemble
from ctxtag.sources import build_report
from ctxtag.sources import csv_files
from ctxtag.sources import user_embeddings
from launch import common
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
  path = common.build("contextual_tags/zenodo", str(root / "data"), manual,
                      OPTIONS, workers=2)
  return manual, path


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
  assert "user_embedding_invalid" in common.build_report_text(path)


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


def test_npz_mels_are_log_compressed_and_wrong_shapes_counted(tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"), "spectrograms")
  path = common.build("contextual_tags/zenodo", str(tmp_path / "data"),
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


def test_strict_stops_at_the_first_defect_naming_file_and_line(tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"))
  with pytest.raises(build_report.DefectError,
                     match=r"train_set.csv line 10: the context columns are"
                           " not one-hot"):
    common.build("contextual_tags/zenodo", str(tmp_path / "data"), manual,
                 OPTIONS, strict=True, workers=1)
  assert not os.path.exists(input_pipeline.dataset_dir(
      tmp_path / "data", "contextual_tags/zenodo-excerpt_seconds2.0",
      VERSION))


def test_missing_csv_or_column_is_always_an_error(tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"))
  os.remove(os.path.join(manual, "test_set.csv"))
  with pytest.raises(csv_files.CsvError, match="test_set.csv: no such file"):
    common.build("contextual_tags/zenodo", str(tmp_path / "data"), manual,
                 OPTIONS)
  path = os.path.join(manual, "test_set.csv")
  with open(path, "w") as f:
    f.write("song_id,user_id,car,gym\n1,2,1,0\n")
  with pytest.raises(csv_files.CsvError, match="missing column.*happy"):
    common.build("contextual_tags/zenodo", str(tmp_path / "data"), manual,
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


def test_mels_are_cached_and_a_rebuild_decodes_nothing(tmp_path, monkeypatch):
  manual = fixture.write_release(str(tmp_path / "manual"))
  data = str(tmp_path / "data")
  path = common.build("contextual_tags/zenodo", data, manual, OPTIONS,
                      workers=1)
  first = _records(path, "test")
  calls = []
  real = audio.excerpt_from_file
  monkeypatch.setattr(audio, "excerpt_from_file",
                      lambda *a, **k: calls.append(a) or real(*a, **k))
  os.rename(path, path + ".old")
  again = common.build("contextual_tags/zenodo", data, manual, OPTIONS,
                       workers=1)
  assert calls == []
  for song, record in _records(again, "test").items():
    np.testing.assert_array_equal(record["mel"], first[song]["mel"])
  os.utime(os.path.join(manual, "audio", "11.wav"))  # a changed file
  os.rename(again, again + ".older")
  common.build("contextual_tags/zenodo", data, manual, OPTIONS, workers=1)
  assert [os.path.basename(str(c[0])) for c in calls] == ["11.wav"]


def test_beam_build_equals_plain_build(tmp_path, audio_build):
  beam_options = pytest.importorskip("apache_beam.options.pipeline_options")
  manual, plain = audio_build
  beam = common.build(
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


def test_reproduction_runs_on_the_release_at_646_frames(tmp_path):
  from launch import reproduce  # pylint: disable=g-import-not-at-top
  from launch.configs import smoke  # pylint: disable=g-import-not-at-top
  manual = fixture.write_synthetic_release(
      str(tmp_path / "manual"), num_tracks=16, seconds=30.0, mono_22k=True)
  config = smoke.get_config()
  config.models = ("audio_user",)  # reads the mels and the embeddings
  config.dataset = "contextual_tags/zenodo"
  config.manual_dir = manual
  workdir = str(tmp_path / "run")
  results = reproduce.reproduce(config, workdir)
  path = open(os.path.join(workdir, "dataset_path.txt")).read()
  assert path.endswith(os.path.join("contextual_tags", "zenodo", VERSION))
  assert _records(path, "test")[1]["mel"].shape == (646, 96)
  assert set(results["satisfaction"]) == {"audio_user"}
  report = open(os.path.join(workdir, "report.md")).read()
  assert "the paper's own public release (Zenodo record 3961560)" in report
  assert "0 dropped" in report


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
    common.build("contextual_tags/zenodo", data, manual, OPTIONS, workers=1)
  path = input_pipeline.dataset_dir(
      data, "contextual_tags/zenodo-excerpt_seconds2.0", VERSION)
  assert not os.path.exists(path)
  done, calls[:] = list(calls), []
  monkeypatch.setattr(audio, "excerpt_from_file",
                      lambda *a, **k: calls.append(
                          os.path.basename(str(a[0]))) or real(*a, **k))
  built = common.build("contextual_tags/zenodo", data, manual, OPTIONS,
                       workers=1)
  assert built == path
  assert not set(done) & set(calls)  # finished mels are not decoded again
  assert len(done) + len(calls) == 8  # every file with pairs, once


def test_a_random_resplit_keeps_every_good_pair_once(tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"))
  path = common.build("contextual_tags/zenodo", str(tmp_path / "data"),
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


@pytest.mark.parametrize("key,value,message", [
    ("dataset_options", "offset_seconds=-1", "offset_seconds must be >= 0"),
    ("dataset_options", "colour=red", "unknown zenodo setting 'colour'"),
    ("manual_dir", "/no/such/dir", "manual_dir='/no/such/dir': no such"),
])
def test_bad_dataset_settings_are_refused_before_the_config_is_saved(
    tmp_path, key, value, message):
  from launch.configs import smoke  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  config.dataset = "contextual_tags/zenodo"
  config.manual_dir = str(tmp_path)
  config[key] = value
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=message):
    common.prepare_run(config, str(workdir))
  assert not (workdir / "config.json").exists()

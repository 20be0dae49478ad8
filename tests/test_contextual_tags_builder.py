"""Tests of the contextual_tags TFDS builder: a real build, read back."""

import os
import sys
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ctxtag import audio
from ctxtag import datasets
from ctxtag import input_pipeline
from ctxtag.sources import simulated as simulation
from ctxtag.sources import assemble
from ctxtag.sources import options
from tfds_builders import contextual_tags


def test_build_reads_back_exactly_what_the_world_made(small_dataset_path):
  config = contextual_tags.config_with_overrides("simulated_small", {})
  world = simulation.World(config.simulation)
  builder = tfds.builder_from_directory(small_dataset_path)
  assert builder.info.file_format.value == "array_record"
  for split in ("train", "validation", "test"):
    source = builder.as_data_source(split)
    expected = {track.song_id: track for track in world.split_examples(split)}
    assert len(source) == len(expected)
    records = {int(source[i]["song_id"]): source[i] for i in range(len(source))}
    assert set(records) == set(expected)
    song_id = sorted(records)[0]
    record, track = records[song_id], expected[song_id]
    frames = audio.num_frames(config.simulation.excerpt_seconds)
    assert record["mel"].shape == (frames, 96)
    assert record["mel"].dtype == np.float16
    np.testing.assert_array_equal(
        record["mel"], world.mel(song_id).astype(np.float16))
    pairs = record["pairs"]
    assert list(pairs["user_id"]) == [p.user_id for p in track.pairs]
    assert list(pairs["label"]) == [p.label for p in track.pairs]
    np.testing.assert_array_equal(
        np.stack(pairs["user_embedding"]),
        np.stack([p.user_embedding for p in track.pairs]))
    np.testing.assert_allclose(
        np.stack(pairs["context_probs"]),
        np.stack([p.context_probs for p in track.pairs]))
  assert "tensorflow" not in sys.modules


@pytest.mark.slow
def test_interrupted_build_never_reads_as_complete(tmp_path, monkeypatch):
  calls = {"count": 0}
  real_render = simulation.World.render

  def failing_render(self, song_id):
    calls["count"] += 1
    if calls["count"] > 30:
      raise KeyboardInterrupt("simulated kill")
    return real_render(self, song_id)

  monkeypatch.setattr(simulation.World, "render", failing_render)
  with pytest.raises(KeyboardInterrupt):
    datasets.build("contextual_tags/simulated_small", str(tmp_path))
  path = input_pipeline.dataset_dir(tmp_path, "contextual_tags/simulated_small",
                                    str(contextual_tags.Builder.VERSION))
  assert not os.path.exists(path)
  with pytest.raises(FileNotFoundError, match="no complete dataset"):
    input_pipeline.load_split(path, "train")

  monkeypatch.setattr(simulation.World, "render", real_render)
  built = datasets.build("contextual_tags/simulated_small", str(tmp_path))
  assert built == path
  assert input_pipeline.load_split(built, "train").num_tracks == 40


def test_overrides_make_a_config_of_their_own():
  config = contextual_tags.config_with_overrides(
      "simulated", options.parse(
          "user_influence=0.8, num_tracks=5000"))
  assert config.name == "simulated-num_tracks5000-user_influence0.8"
  assert config.simulation.user_influence == 0.8
  assert config.simulation.num_tracks == 5000
  assert config.simulation.seed == 0


@pytest.mark.parametrize("text,message", [
    ("colour=3", "unknown simulation setting 'colour'"),
    ("num_tracks=many", "num_tracks='many' is not of type int"),
    ("user_influence=2", r"user_influence must lie in \[0, 1\]"),
    ("num_tracks=500", "train_tracks=2000 exceeds num_tracks=500"),
    ("num_tracks", "is not key=value"),
])
def test_bad_overrides_name_the_setting(text, message):
  with pytest.raises(ValueError, match=message):
    contextual_tags.config_with_overrides(
        "simulated", options.parse(text))


@pytest.mark.slow
def test_unknown_dataset_names_are_refused(tmp_path):
  with pytest.raises(ValueError, match="unknown contextual_tags config"):
    datasets.build("contextual_tags/nope", str(tmp_path))
  with pytest.raises(ValueError, match="contextual_tags/<config>"):
    datasets.build("mnist", str(tmp_path))


def test_summary_reports_counts_and_shares(small_dataset_path):
  text = datasets.summary_text(small_dataset_path)
  train = input_pipeline.load_split(small_dataset_path, "train")
  assert f"train{'':6} {train.num_tracks:>7} {train.num_pairs:>8}" in text
  assert "contexts/track" in text and "workout" in text


@pytest.mark.slow
@pytest.mark.parametrize("strategy,field", [("cold_user", "user_id_P"),
                                            ("cold_track", "song_id_N")])
def test_cold_splits_share_nothing_with_train(tmp_path, strategy, field):
  split = assemble.SplitSettings(strategy, seed=1)
  path = datasets.build("contextual_tags/simulated_small", str(tmp_path),
                      split=split)
  assert path.endswith(f"simulated_small-{strategy}_seed1/"
                       f"{contextual_tags.Builder.VERSION}")
  loaded = {name: input_pipeline.load_split(path, name)
            for name in ("train", "validation", "test")}
  train_ids = set(getattr(loaded["train"], field).tolist())
  for name in ("validation", "test"):
    assert not train_ids & set(getattr(loaded[name], field).tolist())
  world = simulation.World(
      contextual_tags.config_with_overrides("simulated_small", {}).simulation)
  expected = world.all_pairs()
  got = sorted((int(s), int(u), int(c)) for split in loaded.values()
               for s, u, c in zip(split.pair_song_id_P, split.user_id_P,
                                  split.label_P))
  assert got == sorted(zip(expected.song_id.tolist(), expected.user_id.tolist(),
                           expected.label.tolist()))
  probs = loaded["test"].context_probs_PxC
  np.testing.assert_allclose(probs, world.context_probs(
      loaded["test"].pair_song_id_P, loaded["test"].user_id_P))


def test_unknown_split_strategy_is_refused():
  with pytest.raises(ValueError, match="split_strategy must be one of"):
    contextual_tags.config_with_overrides(
        "simulated", {}, assemble.SplitSettings("by_mood"))


@pytest.mark.parametrize("workers", [2, 3])
def test_rendering_workers_give_the_same_mels_in_order(monkeypatch, workers):
  from tfds_builders.contextual_tags import contextual_tags_dataset_builder as builder  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  world = simulation.World(simulation.SimulationConfig(
      num_tracks=30, num_users=100, train_tracks=20, validation_tracks=5,
      test_tracks=5, excerpt_seconds=1.0))
  chunks = [[types.SimpleNamespace(song_id=song_id) for song_id in ids]
            for ids in ([3, 1, 4], [1, 5], [9, 2, 6, 5], [3])]
  monkeypatch.setattr(builder, "_render_workers", lambda count: workers)
  rendered = list(builder._rendered(world, chunks))  # pylint: disable=protected-access
  assert len(rendered) == len(chunks)
  for chunk, mels in zip(chunks, rendered):
    np.testing.assert_array_equal(
        mels, world.mels([track.song_id for track in chunk]))

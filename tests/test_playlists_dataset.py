"""Tests of contextual_tags/playlists: real builds of a small export."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ctxtag import datasets
from ctxtag import input_pipeline
from ctxtag.sources import assemble
from ctxtag.sources import build_report
from ctxtag.sources import interactions
from ctxtag.sources import playlists
from ctxtag.sources import pairs as pairs_lib
from tests import playlist_fixture as fixture

OPTIONS = "excerpt_seconds=2"
NAME = "contextual_tags/playlists"


def _all_pairs(path: str) -> dict[str, pairs_lib.Pairs]:
  out = {}
  for name in ("train", "validation", "test"):
    split = input_pipeline.load_split(path, name)
    out[name] = pairs_lib.Pairs(split.pair_song_id_P, split.user_id_P,
                                split.label_P)
  return out


def _rows(table: pairs_lib.Pairs) -> set:
  return set(zip(table.song_id.tolist(), table.user_id.tolist(),
                 table.label.tolist()))


def _report(path: str) -> dict:
  with open(os.path.join(path, build_report.REPORT_FILE)) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def csv_build(tmp_path_factory):
  root = tmp_path_factory.mktemp("playlists")
  manual = fixture.write_playlists(str(root / "manual"))
  return manual, datasets.build(NAME, str(root / "data"), manual, OPTIONS,
                              workers=1)


@pytest.mark.slow
def test_the_mined_pairs_with_audio_are_kept_and_the_rest_counted(csv_build):
  manual, path = csv_build
  mined = playlists.mine(playlists.read_playlist_inputs(manual),
                         playlists.MiningRules(),
                         build_report.BuildReport())
  with_audio = mined.pairs.take(mined.pairs.song_id != fixture.NO_AUDIO_TRACK)
  splits = _all_pairs(path)
  kept = set().union(*(_rows(t) for t in splits.values()))
  assert kept == _rows(with_audio)
  assert sum(len(t) for t in splits.values()) == len(with_audio)
  report = _report(path)
  assert report["dropped"]["audio_missing"] == {
      "tracks": 1, "pairs": 6, "users": 0,
      "examples": [fixture.NO_AUDIO_TRACK]}
  for reason in ("ambiguous_title", "conflicting_contexts",
                 "track_too_few_users", "track_too_many_users",
                 "track_too_few_contexts"):
    assert report["dropped"][reason]["pairs"] > 0
  dropped = sum(d["pairs"] for d in report["dropped"].values())
  assert len(with_audio) + dropped == mined.stats["candidate_pairs"]


@pytest.mark.slow
def test_embeddings_are_computed_from_every_playlist(csv_build):
  manual, path = csv_build
  mined = playlists.mine(playlists.read_playlist_inputs(manual),
                         playlists.MiningRules(),
                         build_report.BuildReport())
  train = input_pipeline.load_split(path, "train")
  users = np.unique(train.user_id_P)
  expected = interactions.user_embeddings(mined.interactions, users, seed=0)
  first = {int(u): i for i, u in reversed(list(enumerate(train.user_id_P)))}
  got = np.stack([train.user_embedding_PxE[first[int(u)]] for u in users])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert np.abs(got).sum(axis=1).min() > 0


@pytest.mark.slow
def test_given_embeddings_drop_users_without_one(tmp_path):
  manual = fixture.write_playlists(str(tmp_path / "manual"))
  mined = playlists.mine(playlists.read_playlist_inputs(manual),
                         playlists.MiningRules(), build_report.BuildReport())
  users = np.unique(mined.pairs.user_id)
  given, missing = users[::2], users[1::2]
  with open(os.path.join(manual, "user_embeddings.csv"), "w") as f:
    f.write("user_id,vector\n")
    for user in given.tolist():
      f.write(f'{user},"[{", ".join(["0.5"] * 256)}]"\n')
  path = datasets.build(NAME, str(tmp_path / "data"), manual, OPTIONS,
                      workers=1)
  kept_users = set().union(*(set(t.user_id.tolist())
                             for t in _all_pairs(path).values()))
  assert kept_users <= set(given.tolist())
  entry = _report(path)["dropped"]["user_embedding_missing"]
  audio_ok = mined.pairs.song_id != fixture.NO_AUDIO_TRACK
  assert entry["users"] == len(np.intersect1d(
      missing, mined.pairs.user_id[audio_ok]))
  assert entry["pairs"] == int(np.isin(mined.pairs.user_id[audio_ok],
                                       missing).sum())


@pytest.mark.slow
def test_mpd_slices_name_audio_by_uri_and_keep_the_mapping(tmp_path):
  manual = fixture.write_playlists(str(tmp_path / "manual"), mpd=True)
  path = datasets.build(NAME, str(tmp_path / "data"), manual, OPTIONS,
                      workers=1)
  with open(os.path.join(path, "song_ids.csv")) as f:
    mapping = {int(row["song_id"]): row["uri_id"] for row in csv.DictReader(f)}
  songs = set().union(*(set(t.song_id.tolist())
                        for t in _all_pairs(path).values()))
  assert set(mapping) == songs
  for song, uri_id in mapping.items():
    assert playlists.song_id_of_uri(uri_id) == song
    assert os.path.exists(os.path.join(manual, "audio", f"{uri_id}.wav"))
  assert _report(path)["dropped"]["audio_missing"]["tracks"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["cold_user", "cold_track"])
def test_cold_splits_of_playlists(tmp_path, strategy):
  manual = fixture.write_playlists(str(tmp_path / "manual"))
  path = datasets.build(NAME, str(tmp_path / "data"), manual, OPTIONS,
                      workers=1,
                      split=assemble.SplitSettings(strategy, seed=4))
  assert f"playlists-excerpt_seconds2.0-{strategy}_seed4" in path
  splits = _all_pairs(path)
  field = "user_id" if strategy == "cold_user" else "song_id"
  train = set(getattr(splits["train"], field).tolist())
  for name in ("validation", "test"):
    assert not train & set(getattr(splits[name], field).tolist())


@pytest.mark.slow
def test_given_is_refused_for_playlists(tmp_path):
  with pytest.raises(ValueError, match="no splits of its own"):
    datasets.build(NAME, str(tmp_path), str(tmp_path),
                 split=assemble.SplitSettings("given"))


@pytest.mark.slow
def test_rule_settings_are_options_with_names_of_their_own(tmp_path):
  manual = fixture.write_playlists(str(tmp_path / "manual"))
  path = datasets.build(NAME, str(tmp_path / "data"), manual,
                      OPTIONS + ",min_users=1,min_contexts=1,keywords=gym;running", workers=1)
  assert "min_contexts1" in path and "keywordsgym;running" in path
  contexts = set()
  for table in _all_pairs(path).values():
    contexts |= set(table.label.tolist())
  assert contexts == {1, 5}  # gym, running
  with pytest.raises(ValueError, match="max_users=10 is below min_users=20"):
    datasets.build(NAME, str(tmp_path / "data"), manual, "min_users=20")

"""Catalog indexes and recommendation: the scorers equal the models' own
predictions, indexes resume and merge from shards exactly, and bad input is
one line."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile

from ctxtag import catalog
from ctxtag import input_pipeline
from ctxtag import models
from ctxtag import recommend
from ctxtag import run
from ctxtag import steps as steps_lib
from ctxtag import tables
from ctxtag.configs import smoke
from tests.fault_helpers import REPO


def _fresh_state(fusion: str, frames: int = 33):
  section = smoke.get_config().audio_user
  section.fusion = fusion
  module = models.create_model("audio_user", section)
  rng = np.random.default_rng(0)
  example = {"mel": rng.normal(size=(4, frames, 96)).astype(np.float32),
             "user_embedding": rng.normal(size=(4, 256)).astype(np.float32)}
  state = steps_lib.create_train_state(module, section, jax.random.PRNGKey(1),
                                       example)
  if fusion == "late":  # weights away from their start, c nonzero
    state = state.replace(params=dict(state.params, audio_weight=0.7,
                                      user_weight=1.3, prior_weight=0.4))
  return state, rng


@pytest.mark.parametrize("fusion, kind", [("late", recommend.LateFusionScorer),
                                          ("concat", recommend.PairScorer)])
def test_scorers_equal_the_models_predictions_on_every_pair(fusion, kind):
  state, rng = _fresh_state(fusion)
  mel_TxFxM = rng.normal(size=(7, 33, 96)).astype(np.float32)
  users_QxE = rng.normal(size=(3, 256)).astype(np.float32)
  features = np.asarray(state.apply_fn(
      {"params": state.params, "batch_stats": state.batch_stats},
      {"mel": mel_TxFxM, "user_embedding": users_QxE[:1].repeat(7, 0)},
      train=False, features_only=True))
  index = catalog.Index(None, {}, [str(i) for i in range(7)],
                        {"audio_user": features})
  scorer = recommend.scorer("audio_user", state, index)
  assert isinstance(scorer, kind)
  contexts = [4, 0, 9]
  got = scorer.scores(users_QxE, contexts)
  for q, (user, context) in enumerate(zip(users_QxE, contexts)):
    expected = np.asarray(steps_lib.predict_step(
        state, {"mel": mel_TxFxM, "user_embedding": user[None].repeat(7, 0)},
        output="single_label"))[:, context]
    np.testing.assert_allclose(got[q], expected, rtol=2e-5, atol=1e-7)


def test_top_k_is_best_first_with_ties_by_position():
  values = np.array([[0.1, 0.9, 0.5, 0.9, 0.3], [1, 2, 3, 4, 5.0]])
  np.testing.assert_array_equal(recommend.top_k(values, 3),
                                [[1, 3, 2], [4, 3, 2]])
  np.testing.assert_array_equal(recommend.top_k(values, 5)[0],
                                [1, 3, 2, 4, 0])
  assert recommend.overlap([1, 2, 3], [3, 4, 1]) == pytest.approx(2 / 3)


def _music(directory, count: int) -> list[str]:
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(3)
  for i in range(count):
    soundfile.write(os.path.join(directory, f"t{i:02d}.wav"),
                    rng.uniform(-0.3, 0.3, 2 * 22050), 22050)
  soundfile.write(os.path.join(directory, "short.wav"),
                  rng.uniform(-0.3, 0.3, 2205), 22050)
  with open(os.path.join(directory, "broken.mp3"), "wb") as f:
    f.write(b"no audio here" * 50)
  return sorted(os.listdir(directory))


def _arrays(directory) -> dict:
  index = catalog.load(directory)
  return {"names": index.names,
          **{k: np.asarray(v) for k, v in index.vectors.items()}}


def test_an_index_resumes_and_its_shards_merge_to_the_same_index(
    smoke_run, tmp_path, monkeypatch):
  monkeypatch.setattr(catalog, "CHUNK_TRACKS", 3)
  config = run.load_run_config(smoke_run)
  _music(str(tmp_path / "music"), 7)
  whole = str(tmp_path / "whole")
  report = catalog.index_audio(config, smoke_run, str(tmp_path / "music"),
                               whole)
  assert report["indexed"] == 7
  assert report["skipped_by_reason"] == {"too_short": 1, "undecodable": 1}
  # Shard 2 of 2 alone leaves the index unmerged; shard 1 finishes it.
  sharded = str(tmp_path / "sharded")
  left = catalog.index_audio(config, smoke_run, str(tmp_path / "music"),
                             sharded, shard=(2, 2))
  assert left == {"chunks_done": 1, "chunks": 3}
  with pytest.raises(catalog.CatalogError, match="unfinished"):
    catalog.load(sharded)
  done = os.path.join(sharded, catalog.PARTS, "chunk-000001.npz")
  before = os.stat(done).st_mtime_ns
  catalog.index_audio(config, smoke_run, str(tmp_path / "music"), sharded,
                      shard=(1, 2))
  assert os.stat(done).st_mtime_ns == before  # not redone
  a, b = _arrays(whole), _arrays(sharded)
  assert a["names"] == b["names"] == [f"t{i:02d}.wav" for i in range(7)]
  for key in ("audio", "audio_user"):
    np.testing.assert_array_equal(a[key], b[key])


def test_a_split_index_scores_like_the_runs_predictions(smoke_run, tmp_path):
  config = run.load_run_config(smoke_run)
  path = str(tmp_path / "test_index")
  catalog.index_split(config, smoke_run, run.run_dataset_path(smoke_run),
                      "test", path)
  index = catalog.load(path)
  recommender = recommend.Recommender(config, smoke_run, index)
  audio = tables.read_audio_predictions(
      os.path.join(smoke_run, "predictions", "test_audio.csv"))
  row = {str(int(s)): r for r, s in enumerate(audio.song_id)}
  assert sorted(index.names) == sorted(row)
  scores = recommender.scorers["audio"].scores(None, [2])[0]
  np.testing.assert_allclose(
      scores, audio.values_RxC[[row[n] for n in index.names], 2], atol=2e-6)
  # The late fusion over the index equals its prediction of each test pair.
  pairs = tables.read_pair_predictions(
      os.path.join(smoke_run, "predictions", "test_audio_user.csv"))
  test = input_pipeline.load_split(run.run_dataset_path(smoke_run), "test")
  users = dict(zip(test.user_id_P.tolist(), test.user_embedding_PxE))
  got = recommender.scorers["audio_user"].scores(
      np.stack([users[int(u)] for u in pairs.user_id[:20]]),
      np.full(20, 5))
  columns = [index.names.index(str(int(s))) for s in pairs.song_id[:20]]
  np.testing.assert_allclose(got[np.arange(20), columns],
                             pairs.values_RxC[:20, 5], atol=2e-6)


def test_another_runs_or_a_damaged_index_is_refused(smoke_run, tmp_path):
  config = run.load_run_config(smoke_run)
  path = str(tmp_path / "index")
  catalog.index_split(config, smoke_run, run.run_dataset_path(smoke_run),
                      "validation", path)
  meta_path = os.path.join(path, catalog.INDEX_FILE)
  meta = json.load(open(meta_path))
  meta["models"]["audio"]["fingerprint"] = "0" * 16
  json.dump(meta, open(meta_path, "w"))
  with pytest.raises(catalog.CatalogError, match="another run's 'audio'"):
    recommend.Recommender(config, smoke_run, catalog.load(path))
  with open(os.path.join(path, "audio.npy"), "r+b") as f:
    f.truncate(100)
  with pytest.raises(catalog.CatalogError, match="damaged"):
    catalog.load(path)


def _launch(*args):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True,
                        text=True, cwd=REPO, timeout=600)


def test_launchers_say_what_is_wrong_in_one_line(smoke_run, tmp_path):
  music = tmp_path / "bad"
  music.mkdir()
  (music / "broken.mp3").write_bytes(b"not audio" * 30)
  empty = _launch("launch.index", f"--workdir={smoke_run}",
                  f"--audio={music}", f"--output={tmp_path / 'empty'}")
  assert empty.returncode == 1
  assert empty.stderr.strip().splitlines()[-1].startswith(
      "error: ") and "no track of the catalog could be indexed" in (
          empty.stderr)
  index = tmp_path / "index"
  built = _launch("launch.index", f"--workdir={smoke_run}", "--split=test",
                  f"--output={index}")
  assert built.returncode == 0, built.stderr
  wrong = tmp_path / "wrong.npy"
  np.save(wrong, np.zeros(12))
  for flag, text in (("--context=disco", "expected one of car, gym"),
                     ("--top_k=100000", "the index holds 20 tracks"),
                     (f"--user_embedding={wrong}", "shape (12,)")):
    out = tmp_path / "out.json"
    done = _launch("launch.recommend", f"--workdir={smoke_run}",
                   f"--index={index}", "--context=gym", flag,
                   f"--output={out}")
    assert done.returncode != 0 and text in done.stderr, (flag, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not out.exists()
  good = _launch("launch.recommend", f"--workdir={smoke_run}",
                 f"--index={index}", "--context=gym,sad", "--user_id=-5",
                 "--top_k=4", "--compare", f"--output={tmp_path / 'p.json'}")
  assert good.returncode == 0, good.stderr
  answer = json.load(open(tmp_path / "p.json"))
  assert [r["context"] for r in answer["results"]] == ["gym", "sad"]
  assert all(r["model"] == "audio" and "not one of the run's" in r["note"]
             for r in answer["results"])
  assert all(len(r["tracks"]) == 4 for r in answer["results"])

r"""Recommendation speed: ranking a catalog index for a (user, context).

  python -m benchmarks.recommend [--tracks=1000000] [--repeats=5] \
      [--workdir=W]

With the default config's late fusion (weights fitted in --workdir, a
default run, or freshly initialised without it), in this process and after
the imports:

  * one query over a synthetic index of --tracks tracks (the audio expert's
    logits): the late fusion's closed form (ctxtag.recommend) against a
    straightforward per-track loop (the model's softmax for each track),
    timed on a slice of the index and scaled to its size;
  * a batch: every test user of the default run (5,524) x 10 contexts over
    its 1,000 test tracks, each query's top 10;
  * the memory a query allocates, against the index's size;
  * indexing: tracks/s of launch.index over the test split (with --workdir)
    or of the vectors of random mels.

Prints the quietest of --repeats runs of each and the ratios.
"""

import time
import tracemalloc

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from ctxtag import audio
from ctxtag import catalog
from ctxtag import inference
from ctxtag import labels
from ctxtag import models
from ctxtag import recommend
from ctxtag import run
from ctxtag import steps as steps_lib
from ctxtag import transfer
from ctxtag.configs import default

_TRACKS = flags.DEFINE_integer("tracks", 1_000_000, "Tracks of the index.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs of each.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A default run (optional).")
_LOOP_TRACKS = 20_000  # the per-track loop's slice, scaled to --tracks


def _state(frames: int):
  if _WORKDIR.value:
    config = run.load_run_config(_WORKDIR.value)
    return transfer.restore_best("audio_user", config, _WORKDIR.value,
                                 frames)
  section = default.get_config().audio_user
  module = models.create_model("audio_user", section)
  example = {"mel": np.zeros((2, frames, audio.N_MELS), np.float32),
             "user_embedding": np.zeros((2, labels.USER_EMBEDDING_DIM),
                                        np.float32)}
  state = steps_lib.create_train_state(module, section, jax.random.PRNGKey(0),
                                       example)
  return state.replace(params=dict(state.params, audio_weight=0.84,
                                   user_weight=1.22, prior_weight=0.11))


def _best(function, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return min(times)


def _loop(state, logits_TxC, embedding_E, context: int) -> np.ndarray:
  """The straightforward way: the model's softmax, track by track."""
  user_term = np.asarray(state.apply_fn(
      {"params": state.params, "batch_stats": state.batch_stats},
      {"audio_features": np.zeros((1, labels.NUM_LABELS), np.float32),
       "user_embedding": embedding_E[None]}, train=False))[0]
  weight = float(state.params["audio_weight"])
  scores = np.empty(len(logits_TxC))
  for t, logits in enumerate(logits_TxC):
    values = np.exp(weight * logits + user_term)
    scores[t] = values[context] / values.sum()
  return scores


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax's notes on every restore
  frames = (inference.load_card(_WORKDIR.value).frames if _WORKDIR.value
            else audio.num_frames(3.0))
  state = _state(frames)
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(_TRACKS.value, labels.NUM_LABELS)).astype(
      np.float32)
  index = catalog.Index(None, {}, [str(i) for i in range(_TRACKS.value)],
                        {"audio_user": logits})
  scorer = recommend.scorer("audio_user", state, index)
  user = rng.normal(size=(1, labels.USER_EMBEDDING_DIM)).astype(np.float32)
  query = lambda: recommend.top_k(scorer.ranking_values(user, [1]), 20)
  query()  # compiles the user term
  fast = _best(query, _REPEATS.value)
  loop = _best(lambda: _loop(state, logits[:_LOOP_TRACKS], user[0], 1),
               1) * _TRACKS.value / _LOOP_TRACKS
  check = _loop(state, logits[:1000], user[0], 1)
  np.testing.assert_allclose(scorer.scores(user, [1])[0, :1000], check,
                             rtol=1e-4)
  print(f"one query, {_TRACKS.value:,} tracks, top 20: {fast * 1e3:.1f} ms;"
        f" per-track loop (scaled from {_LOOP_TRACKS:,}): {loop:.1f} s;"
        f" {loop / fast:,.0f}x")

  tracemalloc.start()
  query()
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  print(f"memory of a query: {peak / 2**20:.1f} MiB, against the scorer's"
        f" index copy of {logits.nbytes / 2**20:.1f} MiB (made once)")

  users = rng.normal(size=(5524, labels.USER_EMBEDDING_DIM)).astype(
      np.float32)
  small = catalog.Index(None, {}, [str(i) for i in range(1000)],
                        {"audio_user": logits[:1000]})
  batch_scorer = recommend.scorer("audio_user", state, small)
  def batch():
    for start in range(0, len(users), 256):
      chunk = np.repeat(users[start:start + 256], labels.NUM_LABELS, axis=0)
      contexts = np.tile(np.arange(labels.NUM_LABELS), len(chunk) // 10)
      recommend.top_k(batch_scorer.ranking_values(chunk, contexts), 10)
  batch()
  print(f"every test user x 10 contexts (55,240 queries) over 1,000 tracks,"
        f" top 10: {_best(batch, _REPEATS.value):.2f} s")

  if _WORKDIR.value:
    config = run.load_run_config(_WORKDIR.value)
    start = time.perf_counter()
    built, _ = catalog.split_index(config, _WORKDIR.value,
                                   run.run_dataset_path(_WORKDIR.value),
                                   "test")
    seconds = time.perf_counter() - start
    print(f"indexing the test split: {built.num_tracks / seconds:.0f}"
          " tracks/s (mels read, no decoding; compile included)")


if __name__ == "__main__":
  app.run(main)

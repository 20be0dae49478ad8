"""The paper's study from prediction tables: every protocol, one results dict.

The results follow DESIGN.md's `results.json` contract; keys beyond it:
`user_only_sg` (the user-only model under protocol 4), `oracle_sg` and
`satisfaction.oracle` (the true distribution, simulated data only), and
`satisfaction.user`.
"""

import numpy as np

from ctxtag import errors
from ctxtag import evaluation
from ctxtag import labels
from ctxtag import tables


# Per-pair models: name -> (protocol key, satisfaction key).
PAIR_MODELS = {"audio_user": ("user_sg", "audio_user"),
               "user": ("user_only_sg", "user"),
               "oracle": ("oracle_sg", "oracle")}


def track_truth(groundtruth: tables.Table):
  """The tracks of the ground truth.

  Returns:
    (sorted song ids, each pair's index into them, multi-hot union of each
    track's contexts over its pairs).
  """
  song_ids, track_P = np.unique(groundtruth.song_id, return_inverse=True)
  track_P = track_P.ravel()
  union = np.zeros((len(song_ids), labels.NUM_LABELS), bool)
  np.logical_or.at(union, track_P, groundtruth.values_RxC > 0)
  return song_ids, track_P, union


def evaluate(groundtruth: tables.Table, audio: tables.Table | None,
             pair_models: dict[str, tables.Table]) -> dict:
  """Runs every protocol the given predictions allow.

  Args:
    groundtruth: one-hot ground truth per pair.
    audio: per-track audio-model scores, or None.
    pair_models: per-pair scores by model name: "audio_user", "user",
      "oracle".

  Returns:
    The results dict of DESIGN.md (with the extra keys above).

  Raises:
    errors.UserError: if there is no prediction table at all.
  """
  if audio is None and not pair_models:
    raise errors.UserError(
        "no predictions to evaluate: give an audio model's table, a user"
        " model's table, or both")
  truth = groundtruth.values_RxC > 0
  users = groundtruth.user_id
  results = {"satisfaction": {}}
  if audio is not None:
    song_ids, track_P, union = track_truth(groundtruth)
    track_scores = tables.align(audio, song_ids.tolist(), "song")
    pair_track_scores = track_scores[track_P]
    results["mo_mg"] = evaluation.mo_mg(union, track_scores)
    results["mo_sg"] = evaluation.mo_sg(truth, pair_track_scores)
    results["so_sg"] = evaluation.so_sg(truth, pair_track_scores)
    results["satisfaction"]["audio"] = evaluation.satisfaction(
        users, truth, evaluation.one_hot_argmax(pair_track_scores))
  for name, table in pair_models.items():
    if name not in PAIR_MODELS:
      raise ValueError(f"unknown pair model {name!r}; known:"
                       f" {sorted(PAIR_MODELS)}")
    protocol, key = PAIR_MODELS[name]
    scores = tables.align(table, groundtruth.keys(), "(song, user)")
    results[protocol] = evaluation.user_sg(truth, scores)
    results["satisfaction"][key] = evaluation.satisfaction(
        users, truth, evaluation.one_hot_argmax(scores))
  return results

"""Synthetic prediction tables at the paper's test-set scale, for benchmarks.

51,120 test pairs over 7,500 tracks and about 4,000 users (the paper's test
split has 51,120 pairs and 7,500 tracks), 30,275 validation pairs and
102,865 training pairs, written as CSVs in the public dataset's layout with
an audio, an audio + user, a user-only and an oracle model.
"""

import os

import numpy as np

from ctxtag import labels
from ctxtag import tables

TEST_PAIRS = 51_120
VALIDATION_PAIRS = 30_275
TRAIN_PAIRS = 102_865
TRACKS = 7_500
USERS = 4_000


def _split(rng, num_pairs, track_taste_NxC, user_taste_UxC):
  """Pairs of every track with 5 to 10 distinct users, and their truths."""
  num_tracks, num_users = len(track_taste_NxC), len(user_taste_UxC)
  per_track = np.full(num_tracks, num_pairs // num_tracks)
  per_track[rng.choice(num_tracks, num_pairs % num_tracks, replace=False)] += 1
  song_P = np.repeat(np.arange(num_tracks), per_track)
  # Distinct users within a track: consecutive draws of a random stride.
  first = rng.integers(0, num_users, num_tracks)[song_P]
  stride = rng.integers(1, 97, num_tracks)[song_P]
  position = np.arange(num_pairs) - np.repeat(np.cumsum(per_track) - per_track,
                                              per_track)
  user_P = (first + stride * position) % num_users
  logits = track_taste_NxC[song_P] + user_taste_UxC[user_P]
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  label_P = (probs.cumsum(axis=1) > rng.uniform(size=(num_pairs, 1))).argmax(1)
  return song_P, user_P, label_P, probs


def _softmax(logits):
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  return probs / probs.sum(axis=1, keepdims=True)


def write_tables(directory: str, seed: int = 0) -> dict[str, str]:
  """Writes the tables into `directory`.

  Returns:
    Paths by role: groundtruth, audio, audio_user, user, oracle,
    validation_groundtruth, validation_audio, train_groundtruth.
  """
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  track_taste = rng.normal(size=(TRACKS, labels.NUM_LABELS))
  user_taste = 1.5 * rng.normal(size=(USERS, labels.NUM_LABELS))
  paths = {}
  splits = {"train": TRAIN_PAIRS, "validation": VALIDATION_PAIRS,
            "test": TEST_PAIRS}
  for name, num_pairs in splits.items():
    song, user, label, probs = _split(rng, num_pairs, track_taste, user_taste)
    prefix = "" if name == "test" else f"{name}_"
    paths[f"{prefix}groundtruth"] = os.path.join(directory,
                                                 f"{name}_groundtruth.csv")
    tables.write_groundtruth(paths[f"{prefix}groundtruth"], song, user, label)
    if name == "train":
      continue
    audio = 1 / (1 + np.exp(-(track_taste + rng.normal(
        size=track_taste.shape))))
    paths[f"{prefix}audio"] = os.path.join(directory, f"{name}_audio.csv")
    tables.write(paths[f"{prefix}audio"], np.arange(TRACKS), audio)
    if name == "validation":
      continue
    noise = rng.normal(size=probs.shape)
    pair_models = {
        "audio_user": _softmax(np.log(probs) + 1.2 * noise),
        "user": _softmax(user_taste[user] + 1.5 * noise),
        "oracle": probs}
    for model, scores in pair_models.items():
      paths[model] = os.path.join(directory, f"{name}_{model}.csv")
      tables.write(paths[model], song, scores, user)
  return paths

"""Input pipeline: a built contextual_tags split -> numpy batches.

A split is read with `tfds.data_source` (random access into array_record,
no TensorFlow). Its small table of pairs is loaded once; mel spectrograms are
read per batch by track, so a track's mel is stored and read once however
many pairs refer to it.

Three kinds of batches:
  * tracks, for the audio model: mel + multi-hot union of the split's
    contexts of the track;
  * pairs, for the audio + user model: mel + user embedding + one-hot context;
  * users, for the user-only model: pairs without the mel, which it never
    reads.

Training batches are a pure function of (seed, step): each epoch is a fresh
permutation drawn from (seed, epoch), so a run resumed at step s sees exactly
the batches it would have seen. Evaluation batches cover every example once,
in order; the last batch is padded and its padding masked out.
"""

import dataclasses
import functools
import os
from collections.abc import Iterator

import jax
import numpy as np
import tensorflow_datasets as tfds

from ctxtag import labels

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of a built contextual_tags dataset.

  Attributes:
    name: the split's name.
    source: random-access records, one per track.
    song_id_N: song id of each track record.
    pair_track_P: index (into the records) of each pair's track.
    user_id_P: user of each pair.
    label_P: context index of each pair, in `labels.LABELS` order.
    user_embedding_PxE: each pair's user embedding.
    context_probs_PxC: true context distribution per pair (simulated data
      only, else None).
  """
  name: str
  source: object
  song_id_N: np.ndarray
  pair_track_P: np.ndarray
  user_id_P: np.ndarray
  label_P: np.ndarray
  user_embedding_PxE: np.ndarray
  context_probs_PxC: np.ndarray | None

  @property
  def num_tracks(self) -> int:
    return len(self.song_id_N)

  @property
  def num_pairs(self) -> int:
    return len(self.label_P)

  @property
  def pair_song_id_P(self) -> np.ndarray:
    return self.song_id_N[self.pair_track_P]

  @functools.cached_property
  def track_labels_NxC(self) -> np.ndarray:
    """Multi-hot union of each track's contexts over its pairs in the split."""
    multi_hot = np.zeros((self.num_tracks, labels.NUM_LABELS), np.float32)
    multi_hot[self.pair_track_P, self.label_P] = 1.0
    return multi_hot

  @functools.cached_property
  def pair_labels_PxC(self) -> np.ndarray:
    return np.eye(labels.NUM_LABELS, dtype=np.float32)[self.label_P]

  def mels(self, track_indices: np.ndarray) -> np.ndarray:
    """float32 mels of the given tracks, (len(track_indices), T, F)."""
    unique, inverse = np.unique(track_indices, return_inverse=True)
    read = np.stack([self.source[int(i)]["mel"] for i in unique])
    return read.astype(np.float32)[inverse]


def dataset_dir(data_dir: os.PathLike | str, dataset: str,
                version: str = "1.0.0") -> str:
  """Where TFDS puts `dataset` ("contextual_tags/<config>") under data_dir."""
  return os.path.join(os.fspath(data_dir), dataset, version)


def load_split(dataset_path: os.PathLike | str, split: str) -> Split:
  """Opens `split` of the dataset built at `dataset_path`.

  Args:
    dataset_path: the versioned directory of a built dataset (see
      `dataset_dir`).
    split: "train", "validation" or "test".
  """
  dataset_path = os.fspath(dataset_path)
  if not os.path.exists(os.path.join(dataset_path, "dataset_info.json")):
    raise FileNotFoundError(
        f"{dataset_path}: no complete dataset here (dataset_info.json is"
        " missing); build it with `python -m launch.build_dataset`")
  builder = tfds.builder_from_directory(dataset_path)
  if split not in builder.info.splits:
    raise ValueError(f"{dataset_path}: no split {split!r}; it has"
                     f" {sorted(builder.info.splits.keys())}")
  source = builder.as_data_source(split)
  song_ids, tracks, users, contexts, embeddings, probs = [], [], [], [], [], []
  for index in range(len(source)):
    record = source[index]
    pairs = record["pairs"]
    song_ids.append(record["song_id"])
    tracks.extend([index] * len(pairs["label"]))
    users.extend(pairs["user_id"])
    contexts.extend(pairs["label"])
    embeddings.extend(pairs["user_embedding"])
    probs.extend(pairs.get("context_probs", []))
  return Split(
      name=split,
      source=source,
      song_id_N=np.asarray(song_ids, np.int64),
      pair_track_P=np.asarray(tracks, np.int64),
      user_id_P=np.asarray(users, np.int64),
      label_P=np.asarray(contexts, np.int64),
      user_embedding_PxE=np.asarray(embeddings, np.float32).reshape(
          -1, labels.USER_EMBEDDING_DIM),
      context_probs_PxC=(np.asarray(probs, np.float32) if probs else None),
  )


def _process_slice(global_batch: int) -> slice:
  """This process's share of a global batch."""
  count, index = jax.process_count(), jax.process_index()
  if global_batch % count:
    raise ValueError(f"batch size {global_batch} is not divisible by the"
                     f" {count} processes")
  local = global_batch // count
  return slice(index * local, (index + 1) * local)


def _make_batch(split: Split, kind: str, indices: np.ndarray,
                mask: np.ndarray) -> Batch:
  if kind == "tracks":
    return {"mel": split.mels(indices),
            "labels": split.track_labels_NxC[indices],
            "mask": mask, "index": indices}
  if kind == "pairs":
    return {"mel": split.mels(split.pair_track_P[indices]),
            "user_embedding": split.user_embedding_PxE[indices],
            "labels": split.pair_labels_PxC[indices],
            "mask": mask, "index": indices}
  if kind == "users":
    return {"user_embedding": split.user_embedding_PxE[indices],
            "labels": split.pair_labels_PxC[indices],
            "mask": mask, "index": indices}
  raise ValueError(
      f"batch kind must be 'tracks', 'pairs' or 'users', got {kind!r}")


def num_examples(split: Split, kind: str) -> int:
  """Examples of `kind` in `split`: tracks for "tracks", else pairs."""
  return split.num_tracks if kind == "tracks" else split.num_pairs


def steps_per_epoch(split: Split, kind: str, batch_size: int) -> int:
  steps = num_examples(split, kind) // batch_size
  if steps == 0:
    raise ValueError(
        f"split {split.name!r} has {num_examples(split, kind)} {kind}, fewer"
        f" than one batch of {batch_size}")
  return steps


def train_batches(split: Split, kind: str, batch_size: int, seed: int,
                  start_step: int = 0) -> Iterator[Batch]:
  """Endless shuffled training batches from step `start_step` on.

  Each epoch is a permutation drawn from (seed, epoch); its last incomplete
  batch is left out, a different remainder each epoch.

  Args:
    split: the training split.
    kind: "tracks", "pairs" or "users".
    batch_size: the global batch size (over all processes).
    seed: fixes the order.
    start_step: the first step to produce, for resuming.

  Yields:
    This process's share of each global batch.
  """
  per_epoch = steps_per_epoch(split, kind, batch_size)
  size = num_examples(split, kind)
  local = _process_slice(batch_size)
  step = start_step
  while True:
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(size)
    for position in range(position, per_epoch):
      indices = order[position * batch_size:(position + 1) * batch_size]
      indices = indices[local]
      yield _make_batch(split, kind, indices,
                        np.ones(len(indices), np.float32))
      step += 1


def eval_batches(split: Split, kind: str,
                 batch_size: int) -> Iterator[Batch]:
  """Every example of `split` once, in order, in batches of `batch_size`.

  The last batch is padded with copies of example 0 whose `mask` is 0.
  """
  size = num_examples(split, kind)
  local = _process_slice(batch_size)
  for start in range(0, size, batch_size):
    indices = np.arange(start, start + batch_size)
    mask = (indices < size).astype(np.float32)
    indices = np.where(indices < size, indices, 0)
    yield _make_batch(split, kind, indices[local], mask[local])

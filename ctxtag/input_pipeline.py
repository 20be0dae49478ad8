"""Input pipeline: a built contextual_tags split -> batches, on host or device.

A split is read with `tfds.data_source` (random access into array_record,
no TensorFlow). Its small table of pairs is read once per process, without
decoding a single mel, and reused by every caller (`load_split` is cached).
Mel spectrograms are read by track, so a track's mel is stored and read once
however many pairs refer to it.

Three kinds of batches:
  * tracks, for the audio model: mel + multi-hot union of the split's
    contexts of the track;
  * pairs, for the audio + user model: mel + user embedding + one-hot context;
  * users, for the user-only model: pairs without the mel, which it never
    reads.

Two ways to feed them:
  * host batches (`train_batches`, `eval_batches`): numpy arrays gathered on
    the host, for splits too large to keep on the device;
  * example indices (`train_indices`, `eval_indices`) into the split's
    arrays kept on the device (`ctxtag.device_data`): a jitted step gathers
    its batch there, so the host sends nothing else.
Both produce the same batches in the same order.

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

from ctxtag import dataset_check
from ctxtag import labels

Batch = dict[str, np.ndarray]

KINDS = ("tracks", "pairs", "users")
# How many records one read of all mels asks the data source for at a time:
# big enough to amortise the per-call cost, small enough to bound the
# temporary list of decoded records.
_MEL_READ_CHUNK = 256


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """One split of a built contextual_tags dataset.

  Compared and hashed by identity: `load_split` hands out one object per
  split, so caches may key on it.

  Attributes:
    name: the split's name.
    source: random-access records, one per track, mels decoded.
    mel_shape: (frames, mel bands) of every mel.
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
  mel_shape: tuple[int, int]
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
    if "mel_NxTxF" in self.__dict__:  # all read already: no record reads
      return self.mel_NxTxF[track_indices].astype(np.float32)
    unique, inverse = np.unique(track_indices, return_inverse=True)
    read = np.stack([self.source[int(i)]["mel"] for i in unique])
    return read.astype(np.float32)[inverse]

  @functools.cached_property
  def mel_NxTxF(self) -> np.ndarray:
    """Every track's mel as stored (float16), in record order.

    Read on first use only (device-resident training); kept, since a
    reproduction trains several models on the same split.
    """
    mels = np.empty((self.num_tracks, *self.mel_shape), np.float16)
    for start in range(0, self.num_tracks, _MEL_READ_CHUNK):
      stop = min(start + _MEL_READ_CHUNK, self.num_tracks)
      records = self.source.__getitems__(list(range(start, stop)))
      mels[start:stop] = [record["mel"] for record in records]
    return mels


def dataset_dir(data_dir: os.PathLike | str, dataset: str,
                version: str) -> str:
  """Where TFDS puts `dataset` ("contextual_tags/<config>") under data_dir.

  `version`: the builder's, `str(tfds_builders.contextual_tags.Builder.
  VERSION)` (the library does not import the builder, which imports it).
  """
  return os.path.join(os.fspath(data_dir), dataset, version)


def load_split(dataset_path: os.PathLike | str, split: str) -> Split:
  """Opens `split` of the dataset built at `dataset_path`, once per process.

  A reproduction asks for the same splits about twenty times (training,
  validation, restoring, predicting, ground truth); they are read once and
  the same `Split` is returned. A dataset rebuilt in place (a new
  dataset_info.json) is read afresh.

  Args:
    dataset_path: the versioned directory of a built dataset (see
      `dataset_dir`).
    split: "train", "validation" or "test".
  """
  dataset_path = os.path.realpath(os.fspath(dataset_path))
  info_path = os.path.join(dataset_path, "dataset_info.json")
  if not os.path.exists(info_path):
    raise FileNotFoundError(
        f"{dataset_path}: no complete dataset here (dataset_info.json is"
        " missing); build it with `python -m launch.build_dataset`")
  return _load_split(dataset_path, split, os.stat(info_path).st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _load_split(dataset_path: str, split: str, info_mtime_ns: int) -> Split:
  del info_mtime_ns  # only part of the cache key
  builder = tfds.builder_from_directory(dataset_path)
  dataset_check.check_format(dataset_path, builder.info)
  if split not in builder.info.splits:
    raise ValueError(f"{dataset_path}: no split {split!r}; it has"
                     f" {sorted(builder.info.splits.keys())}")
  # The pair table needs no mel: skipping their decoding leaves the records'
  # small fields, parsed once here.
  table_source = builder.as_data_source(
      split, decoders={"mel": tfds.decode.SkipDecoding()})
  song_ids, tracks, users, contexts, embeddings, probs = [], [], [], [], [], []
  for index in range(len(table_source)):
    try:
      record = table_source[index]
    except Exception as error:  # array_record's own errors name no file
      raise dataset_check.unreadable_record(dataset_path, split, index,
                                            error) from None
    pairs = record["pairs"]
    song_ids.append(record["song_id"])
    tracks.extend([index] * len(pairs["label"]))
    users.extend(pairs["user_id"])
    contexts.extend(pairs["label"])
    embeddings.extend(pairs["user_embedding"])
    probs.extend(pairs.get("context_probs", []))
  return Split(
      name=split,
      source=builder.as_data_source(split),
      mel_shape=tuple(builder.info.features["mel"].shape),
      song_id_N=np.asarray(song_ids, np.int64),
      pair_track_P=np.asarray(tracks, np.int64),
      user_id_P=np.asarray(users, np.int64),
      label_P=np.asarray(contexts, np.int64),
      user_embedding_PxE=np.asarray(embeddings, np.float32).reshape(
          -1, labels.USER_EMBEDDING_DIM),
      context_probs_PxC=(np.asarray(probs, np.float32) if probs else None),
  )


def check_kind(kind: str) -> None:
  """Raises ValueError unless `kind` is one of `KINDS`."""
  if kind not in KINDS:
    raise ValueError(
        f"batch kind must be 'tracks', 'pairs' or 'users', got {kind!r}")


def process_slice(global_batch: int) -> slice:
  """This process's share of a global batch."""
  count, index = jax.process_count(), jax.process_index()
  if global_batch % count:
    raise ValueError(f"batch size {global_batch} is not divisible by the"
                     f" {count} processes")
  local = global_batch // count
  return slice(index * local, (index + 1) * local)


def _make_batch(split: Split, kind: str, indices: np.ndarray,
                mask: np.ndarray) -> Batch:
  check_kind(kind)
  if kind == "tracks":
    return {"mel": split.mels(indices),
            "labels": split.track_labels_NxC[indices],
            "mask": mask, "index": indices}
  batch = {"user_embedding": split.user_embedding_PxE[indices],
           "labels": split.pair_labels_PxC[indices],
           "mask": mask, "index": indices}
  if kind == "pairs":
    batch["mel"] = split.mels(split.pair_track_P[indices])
  return batch


def example_batch(split: Split, kind: str, batch_size: int) -> Batch:
  """Zeros shaped like a batch of `kind`, for initialising a model: Flax
  initialisers depend on shapes only, so no record needs reading."""
  check_kind(kind)
  batch = {"labels": np.zeros((batch_size, labels.NUM_LABELS), np.float32),
           "mask": np.ones(batch_size, np.float32)}
  if kind != "tracks":
    batch["user_embedding"] = np.zeros(
        (batch_size, labels.USER_EMBEDDING_DIM), np.float32)
  if kind != "users":
    batch["mel"] = np.zeros((batch_size, *split.mel_shape), np.float32)
  return batch


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


def train_indices(split: Split, kind: str, batch_size: int, seed: int,
                  start_step: int = 0) -> Iterator[np.ndarray]:
  """Endless shuffled example indices of training batches, from `start_step`.

  Each epoch is a permutation drawn from (seed, epoch); its last incomplete
  batch is left out, a different remainder each epoch.

  Args:
    split: the training split.
    kind: "tracks", "pairs" or "users".
    batch_size: the global batch size (over all processes).
    seed: fixes the order.
    start_step: the first step to produce, for resuming.

  Yields:
    This process's share of each global batch: indices of tracks ("tracks")
    or pairs, (batch_size / processes,).
  """
  local = process_slice(batch_size)
  step = start_step
  while True:
    yield step_indices(split, kind, batch_size, seed, step)[local]
    step += 1


def step_indices(split: Split, kind: str, batch_size: int, seed: int,
                 step: int) -> np.ndarray:
  """The global batch of training step `step` (every process's share), as
  `train_indices` orders them: random access, for worker processes."""
  per_epoch = steps_per_epoch(split, kind, batch_size)
  epoch, position = divmod(step, per_epoch)
  order = _epoch_order(seed, epoch, num_examples(split, kind))
  return order[position * batch_size:(position + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
  order = np.random.default_rng([seed, epoch]).permutation(size)
  order.flags.writeable = False  # shared by every caller of the cache
  return order


def train_batches(split: Split, kind: str, batch_size: int, seed: int,
                  start_step: int = 0) -> Iterator[Batch]:
  """Endless shuffled host batches of `train_indices` (same arguments)."""
  check_kind(kind)
  local = process_slice(batch_size)
  step = start_step
  while True:
    yield train_batch(split, kind, batch_size, seed, step, local)
    step += 1


def train_batch(split: Split, kind: str, batch_size: int, seed: int,
                step: int, local: slice) -> Batch:
  """The `local` share (`process_slice`) of training step `step`'s host
  batch: random access, for worker processes."""
  indices = step_indices(split, kind, batch_size, seed, step)[local]
  return _make_batch(split, kind, indices, np.ones(len(indices), np.float32))


def eval_indices(split: Split, kind: str,
                 batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Every example of `split` once, in order: (indices, mask) per batch.

  The last batch is padded with example 0, whose `mask` is 0 there. Yields
  this process's share of each global batch.
  """
  size = num_examples(split, kind)
  local = process_slice(batch_size)
  for start in range(0, size, batch_size):
    indices = np.arange(start, start + batch_size)
    mask = (indices < size).astype(np.float32)
    indices = np.where(indices < size, indices, 0)
    yield indices[local], mask[local]


def eval_batches(split: Split, kind: str,
                 batch_size: int) -> Iterator[Batch]:
  """Host batches of `eval_indices` (same arguments)."""
  check_kind(kind)
  for indices, mask in eval_indices(split, kind, batch_size):
    yield _make_batch(split, kind, indices, mask)

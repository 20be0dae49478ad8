"""Device-resident data: a split's arrays kept on every device, batches
gathered there by index.

A split whose arrays fit a model's `device_data_budget_mb` goes to the
devices once, replicated (`place_tables`); each jitted step then gathers its
batch from a few indices (`gather_batch`, traced inside the step), so the host
sends indices and nothing else. A larger split is read on the host, batch by
batch (`input_pipeline.train_batches`, `eval_batches`). Both give the same
batches in the same order.
"""

import jax
import sys
import jax.numpy as jnp
import numpy as np

from ctxtag import input_pipeline
from ctxtag import labels

# Tables that evaluating the audio + user model gathers pairs from, once its
# audio features stand in for the mels.
_PAIR_FIELDS = ("pair_track_P", "user_embedding_PxE", "pair_labels_PxC")


def resident_fields(kind: str) -> tuple[str, ...]:
  """The split arrays a batch of `kind` is gathered from (see
  `resident_array`).

  Args:
    kind: "tracks", "pairs" or "users".

  Returns:
    The fields' names, as `input_pipeline.Split` attributes.
  """
  input_pipeline.check_kind(kind)
  return {"tracks": ("mel_NxTxF", "track_labels_NxC"),
          "pairs": ("mel_NxTxF", "pair_track_P", "user_embedding_PxE",
                    "pair_labels_PxC"),
          "users": ("user_embedding_PxE", "pair_labels_PxC")}[kind]


def resident_array(split: input_pipeline.Split, field: str) -> np.ndarray:
  """One array of `resident_fields`, on the host, as it goes to the device.

  Mels stay float16 as stored: half the device memory, and widening to
  float32 happens exactly inside the step. Track indices are int32, the
  accelerators' native index type.

  Args:
    split: the split.
    field: one of `resident_fields`.

  Returns:
    The host array.
  """
  if field == "pair_track_P":
    return split.pair_track_P.astype(np.int32)
  return getattr(split, field)


def resident_bytes(split: input_pipeline.Split, kind: str) -> int:
  """Device bytes of `kind`'s resident tables of `split`, without reading
  any mel.

  Args:
    split: the split.
    kind: its batch kind.

  Returns:
    The bytes one device holds.
  """
  mel_bytes = split.num_tracks * int(np.prod(split.mel_shape)) * 2
  sizes = {"mel_NxTxF": mel_bytes,
           "track_labels_NxC": split.num_tracks * labels.NUM_LABELS * 4,
           "pair_track_P": split.num_pairs * 4,
           "user_embedding_PxE": split.user_embedding_PxE.nbytes,
           "pair_labels_PxC": split.num_pairs * labels.NUM_LABELS * 4}
  return sum(sizes[field] for field in resident_fields(kind))


def fits_on_device(split: input_pipeline.Split, kind: str,
                   budget_mb: float) -> bool:
  """Whether `kind`'s resident tables of `split` fit `budget_mb` per device.
  """
  return resident_bytes(split, kind) <= budget_mb * 2**20


def place_array(host: np.ndarray, sharding: jax.sharding.Sharding
                ) -> jax.Array:
  """`host` placed with `sharding` (replicated: on every device).

  Built from a callback so that each process fills only its own devices
  (every process holds the same).
  """
  return jax.make_array_from_callback(host.shape, sharding,
                                      lambda index: host[index])


def place_tables(split: input_pipeline.Split, kind: str,
                 sharding: jax.sharding.Sharding,
                 fields: tuple[str, ...] | None = None) -> dict:
  """`kind`'s resident tables of `split`, placed with `sharding`.

  Args:
    split: the split.
    kind: its batch kind.
    sharding: the steps' replicated sharding (`Steps.replicated`).
    fields: the tables to place; None: all of `resident_fields(kind)`.

  Returns:
    {field: device array}.
  """
  return {field: place_array(resident_array(split, field), sharding)
          for field in fields or resident_fields(kind)}


def tables_if_they_fit(name: str, split: input_pipeline.Split, kind: str,
                       budget_mb: float,
                       sharding: jax.sharding.Sharding) -> dict | None:
  """`split` placed on the devices if it fits the budget, else None (and a
  printed line saying so).

  Args:
    name: the model's name, for the printed line.
    split: the split.
    kind: its batch kind.
    budget_mb: the model's `device_data_budget_mb`.
    sharding: the steps' replicated sharding.

  Returns:
    `place_tables(split, kind, sharding)`, or None.
  """
  megabytes = resident_bytes(split, kind) / 2**20
  if megabytes > budget_mb:
    print(f"[{name}] {split.name} split read on the host: {megabytes:.0f} MB"
          f" > device_data_budget_mb={budget_mb}", file=sys.stderr,
          flush=True)
    return None
  return place_tables(split, kind, sharding)


def pair_evaluation_tables(steps, state, split: input_pipeline.Split,
                           batch_size: int, tables: dict | None) -> dict:
  """Device tables to evaluate the audio + user model on `split`.

  A track's audio features are the same for each of its pairs (about 7 in
  the paper's data), so they are computed once per track, from resident
  mels or from host batches of tracks, and the pairs gather them.

  Args:
    steps: the model's `steps.Steps`.
    state: its state.
    split: the split to evaluate.
    batch_size: the global evaluation batch.
    tables: `place_tables(split, "pairs", ...)`, or None (host mels).

  Returns:
    "audio_features_NxD" and the pair tables, on the devices.
  """
  features = []
  if tables is None:
    for batch in input_pipeline.eval_batches(split, "tracks", batch_size):
      features.append(steps.track_features(
          state, steps.shard({"mel": batch["mel"]})))
    tables = place_tables(split, "pairs", steps.replicated, _PAIR_FIELDS)
  else:
    for indices, _ in input_pipeline.eval_indices(split, "tracks",
                                                  batch_size):
      features.append(steps.track_features_indexed(
          state, tables["mel_NxTxF"], steps.shard_indices(indices)))
  return {"audio_features_NxD": steps.first_rows(features, split.num_tracks),
          **{k: v for k, v in tables.items() if k != "mel_NxTxF"}}


def gather_batch(tables: dict, indices_B: jax.Array, kind: str) -> dict:
  """The batch of `kind` at `indices_B`, gathered from resident tables.

  Traced inside jitted steps; equals the host batch
  (`input_pipeline.eval_batches`, `train_batches`) of the same indices (mels
  widened from float16 exactly as on the host).

  Args:
    tables: {field: array} of `resident_fields(kind)`; for "pairs", an
      "audio_features_NxD" table (the audio + user model's conv stack output
      per track, for evaluation) may stand in for "mel_NxTxF".
    indices_B: int example indices (tracks for "tracks", else pairs).
    kind: "tracks", "pairs" or "users".

  Returns:
    The model inputs: mel and/or user_embedding, labels; no mask.
  """
  if kind == "tracks":
    return {"mel": tables["mel_NxTxF"][indices_B].astype(jnp.float32),
            "labels": tables["track_labels_NxC"][indices_B]}
  batch = {"user_embedding": tables["user_embedding_PxE"][indices_B],
           "labels": tables["pair_labels_PxC"][indices_B]}
  if kind == "pairs":
    tracks_B = tables["pair_track_P"][indices_B]
    if "audio_features_NxD" in tables:  # computed once per track
      batch["audio_features"] = tables["audio_features_NxD"][tracks_B]
    else:
      batch["mel"] = tables["mel_NxTxF"][tracks_B].astype(jnp.float32)
  return batch

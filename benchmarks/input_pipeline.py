r"""Throughput of the input pipeline, in examples per second.

  python -m benchmarks.input_pipeline --dataset_path=DIR [--batch_size=32]

Measures, over one split and with baselines in the same process:
  * opening the split: the pair table read without decoding mels, against
    decoding every record in full as the table read used to; then the
    cached second open;
  * host batches of each kind (training and evaluation), against reading
    the split's records one by one without batching (raw reads), so the
    ratio says what batching and joining cost on top of the reads;
  * batches gathered on the device from resident tables, for a train step's
    input only (what `ctxtag.train.ResidentFeed` sends: indices).
"""

import itertools
import time

from absl import app
from absl import flags
import jax
import tensorflow_datasets as tfds

from ctxtag import device_data
from ctxtag import input_pipeline

_DATASET_PATH = flags.DEFINE_string(
    "dataset_path", None, "Versioned directory of a built dataset.",
    required=True)
_SPLIT = flags.DEFINE_string("split", "train", "Split to read.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_STEPS = flags.DEFINE_integer("steps", 200, "Batches to time per kind.")


def _rate(batches, count, batch_size):
  start = time.perf_counter()
  for _ in itertools.islice(batches, count):
    pass
  return count * batch_size / (time.perf_counter() - start)


def _seconds(function):
  start = time.perf_counter()
  result = function()
  return time.perf_counter() - start, result


def _gather_rate(split, kind, size, count):
  """examples/s of jitted gathers fed by `train_indices`, as a step sees
  them (a sum stands in for the model)."""
  tables = {field: jax.device_put(device_data.resident_array(split, field))
            for field in device_data.resident_fields(kind)}
  gather = jax.jit(lambda tables, indices: jax.tree.map(
      lambda x: x.sum(), device_data.gather_batch(tables, indices, kind)))
  indices = input_pipeline.train_indices(split, kind, size, seed=0)
  jax.block_until_ready(gather(tables, next(indices)))
  start = time.perf_counter()
  out = None
  for index in itertools.islice(indices, count):
    out = gather(tables, index)
  jax.block_until_ready(out)
  return count * size / (time.perf_counter() - start)


def main(argv):
  del argv
  path, name = _DATASET_PATH.value, _SPLIT.value
  full_decode, _ = _seconds(lambda: [
      record for record in tfds.builder_from_directory(path).as_data_source(
          name)])
  first_open, split = _seconds(lambda: input_pipeline.load_split(path, name))
  second_open, _ = _seconds(lambda: input_pipeline.load_split(path, name))
  print(f"{split.name}: {split.num_tracks} tracks, {split.num_pairs} pairs,"
        f" mel {split.mel_shape}")
  print(f"open: pair table {first_open:.2f} s (decoding every record in full:"
        f" {full_decode:.2f} s); again, cached: {second_open * 1e3:.3f} ms")
  size = _BATCH_SIZE.value
  start = time.perf_counter()
  for index in range(split.num_tracks):
    split.source[index]  # pylint: disable=pointless-statement
  raw = split.num_tracks / (time.perf_counter() - start)
  print(f"raw record reads (baseline): {raw:9.0f} records/s")
  # Host batches first: reading all mels for the device tables would let
  # host batches take them from memory instead of the records.
  for kind in input_pipeline.KINDS:
    train = _rate(input_pipeline.train_batches(split, kind, size, seed=0),
                  _STEPS.value, size)
    evaluate = _rate(input_pipeline.eval_batches(split, kind, size),
                     min(_STEPS.value, input_pipeline.num_examples(
                         split, kind) // size), size)
    print(f"{kind:>6} host train batches: {train:9.0f} examples/s"
          f" ({train / raw:.2f} x raw reads); eval batches: {evaluate:9.0f}"
          f" ({evaluate / raw:.2f} x)")
  for kind in input_pipeline.KINDS:
    device = _gather_rate(split, kind, size, _STEPS.value)
    print(f"{kind:>6} device gathers: {device:9.0f} examples/s"
          f" ({device / raw:.1f} x raw reads)")


if __name__ == "__main__":
  app.run(main)

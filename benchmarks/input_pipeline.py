r"""Throughput of the input pipeline, in examples per second.

  python -m benchmarks.input_pipeline --dataset_path=DIR [--batch_size=32]

Measures training batches (tracks and pairs) and evaluation batches over one
split, with a baseline in the same process: reading the split's records one
by one from the data source without batching, so the ratio says what the
batching and joining cost on top of the raw reads.
"""

import itertools
import time

from absl import app
from absl import flags

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


def main(argv):
  del argv
  split = input_pipeline.load_split(_DATASET_PATH.value, _SPLIT.value)
  size = _BATCH_SIZE.value
  start = time.perf_counter()
  for index in range(split.num_tracks):
    split.source[index]
  raw = split.num_tracks / (time.perf_counter() - start)
  print(f"{split.name}: {split.num_tracks} tracks, {split.num_pairs} pairs")
  print(f"raw record reads (baseline): {raw:9.0f} records/s")
  for kind in ("tracks", "pairs"):
    train = _rate(input_pipeline.train_batches(split, kind, size, seed=0),
                  _STEPS.value, size)
    evaluate = _rate(input_pipeline.eval_batches(split, kind, size),
                     min(_STEPS.value, input_pipeline.num_examples(
                         split, kind) // size), size)
    print(f"{kind:>6} train batches: {train:9.0f} examples/s"
          f" ({train / raw:.2f} x raw reads)")
    print(f"{kind:>6} eval batches:  {evaluate:9.0f} examples/s"
          f" ({evaluate / raw:.2f} x raw reads)")


if __name__ == "__main__":
  app.run(main)

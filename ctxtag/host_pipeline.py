"""Training batches made on the host by worker processes, for splits too
large for the devices.

Training step `s`'s batch is a pure function of (split, kind, batch size,
seed, s) (`input_pipeline.step_indices`), so the pipeline is a grain
`MapDataset` over step numbers from the resume step on, mapped to batches
in `workers` processes, each holding `prefetch` batches ready; grain hands
them back in step order. The batches, and so resumption and results, are
those of the single-process `input_pipeline.train_batches`.

Workers are started, not forked (JAX's runtime threads in the parent do not
survive a fork), and each receives the split's pair table (a few MB) and
opens the records itself. They never touch JAX: this process's share of a
global batch is fixed here, where `jax.process_index()` means something.
"""

from collections.abc import Iterator
import os

from absl import flags
import numpy as np

from ctxtag import input_pipeline


def default_workers() -> int:
  """Worker processes when the config leaves it to us: half the cores less
  one, at most 8; 0 (batches made in this process) on small machines, where
  workers would take cores from the training step."""
  return max(0, min(8, (os.cpu_count() or 1) // 2 - 1))


def workers_for(host_workers: int) -> int:
  """Worker processes for config setting `host_workers` (-1: the default)."""
  return default_workers() if host_workers < 0 else host_workers


class BatchAt:
  """step -> this process's share of that step's training batch; pickled
  to grain's worker processes."""

  def __init__(self, split: input_pipeline.Split, kind: str, batch_size: int,
               seed: int, local: slice):
    self.split, self.kind = split, kind
    self.batch_size, self.seed, self.local = batch_size, seed, local

  def __call__(self, step: int) -> input_pipeline.Batch:
    return input_pipeline.train_batch(self.split, self.kind, self.batch_size,
                                      self.seed, int(step), self.local)


def train_batches(split: input_pipeline.Split, kind: str, batch_size: int,
                  seed: int, start_step: int, workers: int,
                  prefetch: int) -> Iterator[input_pipeline.Batch]:
  """Endless training batches from `start_step`, as
  `input_pipeline.train_batches` makes them, by `workers` processes (0: in
  this one) holding `prefetch` batches each."""
  if workers < 0 or prefetch < 1:
    raise ValueError(f"workers must be >= 0 and prefetch >= 1, got {workers}"
                     f" and {prefetch}")
  if workers == 0:
    return input_pipeline.train_batches(split, kind, batch_size, seed,
                                        start_step)
  import grain  # pylint: disable=g-import-not-at-top
  # grain reads its own absl flags; a library caller (a notebook, a test)
  # may not have parsed any, and grain's defaults are what we want then.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  make = BatchAt(split, kind, batch_size, seed,
                 input_pipeline.process_slice(batch_size))
  steps = grain.MapDataset.range(start_step, np.iinfo(np.int64).max)
  return iter(steps.map(make).to_iter_dataset().mp_prefetch(
      grain.MultiprocessingOptions(num_workers=workers,
                                   per_worker_buffer_size=prefetch)))


class DevicePrefetch:
  """Batches placed on the devices `depth` steps ahead of their use, so the
  copy of one overlaps the steps before it."""

  def __init__(self, batches: Iterator[dict], place, depth: int = 2):
    self.batches, self.place, self.depth = batches, place, depth
    self.ready = []

  def __iter__(self):
    return self

  def __next__(self):
    while len(self.ready) < self.depth:
      self.ready.append(self.place(next(self.batches)))
    return self.ready.pop(0)

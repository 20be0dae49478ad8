"""Training progress: printed lines with rate and ETA, and metric records.

The printed rate counts training throughput alone: the clock starts once
the first dispatch has completed (its line comes after its metrics are
fetched) and leaves out every compilation since (a new dispatch length at an
epoch's end, the first validation pass), which JAX reports through
`jax.monitoring`.

A model's directory holds its records:
  tensorboard/   TensorBoard event files (written without TensorFlow)
  metrics.jsonl  one JSON line per logged step and per epoch
A resumed run drops the records past the step it resumes from and writes
them again, so its records equal those of a run never stopped.
"""

import itertools
import json
import math
import os
import sys
import time

import jax
import tensorboardX

from ctxtag import distributed
from ctxtag import files

# What JAX reports of a compilation: tracing, lowering and XLA's compile.
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
# Numbers this process's TensorBoard writers (their files' names).
_WRITERS = itertools.count()


class Progress(files.ClosedOnExit):
  """Progress lines with rate and ETA, plus TensorBoard and JSON-lines logs.

  In a run on several processes only process 0 logs; the others' Progress
  does nothing. A context manager: leaving the block closes the logs; with an
  error in flight, an error of closing is dropped for it.
  """

  def __init__(self, name: str, model_dir: str, total_steps: int,
               steps_per_epoch: int, batch_size: int, start_step: int = 0):
    """Opens the logs of a run that starts (or resumes) after `start_step`.

    Args:
      name: the model's name, for the printed lines.
      model_dir: where the records go.
      total_steps: the run's steps if it never stops early (for the ETA).
      steps_per_epoch: the steps of an epoch (a step's epoch, printed).
      batch_size: the global batch (the examples a second, printed).
      start_step: the steps done; records a stopped run wrote past it are
        dropped, as the run writes them again.
    """
    self.name, self.total_steps, self.batch_size = name, total_steps, batch_size
    self.steps_per_epoch = steps_per_epoch
    self.active = distributed.is_main()
    if not self.active:
      return
    # tensorboardX names an event file by the second it opened and the
    # host: a run resumed within the second it stopped (a fast model on a
    # fast machine) overwrote the stopped run's file. The process and a
    # count make each writer's file its own.
    self.writer = tensorboardX.SummaryWriter(
        os.path.join(model_dir, "tensorboard"), purge_step=start_step + 1,
        filename_suffix=f".{os.getpid()}.{next(_WRITERS)}")
    log_path = os.path.join(model_dir, "metrics.jsonl")
    keep_records_through(log_path, start_step)
    self.log = open(log_path, "a")
    self.clock = time.monotonic  # replaceable, for tests
    self.start_time, self.start_step = self.clock(), None
    self.compile_seconds = 0.0
    jax.monitoring.register_event_duration_secs_listener(self._on_event)
    self.listening = True

  def _on_event(self, event: str, duration: float, **unused_metadata) -> None:
    """Counts the seconds JAX spends compiling (a `jax.monitoring`
    listener)."""
    if event in COMPILE_EVENTS:
      self.compile_seconds += duration

  def record(self, kind: str, step: int, values: dict) -> None:
    """Writes `values` ({metric: float}) of `step` as `kind` records."""
    if not self.active:
      return
    for key, value in values.items():
      self.writer.add_scalar(f"{kind}/{key}", value, step)
    try:
      self.log.write(json.dumps({"kind": kind, "step": step, **values})
                     + "\n")
      self.log.flush()
    except OSError as error:  # a full disk: name the file
      raise files.WriteError(f"{self.log.name}: cannot write"
                             f" ({error.strerror or error})") from error

  def record_and_print(self, step: int, values: dict) -> None:
    """Writes a logged step's training metrics as records and prints its
    line."""
    self.record("train", step, values)
    self.print_line(step, values)

  def print_line(self, step: int, values: dict) -> None:
    """Prints step `step`'s epoch, loss, rate and ETA (the line alone: the
    loop's lines between logged steps, when those are far apart in time,
    leave the records as they are, so a resumed run's records are the
    same).

    The first line only starts the clock: it comes once the first dispatch
    has completed, whose time is mostly compilation. The rate is the steps
    since then over the time since then less the compilations in it (a new
    dispatch length at an epoch's end, the first validation pass), which
    would otherwise make it jump between lines (docs/training.md).
    Validation passes and checkpoints stay in: the ETA must count them.
    """
    if not self.active:
      return
    if self.start_step is None:
      self.start_step, self.start_time = step, self.clock()
      self.start_compile_seconds = self.compile_seconds
      return
    compiling = self.compile_seconds - self.start_compile_seconds
    elapsed = self.clock() - self.start_time - compiling
    rate = (step - self.start_step) / max(elapsed, 1e-9)
    eta = (self.total_steps - step) / max(rate, 1e-9)
    epoch = (step - 1) // self.steps_per_epoch + 1
    # One write, newline included: print writes the text and its newline
    # apart, and a signal landing between them glued the interruption's
    # line to the cut progress line (ctxtag.interrupts).
    sys.stderr.write(
        f"[{self.name}] epoch {epoch} step {step}/{self.total_steps}"
        f" loss {values['loss']:.4f} {rate * self.batch_size:.0f} ex/s"
        f" ETA<= {eta // 60:.0f}:{eta % 60:02.0f}\n")
    sys.stderr.flush()

  def close(self) -> None:
    """Closes the logs."""
    if not self.active:
      return
    if self.listening:  # closing twice must not unregister twice
      jax.monitoring.unregister_event_duration_listener(self._on_event)
      self.listening = False
    self.writer.close()
    self.log.close()


def keep_records_through(path: str, step: int) -> None:
  """Drops the records of JSON-lines log `path` past `step` (and a line a
  kill cut short); rewrites it atomically, and only if anything goes.

  Args:
    path: the log; nothing happens if it does not exist.
    step: the last step whose records stay.
  """
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if line.endswith("\n") and record.get("step", math.inf) <= step:
      kept.append(line)
  if kept != lines:
    files.write_text(path, "".join(kept))

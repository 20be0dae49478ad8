"""The training loop of any model: epochs of dispatches, the actions that run
between them, and the bookkeeping a checkpoint keeps.

`train_epochs` runs epochs until `max_epochs`, or until `patience` epochs
bring no better validation loss; each epoch (`train_epoch`) calls its feed
`steps_per_dispatch` steps at a time. Between dispatches the loop records the
logging steps' metrics, prints a progress line when none came for a while
and checkpoints within the epoch; `itstime` says when each is due. A
dispatch's metrics stay on the device until one of those actions needs them,
so the device runs ahead of the host; `train_epoch`'s `_process_metrics` is
where they are fetched, and where every loss is checked.

Batches and dropout keys are functions of (seed, step), and all the loop
knows besides the model state is its `LoopState`, saved with each
checkpoint: a run resumed from one computes what an uninterrupted run does.
"""

import dataclasses
import math
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

from ctxtag import distributed


@dataclasses.dataclass
class LoopState:
  """The training loop's bookkeeping, saved with each checkpoint.

  Saved as JSON with these field names as keys (those of checkpoints written
  when it was a plain dict: keep them, or old checkpoints stop restoring).

  Attributes:
    epoch: the epochs done.
    best_validation_loss: the lowest validation loss of an epoch so far.
    best_epoch: the epoch (1-based) that reached it; -1 before any.
    best_step: the step that reached it.
    epochs_without_improvement: epochs since it was reached.
    history: {epoch, step, train_loss, validation_loss} of each epoch done.
    epoch_losses: the losses of the epoch in progress, one a step done (the
      position in the epoch of a checkpoint within it); empty at epoch ends.
  """
  epoch: int = 0
  best_validation_loss: float = math.inf
  best_epoch: int = -1
  best_step: int = 0
  epochs_without_improvement: int = 0
  history: list[dict] = dataclasses.field(default_factory=list)
  epoch_losses: list[float] = dataclasses.field(default_factory=list)

  def end_epoch(self, step: int, train_loss: float,
                validation_loss: float) -> bool:
    """Records the epoch that ended at `step`.

    Args:
      step: the epoch's last step.
      train_loss: the mean loss of its steps.
      validation_loss: the validation loss after it.

    Returns:
      Whether it improved on the best validation loss.
    """
    self.epoch += 1
    self.epoch_losses = []
    self.history.append({"epoch": self.epoch, "step": step,
                         "train_loss": train_loss,
                         "validation_loss": validation_loss})
    improved = validation_loss < self.best_validation_loss
    if improved:
      self.best_validation_loss, self.best_epoch, self.best_step = (
          validation_loss, self.epoch, step)
      self.epochs_without_improvement = 0
    else:
      self.epochs_without_improvement += 1
    return improved

  def within_epoch(self, epoch_losses: list[float]) -> "LoopState":
    """A copy for a checkpoint within the epoch, `epoch_losses` done."""
    return dataclasses.replace(self, epoch_losses=list(epoch_losses))

  def to_json(self) -> dict:
    """The JSON object saved (a deep copy: saves run in the background)."""
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, meta: dict) -> "LoopState":
    """The loop state of a saved JSON object (checkpoints saved before
    `epoch_losses` existed have none: they were saved at epoch ends)."""
    return cls(**meta)


def itstime(now: float, every: float, last: float) -> bool:
  """Whether an action repeated `every` steps (or seconds) is due at `now`,
  having last run at `last`: whether a multiple of `every` lies in
  (`last`, `now`].

  Every periodic action of the loop asks this. Counted in steps, an action
  runs at the first step it is asked at or past each multiple: at dispatch
  boundaries, which may pass one by. Counted in seconds, `now` is the
  seconds since the action last ran and `last` 0: due once `every` have
  passed.

  Args:
    now: the steps done, or the seconds since the action last ran.
    every: its period; 0: due whenever asked; `math.inf`: never.
    last: the steps done when it last ran, or 0 for seconds.
  """
  return every == 0 or now // every > last // every


class CheckpointClock:
  """When to checkpoint within an epoch: at the first dispatch boundary at
  or past each multiple of `every_steps`, and once `every_seconds` have
  passed since the last checkpoint; 0 turns either off (as in the config).

  Dispatch boundaries keep a resumed run's dispatches those of an
  uninterrupted one, so it computes the same steps the same way.
  """

  def __init__(self, every_steps: int = 0, every_seconds: float = 0.0,
               step: int = 0):
    """Counts from a checkpoint at `step` (or the start of the run)."""
    self.every_steps = every_steps or math.inf
    self.every_seconds = every_seconds or math.inf
    self.restart(step)

  def restart(self, step: int) -> None:
    """Counts from a checkpoint just saved at `step`."""
    self.last_step, self.last_time = step, time.monotonic()

  def due(self, step: int) -> bool:
    """Whether to checkpoint at `step`, a dispatch boundary."""
    return (itstime(step, self.every_steps, self.last_step)
            or itstime(time.monotonic() - self.last_time, self.every_seconds,
                       0))


def check_finite(name: str, checkpoints, loss: float, step: int,
                 what: str = "training") -> None:
  """Raises FloatingPointError, naming the `checkpoints.Checkpoints` kept,
  unless `loss` (the `what` loss at `step`) is finite."""
  if not math.isfinite(loss):
    raise FloatingPointError(
        f"model {name!r}: non-finite {what} loss ({loss}) at step {step};"
        " stopped."
        f" {checkpoints.describe()}. A rerun of the same command stops here"
        " again: lower the learning rate (in a new --workdir) or check the"
        " data.")


class PendingMetrics:
  """Step metrics still on the device, fetched together when asked: a fetch
  per step makes the host wait for every step (benchmarks/train_loop.py
  with `--config.log_every_steps=1`; docs/training.md)."""

  def __init__(self):
    self._dispatches = []

  def add(self, first_step: int, metrics: list[dict]) -> None:
    """Queues a dispatch's metrics: a dict of scalars per step from
    `first_step` on, or one dict whose arrays have a leading axis of the
    steps."""
    self._dispatches.extend((first_step + i, step_metrics)
                            for i, step_metrics in enumerate(metrics))

  def fetch(self) -> dict[int, dict[str, float]]:
    """{step: {metric: value}} of every queued step, in step order; empties
    the queue."""
    fetched = jax.device_get([metrics for _, metrics in self._dispatches])
    by_step = {}
    for (first_step, _), metrics in zip(self._dispatches, fetched):
      metrics = {key: np.atleast_1d(value) for key, value in metrics.items()}
      for offset in range(len(metrics["loss"])):
        by_step[first_step + offset] = {
            key: float(value[offset]) for key, value in metrics.items()}
    self._dispatches.clear()
    return by_step


@dataclasses.dataclass
class EpochRunner:
  """How `train_epoch` runs steps, and where what it makes goes.

  Attributes:
    feed: runs steps: `feed.run(state, rng, count)` returns the state after
      `count` steps and a list of their metrics (`PendingMetrics.add`).
    rng: the dropout key (each step folds in its number).
    steps_per_dispatch: steps per call of the feed.
    log_every_steps: the steps whose metrics are recorded and printed are its
      multiples and step 1.
    progress: a `progress.Progress` that records and prints them; None:
      neither.
    checkpoints: the model's `checkpoints.Checkpoints` (named when a loss is
      not finite); None: none are saved.
    checkpoint_clock: when to save the latest checkpoint at a dispatch
      boundary within an epoch (the epoch's own checkpoint follows its last).
    loop: the bookkeeping saved with each checkpoint; its `epoch_losses`
      are those of the epoch's steps before a resumed epoch's first.
    name: the model, for messages.
    line_every_seconds: a progress line comes after a dispatch once none was
      printed for this long (slow steps: the paper config's step takes
      seconds on a CPU, benchmarks/train_step.py).
  """
  feed: Any
  rng: jax.Array
  steps_per_dispatch: int
  log_every_steps: int
  progress: Any = None
  checkpoints: Any = None
  checkpoint_clock: CheckpointClock = dataclasses.field(
      default_factory=CheckpointClock)
  loop: LoopState = dataclasses.field(default_factory=LoopState)
  name: str = ""
  line_every_seconds: float = 30.0

  def save_within_epoch(self, state, step: int, losses: list[float]) -> None:
    """Saves the latest checkpoint at `step`, inside an epoch whose steps so
    far had `losses`."""
    self.checkpoints.save("latest", state, self.loop.within_epoch(losses))
    self.checkpoint_clock.restart(step)

  def save_epoch_end(self, state, step: int, improved: bool) -> None:
    """Saves the checkpoints of the epoch that ended at `step`: the best one
    too if it `improved`."""
    if improved:
      self.checkpoints.save("best", state, self.loop)
    self.checkpoints.save("latest", state, self.loop)
    self.checkpoint_clock.restart(step)


def train_epoch(runner: EpochRunner, state, step: int, end: int
                ) -> tuple[Any, list[float]]:
  """Runs the train steps after `step` through `end`, the epoch's last.

  Args:
    runner: the feed (positioned at `step`) and what runs between
      dispatches.
    state: the state after `step`.
    step: the steps done.
    end: the epoch's last step.

  Returns:
    The state after `end` and each of the epoch's step losses.
  """
  pending, losses = PendingMetrics(), list(runner.loop.epoch_losses)
  last_line = time.monotonic()

  def _process_metrics() -> dict[int, dict[str, float]]:
    by_step = pending.fetch()
    for fetched_step, values in by_step.items():
      check_finite(runner.name, runner.checkpoints, values["loss"],
                   fetched_step)
    losses.extend(values["loss"] for values in by_step.values())
    return by_step

  while step < end:
    count = min(runner.steps_per_dispatch, end - step)
    state, metrics = runner.feed.run(state, runner.rng, count)
    pending.add(step + 1, metrics)
    # Step 1 too: its line starts the printed rate's clock.
    logged = [s for s in range(step + 1, step + count + 1)
              if s == 1 or itstime(s, runner.log_every_steps, s - 1)]
    step += count
    line_due = (not logged and runner.progress is not None
                and itstime(time.monotonic() - last_line,
                            runner.line_every_seconds, 0))
    checkpoint_due = step < end and runner.checkpoint_clock.due(step)
    if not (logged or line_due or checkpoint_due):
      continue
    by_step = _process_metrics()
    if runner.progress is not None:
      for logged_step in logged:
        runner.progress.record_and_print(logged_step, by_step[logged_step])
      if line_due:
        runner.progress.print_line(step, by_step[step])
    if logged or line_due:
      last_line = time.monotonic()
    if checkpoint_due:
      runner.save_within_epoch(state, step, losses)
  _process_metrics()
  return state, losses


def train_epochs(runner: EpochRunner, state, step: int, *, per_epoch: int,
                 max_epochs: int, patience: int,
                 validate: Callable[[Any], float]) -> bool:
  """Trains from `step` until `max_epochs` or an early stop.

  Args:
    runner: as for `train_epoch`, with the progress and checkpoints of the
      run and its `LoopState` (updated at every epoch end).
    state: the state after `step`.
    step: the steps done.
    per_epoch: the steps of an epoch.
    max_epochs: the epochs of a run that never stops early.
    patience: the epochs without a better validation loss that stop it.
    validate: the validation loss of a state.

  Returns:
    Whether it stopped early.
  """
  loop, name = runner.loop, runner.name
  while loop.epoch < max_epochs:
    if loop.epochs_without_improvement >= patience:
      if distributed.is_main():
        print(f"[{name}] stopped early after epoch {loop.epoch} of"
              f" {max_epochs}: no better validation loss for {patience}"
              f" epochs; best epoch {loop.best_epoch} (validation loss"
              f" {loop.best_validation_loss:.4f})", file=sys.stderr,
              flush=True)
      return True
    end = (loop.epoch + 1) * per_epoch
    state, losses = train_epoch(runner, state, step, end)
    step = end
    validation_loss = validate(state)
    check_finite(name, runner.checkpoints, validation_loss, step,
                 "validation")
    train_loss = float(np.mean(losses))
    improved = loop.end_epoch(step, train_loss, validation_loss)
    # Every record up to a checkpoint's step is written before it: a resumed
    # run drops the records past its step and writes them again.
    runner.progress.record("epoch", step, {"validation_loss": validation_loss,
                                           "train_loss": train_loss})
    runner.save_epoch_end(state, step, improved)
    print(f"[{name}] epoch {loop.epoch}/{max_epochs} validation loss"
          f" {validation_loss:.4f}{' (best)' if improved else ''}",
          flush=True, file=sys.stderr)
  return False

"""orbax checkpoints of one model: its latest and best states, each saved with
the training loop's bookkeeping (`ctxtag.loop.LoopState`).

A model's `checkpoints/` directory holds:
  latest/  the two newest states, saved at epoch ends and within epochs
           (a stopped run resumes here)
  best/    the two states with the best validation losses (the newest is
           evaluated)
Each step's directory holds the state ("state", orbax's standard format),
the `LoopState` ("meta", JSON) and the model it is a state of ("model",
JSON: `ctxtag.models.describe`), also kept as `checkpoints/model.json`, so a
checkpoint directory alone rebuilds its Flax module (`module_of`).
"""

import contextlib
import gc
import logging
import os
import sys

import json

import jax
import orbax.checkpoint as ocp

from ctxtag import distributed
from ctxtag import errors
from ctxtag import files
from ctxtag import interrupts
from ctxtag.loop import LoopState

MODEL_FILE = "model.json"


class Checkpoints(files.ClosedOnExit):
  """The latest and the best states of one model, with their `LoopState`.

  orbax writes each checkpoint to a temporary directory and renames it when
  complete, so a killed save never passes for a checkpoint. Saves copy the
  state off the device and write it in the background while training goes
  on (a save can take longer than a whole epoch of a small model:
  docs/training.md); closing waits for them.

  Each manager keeps its two newest checkpoints: when the newest cannot be
  restored (a file truncated or lost), `restore` says so in one line and
  falls back to the one before.

  A context manager: leaving the block closes both managers; with an error
  in flight, an error of closing (a full disk) is dropped for it.

  Ctrl-C or SIGTERM during a call into orbax that writes or waits (saving,
  deleting, closing) is held until the call returns (`interrupts.deferred`):
  stopped inside, orbax logs a traceback and can leave a save it started
  neither finished nor abandoned cleanly. Leaving the block on the
  interruption then waits for the save in flight, so it is committed.
  """

  KEEP = 2

  def __init__(self, directory: str, cleanup: bool = False,
               model: dict | None = None):
    """Opens `directory`'s managers.

    Args:
      directory: the model's `checkpoints/` directory.
      cleanup: whether to remove the temporary directories of killed saves
        (only the training run that owns them may).
      model: the model's description (`ctxtag.models.describe`), saved with
        every checkpoint and as model.json; None for a reader.
    """
    self.directory = directory = os.path.abspath(directory)  # orbax: absolute
    self.model = model
    if model is not None and distributed.is_main():
      files.write_json(os.path.join(directory, MODEL_FILE), model)
    model = os.path.basename(os.path.dirname(directory))

    def manager(which):
      # With several processes, orbax names its barriers by step: saves of
      # both managers at one step would share them without a prefix.
      options = ocp.CheckpointManagerOptions(
          max_to_keep=self.KEEP, create=True, enable_async_checkpointing=True,
          cleanup_tmp_directories=cleanup,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix=f"{model}_{which}"))
      return ocp.CheckpointManager(os.path.join(directory, which),
                                   options=options)

    self.latest = manager("latest")
    self.best = manager("best")

  def _manager(self, which: str) -> ocp.CheckpointManager:
    return {"latest": self.latest, "best": self.best}[which]

  def save(self, which: str, state, loop: LoopState) -> None:
    """Saves (state, loop) as step `state.step` of manager `which`.

    In the background; a step already there (left by a run stopped after
    saving it) is replaced, never a reason to stop.

    Args:
      which: "latest" or "best".
      state: the model state.
      loop: the loop's bookkeeping at that step.
    """
    manager, step = self._manager(which), int(state.step)
    with interrupts.deferred():
      with _disk_full_named(manager.directory, None):
        manager.wait_until_finished()  # an earlier save's error comes here
      with _disk_full_named(manager.directory, step):
        if step in manager.all_steps():
          manager.delete(step)
        items = {"state": ocp.args.StandardSave(state),
                 "meta": ocp.args.JsonSave(loop.to_json())}
        if self.model is not None:
          items["model"] = ocp.args.JsonSave(self.model)
        manager.save(step, args=ocp.args.Composite(**items), force=True)

  def wait(self) -> None:
    """Waits for pending saves of both managers."""
    with interrupts.deferred():
      for manager in (self.latest, self.best):
        with _disk_full_named(manager.directory, None):
          manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and closes both managers (both, even when
    the first fails)."""
    with interrupts.deferred():
      try:
        with _disk_full_named(self.latest.directory, None):
          self.latest.close()
      finally:
        with _disk_full_named(self.best.directory, None):
          self.best.close()

  def discard_after(self, step: int) -> None:
    """Deletes the checkpoints of both managers past `step`: ones a stopped
    run saved beyond the checkpoint it resumes from (the run saves them
    again, equal), and damaged ones."""
    with interrupts.deferred():
      for manager in (self.latest, self.best):
        for later in manager.all_steps():
          if later > step:
            manager.delete(later)

  def describe(self) -> str:
    """What both managers hold, as a sentence: "Checkpoints kept: latest
    at steps 200 and 300 (DIR/latest), best at step 200 (DIR/best)"."""
    self.wait()
    held = []
    for label, manager in (("latest", self.latest), ("best", self.best)):
      manager.reload()
      steps = [str(step) for step in sorted(manager.all_steps())]
      if steps:
        held.append(f"{label} at step{'s' if len(steps) > 1 else ''}"
                    f" {' and '.join(steps)} ({manager.directory})")
    if not held:
      return f"No checkpoint has been saved yet in {self.directory}"
    return "Checkpoints kept: " + ", ".join(held)

  def restore(self, which: str, like, label: str = ""):
    """Manager `which`'s newest (state, LoopState) that can be restored.

    A checkpoint that cannot be restored is named in one printed line and
    the one before it is tried.

    Args:
      which: "latest" or "best".
      like: a state (or its shapes, with shardings) of the checkpoint's
        structure.
      label: the model's name, for the printed line.

    Returns:
      (state, LoopState), or None when no checkpoint can be restored.
    """
    manager = self._manager(which)
    steps = sorted(manager.all_steps(), reverse=True)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    for index, step in enumerate(steps):
      try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            meta=ocp.args.JsonRestore()))
        loop = LoopState.from_json(dict(restored.meta))
      except Exception as error:  # pylint: disable=broad-exception-caught
        # orbax, tensorstore and json raise many kinds for damaged files.
        reason = (str(error).strip().splitlines() or [""])[0][:160]
        reason = f"{type(error).__name__}: {reason}"
      else:
        return restored.state, loop
      _forget_failed_reads()
      later = (f"falling back to step {steps[index + 1]}"
               if index + 1 < len(steps) else "no earlier checkpoint left")
      print(f"[{label}] checkpoint {manager.directory}/{step} cannot be"
            f" restored ({reason}); {later}", file=sys.stderr, flush=True)
    return None


def _forget_failed_reads() -> None:
  """Collects the failed reads of a damaged checkpoint quietly: orbax
  leaves them as futures whose errors asyncio logs when they are collected,
  dozens of lines each, where one line says it all."""
  logger = logging.getLogger("asyncio")
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    gc.collect()
  finally:
    logger.setLevel(level)


@contextlib.contextmanager
def _disk_full_named(directory, step: int | None):
  """Turns a full disk while checkpointing into a `files.WriteError` that
  names the directory (orbax and tensorstore name neither)."""
  try:
    yield
  except Exception as error:  # pylint: disable=broad-exception-caught
    if not files.is_disk_full(error):
      raise
    what = "a checkpoint" if step is None else f"the checkpoint of step {step}"
    raise files.WriteError(
        f"{directory}: cannot write {what} (No space left on device); free"
        " space and rerun the same command: it resumes from the last"
        " checkpoint") from error



def describe(directory: str) -> dict:
  """The description of the model whose checkpoints are in `directory`
  (a model's `checkpoints/`), from its model.json.

  Raises:
    errors.CheckpointError: naming the file, if it is missing (checkpoints
      saved before they described their model) or damaged.
  """
  path = os.path.join(directory, MODEL_FILE)
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise errors.CheckpointError(
        f"{path}: missing; these checkpoints do not describe their model"
        " (saved by an earlier ctxtag): the run's config.json does") from None
  except ValueError as error:
    raise errors.CheckpointError(f"{path}: damaged ({error})") from None

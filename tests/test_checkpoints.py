"""Checkpoints: the loop state keeps the on-disk keys of earlier checkpoints,
restores from them, and closing never hides the error in flight."""

import importlib
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ctxtag import checkpoints
from ctxtag import files
from ctxtag import models
from ctxtag import run

# The keys of the "meta" JSON every checkpoint holds, as runs wrote them when
# the loop state was a plain dict: a checkpoint written then must restore.
SAVED_KEYS = ["epoch", "best_validation_loss", "best_epoch", "best_step",
              "epochs_without_improvement", "history", "epoch_losses"]


@flax.struct.dataclass
class _State:
  step: jax.Array
  weights_N: jax.Array


def _state(step):
  return _State(step=jnp.asarray(step, jnp.int32),
                weights_N=jnp.arange(4, dtype=jnp.float32) * step)


def test_loop_state_is_saved_under_the_keys_of_earlier_checkpoints():
  assert list(checkpoints.LoopState().to_json()) == SAVED_KEYS


def test_saved_state_and_loop_state_restore(tmp_path):
  loop = checkpoints.LoopState()
  loop.end_epoch(10, 0.5, 0.25)
  within = loop.within_epoch([0.4, 0.3])
  with checkpoints.Checkpoints(str(tmp_path / "m" / "checkpoints")) as saved:
    saved.save("best", _state(10), loop)
    saved.save("latest", _state(12), within)
  with checkpoints.Checkpoints(str(tmp_path / "m" / "checkpoints")) as saved:
    state, restored = saved.restore("latest", _state(0))
    best_state, best = saved.restore("best", _state(0))
  assert int(state.step) == 12 and restored == within
  np.testing.assert_array_equal(state.weights_N, _state(12).weights_N)
  assert int(best_state.step) == 10 and best == loop
  assert best.best_epoch == 1 and best.best_step == 10 and not best.epoch_losses


def test_a_checkpoint_of_the_plain_dict_era_restores(tmp_path):
  # Saved at an epoch end before epoch_losses existed: no such key.
  meta = {"epoch": 3, "best_validation_loss": 0.5, "best_epoch": 2,
          "best_step": 20, "epochs_without_improvement": 1,
          "history": [{"epoch": 1, "step": 10, "train_loss": 1.0,
                       "validation_loss": 0.7}]}
  directory = str(tmp_path / "m" / "checkpoints")
  with checkpoints.Checkpoints(directory) as saved:
    saved.latest.save(30, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_state(30)),
        meta=ocp.args.JsonSave(meta)))
  with checkpoints.Checkpoints(directory) as saved:
    state, loop = saved.restore("latest", _state(0))
  assert int(state.step) == 30
  assert loop == checkpoints.LoopState(**meta, epoch_losses=[])
  assert loop.to_json() == dict(meta, epoch_losses=[])


def test_an_epoch_end_updates_the_best_and_the_patience_count():
  loop = checkpoints.LoopState()
  assert loop.end_epoch(10, 2.0, 1.0)
  assert not loop.end_epoch(20, 1.5, 1.0)  # equal is no improvement
  assert loop.end_epoch(30, 1.2, 0.5)
  assert not loop.end_epoch(40, 1.1, 0.6)
  assert (loop.epoch, loop.best_epoch, loop.best_step,
          loop.best_validation_loss, loop.epochs_without_improvement) == (
              4, 3, 30, 0.5, 1)
  assert [h["step"] for h in loop.history] == [10, 20, 30, 40]


def test_closing_never_hides_the_error_in_flight(tmp_path, monkeypatch):
  saved = checkpoints.Checkpoints(str(tmp_path / "m" / "checkpoints"))

  def full_disk():
    raise files.WriteError("checkpoints: cannot write")

  monkeypatch.setattr(saved, "close", full_disk)
  with pytest.raises(KeyError, match="in flight"):
    with saved:
      raise KeyError("in flight")
  with pytest.raises(files.WriteError, match="cannot write"):
    with saved:
      pass  # no error in flight: closing's own is raised
  monkeypatch.undo()
  saved.close()


def test_a_checkpoint_directory_rebuilds_its_module(smoke_run):
  config = run.load_run_config(smoke_run)
  for name in config.models:
    directory = os.path.join(smoke_run, name, "checkpoints")
    description = checkpoints.describe(directory)
    assert description["model"] == name
    assert description["section"] == config[name].to_dict() | {
        k: list(v) for k, v in config[name].items() if isinstance(v, tuple)}
    module = models.module_of(description)
    assert module == models.create_model(name, config[name])
    # With Flax alone: the class by its path, the fields as saved.
    path, _, kind = description["module"].rpartition(".")
    fields = dict(description["module_fields"])
    fields["dtype"] = jnp.dtype(fields["dtype"]).type
    fields = {k: tuple(v) if isinstance(v, list) else v
              for k, v in fields.items()}
    assert getattr(importlib.import_module(path), kind)(**fields) == module
    # Every step saved says the same.
    with checkpoints.Checkpoints(directory) as saved:
      step = saved.best.latest_step()
      restored = saved.best.restore(step, args=ocp.args.Composite(
          model=ocp.args.JsonRestore()))
    assert dict(restored.model) == description

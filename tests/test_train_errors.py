"""Training's errors (ctxtag.train): settings it refuses and a non-finite
loss, each with the exact message."""

import os

import jax
import jax.numpy as jnp
import pytest

from ctxtag import errors
from ctxtag import run_config
from ctxtag import steps as steps_lib
from ctxtag import train
from ctxtag.configs import default
from ctxtag.configs import smoke


@pytest.mark.slow
def test_batch_not_divisible_by_the_devices_names_the_setting(
    small_dataset_path, tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda: 3)
  with pytest.raises(errors.ConfigError) as raised:
    train.train_and_evaluate("user", smoke.get_config(), small_dataset_path,
                             str(tmp_path))
  assert str(raised.value) == (
      "config user.batch_size=8 is not divisible by the 3 devices; use a"
      " multiple of 3")


def test_training_settings_out_of_range_are_config_errors():
  # Checked once, where each key's default is declared; choices come from
  # the table that defines them (steps.OPTIMIZERS).
  config = smoke.get_config()
  config.audio.steps_per_dispatch = 0
  with pytest.raises(errors.ConfigError,
                     match=r"^config audio.steps_per_dispatch=0: expected an"
                     r" integer >= 1$"):
    run_config.validate(config, declared=default.get_config())
  config = smoke.get_config()
  config.audio.optimizer = "sgd"
  with pytest.raises(errors.ConfigError,
                     match=r"^config audio.optimizer='sgd': expected one of"
                     r" \['adam', 'adadelta'\]$"):
    run_config.validate(config, declared=default.get_config())


def _nan_losses(monkeypatch):
  monkeypatch.setattr(steps_lib, "example_losses",
                      lambda logits, *args: jnp.full(logits.shape[0], jnp.nan))


@pytest.mark.slow
def test_non_finite_loss_before_any_checkpoint_says_none_was_saved(
    small_dataset_path, tmp_path, monkeypatch):
  _nan_losses(monkeypatch)
  with pytest.raises(FloatingPointError) as raised:
    train.train_and_evaluate("user", smoke.get_config(), small_dataset_path,
                             str(tmp_path))
  assert str(raised.value) == (
      "model 'user': non-finite training loss (nan) at step 1; stopped. No"
      f" checkpoint has been saved yet in {tmp_path}/user/checkpoints. A"
      " rerun of the same command stops here again: lower the learning rate"
      " (in a new --workdir) or check the data.")


@pytest.mark.slow
def test_non_finite_loss_names_the_checkpoints_that_exist(
    small_dataset_path, tmp_path, monkeypatch):
  config = smoke.get_config()
  config.user.max_epochs = 1
  first = train.train_and_evaluate("user", config, small_dataset_path,
                                   str(tmp_path))
  os.remove(tmp_path / "user" / "summary.json")
  end = first["history"][-1]["step"]
  _nan_losses(monkeypatch)
  config.user.max_epochs = 2
  with pytest.raises(FloatingPointError) as raised:
    train.train_and_evaluate("user", config, small_dataset_path,
                             str(tmp_path))
  checkpoints = tmp_path / "user" / "checkpoints"
  assert str(raised.value).startswith(
      f"model 'user': non-finite training loss (nan) at step {end + 1};"
      f" stopped. Checkpoints kept: latest at step {end} ({checkpoints}/"
      f"latest), best at step {end} ({checkpoints}/best). A rerun")

"""The audio + user model may start from the trained audio model's features."""

import jax
import numpy as np
import pytest

from ctxtag import errors
from ctxtag import input_pipeline
from ctxtag import run_config
from ctxtag import train
from launch import common
from launch.configs import default
from launch.configs import smoke


def test_the_conv_stack_comes_from_the_audio_models_best_state(smoke_run):
  config = smoke.get_config()
  config.audio_user.audio_init = "audio"
  split = input_pipeline.load_split(common.run_dataset_path(smoke_run),
                                    "train")
  _, fresh = train.steps_and_state("audio_user", config, split,
                                   jax.random.PRNGKey(3))
  moved = train.with_audio_branch(fresh, config, smoke_run,
                                  split.mel_shape[0])
  audio = train.restore_best_state("audio", config, smoke_run,
                                   split.mel_shape[0])
  branch = train.AUDIO_BRANCH
  for ours, theirs in ((moved.params, audio.params),
                       (moved.batch_stats, audio.batch_stats)):
    jax.tree.map(np.testing.assert_array_equal, ours[branch], theirs[branch])
  # The fusion layers stay as initialised.
  for key in moved.params:
    if key != branch:
      jax.tree.map(np.testing.assert_array_equal, moved.params[key],
                   fresh.params[key])


def test_different_conv_stacks_cannot_be_transferred(smoke_run):
  config = smoke.get_config()
  config.audio_user.audio_init = "audio"
  config.audio_user.conv_widths = (4, 4, 4, 8)
  split = input_pipeline.load_split(common.run_dataset_path(smoke_run),
                                    "train")
  _, fresh = train.steps_and_state("audio_user", config, split,
                                   jax.random.PRNGKey(0))
  with pytest.raises(errors.ConfigError, match="same conv_widths"):
    train.with_audio_branch(fresh, config, smoke_run, split.mel_shape[0])


def test_the_audio_model_must_train_first():
  config = default.get_config()
  config.models = ("audio_user", "audio")
  with pytest.raises(errors.ConfigError, match="'audio' before 'audio_user'"):
    run_config.validate(config, declared=default.get_config())
  config.audio_user.audio_init = ""
  run_config.validate(config, declared=default.get_config())

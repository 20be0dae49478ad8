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


@pytest.mark.parametrize("fusion, source", [("concat", "audio"),
                                            ("late", "audio"),
                                            ("late", "user")])
def test_the_part_comes_from_the_trained_models_best_state(smoke_run, fusion,
                                                           source):
  config = smoke.get_config()
  config.audio_user.fusion = fusion
  split = input_pipeline.load_split(common.run_dataset_path(smoke_run),
                                    "train")
  _, fresh = train.steps_and_state("audio_user", config, split,
                                   jax.random.PRNGKey(3))
  moved = train.with_trained_part(fresh, config, smoke_run,
                                  split.mel_shape[0], source)
  trained = train.restore_best_state(source, config, smoke_run,
                                     split.mel_shape[0])
  branch = {("concat", "audio"): train.AUDIO_BRANCH,  # the conv stack
            ("late", "audio"): "audio",  # the whole audio model
            ("late", "user"): "user"}[(fusion, source)]  # the user model
  for ours, theirs in ((moved.params, trained.params),
                       (moved.batch_stats, trained.batch_stats)):
    if fusion == "concat":
      theirs = theirs[branch]
    jax.tree.map(np.testing.assert_array_equal, ours[branch], theirs)
  # The fusion layers stay as initialised.
  for key in moved.params:
    if key != branch:
      jax.tree.map(np.testing.assert_array_equal, moved.params[key],
                   fresh.params[key])
  if source == "audio":  # audio_init's own entry point does the same
    again = train.with_audio_branch(fresh, config, smoke_run,
                                    split.mel_shape[0])
    jax.tree.map(np.testing.assert_array_equal, again.params, moved.params)


def test_the_paper_fusion_has_no_user_part_to_take(smoke_run):
  config = smoke.get_config()
  config.audio_user.fusion = "concat"
  split = input_pipeline.load_split(common.run_dataset_path(smoke_run),
                                    "train")
  _, fresh = train.steps_and_state("audio_user", config, split,
                                   jax.random.PRNGKey(0))
  with pytest.raises(errors.ConfigError, match="needs audio_user.fusion"):
    train.with_trained_part(fresh, config, smoke_run, split.mel_shape[0],
                            "user")
  config.audio_user.user_init = "user"
  with pytest.raises(errors.ConfigError, match="user_init"):
    run_config.validate(config, declared=default.get_config())


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


def test_the_audio_and_user_models_must_train_first():
  config = default.get_config()
  config.models = ("audio_user", "audio", "user")
  with pytest.raises(errors.ConfigError, match="'audio' before 'audio_user'"):
    run_config.validate(config, declared=default.get_config())
  config.models = ("audio", "audio_user", "user")
  with pytest.raises(errors.ConfigError, match="'user' before 'audio_user'"):
    run_config.validate(config, declared=default.get_config())
  # Frozen experts must be the trained models.
  config.audio_user.user_init = ""
  with pytest.raises(errors.ConfigError, match="freeze_experts"):
    run_config.validate(config, declared=default.get_config())
  config.audio_user.update(audio_init="", freeze_experts=False)
  config.models = ("audio_user", "audio")
  run_config.validate(config, declared=default.get_config())

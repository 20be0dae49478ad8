"""The audio + user model may start from the trained audio model's features;
with frozen experts its three weights are fitted on held-out pairs."""

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest

from ctxtag import errors
from ctxtag import input_pipeline
from ctxtag import predictions
from ctxtag import run
from ctxtag import run_config
from ctxtag import steps as steps_lib
from ctxtag import train
from ctxtag import transfer
from ctxtag.configs import default
from ctxtag.configs import smoke


@pytest.mark.parametrize("fusion, source", [("concat", "audio"),
                                            ("late", "audio"),
                                            ("late", "user")])
def test_the_part_comes_from_the_trained_models_best_state(smoke_run, fusion,
                                                           source):
  config = smoke.get_config()
  config.audio_user.fusion = fusion
  split = input_pipeline.load_split(run.run_dataset_path(smoke_run),
                                    "train")
  _, fresh = steps_lib.steps_and_state("audio_user", config, split,
                                       jax.random.PRNGKey(3))
  _take_only(config, source)
  moved = transfer.with_trained_parts(fresh, "audio_user", config, smoke_run,
                                      split.mel_shape[0])
  trained = transfer.restore_best(source, config, smoke_run,
                                  split.mel_shape[0])
  branch = {("concat", "audio"): transfer.AUDIO_BRANCH,  # the conv stack
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


def _take_only(config, source: str) -> None:
  """The audio + user section takes the part of `source` alone."""
  config.audio_user.audio_init = "audio" if source == "audio" else ""
  config.audio_user.user_init = "user" if source == "user" else ""


def test_the_paper_fusion_has_no_user_part_to_take(smoke_run):
  config = smoke.get_config()
  config.audio_user.fusion = "concat"
  split = input_pipeline.load_split(run.run_dataset_path(smoke_run),
                                    "train")
  _, fresh = steps_lib.steps_and_state("audio_user", config, split,
                                       jax.random.PRNGKey(0))
  _take_only(config, "user")
  with pytest.raises(errors.ConfigError, match="needs audio_user.fusion"):
    transfer.with_trained_parts(fresh, "audio_user", config, smoke_run,
                                split.mel_shape[0])
  with pytest.raises(errors.ConfigError, match="user_init"):
    run_config.validate(config, declared=default.get_config())


def test_different_conv_stacks_cannot_be_transferred(smoke_run):
  config = smoke.get_config()
  config.audio_user.audio_init = "audio"
  config.audio_user.conv_widths = (4, 4, 4, 8)
  split = input_pipeline.load_split(run.run_dataset_path(smoke_run),
                                    "train")
  _, fresh = steps_lib.steps_and_state("audio_user", config, split,
                                       jax.random.PRNGKey(0))
  with pytest.raises(errors.ConfigError, match="same conv_widths"):
    transfer.with_trained_parts(fresh, "audio_user", config, smoke_run,
                                split.mel_shape[0])


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


def _late_fusion_run(smoke_run, workdir, **overrides):
  """A config and workdir where the audio + user model is the product of
  the smoke run's trained audio and user-only models, experts frozen."""
  config = smoke.get_config()
  config.audio_user.update(fusion="late", freeze_experts=True,
                           audio_init="audio", user_init="user",
                           batch_size=32, learning_rate=0.05, max_epochs=12,
                           patience=12, **overrides)
  for name in ("audio", "user"):
    shutil.copytree(os.path.join(smoke_run, name), os.path.join(workdir, name))
  return config, run.run_dataset_path(smoke_run)


def _fusion_weights(config, dataset_path, workdir
                    ) -> tuple[float, float, float]:
  train.train_and_evaluate("audio_user", config, dataset_path, workdir)
  split = input_pipeline.load_split(dataset_path, "train")
  params = transfer.restore_best("audio_user", config, workdir,
                                 split.mel_shape[0]).params
  return (float(params["audio_weight"]), float(params["user_weight"]),
          float(params["prior_weight"]))


@pytest.mark.slow
def test_frozen_experts_weights_are_fitted_on_validation_pairs(
    smoke_run, tmp_path, monkeypatch):
  config, dataset_path = _late_fusion_run(smoke_run, tmp_path / "a")
  weights = _fusion_weights(config, dataset_path, str(tmp_path / "a"))
  assert max(abs(w - start) for w, start in zip(weights, (1.0, 1.0, 0.0))
             ) > 0.05  # they were fitted
  # results.json takes them from the fit's summary, without a restore: the
  # checkpoint's float32 values, exactly.
  workdir = str(tmp_path / "a")
  assert predictions.fusion_weights(
      config, dataset_path, workdir,
      {"audio_user": train.read_summary(workdir, "audio_user")}) == {
      "fusion_weights": dict(zip(("audio", "user", "typical_user"),
                                 weights))}
  # Training pairs with other users and contexts (the same context counts,
  # so the same class weights) leave the weights exactly as they were.
  real = input_pipeline.load_split
  rng = np.random.default_rng(0)

  def scrambled(path, name):
    split = real(path, name)
    if name != "train":
      return split
    order = rng.permutation(split.num_pairs)
    return dataclasses.replace(
        split, label_P=split.label_P[order],
        user_embedding_PxE=split.user_embedding_PxE[::-1].copy())

  monkeypatch.setattr(input_pipeline, "load_split", scrambled)
  config, _ = _late_fusion_run(smoke_run, tmp_path / "b")
  assert _fusion_weights(config, dataset_path, str(tmp_path / "b")) == weights
  assert train.split_fitted_on("audio_user", config.audio_user, "train",
                               "validation") == "validation"
  config.audio_user.freeze_experts = False
  assert train.split_fitted_on("audio_user", config.audio_user, "train",
                               "validation") == "train"


@pytest.mark.slow
def test_a_useless_audio_expert_gets_no_weight(smoke_run, tmp_path,
                                               monkeypatch):
  # The audio expert's logits made noise: its output layer a large random
  # projection, unrelated to any context (as the audio is where the user
  # alone decides). Fitted on held-out pairs, its weight falls to ~0.
  restore = transfer.restore_best

  def noisy_audio(name, *args):
    state = restore(name, *args)
    if name != "audio":
      return state
    head = state.params["Head_0"]["Dense_1"]
    kernel = np.random.default_rng(0).normal(
        scale=3.0, size=head["kernel"].shape).astype(np.float32)
    params = dict(state.params, Head_0=dict(
        state.params["Head_0"], Dense_1={"kernel": kernel,
                                         "bias": np.zeros_like(head["bias"])}))
    return state.replace(params=params)

  monkeypatch.setattr(transfer, "restore_best", noisy_audio)
  config, dataset_path = _late_fusion_run(smoke_run, tmp_path)
  audio_weight, user_weight, _ = _fusion_weights(config, dataset_path,
                                                 str(tmp_path))
  assert abs(audio_weight) < 0.05
  assert user_weight > 0.5

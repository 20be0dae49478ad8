"""Shapes and parameter counts of the models, counted by hand."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctxtag import models
from launch.configs import default
from launch.configs import paper


def _count(name, config, frames, batch=2):
  model = models.create_model(name, config[name])
  batch_inputs = {"mel": jnp.zeros((batch, frames, 96)),
                  "user_embedding": jnp.zeros((batch, 256))}
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), batch_inputs))
  count = sum(np.prod(x.shape) for x in jax.tree.leaves(variables["params"]))
  logits = jax.eval_shape(lambda: model.apply(
      model.init(jax.random.PRNGKey(0), batch_inputs), batch_inputs))
  return int(count), logits.shape, variables


def _conv_stack(widths):
  count, channels = 2, 1  # input batch norm: scale and bias
  for width in widths:
    count += 3 * 3 * channels * width + width
    channels = width
  return count


def test_paper_audio_model_counts_by_hand():
  count, shape, variables = _count("audio", paper.get_config(), 646)
  flatten = 41 * 6 * 256
  assert flatten == 62976
  expected = (_conv_stack((32, 64, 128, 256))
              + flatten * 256 + 256      # dense 256 sigmoid
              + 256 * 10 + 10)           # output
  assert count == expected == 16_512_524
  assert shape == (2, 10)
  dense = flax.traverse_util.flatten_dict(variables["params"])
  assert dense[("Head_0", "Dense_0", "kernel")].shape == (62976, 256)


def test_paper_audio_user_model_counts_by_hand():
  count, shape, _ = _count("audio_user", paper.get_config(), 646)
  flatten = 62976
  expected = (_conv_stack((32, 64, 128, 256))
              + 2 * flatten                    # batch norm of audio features
              + 2 * 256 + 256 * 128 + 128      # user: norm, dense 128
              + 2 * 128                        # user: norm
              + (flatten + 128) * 128 + 128    # fused dense 128 sigmoid
              + 128 * 10 + 10)                 # output
  assert count == expected == 8_626_188
  assert shape == (2, 10)


def test_deep_variant_counts_by_hand():
  config = paper.get_config()
  config.audio_user.deep = True
  count, shape, _ = _count("audio_user", config, 646)
  expected = (_conv_stack((32, 64, 128, 256))
              + 62976 * 512 + 512 + 512 * 256 + 256 + 256 * 128 + 128
              + 2 * 256 + 256 * 192 + 192 + 192 * 128 + 128 + 2 * 128
              + 256 * 128 + 128 + 128 * 10 + 10)
  assert count == expected
  assert shape == (2, 10)


def test_user_only_model_counts_by_hand():
  count, shape, _ = _count("user", paper.get_config(), 646)
  expected = (2 * 256 + 256 * 128 + 128 + 2 * 128
              + 128 * 128 + 128 + 128 * 10 + 10)
  assert count == expected == 51_466
  assert shape == (2, 10)


def test_default_models_take_the_default_input():
  for name in ("audio", "audio_user", "user"):
    _, shape, _ = _count(name, default.get_config(), 65, batch=5)
    assert shape == (5, 10)


def test_unknown_model_is_refused():
  with pytest.raises(ValueError, match="unknown model 'cnn'"):
    models.create_model("cnn", default.get_config().audio)

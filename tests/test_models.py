"""Shapes and parameter counts of the models, counted by hand."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctxtag import models
from ctxtag.configs import default
from ctxtag.configs import paper


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


def test_default_late_fusion_counts_by_hand():
  config = default.get_config()
  assert config.audio_user.fusion == "late"
  count, shape, variables = _count("audio_user", config, 65)
  flatten = 5 * 6 * 64  # 65 x 96 pooled 4 times (SAME): 5 x 6
  audio = (_conv_stack((8, 16, 32, 64))
           + flatten * 128 + 128 + 128 * 10 + 10)  # the audio tagger
  user = (2 * 256 + 256 * 128 + 128 + 2 * 128      # user branch
          + 128 * 128 + 128 + 128 * 10 + 10)       # user head
  assert count == audio + user + 3 == 323_033      # + the three weights
  assert shape == (2, 10)
  # The experts are the audio and user-only models' trees, shape for shape.
  for name, expected in (("audio", audio), ("user", user)):
    expert_count, _, expert_variables = _count(name, config, 65)
    assert expert_count == expected
    for collection in ("params", "batch_stats"):
      assert (jax.tree.map(np.shape, variables[collection][name])
              == jax.tree.map(np.shape, expert_variables[collection]))
  assert variables["params"]["audio_weight"].shape == ()
  assert variables["params"]["user_weight"].shape == ()
  assert variables["params"]["prior_weight"].shape == ()


def _late_fusion(freeze_experts):
  """Trained-looking experts (random, with non-trivial batch statistics)
  placed into a late fusion as audio_init and user_init place them."""
  config = default.get_config()
  for name in ("audio", "user", "audio_user"):
    config[name].update(conv_widths=(4, 4, 8, 8), hidden=16,
                        user_widths=(8,), dropout_rate=0.5)
  config.audio_user.freeze_experts = freeze_experts
  rng = np.random.default_rng(3)
  batch = {"mel": jnp.asarray(rng.normal(size=(6, 20, 96)), jnp.float32),
           "user_embedding": jnp.asarray(rng.normal(size=(6, 256)),
                                         jnp.float32)}
  experts = {}
  for seed, name in enumerate(("audio", "user")):
    model = models.create_model(name, config[name])
    variables = model.init(jax.random.PRNGKey(seed), batch)
    _, updated = model.apply(variables, batch, train=True,
                             rngs={"dropout": jax.random.PRNGKey(9)},
                             mutable=["batch_stats"])
    experts[name] = model, dict(variables, **updated)
  late = models.create_model("audio_user", config.audio_user)
  variables = late.init(jax.random.PRNGKey(2), batch)
  variables = {key: dict(value, audio=experts["audio"][1][key],
                         user=experts["user"][1][key])
               for key, value in variables.items()}
  return experts, late, variables, batch


def _expert_logits(experts, name, batch):
  model, variables = experts[name]
  return model.apply(variables, batch)


def _user_term(experts, batch):
  """The user expert's logits less those of the typical user (its input
  batch norm's running mean as the embedding)."""
  model, variables = experts["user"]
  mean = variables["batch_stats"]["UserBranch_0"]["input_norm"]["mean"]
  return (model.apply(variables, batch)
          - model.apply(variables, {"user_embedding": mean[None]}))


@pytest.mark.slow  # op by op, 7 s on a 2-core CPU: the full suite runs it
def test_late_fusion_is_the_weighted_product_of_its_experts():
  experts, late, variables, batch = _late_fusion(True)
  audio = _expert_logits(experts, "audio", batch)
  user = _user_term(experts, batch)
  np.testing.assert_allclose(late.apply(variables, batch), audio + user,
                             atol=1e-5)
  # The typical user's term is 0 and the prior weight starts at 0: the
  # product starts with no per-context constant.
  assert variables["params"]["prior_weight"] == 0.0
  mean = variables["batch_stats"]["user"]["UserBranch_0"]["input_norm"][
      "mean"]
  typical = dict(batch, user_embedding=jnp.tile(mean, (6, 1)))
  np.testing.assert_allclose(late.apply(variables, typical),
                             _expert_logits(experts, "audio", typical),
                             atol=1e-5)
  params = dict(variables["params"], audio_weight=jnp.float32(0.3),
                user_weight=jnp.float32(1.7))
  weighted = dict(variables, params=params)
  np.testing.assert_allclose(late.apply(weighted, batch),
                             0.3 * audio + 1.7 * user, atol=1e-5)
  # The prior weight adds the typical user's logits, the same for every pair.
  model, user_variables = experts["user"]
  prior = model.apply(user_variables, {"user_embedding": mean[None]})
  with_prior = dict(variables, params=dict(params,
                                           prior_weight=jnp.float32(0.6)))
  np.testing.assert_allclose(late.apply(with_prior, batch),
                             0.3 * audio + 1.7 * user + 0.6 * prior,
                             atol=1e-5)
  # A user weight of 0 leaves the audio model's ranking of contexts.
  params = dict(params, user_weight=jnp.float32(0.0))
  np.testing.assert_array_equal(
      np.argmax(late.apply(dict(variables, params=params), batch), -1),
      np.argmax(audio, -1))
  # Evaluation's path: the audio expert once per track, then pairs.
  features = late.apply(variables, batch, features_only=True)
  np.testing.assert_allclose(features, audio, atol=1e-6)
  np.testing.assert_allclose(
      late.apply(weighted, {"audio_features": features,
                            "user_embedding": batch["user_embedding"]}),
      late.apply(weighted, batch), atol=1e-5)


@pytest.mark.slow  # op by op, 8 s a case on a 2-core CPU
@pytest.mark.parametrize("freeze_experts", [True, False])
def test_frozen_experts_are_the_trained_models_as_evaluated(freeze_experts):
  experts, late, variables, batch = _late_fusion(freeze_experts)
  def loss(params):
    logits, updated = late.apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, batch,
        train=True, rngs={"dropout": jax.random.PRNGKey(4)},
        mutable=["batch_stats"])
    return (logits * jnp.arange(1.0, 11.0)).sum(), (logits, updated)
  (_, (logits, updated)), grads = jax.value_and_grad(loss, has_aux=True)(
      variables["params"])
  for name in ("audio", "user"):
    expert_grads = jax.tree.leaves(grads[name])
    stats_moved = any(np.any(a != b) for a, b in zip(
        jax.tree.leaves(updated["batch_stats"][name]),
        jax.tree.leaves(experts[name][1]["batch_stats"])))
    if freeze_experts:
      assert all(np.all(g == 0) for g in expert_grads)
      assert not stats_moved
    else:
      assert any(np.any(g != 0) for g in expert_grads)
      assert stats_moved
  if freeze_experts:  # no dropout, running statistics: the evaluated models
    np.testing.assert_allclose(
        logits, _expert_logits(experts, "audio", batch)
        + _user_term(experts, batch), atol=1e-5)
  assert grads["audio_weight"] != 0 and grads["user_weight"] != 0
  assert grads["prior_weight"] != 0


def test_unknown_fusion_is_refused():
  config = default.get_config().audio_user
  config.fusion = "sum"
  with pytest.raises(ValueError, match="fusion must be one of"):
    models.create_model("audio_user", config)


def test_default_models_take_the_default_input():
  for name in ("audio", "audio_user", "user"):
    _, shape, _ = _count(name, default.get_config(), 65, batch=5)
    assert shape == (5, 10)


def test_unknown_model_is_refused():
  with pytest.raises(ValueError, match="unknown model 'cnn'"):
    models.create_model("cnn", default.get_config().audio)


def _variables_and_grads(model, batch, variables):
  """Logits and parameter gradients, jitted (the fast path's gradients once
  broke under jit only). Batch norm uses its running averages: normalising
  by the statistics of a few examples would amplify rounding differences."""
  def loss(params):
    logits = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, batch)
    return (logits * jnp.arange(1.0, 11.0)).sum(), logits
  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      variables["params"])
  return logits, grads


# Compiling two conv stacks and their gradients takes 5-15 s a case on a
# 2-core CPU: with the full suite, not the fast loop.
@pytest.mark.slow
@pytest.mark.parametrize("frames", [45, 64])  # odd sizes pad their pools
def test_cpu_fast_path_equals_the_straightforward_model(frames):
  config = default.get_config().audio_user
  config.update(conv_widths=(4, 8, 8, 16), hidden=16, dropout_rate=0.0,
                cpu_fast_path=False, fusion="concat", freeze_audio=False)
  rng = np.random.default_rng(0)
  batch = {"mel": jnp.asarray(rng.normal(size=(4, frames, 96)), jnp.float32),
           "user_embedding": jnp.asarray(rng.normal(size=(4, 256)),
                                         jnp.float32)}
  reference = models.create_model("audio_user", config)
  config.cpu_fast_path = True
  fast = models.create_model("audio_user", config)
  variables = reference.init(jax.random.PRNGKey(0), batch)
  same_init = fast.init(jax.random.PRNGKey(0), batch)
  jax.tree.map(np.testing.assert_array_equal, variables, same_init)
  logits, grads = _variables_and_grads(reference, batch, variables)
  fast_logits, fast_grads = _variables_and_grads(fast, batch, variables)
  np.testing.assert_allclose(fast_logits, logits, rtol=1e-5, atol=1e-5)
  for want, got in zip(jax.tree.leaves(grads), jax.tree.leaves(fast_grads)):
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("rearrange_convs", [True, False])
def test_fast_conv_block_equals_conv_relu_pool(rearrange_convs):
  # False is the accelerators' arrangement; checked here on the CPU.
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(3, 13, 10, 4)), jnp.float32)
  fast = models.FastConvBlock(8, rearrange_convs=rearrange_convs)
  variables = fast.init(jax.random.PRNGKey(0), x)

  def reference(params, x):
    z = flax.linen.Conv(8, (3, 3), padding="SAME").apply({"params": params},
                                                          x)
    return flax.linen.max_pool(flax.linen.relu(z), (2, 2), strides=(2, 2),
                               padding="SAME")

  def fast_apply(params, x):
    return fast.apply({"params": params}, x)

  weights = jnp.asarray(rng.normal(size=(3, 7, 5, 8)), jnp.float32)
  for apply in (reference, fast_apply):
    out, grads = jax.jit(jax.value_and_grad(
        lambda p, x, f=apply: (f(p, x) * weights).sum(), argnums=(0, 1)))(
            variables["params"], x)
    if apply is reference:
      want_out, want_grads = out, grads
  np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
  for want, got in zip(jax.tree.leaves(want_grads), jax.tree.leaves(grads)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fast_max_pool_routes_ties_like_xla():
  # Ties everywhere: zeros (as after a ReLU), repeated values, odd sizes.
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.integers(-1, 2, size=(2, 7, 5, 3)), jnp.float32)
  grad = jnp.asarray(rng.normal(size=(2, 4, 3, 3)), jnp.float32)
  def reference(x):
    return flax.linen.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
  np.testing.assert_array_equal(models.max_pool_2x2(x), reference(x))
  want = jax.vjp(reference, x)[1](grad)[0]
  got = jax.jit(lambda x, g: jax.vjp(models.max_pool_2x2, x)[1](g)[0])(
      x, grad)
  np.testing.assert_array_equal(got, want)


@pytest.mark.slow  # two conv stacks' gradients compiled, as above
def test_bfloat16_compute_keeps_float32_parameters_and_stays_close():
  config = default.get_config().audio_user
  config.update(conv_widths=(4, 8, 8, 16), hidden=16, dropout_rate=0.0,
                fusion="concat", freeze_audio=False)
  rng = np.random.default_rng(2)
  batch = {"mel": jnp.asarray(rng.normal(size=(8, 32, 96)), jnp.float32),
           "user_embedding": jnp.asarray(rng.normal(size=(8, 256)),
                                         jnp.float32)}
  full = models.create_model("audio_user", config)
  config.compute_dtype = "bfloat16"
  half = models.create_model("audio_user", config)
  variables = full.init(jax.random.PRNGKey(0), batch)
  half_variables = half.init(jax.random.PRNGKey(0), batch)
  assert {x.dtype for x in jax.tree.leaves(half_variables)} == {
      np.dtype(np.float32)}
  logits, grads = _variables_and_grads(full, batch, variables)
  half_logits, half_grads = _variables_and_grads(half, batch, variables)
  assert half_logits.dtype == jnp.float32
  # bfloat16 keeps 8 significant bits: a few percent of the logits' scale.
  scale = float(np.abs(logits).max())
  assert float(np.abs(half_logits - logits).max()) < 0.05 * scale
  assert {x.dtype for x in jax.tree.leaves(half_grads)} == {
      np.dtype(np.float32)}
  # Single gradients of cancelling sums (biases before a batch norm) may
  # move by tens of percent; the whole gradient keeps its direction.
  want = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grads)])
  got = np.concatenate([np.ravel(x) for x in jax.tree.leaves(half_grads)])
  cosine = want @ got / np.linalg.norm(want) / np.linalg.norm(got)
  assert cosine > 0.99
  assert abs(np.linalg.norm(got) / np.linalg.norm(want) - 1) < 0.05


def test_unknown_compute_dtype_is_refused():
  config = default.get_config().audio
  config.compute_dtype = "float16"
  with pytest.raises(ValueError, match="compute_dtype must be one of"):
    models.create_model("audio", config)


def test_one_table_says_each_models_output_and_batches():
  want = {"audio": ("multi_label", "tracks"),
          "audio_user": ("single_label", "pairs"),
          "user": ("single_label", "users"),
          "audio_user_concat": ("single_label", "pairs")}
  assert models.trained_models() == list(want)
  assert {name: (models.get(name).output, models.get(name).batches)
          for name in want} == want
  # The derived views read the table live.
  assert dict(models.OUTPUTS) == {k: v[0] for k, v in want.items()}
  assert dict(models.BATCH_KINDS) == {k: v[1] for k, v in want.items()}
  assert not models.get("oracle").trained
  with pytest.raises(ValueError, match="unknown model 'nope'; known: audio"):
    models.get("nope")


def test_comparisons_follow_the_entries_in_table_order():
  assert models.comparisons(["audio", "audio_user", "user", "oracle"]) == [
      ("audio_user", "audio"), ("user", "audio"), ("audio_user", "user")]
  assert models.comparisons(["user", "audio_user_concat", "audio"]) == [
      ("user", "audio"), ("audio_user_concat", "audio"),
      ("audio_user_concat", "user")]

r"""ctxtag's paper-config train step against the same model in PyTorch.

  pip install torch  # for this benchmark only; ctxtag never imports it
  python -m benchmarks.versus_pytorch [--batch_sizes=32,256] \
      [--precisions=float32,bfloat16] [--steps=3] [--rounds=2]

The paper's audio model (646 x 96 input; input batch norm, 4 x [conv 3x3
SAME + ReLU + max-pool 2x2] with 32-64-128-256 filters, dense 256 sigmoid,
dropout, dense 10; weighted sigmoid cross-entropy; Adadelta), one full
train step (forward, backward, update) on a fixed random batch, on JAX's
default device and PyTorch's (CUDA when it has one), timed in one process
for each batch size and precision:
  * ctxtag's model as the config builds it on this backend, and its conv
    stack variants forced on: `cpu_fast_path` (pooling, first layer and
    weight gradients rearranged) and "fast pooling" (only the pooling and
    the ReLU after it rearranged, XLA's own convolutions);
  * PyTorch eager (NCHW and channels_last) and `torch.compile`; bfloat16 is
    autocast, as mixed-precision PyTorch training runs.
Each case runs `steps` steps back to back, then waits for the device. Cases
are measured in interleaved rounds and each keeps its best round, so load
from other processes on a shared machine skews the ratios less. Ratios are
to `torch.compile` where it works, else to eager channels_last.
"""

import contextlib
import time

from absl import app
from absl import flags
import jax
import numpy as np

from ctxtag import audio
from ctxtag import models
from ctxtag import steps as steps_lib
from ctxtag.configs import paper

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["32"], "Examples per step.")
_PRECISIONS = flags.DEFINE_list("precisions", ["float32"],
                                "float32 and/or bfloat16.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Interleaved rounds.")
_COMPILE = flags.DEFINE_bool("torch_compile", True, "Try torch.compile.")


def _batch(size, frames):
  rng = np.random.default_rng(0)
  return {
      "mel": rng.normal(size=(size, frames, audio.N_MELS)).astype(np.float32),
      "labels": (rng.uniform(size=(size, 10)) < 0.4).astype(np.float32),
      "mask": np.ones(size, np.float32)}


@contextlib.contextmanager
def _forced(variant):
  """Builds and traces the model with a conv-stack variant, whatever the
  backend (the config honours `cpu_fast_path` on CPUs only)."""
  saved = models._cpu_fast_path, models.conv3x3  # pylint: disable=protected-access
  if variant != "config":
    models._cpu_fast_path = lambda config: True  # pylint: disable=protected-access
  if variant == "fast pooling":
    models.conv3x3 = models._reference_conv  # pylint: disable=protected-access
  try:
    yield
  finally:
    models._cpu_fast_path, models.conv3x3 = saved  # pylint: disable=protected-access


def ctxtag_step(batch, precision, variant):
  """A callable running `count` ctxtag train steps (state kept inside)."""
  config = paper.get_config().audio
  config.compute_dtype = precision
  steps = steps_lib.Steps(np.full(10, 2.0, np.float32), "multi_label")
  sharded, rng = steps.shard(batch), jax.random.PRNGKey(1)
  with _forced(variant):
    holder = {"state": steps.place(steps_lib.create_train_state(
        models.create_model("audio", config), config, jax.random.PRNGKey(0),
        batch))}
    holder["state"], metrics = steps.train(holder["state"], sharded, rng)
    jax.block_until_ready(metrics)  # compiles under the variant

  def run(count):
    metrics = None
    for _ in range(count):
      holder["state"], metrics = steps.train(holder["state"], sharded, rng)
    jax.block_until_ready(metrics)
  return run


def torch_steps(batch, precision, device):
  """{name: callable(count)} of PyTorch train steps on the same model."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  def block(inputs, outputs):
    # ceil_mode pools a last odd row/column alone, as SAME pooling does.
    return [nn.Conv2d(inputs, outputs, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2, 2, ceil_mode=True)]

  def model():
    layers = [nn.BatchNorm2d(1)]
    for inputs, outputs in ((1, 32), (32, 64), (64, 128), (128, 256)):
      layers += block(inputs, outputs)
    layers += [nn.Flatten(), nn.Linear(256 * 41 * 6, 256), nn.Sigmoid(),
               nn.Dropout(0.7), nn.Linear(256, 10)]
    return nn.Sequential(*layers)

  mel = torch.from_numpy(batch["mel"])[:, None].to(device)
  targets = torch.from_numpy(batch["labels"]).to(device)
  loss_fn = nn.BCEWithLogitsLoss(
      pos_weight=torch.full((10,), 2.0, device=device))
  autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
              if precision == "bfloat16" else contextlib.nullcontext())

  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize()

  def make(channels_last, compiled):
    torch.manual_seed(0)
    net = model().to(device)
    inputs = mel
    if channels_last:
      net = net.to(memory_format=torch.channels_last)
      inputs = mel.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adadelta(net.parameters(), lr=0.1)

    def step():
      optimizer.zero_grad(set_to_none=True)
      with autocast:
        loss = loss_fn(net(inputs).float(), targets)
      loss.backward()
      optimizer.step()
      return loss.detach()
    step = torch.compile(step) if compiled else step

    def run(count):
      loss = None
      for _ in range(count):
        loss = step()
      loss.item()
      sync()
    return run

  cases = {"pytorch eager NCHW": make(False, False),
           "pytorch eager channels_last": make(True, False)}
  if _COMPILE.value:
    try:
      compiled = make(True, True)
      compiled(2)
      cases["pytorch torch.compile channels_last"] = compiled
    except Exception as error:  # pylint: disable=broad-except
      print(f"torch.compile unavailable: {type(error).__name__}: {error}")
  return cases


def measure(size, precision, device):
  """Prints each case's best examples/s for one batch size and precision."""
  batch = _batch(size, audio.num_frames(30.0))
  cases = {}
  for variant in ("config", "cpu_fast_path", "fast pooling"):
    label = "ctxtag" if variant == "config" else f"ctxtag {variant}"
    cases[label] = ctxtag_step(batch, precision, variant)
  cases.update(torch_steps(batch, precision, device))
  for run in cases.values():
    run(1)  # warm up
  best = {name: 0.0 for name in cases}
  for _ in range(_ROUNDS.value):
    for name, run in cases.items():
      start = time.perf_counter()
      run(_STEPS.value)
      rate = _STEPS.value * size / (time.perf_counter() - start)
      best[name] = max(best[name], rate)
  reference_name = ("pytorch torch.compile channels_last"
                    if "pytorch torch.compile channels_last" in best
                    else "pytorch eager channels_last")
  reference = best[reference_name]
  print(f"batch {size}, {precision} (ratio to {reference_name}):", flush=True)
  for name, rate in best.items():
    print(f"  {name:<38} {rate:9.2f} ex/s  {rate / reference:5.2f} x",
          flush=True)


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  print(f"jax: {jax.devices()[0].device_kind} x{jax.device_count()}"
        f" (jax {jax.__version__}); torch {torch.__version__} on {device}"
        f" ({torch.get_num_threads()} CPU threads); 646 x 96 input",
        flush=True)
  for precision in _PRECISIONS.value:
    if precision not in models.COMPUTE_DTYPES:
      raise app.UsageError(f"--precisions: {precision!r} is not one of"
                           f" {sorted(models.COMPUTE_DTYPES)}")
    for size in _BATCH_SIZES.value:
      measure(int(size), precision, device)


if __name__ == "__main__":
  app.run(main)

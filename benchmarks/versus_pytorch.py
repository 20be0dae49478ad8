r"""ctxtag's paper-config train step against the same model in PyTorch.

  pip install torch  # for this benchmark only; ctxtag never imports it
  python -m benchmarks.versus_pytorch [--batch_size=32] [--steps=3]

The paper's audio model (646 x 96 input; input batch norm, 4 x [conv 3x3
SAME + ReLU + max-pool 2x2] with 32-64-128-256 filters, dense 256 sigmoid,
dropout, dense 10; weighted sigmoid cross-entropy; Adadelta), one full
train step (forward, backward, update) on a fixed random batch, timed in
one process for:
  * ctxtag, the straightforward model and `cpu_fast_path=True`, float32;
  * PyTorch eager (NCHW and channels_last) and `torch.compile` if it works.
Cases are measured in interleaved rounds and each keeps its best round, so
load from other processes on a shared machine skews the ratios less.
"""

import time

from absl import app
from absl import flags
import jax
import numpy as np

from ctxtag import audio
from ctxtag import models
from ctxtag import train
from launch.configs import paper

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Examples per step.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Interleaved rounds.")
_COMPILE = flags.DEFINE_bool("torch_compile", True, "Try torch.compile.")


def _batch(size, frames):
  rng = np.random.default_rng(0)
  return {
      "mel": rng.normal(size=(size, frames, audio.N_MELS)).astype(np.float32),
      "labels": (rng.uniform(size=(size, 10)) < 0.4).astype(np.float32),
      "mask": np.ones(size, np.float32)}


def ctxtag_step(batch, cpu_fast_path):
  """A callable running one ctxtag train step (state kept inside)."""
  config = paper.get_config().audio
  config.cpu_fast_path = cpu_fast_path
  steps = train.Steps(np.full(10, 2.0, np.float32), "multi_label")
  holder = {"state": steps.place(train.create_train_state(
      models.create_model("audio", config), config, jax.random.PRNGKey(0),
      batch))}
  sharded, rng = steps.shard(batch), jax.random.PRNGKey(1)

  def run():
    holder["state"], metrics = steps.train(holder["state"], sharded, rng)
    jax.block_until_ready(metrics)
  return run


def torch_steps(batch):
  """{name: callable} of PyTorch train steps on the same architecture."""
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

  mel = torch.from_numpy(batch["mel"])[:, None]
  targets = torch.from_numpy(batch["labels"])
  loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.full((10,), 2.0))

  def make(channels_last, compiled):
    torch.manual_seed(0)
    net = model()
    inputs = mel
    if channels_last:
      net = net.to(memory_format=torch.channels_last)
      inputs = mel.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adadelta(net.parameters(), lr=0.1)

    def step():
      optimizer.zero_grad(set_to_none=True)
      loss = loss_fn(net(inputs), targets)
      loss.backward()
      optimizer.step()
      return loss.detach()
    step = torch.compile(step) if compiled else step
    return lambda: step().item()

  cases = {"pytorch eager NCHW": make(False, False),
           "pytorch eager channels_last": make(True, False)}
  if _COMPILE.value:
    try:
      compiled = make(True, True)
      compiled()
      cases["pytorch torch.compile channels_last"] = compiled
    except Exception as error:  # pylint: disable=broad-except
      print(f"torch.compile unavailable: {type(error).__name__}: {error}")
  return cases


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  size = _BATCH_SIZE.value
  batch = _batch(size, audio.num_frames(30.0))
  cases = {"ctxtag float32": ctxtag_step(batch, False),
           "ctxtag float32 cpu_fast_path": ctxtag_step(batch, True)}
  cases.update(torch_steps(batch))
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}"
        f" (jax {jax.__version__}), torch {torch.__version__} with"
        f" {torch.get_num_threads()} threads; batch {size}, 646 x 96 input",
        flush=True)
  for run in cases.values():
    run()  # compile and warm up
  best = {name: 0.0 for name in cases}
  for _ in range(_ROUNDS.value):
    for name, run in cases.items():
      start = time.perf_counter()
      for _ in range(_STEPS.value):
        run()
      rate = _STEPS.value * size / (time.perf_counter() - start)
      best[name] = max(best[name], rate)
  reference = best["pytorch eager channels_last"]
  for name, rate in best.items():
    print(f"{name:<38} {rate:7.2f} ex/s  {rate / reference:5.2f} x"
          " PyTorch eager channels_last", flush=True)


if __name__ == "__main__":
  app.run(main)

r"""Wall time of the default reproduction, split by stage.

  python -m benchmarks.reproduce_stages --workdir=DIR \
      [--config=ctxtag/configs/default.py]

Runs what `launch.reproduce` runs, in its order, on a fresh workdir, and
prints the seconds of each stage: building the dataset, the split summary,
training each model, predicting with each model and evaluating. A stage
whose output is already in the workdir is reused and shows as (reused).

Like the launchers, it uses XLA's persistent compilation cache
(ctxtag.compilation_cache): `CTXTAG_COMPILATION_CACHE=off` measures a
machine's first run, where every program is compiled.
"""

import os
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from ctxtag import compilation_cache
from ctxtag import datasets
from ctxtag import predictions
from ctxtag import run
from ctxtag import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.dirname(__file__)),
                           "ctxtag", "configs", "default.py"),
    "Run config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.",
                               required=True)


class _Stages:
  """Times named stages and prints each as it ends."""

  def __init__(self):
    self.start = time.perf_counter()
    self.rows = []

  def run(self, name, function, *args):
    start = time.perf_counter()
    result = function(*args)
    seconds = time.perf_counter() - start
    self.rows.append((name, seconds))
    print(f"stage {name:<24} {seconds:7.1f} s", flush=True)
    return result

  def total(self):
    return time.perf_counter() - self.start


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config, workdir = _CONFIG.value, _WORKDIR.value
  compilation_cache.enable()
  stages = _Stages()
  dataset_path = stages.run("build dataset", run.prepare_run, config,
                            workdir)
  stages.run("split summary", datasets.summary_text, dataset_path)
  for name in config.models:
    stages.run(f"train {name}", train.train_and_evaluate, name, config,
               dataset_path, workdir)
  stages.run("ground truth tables", predictions.write_groundtruth,
             dataset_path, workdir)
  for name in config.models:
    stages.run(f"predict {name}", predictions.write_model_predictions, name,
               config, dataset_path, workdir)
  results = stages.run("evaluate", run.evaluate_workdir, workdir,
                       dataset_path)
  print(f"total {stages.total():.1f} s (python start and imports excluded)")
  averages = {key: value["average"] for key, value in results.items()
              if isinstance(value, dict) and "average" in value}
  for key, average in sorted(averages.items()):
    print(f"{key:>10} auc {average['auc']:.3f} f1 {average['f1']:.3f}")
  print("satisfaction", results.get("satisfaction"))


if __name__ == "__main__":
  app.run(main)

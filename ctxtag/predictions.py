"""Predictions of trained models, saved as CSVs in the public layout.

`<workdir>/predictions/` holds, per split (validation, test):
  <split>_groundtruth.csv   song_id,user_id,<labels> one-hot, one row a pair
  <split>_audio.csv         song_id,<labels>, one row a track
  <split>_audio_user.csv    song_id,user_id,<labels>, one row a pair
  <split>_user.csv          song_id,user_id,<labels>, one row a pair
  <split>_oracle.csv        the true distribution, simulated data only
  train_groundtruth.csv     the training pairs, written only for MO-MG's
                            ground truth over all splits (mo_mg_truth)

In a run on several processes, all of them predict and process 0 writes.
"""

import functools
import os

import ml_collections
import numpy as np

from ctxtag import device_data
from ctxtag import distributed
from ctxtag import input_pipeline
from ctxtag import models
from ctxtag import steps as steps_lib
from ctxtag import tables
from ctxtag import transfer

SPLITS = ("validation", "test")
ALL_SPLITS = ("train",) + SPLITS
# The late fusion's parameters (ctxtag.models.LateFusionTagger), by the
# names results.json gives them.
FUSION_WEIGHTS = {"audio": "audio_weight", "user": "user_weight",
                  "typical_user": "prior_weight"}


def path(workdir: str, split: str, what: str) -> str:
  return os.path.join(workdir, "predictions", f"{split}_{what}.csv")


def write_groundtruth(dataset_path: str, workdir: str) -> None:
  """Ground truth (and the oracle, for simulated data) of every split."""
  for split_name in SPLITS:
    split = input_pipeline.load_split(dataset_path, split_name)
    tables.write_groundtruth(path(workdir, split_name, "groundtruth"),
                             split.pair_song_id_P, split.user_id_P,
                             split.label_P)
    if split.context_probs_PxC is not None:
      tables.write(path(workdir, split_name, "oracle"), split.pair_song_id_P,
                   split.context_probs_PxC, split.user_id_P)


def write_train_groundtruth(dataset_path: str, workdir: str) -> str:
  """The training split's ground truth, for MO-MG's truth over all splits.

  Returns:
    Its path.
  """
  split = input_pipeline.load_split(dataset_path, "train")
  target = path(workdir, "train", "groundtruth")
  tables.write_groundtruth(target, split.pair_song_id_P, split.user_id_P,
                           split.label_P)
  return target


def fusion_weights(config: ml_collections.ConfigDict, dataset_path: str,
                   workdir: str, training: dict
                   ) -> dict[str, dict[str, float]]:
  """The fitted weights of the run's late fusions, from their best
  checkpoints.

  Args:
    config: the run config.
    dataset_path: the run's dataset (for the mels' shape the state is
      restored with).
    workdir: the run's directory.
    training: each model's training summary (`train.read_summary`).

  Returns:
    {results key: {"audio": a, "user": b, "typical_user": c}}
    (FUSION_WEIGHTS): "fusion_weights" for the model "audio_user",
    "<model>_fusion_weights" for any other; empty without a late fusion.
  """
  late = [name for name in config.models
          if models.get(name).transfers and config[name].fusion == "late"]
  if not late:
    return {}
  found = {}
  for name in late:
    params = _fitted_weights(training[name])
    if params is None:
      frames = input_pipeline.load_split(dataset_path, "train").mel_shape[0]
      params = transfer.restore_best(name, config, workdir, frames).params
    key = ("fusion_weights" if name == "audio_user"
           else f"{name}_fusion_weights")
    found[key] = {key_: float(params[param])
                  for key_, param in FUSION_WEIGHTS.items()}
  return found


def _fitted_weights(summary: dict) -> dict[str, np.float32] | None:
  """A frozen fusion's weights as its exact fit recorded them in its
  training summary (written after its one checkpoint, which holds these
  values in float32), sparing a restore of the whole state; None for a
  fusion trained by steps."""
  weights = summary.get("fit", {}).get("weights")
  if weights is None:
    return None
  return {param: np.float32(weights[param])
          for param in FUSION_WEIGHTS.values()}


def write_model_predictions(name: str, config: ml_collections.ConfigDict,
                            dataset_path: str, workdir: str) -> None:
  """Scores of model `name`'s best checkpoint on every split, as CSVs.

  Skips splits whose CSV is already there, so a rerun reuses them. Every
  process of a run predicts (process 0 decides which splits, for all);
  process 0 writes.
  """
  def missing():
    return [s for s in SPLITS if not os.path.exists(path(workdir, s, name))]

  todo = distributed.on_main(f"find the {name} predictions to make", missing,
                             share=True)
  if not todo:
    return
  train = input_pipeline.load_split(dataset_path, "train")
  steps = steps_lib.model_steps(name, train)
  state = transfer.restore_best(name, config, workdir, train.mel_shape[0],
                                steps.replicated)
  kind = models.get(name).batches
  for split_name in todo:
    split = input_pipeline.load_split(dataset_path, split_name)
    on_device = device_data.tables_if_they_fit(
        name, split, kind, config[name].device_data_budget_mb,
        steps.replicated)
    scores = steps_lib.predict(steps, state, split, kind,
                               config.eval_batch_size, on_device)
    target = path(workdir, split_name, name)
    if kind == "tracks":
      write = functools.partial(tables.write, target, split.song_id_N, scores)
    else:
      write = functools.partial(tables.write, target, split.pair_song_id_P,
                                scores, split.user_id_P)
    distributed.on_main(f"write {target}", write)

"""What evaluation reads, as one value: the ground truth, each model's
scores, the validation tables, the training prior and the settings.

`Inputs` is made from tables in memory, from CSV files in the public layout
(`from_csvs`), or from a workdir (ctxtag.run); every evaluator
(ctxtag.evaluation.evaluators) reads it and nothing else.
"""

from collections.abc import Mapping, Sequence
import dataclasses

import numpy as np

from ctxtag import errors
from ctxtag import labels
from ctxtag import models
from ctxtag import tables
from ctxtag.evaluation import bootstrap
from ctxtag.evaluation import ceiling

# MO-MG's ground truth per track, the union of its contexts over: "test",
# the evaluated split's pairs (the paper's table as the protocol states it);
# "all_splits", the track's pairs in every split (the authors'
# audio_based_model.py reads multilabel_all.csv), for like-for-like
# comparison with the paper's figures.
MO_MG_TRUTHS = ("test", "all_splits")


@dataclasses.dataclass(frozen=True)
class Validation:
  """The validation split's ground truth and the multi-label models' scores
  on it (by model name), for thresholds tuned there."""
  groundtruth: tables.Table
  models: Mapping[str, tables.Table]


@dataclasses.dataclass(frozen=True)
class Inputs:
  """Everything the evaluators read.

  Attributes:
    groundtruth: one-hot ground truth per (user, track) pair.
    models: each model's scores by name (ctxtag.models.MODELS): per track
      for a multi-label model (song_id,<labels>), per pair otherwise
      (song_id,user_id,<labels>).
    validation: the validation split's tables; with a multi-label model,
      gives its thresholds tuned on validation.
    prior_C: the training split's context shares; with an "oracle", gives
      ceiling_share.
    settings: the bootstrap's resamples, seed and confidence.
    mo_mg_truth: MO-MG's ground truth (MO_MG_TRUTHS): each track's contexts
      over `groundtruth`'s pairs ("test"), or over its pairs in
      `other_splits` too ("all_splits", the authors' pipeline).
    other_splits: the other splits' ground truth, for "all_splits".
    catalog: by model, its scores of every evaluated track for any user
      (ctxtag.evaluation.retrieval), for the retrieval protocol, beyond
      those the tables give (`retrieval.table_catalogs`); "oracle", the
      true distribution, also grades every model's rankings.
  """
  groundtruth: tables.Table
  models: Mapping[str, tables.Table]
  validation: Validation | None = None
  prior_C: np.ndarray | None = None
  settings: bootstrap.Settings = bootstrap.Settings()
  mo_mg_truth: str = "test"
  other_splits: Sequence[tables.Table] = ()
  catalog: Mapping[str, object] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not self.models:
      raise errors.UserError(
          "no predictions to evaluate: give an audio model's table, a user"
          " model's table, or both")
    for name in self.models:
      if name not in models.MODELS:
        raise ValueError(f"unknown model {name!r}; known:"
                         f" {sorted(models.MODELS)}")
    if self.mo_mg_truth not in MO_MG_TRUTHS:
      raise errors.UserError(f"mo_mg_truth {self.mo_mg_truth!r}: expected"
                             f" one of {list(MO_MG_TRUTHS)}")
    if self.mo_mg_truth == "all_splits" and not self.other_splits:
      raise errors.UserError(
          "mo_mg_truth 'all_splits' takes each track's contexts over every"
          " split: give the other splits' ground truth (training and"
          " validation)")


@dataclasses.dataclass(frozen=True)
class CsvFiles:
  """Prediction tables on disk, in the public layout (ctxtag.tables).

  Attributes:
    groundtruth: the evaluated split's ground truth CSV.
    models: each model's scores CSV by name (see `Inputs.models`).
    validation_groundtruth: the validation split's ground truth CSV.
    validation_models: multi-label models' validation CSVs by name.
    train_groundtruth: the training split's ground truth CSV (the prior of
      ceiling_share; with the validation ground truth, MO-MG's
      "all_splits" truth).
    other_groundtruths: the other splits' ground truth CSVs for
      "all_splits", if not the training and validation ones.
  """
  groundtruth: str
  models: Mapping[str, str]
  validation_groundtruth: str | None = None
  validation_models: Mapping[str, str] = dataclasses.field(
      default_factory=dict)
  train_groundtruth: str | None = None
  other_groundtruths: Sequence[str] = ()


def read_scores(name: str, path: str) -> tables.Table:
  """Model `name`'s scores CSV, read as its output kind asks."""
  if models.get(name).output == "multi_label":
    return tables.read_audio_predictions(path)
  return tables.read_pair_predictions(path)


def from_csvs(files: CsvFiles, settings: bootstrap.Settings | None = None,
              mo_mg_truth: str = "test", train_labels=None,
              catalog=None) -> Inputs:
  """`Inputs` read from CSV files.

  Args:
    files: the tables.
    settings: the bootstrap's (default: bootstrap.Settings()).
    mo_mg_truth: MO-MG's ground truth (MO_MG_TRUTHS).
    train_labels: the training split's labels (indices in the label order),
      for the prior, if `files` has no training ground truth.
    catalog: retrieval catalogs beyond those the tables give, by model.

  Raises:
    errors.UserError: "all_splits" without the other splits' ground truth.
  """
  train = (tables.read_groundtruth(files.train_groundtruth)
           if files.train_groundtruth else None)
  if train is not None:
    train_labels = np.argmax(train.values_RxC, axis=1)
  validation = None
  if files.validation_groundtruth and files.validation_models:
    validation = Validation(
        tables.read_groundtruth(files.validation_groundtruth),
        {name: read_scores(name, path)
         for name, path in files.validation_models.items()})
  other_splits = tuple(map(tables.read_groundtruth, files.other_groundtruths))
  if mo_mg_truth == "all_splits" and not other_splits:
    if train is None or validation is None:
      raise errors.UserError(
          "mo_mg_truth 'all_splits' takes each track's contexts over every"
          " split: it needs the training ground truth and the validation"
          " tables (--train_groundtruth, --validation_groundtruth,"
          " --validation_audio_predictions)")
    other_splits = (train, validation.groundtruth)
  groundtruth = tables.read_groundtruth(files.groundtruth)
  scores = {name: read_scores(name, path)
            for name, path in files.models.items()}
  return Inputs(
      groundtruth, scores, validation,
      None if train_labels is None else ceiling.prior(train_labels),
      settings or bootstrap.Settings(), mo_mg_truth, other_splits,
      catalog or {})



def track_truth(groundtruth: tables.Table):
  """The tracks of the ground truth.

  Returns:
    (sorted song ids, each pair's index into them, multi-hot union of each
    track's contexts over its pairs).
  """
  song_ids, track_P = np.unique(groundtruth.song_id, return_inverse=True)
  track_P = track_P.ravel()
  union = np.zeros((len(song_ids), labels.NUM_LABELS), bool)
  union[track_P, np.argmax(groundtruth.values_RxC, axis=1)] = True
  return song_ids, track_P, union


def add_other_splits(song_ids, union_NxC: np.ndarray,
                     others: Sequence[tables.Table]) -> np.ndarray:
  """Each track's union of contexts with its pairs in other splits too.

  Args:
    song_ids: the tracks (sorted), rows of `union_NxC`.
    union_NxC: each track's contexts over the evaluated split's pairs.
    others: ground truth of other splits; their pairs of other tracks are
      ignored.

  Returns:
    The widened union (a new array).
  """
  union = union_NxC.copy()
  for other in others:
    index = np.minimum(np.searchsorted(song_ids, other.song_id),
                       len(song_ids) - 1)
    found = song_ids[index] == other.song_id
    union[index[found], np.argmax(other.values_RxC[found], axis=1)] = True
  return union

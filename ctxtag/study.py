"""The paper's study from prediction tables: every protocol and statistic,
one results dict.

The results follow the `results.json` contract of docs/results.md. Keys
beyond it (docs/statistics.md shows them with an example):

  user_only_sg, oracle_sg     protocol 4 for the user-only model and the
                              oracle (the true distribution, simulated data)
  satisfaction.user/.oracle   protocol 5 for those models
  <sg protocol>.average.<metric>_ci, satisfaction.<model>.<metric>_ci
                              95% bootstrap intervals over users, [low, high]
  ranking.<model>             hit@1, hit@3, mrr, ndcg@3 (+ _ci)
  comparisons.<a>_vs_<b>      {metric: {difference, ci, p_value}}
  mo_mg_tuned, mo_sg_tuned    thresholds tuned on validation (+ thresholds)
  ceiling_share               prior, baseline, oracle and each model's share
  bootstrap                   how the intervals were made
  mo_mg_truth                 MO-MG's ground truth: "test" or "all_splits"
  context_counts              pairs (and MO-MG's tracks) holding each context
"""

import dataclasses
import typing

import numpy as np

from ctxtag import errors
from ctxtag import labels
from ctxtag import tables
from ctxtag.evaluation import auc
from ctxtag.evaluation import bootstrap
from ctxtag.evaluation import ceiling
from ctxtag.evaluation import protocols
from ctxtag.evaluation import ranking
from ctxtag.evaluation import thresholds
from ctxtag.evaluation import users as users_lib

# Per-pair models: name -> (protocol key, satisfaction key).
PAIR_MODELS = {"audio_user": ("user_sg", "audio_user"),
               "user": ("user_only_sg", "user"),
               "oracle": ("oracle_sg", "oracle")}
# Every model in report order, and the pairs compared (a, b): a - b.
MODELS = ("audio", "audio_user", "user", "oracle")
COMPARISONS = (("audio_user", "audio"), ("user", "audio"),
               ("audio_user", "user"))
# The single-output SG protocol of each model, for its share of the ceiling.
SINGLE_OUTPUT_SG = {"audio": "so_sg", "audio_user": "user_sg",
                    "user": "user_only_sg", "oracle": "oracle_sg"}
# MO-MG's ground truth per track, the union of its contexts over: "test",
# the evaluated split's pairs (the paper's table as the protocol states it);
# "all_splits", the track's pairs in every split (the authors'
# audio_based_model.py reads multilabel_all.csv), for like-for-like
# comparison with the paper's figures.
MO_MG_TRUTHS = ("test", "all_splits")
AUC_METHOD = ("expanded in the users' resample counts, not re-sorted per"
              " resample (ctxtag/evaluation/auc.py)")


@dataclasses.dataclass(frozen=True)
class Validation:
  """The validation split's ground truth and audio scores, for tuning."""
  groundtruth: tables.Table
  audio: tables.Table


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
                     others: typing.Sequence[tables.Table]) -> np.ndarray:
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


class _Columns:
  """Per-user statistics gathered into one matrix, addressed by name, so
  that every resample needs a single matrix product."""

  def __init__(self):
    self._blocks = {}

  def add(self, name: str, values_UxK: np.ndarray) -> None:
    values = np.asarray(values_UxK, np.float64)
    self._blocks[name] = values.reshape(len(values), -1)

  def resample(self, settings: bootstrap.Settings) -> dict[str, np.ndarray]:
    """{name: (resamples, K) count-weighted sums over users}."""
    names = list(self._blocks)
    sums = bootstrap.resampled_sums(
        np.concatenate([self._blocks[n] for n in names], axis=1), settings)
    edges = np.cumsum([0] + [self._blocks[n].shape[1] for n in names])
    return {n: sums[:, a:b] for n, a, b in zip(names, edges[:-1], edges[1:])}


@dataclasses.dataclass
class _Study:
  """What every statistic reads: the pairs (sorted by user: `order_P` of
  the ground truth's rows), their users and the columns."""
  truth_PxC: np.ndarray
  users: users_lib.Users
  columns: _Columns
  positives_UxC: np.ndarray
  order_P: np.ndarray
  per_user: dict = dataclasses.field(default_factory=dict)
  placement_totals: dict = dataclasses.field(default_factory=dict)
  protocol_scores: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def create(cls, groundtruth: tables.Table) -> "_Study":
    """The study of `groundtruth`'s pairs, sorted by user (every statistic
    is a sum over pairs, so their order is free; sorted, per-user sums are
    plain segment sums). Apply `order_P` to every per-pair array."""
    users = users_lib.Users.from_ids(groundtruth.user_id)
    order_P = users.order_P
    truth = groundtruth.values_RxC[order_P] > 0
    users = users.in_user_order()
    study = cls(truth, users, _Columns(), users.sum(truth), order_P)
    study.columns.add("positives", study.positives_UxC)
    study.columns.add("pairs", users.pairs_U)
    return study

  def protocol(self, key: str, predicted_PxC, scores_key: str) -> dict:
    """An SG protocol's point estimates from the predictions its decision
    rule made of `scores_key`'s scores; its per-user counts join the
    columns for the intervals."""
    result, tp, fp = protocols.single_groundtruth(
        self.users, self.truth_PxC, predicted_PxC,
        self.placement_totals[scores_key][0])
    self.columns.add(f"{key}/tp", tp)
    self.columns.add(f"{key}/fp", fp)
    self.protocol_scores[key] = scores_key
    return result

  def scores(self, key: str, scores_NxC, item_P=None) -> None:
    """AUC placements of one model's scores (shared by its protocols): of
    each pair, or of each track with `item_P` each pair's track."""
    auc_C, placement_PxC = auc.placements(self.truth_PxC, scores_NxC, item_P)
    per_user = self.users.sum(placement_PxC)
    self.columns.add(f"auc/{key}", per_user)
    self.placement_totals[key] = (auc_C, per_user.sum(axis=0))

  def model(self, name: str, scores_PxC) -> None:
    """Per-user satisfaction and ranking of a model's pair scores."""
    satisfaction = protocols.satisfaction_per_user(
        self.users, self.truth_PxC, protocols.one_hot_argmax(scores_PxC))
    self.per_user[f"satisfaction/{name}"] = np.stack(
        [satisfaction[m] for m in protocols.SATISFACTION_METRICS], axis=1)
    self.per_user[f"ranking/{name}"] = ranking.per_user(
        self.users, self.truth_PxC, scores_PxC)
    for kind in ("satisfaction", "ranking"):
      self.columns.add(f"{kind}/{name}", self.per_user[f"{kind}/{name}"])


class _Tracks(typing.NamedTuple):
  """The audio model's view: tracks, not pairs."""
  union_NxC: np.ndarray  # each track's contexts over its pairs
  scores_NxC: np.ndarray  # the audio model's scores
  track_P: np.ndarray  # each pair's track (ground truth order)


def _model_scores(groundtruth, audio, pair_models, other_splits=()):
  """{model: pair scores} in MODELS order, and the audio's _Tracks (MO-MG's
  truth widened by `other_splits`' pairs)."""
  scores, tracks = {}, None
  if audio is not None:
    song_ids, track_P, union = track_truth(groundtruth)
    if other_splits:
      union = add_other_splits(song_ids, union, other_splits)
    track_scores = tables.align(audio, (song_ids,), "song")
    scores["audio"] = track_scores[track_P]
    tracks = _Tracks(union, track_scores, track_P)
  for name in pair_models:
    if name not in PAIR_MODELS:
      raise ValueError(f"unknown pair model {name!r}; known:"
                       f" {sorted(PAIR_MODELS)}")
  for name in MODELS[1:]:
    if name in pair_models:
      scores[name] = tables.align(
          pair_models[name], (groundtruth.song_id, groundtruth.user_id),
          "(song, user)")
  return scores, tracks


def _points(study: _Study, scores: dict, tracks, validation) -> dict:
  """Every point estimate; fills the study's columns on the way."""
  results = {"satisfaction": {}, "ranking": {}}
  for name, scores_PxC in scores.items():
    if name == "audio":
      study.scores(name, tracks.scores_NxC, tracks.track_P[study.order_P])
    else:
      study.scores(name, scores_PxC)
    study.model(name, scores_PxC)
    mean = study.per_user[f"satisfaction/{name}"].mean(axis=0)
    results["satisfaction"][name] = dict(
        zip(protocols.SATISFACTION_METRICS, mean.tolist()),
        users=study.users.count)
    results["ranking"][name] = dict(zip(
        ranking.METRICS,
        study.per_user[f"ranking/{name}"].mean(axis=0).tolist()))
    if name == "audio":
      results["mo_mg"] = protocols.mo_mg(tracks.union_NxC, tracks.scores_NxC)
      results["mo_sg"] = study.protocol(
          "mo_sg", protocols.SG_DECISIONS["mo_sg"](scores_PxC), "audio")
      if validation is not None:
        tuned = _tuned(study, validation, tracks, scores_PxC)
        results["mo_mg_tuned"], results["mo_sg_tuned"] = tuned
    key = SINGLE_OUTPUT_SG[name]
    results[key] = study.protocol(
        key, protocols.SG_DECISIONS[key](scores_PxC), name)
  return results


def _tuned(study: _Study, validation: Validation, tracks: _Tracks,
           pair_track_scores):
  """mo_mg_tuned and mo_sg_tuned: thresholds from validation, on test."""
  song_ids, track_P, validation_union = track_truth(validation.groundtruth)
  validation_tracks = tables.align(validation.audio, (song_ids,), "song")
  mo_mg_tuned = thresholds.tuned_protocol(validation_union, validation_tracks,
                                          tracks.union_NxC, tracks.scores_NxC)
  thresholds_C = thresholds.tune(validation.groundtruth.values_RxC > 0,
                                 validation_tracks[track_P])
  mo_sg_tuned = study.protocol("mo_sg_tuned",
                               pair_track_scores >= thresholds_C, "audio")
  mo_sg_tuned["thresholds"] = dict(zip(labels.LABELS, thresholds_C.tolist()))
  return mo_mg_tuned, mo_sg_tuned


def _mean_over_contexts(values_BxC: np.ndarray) -> np.ndarray:
  """Each row's mean over its defined (non-NaN) values; NaN if none."""
  defined = ~np.isnan(values_BxC)
  count = defined.sum(axis=1)
  total = np.where(defined, values_BxC, 0).sum(axis=1)
  return np.divide(total, count, out=np.full(len(total), np.nan),
                   where=count > 0)


def _set_intervals(target: dict, metrics, resampled_BxK, confidence) -> None:
  for metric, ci in zip(metrics, bootstrap.intervals(resampled_BxK,
                                                     confidence)):
    target[f"{metric}_ci"] = ci.tolist()


def _add_intervals(results: dict, study: _Study, sums: dict,
                   settings: bootstrap.Settings) -> None:
  """`<metric>_ci` of every per-user mean and every SG protocol's average."""
  num_users, confidence = study.users.count, settings.confidence
  for kind, metrics in (("satisfaction", protocols.SATISFACTION_METRICS),
                        ("ranking", ranking.METRICS)):
    for name, values in results[kind].items():
      _set_intervals(values, metrics, sums[f"{kind}/{name}"] / num_users,
                     confidence)
  positives = sums["positives"]
  for key, scores_key in study.protocol_scores.items():
    average = protocols.average_from_counts(sums[f"{key}/tp"],
                                            sums[f"{key}/fp"], positives)
    auc_C, placement_total_C = study.placement_totals[scores_key]
    average["auc"] = _mean_over_contexts(auc.resampled(
        sums[f"auc/{scores_key}"], positives, sums["pairs"], auc_C,
        placement_total_C, study.positives_UxC.sum(axis=0),
        len(study.truth_PxC)))
    _set_intervals(results[key]["average"], protocols.METRICS,
                   np.stack([average[m] for m in protocols.METRICS], axis=1),
                   confidence)


def _comparisons(results: dict, study: _Study, sums: dict,
                 settings: bootstrap.Settings) -> dict:
  """Paired comparisons over the same users: a - b of every per-user metric,
  its paired-bootstrap interval and a Wilcoxon signed-rank p-value."""
  comparisons = {}
  for a, b in COMPARISONS:
    if a not in results["ranking"] or b not in results["ranking"]:
      continue
    entry = {}
    for kind, metrics in (("satisfaction", protocols.SATISFACTION_METRICS),
                          ("ranking", ranking.METRICS)):
      differences_UxK = study.per_user[f"{kind}/{a}"] - study.per_user[
          f"{kind}/{b}"]
      cis = bootstrap.intervals(
          (sums[f"{kind}/{a}"] - sums[f"{kind}/{b}"]) / study.users.count,
          settings.confidence)
      p_values = bootstrap.wilcoxon_p(differences_UxK)
      for column, metric in enumerate(metrics):
        entry[metric] = {
            "difference": results[kind][a][metric] - results[kind][b][metric],
            "ci": cis[column].tolist(),
            "p_value": float(p_values[column])}
    comparisons[f"{a}_vs_{b}"] = entry
  return comparisons


def _groups(results: dict, model: str) -> dict:
  """A model's metrics in ceiling.GROUPS."""
  return {
      "satisfaction": {m: results["satisfaction"][model][m]
                       for m in protocols.SATISFACTION_METRICS},
      "ranking": {m: results["ranking"][model][m] for m in ranking.METRICS},
      "sg": {m: results[SINGLE_OUTPUT_SG[model]]["average"][m]
             for m in protocols.METRICS}}


def _ceiling(results: dict, study: _Study, user_ids_P, prior_C) -> dict:
  """The prior's metrics, the oracle's, and every model's share of the gap."""
  prior_PxC = np.broadcast_to(np.asarray(prior_C, np.float64),
                              study.truth_PxC.shape)
  predicted = protocols.one_hot_argmax(prior_PxC)
  satisfaction = protocols.satisfaction(user_ids_P, study.truth_PxC,
                                        predicted)
  baseline = {
      "satisfaction": {m: satisfaction[m]
                       for m in protocols.SATISFACTION_METRICS},
      "ranking": ranking.ranking(user_ids_P, study.truth_PxC, prior_PxC),
      "sg": protocols.binary_metrics(study.truth_PxC, predicted,
                                     prior_PxC)["average"]}
  oracle = _groups(results, "oracle")
  models = {m: _groups(results, m) for m in MODELS[:-1]
            if m in results["ranking"]}
  return {"prior": dict(zip(labels.LABELS, np.asarray(prior_C).tolist())),
          "baseline": baseline, "oracle": oracle,
          "share": ceiling.shares(models, baseline, oracle)}


def evaluate(groundtruth: tables.Table, audio: tables.Table | None,
             pair_models: dict[str, tables.Table],
             validation: Validation | None = None, prior=None,
             settings: bootstrap.Settings = bootstrap.Settings(),
             mo_mg_truth: str = "test",
             other_splits: typing.Sequence[tables.Table] = ()) -> dict:
  """Runs every protocol and statistic the given predictions allow.

  Args:
    groundtruth: one-hot ground truth per pair.
    audio: per-track audio-model scores, or None.
    pair_models: per-pair scores by model name: "audio_user", "user",
      "oracle".
    validation: the validation split's ground truth and audio scores; with
      `audio`, gives mo_mg_tuned and mo_sg_tuned.
    prior: the training split's context shares (C,); with an "oracle",
      gives ceiling_share.
    settings: the bootstrap's resamples, seed and confidence.
    mo_mg_truth: MO-MG's ground truth (MO_MG_TRUTHS): each track's contexts
      over `groundtruth`'s pairs ("test"), or over its pairs in
      `other_splits` too ("all_splits", the authors' pipeline).
    other_splits: the other splits' ground truth, for "all_splits".

  Returns:
    The results dict of docs/results.md, with the keys of the module
    docstring.

  Raises:
    errors.UserError: if there is no prediction table at all, or
      "all_splits" without the other splits.
  """
  if audio is None and not pair_models:
    raise errors.UserError(
        "no predictions to evaluate: give an audio model's table, a user"
        " model's table, or both")
  if mo_mg_truth not in MO_MG_TRUTHS:
    raise errors.UserError(f"mo_mg_truth {mo_mg_truth!r}: expected one of"
                           f" {list(MO_MG_TRUTHS)}")
  if mo_mg_truth == "all_splits" and not other_splits:
    raise errors.UserError(
        "mo_mg_truth 'all_splits' takes each track's contexts over every"
        " split: give the other splits' ground truth (training and"
        " validation)")
  scores, tracks = _model_scores(
      groundtruth, audio, pair_models,
      other_splits if mo_mg_truth == "all_splits" else ())
  study = _Study.create(groundtruth)
  scores = {name: values[study.order_P] for name, values in scores.items()}
  results = _points(study, scores, tracks, validation)
  sums = study.columns.resample(settings)
  _add_intervals(results, study, sums, settings)
  results["comparisons"] = _comparisons(results, study, sums, settings)
  if prior is not None and "oracle" in scores:
    results["ceiling_share"] = _ceiling(
        results, study, study.users.ids_U[study.users.index_P], prior)
  results["bootstrap"] = dict(settings.describe(), auc=AUC_METHOD)
  results["context_counts"] = {"pairs": dict(zip(
      labels.LABELS, study.positives_UxC.sum(axis=0).astype(int).tolist()))}
  if tracks is not None:
    results["mo_mg_truth"] = mo_mg_truth
    results["context_counts"]["mo_mg_tracks"] = dict(zip(
        labels.LABELS, tracks.union_NxC.sum(axis=0).astype(int).tolist()))
  return results


def evaluate_csvs(groundtruth: str, audio: str | None,
                  pair_models: dict[str, str],
                  validation: tuple[str, str] | None = None,
                  train_groundtruth: str | None = None, train_labels=None,
                  settings: bootstrap.Settings | None = None,
                  mo_mg_truth: str = "test",
                  other_groundtruths: typing.Sequence[str] = ()) -> dict:
  """`evaluate` on CSV files in the public layout (ctxtag.tables).

  Args:
    groundtruth: the ground truth CSV of the evaluated split.
    audio: the audio model's per-track CSV, or None.
    pair_models: per-pair CSVs by model name (PAIR_MODELS).
    validation: (ground truth CSV, audio CSV) of the validation split.
    train_groundtruth: the training split's ground truth CSV, for the prior
      of ceiling_share.
    train_labels: the training split's labels (indices in the label order),
      if `train_groundtruth` is None.
    settings: the bootstrap's settings (default: bootstrap.Settings()).
    mo_mg_truth: MO-MG's ground truth (`evaluate`).
    other_groundtruths: the other splits' ground truth CSVs, for
      "all_splits"; if none are given, `train_groundtruth` and
      `validation`'s ground truth (the evaluated split is test).

  Raises:
    errors.UserError: "all_splits" without the other splits' ground truth.
  """
  train_table = (tables.read_groundtruth(train_groundtruth)
                 if train_groundtruth is not None else None)
  if train_table is not None:
    train_labels = np.argmax(train_table.values_RxC, axis=1)
  prior = None if train_labels is None else ceiling.prior(train_labels)
  validation_table = (Validation(tables.read_groundtruth(validation[0]),
                                 tables.read_audio_predictions(validation[1]))
                      if validation else None)
  other_splits = tuple(map(tables.read_groundtruth, other_groundtruths))
  if mo_mg_truth == "all_splits" and not other_splits:
    if train_table is None or validation_table is None:
      raise errors.UserError(
          "mo_mg_truth 'all_splits' takes each track's contexts over every"
          " split: it needs the training ground truth and the validation"
          " tables (--train_groundtruth, --validation_groundtruth,"
          " --validation_audio_predictions)")
    other_splits = (train_table, validation_table.groundtruth)
  return evaluate(
      tables.read_groundtruth(groundtruth),
      tables.read_audio_predictions(audio) if audio else None,
      {name: tables.read_pair_predictions(path)
       for name, path in pair_models.items()},
      validation_table, prior, settings or bootstrap.Settings(),
      mo_mg_truth, other_splits)

"""Evaluators: each protocol and statistic is one, run in a list over one
`Study` of the inputs, each adding its keys to the results.

An evaluator is any object with `run(study, results) -> dict`: the keys it
adds (merged into the results, nested dicts key by key), computed from the
study and the results of the evaluators before it. The point estimates come
first and register their per-user columns with the study; the first
evaluator that asks for `study.resampled()` draws every resample at once (a
single matrix product over all the columns), after which no column may be
added. A researcher's evaluator is appended to `EVALUATORS` (or passed in
its own list to `evaluate`); docs/extending.md shows one.
"""

from collections.abc import Sequence
import typing

import numpy as np

from ctxtag import files
from ctxtag import labels
from ctxtag import models
from ctxtag import tables
from ctxtag.evaluation import auc
from ctxtag.evaluation import bootstrap
from ctxtag.evaluation import ceiling
from ctxtag.evaluation import inputs as inputs_lib
from ctxtag.evaluation import protocols
from ctxtag.evaluation import ranking
from ctxtag.evaluation import retrieval
from ctxtag.evaluation import thresholds
from ctxtag.evaluation import users as users_lib

AUC_METHOD = ("expanded in the users' resample counts, not re-sorted per"
              " resample (ctxtag/evaluation/auc.py)")
# Each model's per-user statistics: kind -> its metrics, in column order
# (retrieval's graded metric joins them where the truth is known).
PER_USER_METRICS = {"satisfaction": protocols.SATISFACTION_METRICS,
                    "ranking": ranking.METRICS,
                    "retrieval": retrieval.METRICS}


class Tracks(typing.NamedTuple):
  """A multi-label model's view: tracks, not pairs."""
  union_NxC: np.ndarray  # each track's contexts over its pairs
  scores_NxC: np.ndarray  # the model's scores
  track_P: np.ndarray  # each pair's track, in the study's pair order


class Study:
  """The inputs arranged for the evaluators: the pairs sorted by user (every
  statistic is a sum over pairs, so their order is free; sorted, per-user
  sums are plain segment sums), each model's pair scores in that order, and
  the per-user columns that the bootstrap resamples.

  Attributes:
    inputs: what it was made from.
    users: the users, in pair order.
    truth_PxC: one-hot ground truth of each pair.
    positives_UxC: each user's pairs per context.
    scores: {model: pair scores}, in MODELS order.
    tracks: {multi-label model: Tracks}.
    per_user: {"<kind>/<model>": (U, K) per-user values}.
    metrics: {"<kind>/<model>": the names of those K columns}.
    protocol_scores: {SG protocol key: the model whose scores' AUC it uses}.
  """

  def __init__(self, inputs: inputs_lib.Inputs):
    self.inputs = inputs
    groundtruth = inputs.groundtruth
    users = users_lib.Users.from_ids(groundtruth.user_id)
    self.order_P = users.order_P
    self.truth_PxC = groundtruth.values_RxC[self.order_P] > 0
    self.users = users.in_user_order()
    self.positives_UxC = self.users.sum(self.truth_PxC)
    self.scores, self.tracks = {}, {}
    for name in (m for m in models.MODELS if m in inputs.models):
      self._add_model(name, inputs.models[name])
    self.per_user, self.protocol_scores, self.metrics = {}, {}, {}
    self._columns, self._placements, self._sums = {}, {}, None
    self.add_column("positives", self.positives_UxC)
    self.add_column("pairs", self.users.pairs_U)

  def _add_model(self, name: str, table: tables.Table) -> None:
    groundtruth = self.inputs.groundtruth
    if models.get(name).output != "multi_label":
      self.scores[name] = tables.align(
          table, (groundtruth.song_id, groundtruth.user_id),
          "(song, user)")[self.order_P]
      return
    song_ids, track_P, union = inputs_lib.track_truth(groundtruth)
    if self.inputs.mo_mg_truth == "all_splits":
      union = inputs_lib.add_other_splits(song_ids, union,
                                          self.inputs.other_splits)
    track_scores = tables.align(table, (song_ids,), "song")
    self.scores[name] = track_scores[track_P][self.order_P]
    self.tracks[name] = Tracks(union, track_scores, track_P[self.order_P])

  def add_column(self, name: str, values_UxK: np.ndarray) -> None:
    """Per-user values the bootstrap resamples, addressed by `name`."""
    if self._sums is not None:
      raise RuntimeError(f"column {name!r} added after the resampling: an"
                         " evaluator that adds columns goes before those"
                         " that read intervals")
    values = np.asarray(values_UxK, np.float64)
    self._columns[name] = values.reshape(len(values), -1)

  def resampled(self) -> dict[str, np.ndarray]:
    """{column: (resamples, K) count-weighted sums over users}, drawn once."""
    if self._sums is None:
      names = list(self._columns)
      sums = bootstrap.resampled_sums(
          np.concatenate([self._columns[n] for n in names], axis=1),
          self.inputs.settings)
      edges = np.cumsum([0] + [self._columns[n].shape[1] for n in names])
      self._sums = {n: sums[:, a:b]
                    for n, a, b in zip(names, edges[:-1], edges[1:])}
    return self._sums

  def placements(self, name: str):
    """(AUC per context, placement totals) of model `name`'s scores, shared
    by its protocols: placements of each track for a multi-label model (each
    pair counts its track's), of each pair otherwise."""
    if name not in self._placements:
      if name in self.tracks:
        auc_C, placement_PxC = auc.placements(
            self.truth_PxC, self.tracks[name].scores_NxC,
            self.tracks[name].track_P)
      else:
        auc_C, placement_PxC = auc.placements(self.truth_PxC,
                                              self.scores[name])
      per_user = self.users.sum(placement_PxC)
      self.add_column(f"auc/{name}", per_user)
      self._placements[name] = (auc_C, per_user.sum(axis=0))
    return self._placements[name]

  def protocol(self, key: str, predicted_PxC, name: str) -> dict:
    """SG protocol `key`'s point estimates from the binary predictions its
    decision rule made of model `name`'s scores; its per-user counts join
    the columns for the intervals."""
    auc_C = self.placements(name)[0]
    result, tp, fp = protocols.single_groundtruth(
        self.users, self.truth_PxC, predicted_PxC, auc_C)
    self.add_column(f"{key}/tp", tp)
    self.add_column(f"{key}/fp", fp)
    self.protocol_scores[key] = name
    return result

  def user_means(self, kind: str, name: str, values_UxK,
                 metrics=None) -> dict:
    """Registers a model's per-user values of `kind` (columns `metrics`,
    default PER_USER_METRICS[kind]); their means over users."""
    metrics = tuple(metrics or PER_USER_METRICS[kind])
    self.per_user[f"{kind}/{name}"] = values_UxK
    self.metrics[f"{kind}/{name}"] = metrics
    self.add_column(f"{kind}/{name}", values_UxK)
    return dict(zip(metrics, values_UxK.mean(axis=0).tolist()))


def decision(protocol_key: str):
  """The rule from pair scores to binary predictions of an SG protocol:
  thresholds for MO-SG (several contexts may pass), the model entry's
  single answer for each model's own SG protocol."""
  if protocol_key.endswith("mo_sg"):
    return protocols.thresholded
  for model in models.MODELS.values():
    if model.sg_protocol == protocol_key:
      return protocols.DECISIONS[model.sg_decision]
  raise ValueError(f"unknown SG protocol {protocol_key!r}")


class Satisfaction:
  """Protocol 5, per user, of every model's single answer per pair."""

  def run(self, study: Study, results: dict) -> dict:
    del results
    entries = {}
    for name, scores_PxC in study.scores.items():
      per_user = protocols.satisfaction_per_user(
          study.users, study.truth_PxC,
          protocols.DECISIONS[models.get(name).sg_decision](scores_PxC))
      entries[name] = dict(study.user_means(
          "satisfaction", name, np.stack(
              [per_user[m] for m in protocols.SATISFACTION_METRICS], axis=1)),
                           users=study.users.count)
    return {"satisfaction": entries}


class Ranking:
  """Where each model ranks each pair's true context, per user."""

  def run(self, study: Study, results: dict) -> dict:
    del results
    return {"ranking": {
        name: study.user_means("ranking", name, ranking.per_user(
            study.users, study.truth_PxC, scores_PxC))
        for name, scores_PxC in study.scores.items()}}


class TrackProtocols:
  """Protocols 1 and 2 of each multi-label model: MO-MG (its scores per
  track vs the track's union of contexts) and MO-SG (thresholded, vs each
  user's context)."""

  def run(self, study: Study, results: dict) -> dict:
    del results
    found = {}
    for name, tracks in study.tracks.items():
      model = models.get(name)
      found[model.prefixed("mo_mg")] = protocols.mo_mg(tracks.union_NxC,
                                                      tracks.scores_NxC)
      key = model.prefixed("mo_sg")
      found[key] = study.protocol(key, decision("mo_sg")(study.scores[name]),
                                  name)
    return found


class TunedThresholds:
  """MO-MG and MO-SG of each multi-label model with per-context thresholds
  tuned on the validation split."""

  def run(self, study: Study, results: dict) -> dict:
    del results
    validation, found = study.inputs.validation, {}
    for name, tracks in study.tracks.items():
      if validation is None or name not in validation.models:
        continue
      model = models.get(name)
      song_ids, track_P, union = inputs_lib.track_truth(
          validation.groundtruth)
      scores_NxC = tables.align(validation.models[name], (song_ids,), "song")
      found[model.prefixed("mo_mg_tuned")] = thresholds.tuned_protocol(
          union, scores_NxC, tracks.union_NxC, tracks.scores_NxC)
      thresholds_C = thresholds.tune(validation.groundtruth.values_RxC > 0,
                                     scores_NxC[track_P])
      key = model.prefixed("mo_sg_tuned")
      found[key] = study.protocol(key, study.scores[name] >= thresholds_C,
                                  name)
      found[key]["thresholds"] = dict(zip(labels.LABELS,
                                          thresholds_C.tolist()))
    return found


class SingleGroundtruth:
  """Protocols 3 and 4: each model's single answer per pair vs the user's
  context (SO-SG for the audio model, SG for the user models)."""

  def run(self, study: Study, results: dict) -> dict:
    del results
    found = {}
    for name, scores_PxC in study.scores.items():
      key = models.get(name).sg_protocol
      found[key] = study.protocol(key, decision(key)(scores_PxC), name)
    return found


def _mean_over_contexts(values_BxC: np.ndarray) -> np.ndarray:
  """Each row's mean over its defined (non-NaN) values; NaN if none."""
  defined = ~np.isnan(values_BxC)
  count = defined.sum(axis=1)
  total = np.where(defined, values_BxC, 0).sum(axis=1)
  return np.divide(total, count, out=np.full(len(total), np.nan),
                   where=count > 0)


def _intervals(metrics, resampled_BxK, confidence) -> dict:
  return {f"{metric}_ci": ci.tolist() for metric, ci in zip(
      metrics, bootstrap.intervals(resampled_BxK, confidence))}


class Intervals:
  """`<metric>_ci` of every per-user mean and every SG protocol's average:
  percentile intervals over users resampled with replacement."""

  def run(self, study: Study, results: dict) -> dict:
    sums, confidence = study.resampled(), study.inputs.settings.confidence
    found = {}
    for kind in PER_USER_METRICS:
      if kind in results:
        found[kind] = {name: _intervals(
            study.metrics[f"{kind}/{name}"],
            sums[f"{kind}/{name}"] / study.users.count, confidence)
                       for name in results[kind]}
    positives = sums["positives"]
    for key, name in study.protocol_scores.items():
      average = protocols.average_from_counts(sums[f"{key}/tp"],
                                              sums[f"{key}/fp"], positives)
      auc_C, placement_total_C = study.placements(name)
      average["auc"] = _mean_over_contexts(auc.resampled(
          sums[f"auc/{name}"], positives, sums["pairs"], auc_C,
          placement_total_C, study.positives_UxC.sum(axis=0),
          len(study.truth_PxC)))
      found[key] = {"average": _intervals(
          protocols.METRICS,
          np.stack([average[m] for m in protocols.METRICS], axis=1),
          confidence)}
    return found


class Comparisons:
  """Paired comparisons over the same users (the model entries'
  `compared_with`): a - b of every per-user metric, its paired-bootstrap
  interval and a Wilcoxon signed-rank p-value."""

  def run(self, study: Study, results: dict) -> dict:
    sums, found = study.resampled(), {}
    for a, b in models.comparisons(list(results["ranking"])):
      entry = {}
      for kind in PER_USER_METRICS:
        if not all(f"{kind}/{m}" in study.per_user for m in (a, b)):
          continue
        # The metrics both have, in a's column order.
        mine, theirs = (study.metrics[f"{kind}/{m}"] for m in (a, b))
        metrics = [m for m in mine if m in theirs]
        ours_K = [mine.index(m) for m in metrics]
        theirs_K = [theirs.index(m) for m in metrics]
        cis = bootstrap.intervals(
            (sums[f"{kind}/{a}"][:, ours_K] - sums[f"{kind}/{b}"][:, theirs_K])
            / study.users.count, study.inputs.settings.confidence)
        p_values = bootstrap.wilcoxon_p(
            study.per_user[f"{kind}/{a}"][:, ours_K]
            - study.per_user[f"{kind}/{b}"][:, theirs_K])
        for column, metric in enumerate(metrics):
          entry[metric] = {
              "difference": results[kind][a][metric]
                            - results[kind][b][metric],
              "ci": cis[column].tolist(),
              "p_value": float(p_values[column])}
      found[f"{a}_vs_{b}"] = entry
    return {"comparisons": found}


def _groups(results: dict, name: str) -> dict:
  """A model's metrics in ceiling.GROUPS."""
  return {
      "satisfaction": {m: results["satisfaction"][name][m]
                       for m in protocols.SATISFACTION_METRICS},
      "ranking": {m: results["ranking"][name][m] for m in ranking.METRICS},
      "sg": {m: results[models.get(name).sg_protocol]["average"][m]
             for m in protocols.METRICS}}


class CeilingShare:
  """With an oracle and the training prior: the prior's metrics, the
  oracle's, and every trained model's share of the gap between them."""

  def run(self, study: Study, results: dict) -> dict:
    prior_C = study.inputs.prior_C
    if prior_C is None or "oracle" not in study.scores:
      return {}
    prior_PxC = np.broadcast_to(np.asarray(prior_C, np.float64),
                                study.truth_PxC.shape)
    predicted = protocols.one_hot_argmax(prior_PxC)
    user_ids_P = study.users.ids_U[study.users.index_P]
    satisfaction = protocols.satisfaction(user_ids_P, study.truth_PxC,
                                          predicted)
    baseline = {
        "satisfaction": {m: satisfaction[m]
                         for m in protocols.SATISFACTION_METRICS},
        "ranking": ranking.ranking(user_ids_P, study.truth_PxC, prior_PxC),
        "sg": protocols.binary_metrics(study.truth_PxC, predicted,
                                       prior_PxC)["average"]}
    trained = {name: _groups(results, name) for name in study.scores
               if models.get(name).trained}
    return {"ceiling_share": {
        "prior": dict(zip(labels.LABELS, np.asarray(prior_C).tolist())),
        "baseline": baseline, "oracle": _groups(results, "oracle"),
        "share": ceiling.shares(trained, baseline, _groups(results,
                                                           "oracle"))}}


class Description:
  """How the figures were made: the bootstrap, MO-MG's ground truth and the
  contexts' counts."""

  def run(self, study: Study, results: dict) -> dict:
    del results
    found = {
        "bootstrap": dict(study.inputs.settings.describe(), auc=AUC_METHOD),
        "context_counts": {"pairs": dict(zip(labels.LABELS, study.positives_UxC
                                             .sum(axis=0).astype(int)
                                             .tolist()))}}
    for name, tracks in study.tracks.items():
      model = models.get(name)
      found[model.prefixed("mo_mg_truth")] = study.inputs.mo_mg_truth
      found["context_counts"][model.prefixed("mo_mg_tracks")] = dict(zip(
          labels.LABELS, tracks.union_NxC.sum(axis=0).astype(int).tolist()))
    return found


# Point estimates first (they register the columns), then what reads the
# resamples and the points.
EVALUATORS = [Satisfaction(), Ranking(), TrackProtocols(), TunedThresholds(),
              SingleGroundtruth(), retrieval.Retrieval(), Intervals(),
              Comparisons(), CeilingShare(), Description()]


def merge(results: dict, found: dict) -> None:
  """Adds `found` to `results`, nested dicts key by key."""
  for key, value in found.items():
    if isinstance(value, dict) and isinstance(results.get(key), dict):
      merge(results[key], value)
    else:
      results[key] = value


def evaluate(inputs: inputs_lib.Inputs,
             evaluators: Sequence[typing.Any] | None = None) -> dict:
  """Runs the evaluators over `inputs`.

  Args:
    inputs: what they read.
    evaluators: default EVALUATORS (read when called, so an appended
      evaluator runs too).

  Returns:
    The results dict of docs/results.md.
  """
  return evaluate_with_study(inputs, evaluators)[0]


def evaluate_with_study(inputs: inputs_lib.Inputs,
                        evaluators: Sequence[typing.Any] | None = None
                        ) -> tuple[dict, Study]:
  """`evaluate`, and the study it filled (its per-user values)."""
  study, results = Study(inputs), {}
  for evaluator in EVALUATORS if evaluators is None else evaluators:
    merge(results, evaluator.run(study, results))
  return results, study


def save_per_user(path: str, study: Study) -> None:
  """Every per-user statistic of a study, for analyses over runs (a
  sweep's two-level groups): user_id[U] and one (U, K) array per
  "<kind>/<model>" with its metric names under "<kind>/<model>:metrics"."""
  arrays = {"user_id": study.users.ids_U}
  for key, values in study.per_user.items():
    arrays[key] = values
    arrays[f"{key}:metrics"] = np.array(study.metrics[key])
  with files.atomic_open(path, "wb") as f:
    np.savez(f, **arrays)


def load_per_user(path: str) -> dict:
  """`save_per_user`'s file: {"user_id": ..., "<kind>/<model>": (values,
  metric names)}."""
  with np.load(path, allow_pickle=False) as saved:
    found = {"user_id": saved["user_id"]}
    for key in saved.files:
      if key != "user_id" and not key.endswith(":metrics"):
        found[key] = (saved[key], saved[f"{key}:metrics"].tolist())
  return found


"""The paper's study from prediction tables: every protocol and statistic,
one results dict.

`evaluate(inputs)` runs the evaluators (ctxtag.evaluation.evaluators) over
one value of inputs (ctxtag.evaluation.inputs: tables in memory, or
`from_csvs`); `evaluate_csvs` does both from files. The results follow the
`results.json` contract of docs/results.md. Keys beyond it
(docs/statistics.md shows them with an example):

  user_only_sg, oracle_sg     protocol 4 for the user-only model and the
                              oracle (the true distribution, simulated data);
                              each model entry's own `sg_protocol` key
  satisfaction.<model>        protocol 5 for every model
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

from ctxtag.evaluation import bootstrap
from ctxtag.evaluation import evaluators
from ctxtag.evaluation import inputs as inputs_lib

CsvFiles = inputs_lib.CsvFiles
Inputs = inputs_lib.Inputs
MO_MG_TRUTHS = inputs_lib.MO_MG_TRUTHS
Validation = inputs_lib.Validation
track_truth = inputs_lib.track_truth


def evaluate(inputs: inputs_lib.Inputs, evaluator_list=None) -> dict:
  """Runs every protocol and statistic the inputs allow.

  Args:
    inputs: the tables and settings (ctxtag.evaluation.inputs.Inputs).
    evaluator_list: the evaluators to run (default
      ctxtag.evaluation.evaluators.EVALUATORS).

  Returns:
    The results dict of docs/results.md, with the keys of the module
    docstring.
  """
  return evaluators.evaluate(inputs, evaluator_list)


def evaluate_csvs(files: inputs_lib.CsvFiles,
                  settings: bootstrap.Settings | None = None,
                  mo_mg_truth: str = "test", train_labels=None,
                  catalog=None, per_user_path: str | None = None) -> dict:
  """`evaluate` on CSV files in the public layout (ctxtag.tables).

  Args:
    files: the tables (ctxtag.evaluation.inputs.CsvFiles).
    settings: the bootstrap's settings (default: bootstrap.Settings()).
    mo_mg_truth: MO-MG's ground truth (MO_MG_TRUTHS).
    train_labels: the training split's labels, for the prior of
      ceiling_share, if `files` has no training ground truth.
    catalog: retrieval catalogs beyond those the tables give, by model
      (`Inputs.catalog`).
    per_user_path: where to save every per-user statistic (an .npz,
      evaluators.save_per_user), if anywhere.

  Raises:
    errors.UserError: for a table that cannot be read, or "all_splits"
      without the other splits' ground truth.
  """
  results, filled = evaluators.evaluate_with_study(inputs_lib.from_csvs(
      files, settings, mo_mg_truth, train_labels, catalog))
  if per_user_path:
    evaluators.save_per_user(per_user_path, filled)
  return results


"""Evaluation: the paper's five protocols and the statistics beyond them.

  protocols.py  the five protocols (docs/paper.md)
  users.py      per-user sums without a loop over users
  ranking.py    hit@k, MRR and NDCG@3 of the true context, per user
  auc.py        AUC from placement values, and its per-user terms
  bootstrap.py  intervals over users, paired comparisons of two models
  thresholds.py per-context thresholds tuned on validation
  ceiling.py    each model's share of the oracle's gain over the prior
  inputs.py     what evaluation reads, as one value (from tables or CSVs)
  evaluators.py the protocols and statistics as a list of evaluators

The protocols' names are importable from here too (`evaluation.satisfaction`,
`evaluation.mo_mg`, ...).
"""

from ctxtag.evaluation.protocols import auc_per_label
from ctxtag.evaluation.protocols import average_from_counts
from ctxtag.evaluation.protocols import binary_metrics
from ctxtag.evaluation.protocols import mean_of_defined
from ctxtag.evaluation.protocols import METRICS
from ctxtag.evaluation.protocols import mo_mg
from ctxtag.evaluation.protocols import one_hot_argmax
from ctxtag.evaluation.protocols import recall_precision_f1
from ctxtag.evaluation.protocols import satisfaction
from ctxtag.evaluation.protocols import satisfaction_per_user
from ctxtag.evaluation.protocols import DECISIONS
from ctxtag.evaluation.protocols import single_groundtruth
from ctxtag.evaluation.protocols import SATISFACTION_METRICS
from ctxtag.evaluation.protocols import THRESHOLD
from ctxtag.evaluation.protocols import thresholded

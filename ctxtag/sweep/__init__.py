"""Sweeps: the paper's study across settings, worlds and training seeds.

The simulated world draws each pair's context from a mix of the track's
audio and the user's taste, weighted by `user_influence` (0: the audio
alone decides, 1: the user alone). Running the whole study at several
weights shows when modelling the user pays: the audio + user model's gain
over the audio model should be nil at 0 and grow with the weight. With a
`cold_user` or `cold_track` split the same study shows what a new user or
a new track gets. Any other setting can be swept the same way, and over
training seeds a sweep says how much of a difference is the seed's.

A sweep is a grid of axes (`axes`: `make_axes`, `grid`); `run` runs one
reproduction (ctxtag.run.reproduce) per point of the grid, then writes
`sweep.json`, `sweep.md` and `sweep.png` into the workdir; `run_points`
with a `Shard` runs one share of the points (a task of a job array) and
`collect` writes the outputs once every point is finished (`runs`). The
rest is a pure function of the runs' results dicts (`results`) and
prediction tables (`groups`), rendered by `outputs` (sweep.md, sweep.png). docs/sweep.md is the
user's guide.

sweep.json:
  {"dataset", "dataset_options" (the options shared by every run),
   "split_strategy", "confidence",
   "axes": [{"key", "label", "values"}],
   "runs": [{"settings": {key: value}, "user_influence" (if it is an axis),
             "workdir" (relative to the sweep's), "users",
             "satisfaction": {model: {"f1", "f1_ci"}},
             "ranking": {model: {"mrr", "mrr_ci"}},
             "comparisons": {"<a>_vs_<b>": {"f1" | "mrr":
                             {"difference", "ci", "p_value"}}}}],
   "groups" (only when `seed` is an axis): [
            {"settings": {the other axes' key: value}, "seeds": [...],
             "test_users": "shared" | "per seed",
             "models": {model: {"satisfaction_f1" | "ranking_mrr":
                                {"mean", "ci", "per_seed"}}},
             "comparisons": {"<a>_vs_<b>": {"satisfaction_f1" |
                             "ranking_mrr": {"difference", "ci",
                             "seeds_won", "seeds", "per_seed"}}}}]}
A run's "settings" are its point's value on each axis. Runs are sorted by
their values, axes in order; groups likewise; models and run comparisons
as in results.json (ctxtag.study), those the runs have. A group's `mean`
is the mean over its seeds of each run's mean over users; `ci` is a
two-level bootstrap interval (ctxtag.sweep.groups); `seeds_won` counts the
seeds whose difference is above 0.
"""

from ctxtag.sweep import axes
from ctxtag.sweep import groups
from ctxtag.sweep import outputs
from ctxtag.sweep import results
from ctxtag.sweep import runs

# The public API, for launch.sweep and researchers' scripts.
Axis = axes.Axis
Point = axes.Point
DEFAULT_INFLUENCES = axes.DEFAULT_INFLUENCES
INFLUENCE_KEY = axes.INFLUENCE_KEY
SEED_KEY = axes.SEED_KEY
parse_influences = axes.parse_influences
parse_vary = axes.parse_vary
number_text = axes.number_text
value_text = axes.value_text
make_axes = axes.make_axes
point_config = axes.point_config
grid = axes.grid

finished = results.finished
load_results = results.load_results
collect_points = results.collect_points

GROUP_METRICS = groups.GROUP_METRICS
per_user_values = groups.per_user_values
comparison_pairs = groups.comparison_pairs
seed_groups = groups.seed_groups

OUTPUTS = outputs.OUTPUTS
table_text = outputs.table_text
plot = outputs.plot
write_outputs = outputs.write_outputs

MissingPointsError = runs.MissingPointsError
Shard = runs.Shard
parse_shard = runs.parse_shard
run_points = runs.run_points
collect = runs.collect
run = runs.run

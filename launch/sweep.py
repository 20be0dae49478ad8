r"""Sweeps: the reproduction across settings, simulated worlds and seeds.

  python -m launch.sweep --workdir=W [--config=ctxtag/configs/default.py] \
      [--influences=0,0.25,0.5,0.75,1] [--vary=KEY=V1,V2,...]... \
      [--split_strategy=cold_user] [--shard=K/N | --collect]

Runs launch.reproduce once per point of the grid (ctxtag.sweep): the
Cartesian product of the axes, --influences first, then each --vary in the
order given. KEY is a run-config key (seed, audio_user.fusion,
audio.learning_rate; values of the type of the config's value, a tuple in
parentheses: audio.conv_widths=(8,16,32,64),(4,4,4,4)) or world.<field>, a
setting of the simulated world (world.track_sharpness, world.seed), added to
the config's dataset_options. --influences=X is --vary=world.user_influence=X;
with neither it nor --vary, the influences 0,0.25,0.5,0.75,1 are run. Each
point goes to W/<label>_<value>[/<label>_<value>...]/ (influence_<x>,
seed_<s>, fusion_late, ...), then W/sweep.json, W/sweep.md and W/sweep.png
are written; with seed among the axes, they also give each setting of the
other axes over its seeds (means, two-level intervals over seeds and test
users, seeds won). A rerun reuses finished runs and resumes an interrupted
one from its checkpoints. `--split_strategy=cold_user` (or cold_track) makes
it the cold-start study: `--influences=0.6 --split_strategy=cold_user`.
  python -m launch.sweep --workdir=W --influences=0.5 --vary=seed=0,1,2,3,4
With --shard=K/N (K from 1 to N) it runs only the K-th of N shares of the
points and writes no sweep.json, sweep.md or sweep.png: N such commands (a
job array) cover the grid, and --collect, given the same workdir and grid,
then writes them, or names the points still unfinished (docs/sweep.md).
On several hosts, run the same command on each, adding
--coordinator_address=HOST0:PORT --num_processes=N --process_id=I.
"""

from ctxtag import interrupts

# Ahead of the imports below, which take seconds: a Ctrl-C during them is one
# line too, and a worker process that imports this module leaves it to the
# launcher (see interrupts.before_imports).
interrupts.before_imports(__name__)

# pylint: disable=g-import-not-at-top,wrong-import-position
import sys

from absl import app
from absl import flags

from ctxtag import distributed
from ctxtag import errors
from ctxtag import sweep
from ctxtag.sources import splits
from launch import cli
from launch import reproduce

# --config and --workdir are launch.reproduce's own flags: importing it
# defines them, and absl refuses to define a flag name twice.
_CONFIG = reproduce._CONFIG  # pylint: disable=protected-access
_WORKDIR = reproduce._WORKDIR  # pylint: disable=protected-access
_INFLUENCES = flags.DEFINE_string(
    "influences", None,
    "Comma-separated user_influence values in [0, 1], one run each"
    " (--vary=world.user_influence=...); default, without --vary: "
    + ",".join(map(sweep.number_text, sweep.DEFAULT_INFLUENCES)) + ".")
_VARY = flags.DEFINE_multi_string(
    "vary", [],
    "KEY=V1,V2,...: one run per value of a run-config key (seed,"
    " audio_user.fusion, ...) or world.<field> of the simulated world;"
    " repeat for a grid (the product, in flag order).")
_SPLIT_STRATEGY = flags.DEFINE_enum(
    "split_strategy", None,
    [*splits.STRATEGIES, "given"],
    "Split of every run (default: the config's split_strategy);"
    " cold_user/cold_track for the cold-start study.")
_SHARD = flags.DEFINE_string(
    "shard", None,
    "K/N: run only the K-th (1..N) of N shares of the grid's points (a task"
    " of a job array: --shard=$SLURM_ARRAY_TASK_ID/N); writes no sweep.json"
    " (see --collect).")
_COLLECT = flags.DEFINE_bool(
    "collect", False,
    "Run nothing: write sweep.json, sweep.md and sweep.png from the"
    " finished points of the grid (after its shards), or name those"
    " missing.")

# Shown by --helpshort: --config and --workdir (launch.reproduce's), --debug,
# several hosts.
flags.declare_key_flag(_CONFIG)
flags.declare_key_flag(_WORKDIR)
flags.adopt_module_key_flags(cli)


@flags.validator("influences")
def _check_influences(text: str | None) -> bool:
  if text is None:
    return True
  try:
    sweep.parse_influences(text)
  except errors.ConfigError as error:
    raise flags.ValidationError(str(error)) from None
  return True


@flags.validator("vary")
def _check_vary(texts: list[str]) -> bool:
  try:
    for text in texts:
      sweep.parse_vary(text)
  except errors.ConfigError as error:
    raise flags.ValidationError(str(error)) from None
  return True


@flags.validator("shard")
def _check_shard(text: str | None) -> bool:
  if text is not None:
    try:
      sweep.parse_shard(text)
    except errors.ConfigError as error:
      raise flags.ValidationError(str(error)) from None
  return True


flags.register_multi_flags_validator(
    ["shard", "collect"], lambda values: not (values["shard"] and
                                              values["collect"]),
    message="--shard runs a share of the points and --collect runs none;"
    " give one")


def _note(line: str) -> None:
  """Progress goes to stderr; stdout holds the sweep's table."""
  print(line, file=sys.stderr, flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  main_process = distributed.is_main()
  log = _note if main_process else lambda line: None
  vary = list(_VARY.value)
  if _INFLUENCES.value is not None:
    vary.insert(0, (sweep.INFLUENCE_KEY,
                    sweep.parse_influences(_INFLUENCES.value)))
  config, workdir, split = (_CONFIG.value, _WORKDIR.value,
                            _SPLIT_STRATEGY.value)
  axes = sweep.make_axes(config, vary, split)
  if _SHARD.value is not None:
    sweep.run_points(config, workdir, axes, split, log,
                     sweep.parse_shard(_SHARD.value))
    return
  if _COLLECT.value:
    result = sweep.collect(config, workdir, axes, split)
  else:
    result = sweep.run(config, workdir, axes, split, log)
  if main_process:
    print(sweep.table_text(result))


if __name__ == "__main__":
  cli.run(main)

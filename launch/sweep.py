r"""The user-influence study: the reproduction at several simulated worlds.

  python -m launch.sweep --workdir=W [--config=launch/configs/default.py] \
      [--influences=0,0.25,0.5,0.75,1] [--split_strategy=cold_user]

For each user_influence x (the simulated world's weight of the user's taste
against the track's audio), runs launch.reproduce with the config's
dataset_options extended by `user_influence=x` into W/influence_<x>/, then
writes W/sweep.json, W/sweep.md and W/sweep.png (ctxtag.sweep). A rerun
reuses finished runs and resumes an interrupted one from its checkpoints.
`--split_strategy=cold_user` (or cold_track) makes it the cold-start study;
one influence works too: `--influences=0.6 --split_strategy=cold_user`.
On several hosts, run the same command on each, adding
--coordinator_address=HOST0:PORT --num_processes=N --process_id=I.
"""

from absl import app
from absl import flags

from ctxtag import distributed
from ctxtag import errors
from ctxtag import run_config
from ctxtag import sweep
from launch import common
from launch import reproduce

# --config and --workdir are launch.reproduce's own flags: importing it
# defines them, and absl refuses to define a flag name twice.
_CONFIG = reproduce._CONFIG  # pylint: disable=protected-access
_WORKDIR = reproduce._WORKDIR  # pylint: disable=protected-access
_INFLUENCES = flags.DEFINE_string(
    "influences", ",".join(map(sweep.number_text, sweep.DEFAULT_INFLUENCES)),
    "Comma-separated user_influence values in [0, 1], one run each.")
_SPLIT_STRATEGY = flags.DEFINE_enum(
    "split_strategy", None,
    [s for s in run_config.SPLIT_STRATEGIES if s],
    "Split of every run (default: the config's split_strategy);"
    " cold_user/cold_track for the cold-start study.")


@flags.validator("influences")
def _check_influences(text: str) -> bool:
  try:
    sweep.parse_influences(text)
  except errors.ConfigError as error:
    raise flags.ValidationError(str(error)) from None
  return True


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.quiet_library_logs()
  main_process = distributed.is_main()
  result = sweep.run(_CONFIG.value, _WORKDIR.value,
                     sweep.parse_influences(_INFLUENCES.value),
                     reproduce.reproduce, _SPLIT_STRATEGY.value,
                     log=print if main_process else lambda line: None)
  if main_process:
    print(sweep.table_text(result))


if __name__ == "__main__":
  from launch import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)

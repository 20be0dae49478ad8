"""Running a grid's points, in one process or as shards of a job array, and
collecting the finished points into the sweep's outputs.

Each point is one reproduction (ctxtag.run.reproduce) in
`<workdir>/<point path>/`. A point is run under its workdir's run lock
(ctxtag.locks), taken here before the finished check: a point finished
earlier is reused, one whose lock another live process holds (another
shard, a run started by hand) is skipped with a note and left to that
process, and an unfinished one is handed to the reproduction again, which
resumes it from its checkpoints.

Shard K of N (K from 1, as SLURM numbers `--array=1-N`) takes the points
whose position in the grid's order, counted from 0, is K - 1 modulo N: every
point is in exactly one shard, whatever N, and neighbouring points (often
the seeds of one setting) go to different shards. A shard writes no
aggregate; `collect` does, once every point is finished.
"""

import dataclasses
import functools
import os
import time

import ml_collections

from ctxtag import distributed
from ctxtag import errors
from ctxtag import locks
from ctxtag import run as run_lib
from ctxtag.sweep import axes as axes_lib
from ctxtag.sweep import groups as groups_lib
from ctxtag.sweep import outputs
from ctxtag.sweep import results as results_lib

# What became of a point in `run_points`, and the log's word for each.
RAN, REUSED, IN_USE = "ran", "finished earlier", "in use elsewhere"
# How many missing points `collect`'s error names before it counts the rest.
_MISSING_NAMED = 10


class MissingPointsError(errors.UserError):
  """Points of the grid that are not finished yet."""


@dataclasses.dataclass(frozen=True)
class Shard:
  """The `number`-th of `count` shares of a grid's points.

  Attributes:
    number: K, from 1 to `count`.
    count: N, the number of shards.
  """
  number: int
  count: int

  def __str__(self) -> str:
    return f"{self.number}/{self.count}"

  def take(self, items: list) -> list:
    """This shard's share of `items` (in the grid's order)."""
    return items[self.number - 1::self.count]


def parse_shard(text: str) -> Shard:
  """"2/4" -> Shard(2, 4).

  Args:
    text: K/N, whole numbers with 1 <= K <= N.

  Returns:
    The shard.

  Raises:
    errors.ConfigError: for anything else, naming what was expected.
  """
  number, slash, count = text.partition("/")
  if not (slash and number.strip().isdigit() and count.strip().isdigit()):
    raise errors.ConfigError(
        f"expected K/N, whole numbers with 1 <= K <= N (e.g. 1/4, the first"
        f" of 4 shards); got {text!r}")
  number, count = int(number), int(count)
  if count < 1:
    raise errors.ConfigError(f"N, the number of shards, must be at least 1;"
                             f" got {text}")
  if not 1 <= number <= count:
    raise errors.ConfigError(
        f"K must lie in 1..{count}: shards count from 1, as SLURM's"
        f" --array=1-{count} numbers its tasks; got {text}")
  return Shard(number, count)


def _claim(run_dir: str, config: ml_collections.ConfigDict) -> str:
  """Takes and keeps the point's run lock: RAN (to run), REUSED (finished;
  let go) or the holder's text (held by another process)."""
  try:
    locks.keep(run_dir, locks.RUN_LOCK, locks.RUN_RULE)
  except locks.BusyError:
    return locks.holder(os.path.join(run_dir, locks.RUN_LOCK))
  try:
    done = results_lib.finished(run_dir, config)
  except BaseException:
    locks.release_kept(run_dir)
    raise
  if done:
    locks.release_kept(run_dir)
    return REUSED
  return RAN


def _run_point(point: axes_lib.Point, run_dir: str, what: str, where: str,
               log) -> str:
  """Runs one point unless it is finished or in use; returns which.
  `what` names the point in the log, `where` adds its number and
  directory."""
  # Decided on process 0 (the lock's holder), the same for every process.
  claim = distributed.on_main(f"claim {run_dir}", functools.partial(
      _claim, run_dir, point.config), share=True)
  if claim == REUSED:
    log(f"sweep: {where} finished earlier; reusing its results.json")
    return REUSED
  if claim != RAN:
    log(f"sweep: {where} is in use by {claim}; skipped, left to it")
    return IN_USE
  try:
    log(f"sweep: {where}")
    start = time.time()
    run_lib.reproduce(point.config, run_dir)
    log(f"sweep: {what} done in"
        f" {(time.time() - start) / 60:.1f} min")
  finally:
    locks.release_kept(run_dir)
  return RAN


def _run(workdir: str, axes: list[axes_lib.Axis],
         points: list[axes_lib.Point], log, shard: Shard | None) -> dict:
  numbered = list(enumerate(points, 1))
  outcome = {RAN: [], REUSED: [], IN_USE: []}
  for number, point in shard.take(numbered) if shard else numbered:
    run_dir = os.path.join(workdir, point.path)
    what = point.describe(axes)
    where = f"{what} ({number} of {len(points)}): {run_dir}"
    outcome[_run_point(point, run_dir, what, where, log)].append(point.path)
  return outcome


def run_points(config: ml_collections.ConfigDict, workdir: str,
               axes: list[axes_lib.Axis], split_strategy: str | None = None,
               log=print, shard: Shard | None = None) -> dict:
  """Runs the grid's points, or one shard's share of them; writes no
  aggregate.

  Every point's config is made and checked before the first run, in every
  shard alike.

  Args:
    config: the run config shared by every run.
    workdir: the sweep's directory; each point goes to its path in it.
    axes: the sweep's axes (`make_axes`).
    split_strategy: every run's split (None: the config's).
    log: where progress lines go.
    shard: run only this share of the points (None: all of them).

  Returns:
    {RAN, REUSED, IN_USE: the paths of the points that were run, were
    finished earlier, or were skipped because another process holds
    them}, each in the grid's order.

  Raises:
    errors.ConfigError: for a bad point, before anything runs, or a
      finished point made with another config.
  """
  points = axes_lib.grid(config, axes, split_strategy)
  outcome = _run(workdir, axes, points, log, shard)
  if shard is not None:
    log(f"sweep: shard {shard}: {len(shard.take(points))} of {len(points)}"
        " points; " + ", ".join(f"{word} {len(paths)}"
                                for word, paths in outcome.items()))
  return outcome


def _missing_text(workdir: str, missing: list[str], total: int) -> str:
  named = ", ".join(missing[:_MISSING_NAMED])
  more = len(missing) - _MISSING_NAMED
  return (f"{workdir}: {len(missing)} of {total} points of the sweep are not"
          f" finished: {named}{f' and {more} more' if more > 0 else ''};"
          " run them (their shards, or the sweep without --shard), then"
          " collect again")


def _collect_and_write(config, workdir: str, axes: list[axes_lib.Axis],
                       points: list[axes_lib.Point],
                       split_strategy: str | None) -> dict:
  """The finished points' results, checked, aggregated and written."""
  missing = [p.path for p in points if not results_lib.finished(
      os.path.join(workdir, p.path), p.config)]
  if missing:
    raise MissingPointsError(_missing_text(workdir, missing, len(points)))
  results = {p.path: results_lib.load_results(os.path.join(workdir, p.path))
             for p in points}
  groups = (groups_lib.seed_groups(axes, points, workdir, results)
            if any(a.key == axes_lib.SEED_KEY for a in axes) else None)
  sweep = results_lib.collect_points(
      axes, {p.path: (p.values, results[p.path]) for p in points},
      config.dataset, config.dataset_options,
      config.split_strategy if split_strategy is None else split_strategy,
      groups)
  outputs.write_outputs(workdir, sweep)
  return sweep


def collect(config: ml_collections.ConfigDict, workdir: str,
            axes: list[axes_lib.Axis],
            split_strategy: str | None = None) -> dict:
  """Aggregates the grid's finished points into sweep.json, sweep.md and
  sweep.png in `workdir`.

  Args:
    config, workdir, axes, split_strategy: the sweep's, as its shards were
      given them.

  Returns:
    The sweep dict written to sweep.json (ctxtag.sweep); None on processes
    other than 0 of a run on several.

  Raises:
    MissingPointsError: naming the points not finished yet; nothing is
      written.
    errors.ConfigError: for a bad point, or a finished one made with
      another config.
    errors.UserError: for a results.json or prediction table the sweep
      cannot use.
  """
  points = axes_lib.grid(config, axes, split_strategy)
  return distributed.on_main("write the sweep", functools.partial(
      _collect_and_write, config, workdir, axes, points, split_strategy))


def run(config: ml_collections.ConfigDict, workdir: str,
        axes: list[axes_lib.Axis], split_strategy: str | None = None,
        log=print) -> dict:
  """Runs every point of the grid, then writes the sweep's outputs:
  `run_points` and `collect` in one.

  In a run on several processes (ctxtag.distributed) every process runs
  each reproduction; process 0 decides which points to run and writes the
  outputs.

  Args:
    config: the run config shared by every run.
    workdir: the sweep's directory.
    axes: the sweep's axes (`make_axes`).
    split_strategy: every run's split (None: the config's).
    log: where progress lines go.

  Returns:
    The sweep dict written to sweep.json; None on processes other than 0.

  Raises:
    errors.ConfigError: for a bad axis or point, before anything runs.
    MissingPointsError: where another process held a point, which is then
      still unfinished.
  """
  points = axes_lib.grid(config, axes, split_strategy)
  _run(workdir, axes, points, log, shard=None)
  return distributed.on_main("write the sweep", functools.partial(
      _collect_and_write, config, workdir, axes, points, split_strategy))

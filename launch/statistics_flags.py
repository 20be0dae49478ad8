"""The bootstrap's flags, shared by the launchers that evaluate
(launch.reproduce, launch.evaluate): importing this module defines them."""

from absl import flags

from ctxtag.evaluation import bootstrap

_RESAMPLES = flags.DEFINE_integer(
    "bootstrap_resamples", 1000,
    "Bootstrap resamples of the users for the intervals (0: none).",
    lower_bound=0)
_SEED = flags.DEFINE_integer("bootstrap_seed", 0, "Seed of the resamples.")
_CONFIDENCE = flags.DEFINE_float(
    "confidence", 0.95, "Coverage of the bootstrap intervals.",
    lower_bound=0.0, upper_bound=1.0)


def settings() -> bootstrap.Settings:
  """The bootstrap settings the command line asks for."""
  return bootstrap.Settings(_RESAMPLES.value, _SEED.value, _CONFIDENCE.value)

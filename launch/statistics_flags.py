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
# The bounds above let nan through (every comparison with it is false).
flags.register_validator("confidence", lambda value: 0.0 <= value <= 1.0,
                         message="expected a number in [0, 1]")


def settings() -> bootstrap.Settings:
  """The bootstrap settings the command line asks for."""
  return bootstrap.Settings(_RESAMPLES.value, _SEED.value, _CONFIDENCE.value)

"""A run config (launch/configs/default.py): its checks and its saved copy.

`validate` refuses a config whose settings would crash a run, make it succeed
without training (max_epochs=0, patience=0), or train something else than was
meant (a misspelt key). `save` validates before it writes the workdir's
config.json, so a refused config never blocks its corrected rerun; `load`
reads that file back, naming it if it is damaged.

Choices beyond the obvious ranges:
  * patience >= 1: with 0 the loop stops before its first epoch (no
    checkpoint, "best epoch" -1).
  * steps_per_epoch >= 0: 0 means one pass over the training split.
  * seed >= 0: numpy's generators refuse negative seeds.
  * decay_rate in (0, 1]: 1 is a constant rate; above 1 the rate grows.
"""

from collections.abc import Iterable
import json
import math
import os

from ctxtag import errors
from ctxtag import files

MODELS = ("audio", "audio_user", "user")
OPTIMIZERS = ("adam", "adadelta")
SPLIT_STRATEGIES = ("", "random", "cold_user", "cold_track", "given")
DATASET_BUILDER = "contextual_tags"


def _fail(key: str, value, expected: str):
  raise errors.ConfigError(f"config {key}={value!r}: expected {expected}")


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(minimum: int):
  def check(key, value):
    if not _is_int(value) or value < minimum:
      _fail(key, value, f"an integer >= {minimum}")
  return check


def _number(low: float, high: float, low_open: bool, high_open: bool):
  """A finite number in an interval; `*_open` excludes that end."""
  def check(key, value):
    inside = (_is_number(value) and math.isfinite(value)
              and (low < value if low_open else low <= value)
              and (value < high if high_open else value <= high))
    if not inside:
      interval = (("(" if low_open else "[") + f"{low:g}, {high:g}"
                  + (")" if high_open else "]"))
      _fail(key, value, f"a finite number in {interval}")
  return check


def _widths(key, value):
  if (not isinstance(value, (list, tuple)) or not value
      or not all(_is_int(w) and w > 0 for w in value)):
    _fail(key, value, "a non-empty list of positive integers")


def _one_of(choices: Iterable[str]):
  choices = tuple(choices)
  def check(key, value):
    if value not in choices:
      _fail(key, value, f"one of {list(choices)}")
  return check


def _text(key, value):
  if not isinstance(value, str):
    _fail(key, value, "a string")


def _boolean(key, value):
  if not isinstance(value, bool):
    _fail(key, value, "True or False")


def _models(key, value):
  expected = f"a non-empty list of distinct names from {list(MODELS)}"
  if not isinstance(value, (list, tuple)) or not value:
    _fail(key, value, expected)
  unknown = [name for name in value if name not in MODELS]
  if unknown:
    _fail(key, value, f"known model names only, {unknown[0]!r} is not one of"
          f" {list(MODELS)}")
  if len(set(value)) != len(value):
    _fail(key, value, expected)


def _fractions(key, value):
  """Train/validation/test shares, as ctxtag.sources.splits reads them."""
  if (not isinstance(value, (list, tuple)) or len(value) != 3
      or not all(_is_number(v) and math.isfinite(v) and v > 0 for v in value)
      or abs(sum(value) - 1) > 1e-6):
    _fail(key, value, "three positive numbers (train, validation, test)"
          " summing to 1")


_POSITIVE = _integer(1)
_FINITE_POSITIVE = _number(0, math.inf, True, True)

# Each model section's keys (launch/configs/default.py: model_config).
MODEL_CHECKS = {
    "conv_widths": _widths,
    "hidden": _POSITIVE,
    "dropout_rate": _number(0, 1, False, True),
    "user_widths": _widths,
    "deep": _boolean,
    "optimizer": _one_of(OPTIMIZERS),
    "learning_rate": _FINITE_POSITIVE,
    "weight_decay": _number(0, math.inf, False, True),
    "decay_rate": _number(0, 1, True, False),
    "decay_steps": _POSITIVE,
    "batch_size": _POSITIVE,
    "steps_per_epoch": _integer(0),
    "max_epochs": _POSITIVE,
    "patience": _POSITIVE,
    # Performance keys (ctxtag.train, ctxtag.models); 0 MB keeps every split
    # on the host.
    "device_data_budget_mb": _number(0, math.inf, False, True),
    "steps_per_dispatch": _POSITIVE,
    "compute_dtype": _one_of(("float32", "bfloat16")),
    "cpu_fast_path": _boolean,
    "host_workers": _integer(-1),
    "host_prefetch": _POSITIVE,
    "audio_init": _one_of(("", "audio")),
    "user_init": _one_of(("", "user")),
    "fusion": _one_of(("concat", "late")),
    "freeze_experts": _boolean,
    # Checkpoints within epochs (ctxtag.train); 0 turns either off.
    "checkpoint_every_steps": _integer(0),
    "checkpoint_every_seconds": _number(0, math.inf, False, True),
}

# Top-level keys; model sections are checked with MODEL_CHECKS.
CHECKS = {
    "seed": _integer(0),
    "dataset_options": _text,
    "manual_dir": _text,
    "split_strategy": _one_of(SPLIT_STRATEGIES),
    "split_fractions": _fractions,
    "data_dir": _text,
    "models": _models,
    "eval_batch_size": _POSITIVE,
    "log_every_steps": _POSITIVE,
}


def _dataset(value, known: Iterable[str] | None) -> None:
  name, _, config_name = value.partition("/") if isinstance(value, str) else (
      None, None, None)
  if name != DATASET_BUILDER or not config_name:
    _fail("dataset", value, f"'{DATASET_BUILDER}/<config>'")
  if known is not None:
    known = sorted(known)
    if config_name not in known:
      _fail("dataset", value, f"a config of {DATASET_BUILDER}: {known}")


def _check_keys(prefix: str, config, declared) -> None:
  """Refuses keys `declared` lacks (misspellings) and keys `config` lacks."""
  if declared is None:
    return
  for key in config:
    if key not in declared:
      raise errors.ConfigError(
          f"config {prefix}{key}: unknown key; known:"
          f" {sorted(declared)} (every key is declared in"
          " launch/configs/default.py)")
  for key in declared:
    if key not in config:
      raise errors.ConfigError(f"config {prefix}{key}: missing")


def _check_section(prefix: str, section, checks: dict, declared) -> None:
  _check_keys(prefix, section, declared)
  for key, value in section.items():
    if key in checks:
      checks[key](prefix + key, value)


def validate(config, declared=None, datasets: Iterable[str] | None = None
             ) -> None:
  """Checks every setting of a run config.

  Args:
    config: a run config (ConfigDict or the dict of a saved config.json).
    declared: the config that declares every key (launch/configs/default.py's
      `get_config()`); if given, keys it lacks are refused as misspellings,
      and keys it has must be present.
    datasets: the known dataset config names; if given, `dataset` must name
      one.

  Raises:
    errors.ConfigError: naming the first bad key and what was expected.
  """
  _check_section("", {k: v for k, v in config.items() if k not in MODELS},
                 CHECKS, None if declared is None else
                 [k for k in declared if k not in MODELS])
  if "dataset" not in config:
    raise errors.ConfigError("config dataset: missing")
  _dataset(config["dataset"], datasets)
  for name in MODELS:
    if name not in config:
      raise errors.ConfigError(f"config {name}: missing model section")
    _check_section(f"{name}.", config[name], MODEL_CHECKS,
                   None if declared is None else declared[name])
  _check_audio_init(config)
  _check_late_fusion(config["audio_user"])


def _check_late_fusion(section) -> None:
  """user_init and freeze_experts are settings of the late fusion; frozen
  experts must be the trained models."""
  if section.get("user_init") and section.get("fusion") != "late":
    _fail("audio_user.user_init", section["user_init"], "'' unless"
          " audio_user.fusion is 'late' (the paper's fusion has no user-only"
          " part to take)")
  if section.get("freeze_experts") and not (
      section.get("fusion") == "late" and section.get("audio_init") == "audio"
      and section.get("user_init") == "user"):
    _fail("audio_user.freeze_experts", True, "False unless audio_user.fusion"
          " is 'late', audio_init 'audio' and user_init 'user' (it keeps the"
          " trained audio and user-only models as the experts)")


def _check_audio_init(config) -> None:
  """audio_user.audio_init='audio' (user_init='user') needs the audio
  (user-only) model trained first."""
  models = list(config.get("models", ()))
  for source, init in (("audio", "audio_init"), ("user", "user_init")):
    if (config["audio_user"].get(init) == source
        and "audio_user" in models
        and (source not in models
             or models.index(source) > models.index("audio_user"))):
      _fail("models", tuple(models), f"'{source}' before 'audio_user' when"
            f" audio_user.{init}='{source}' (or set audio_user.{init}='')")


def save(config, path: str, declared=None,
         datasets: Iterable[str] | None = None) -> None:
  """Validates `config`, then writes it to `path` unless already there.

  Nothing is written for a config that fails validation, so the corrected
  rerun is not refused as "another config".

  Args:
    config: the run config (ConfigDict).
    path: the workdir's config.json.
    declared, datasets: as for `validate`.

  Raises:
    errors.ConfigError: for a bad setting, or a `path` holding another
      config.
    files.WriteError: if `path` cannot be written.
  """
  validate(config, declared, datasets)
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if os.path.exists(path):
    if load(path) != json.loads(text):
      raise errors.ConfigError(
          f"{path}: this workdir was made with another config; use a new"
          " --workdir or the same config")
    return
  files.write_text(path, text)


def load(path: str) -> dict:
  """A saved config.json as a dict.

  Raises:
    errors.ConfigError: if the file is not valid JSON (a damaged workdir).
  """
  with open(path) as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as error:
    raise errors.ConfigError(
        f"{path}, line {error.lineno}: not valid JSON ({error.msg}); the"
        " run's config is damaged: restore it or use a new --workdir"
        ) from None

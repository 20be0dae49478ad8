"""A run config (ctxtag/configs/default.py): its checks and its saved copy.

`validate` refuses a config whose settings would crash a run, make it succeed
without training (max_epochs=0, patience=0), or train something else than was
meant (a misspelt key). `save` validates before it writes the workdir's
config.json, so a refused config never blocks its corrected rerun; `load`
reads that file back, naming it if it is damaged.

Each key's own check stands beside its default (ctxtag/configs/default.py:
CHECKS, MODEL_CHECKS); this module holds what spans keys: declared keys,
the dataset's name, and settings that depend on each other.
"""

from collections.abc import Iterable
import json
import os

from ctxtag import errors
from ctxtag import files
from ctxtag import models
from ctxtag.configs import checks
from ctxtag.configs import compare
from ctxtag.configs import default

DATASET_BUILDER = "contextual_tags"


def _dataset(value, known: Iterable[str] | None) -> None:
  name, _, config_name = value.partition("/") if isinstance(value, str) else (
      None, None, None)
  if name != DATASET_BUILDER or not config_name:
    checks.fail("dataset", value, f"'{DATASET_BUILDER}/<config>'")
  if known is not None:
    known = sorted(known)
    if config_name not in known:
      checks.fail("dataset", value, f"a config of {DATASET_BUILDER}: {known}")


def _check_keys(prefix: str, config, declared) -> None:
  """Refuses keys `declared` lacks (misspellings) and keys `config` lacks."""
  if declared is None:
    return
  for key in config:
    if key not in declared:
      raise errors.ConfigError(
          f"config {prefix}{key}: unknown key; known:"
          f" {sorted(declared)} (every key is declared in"
          " ctxtag/configs/default.py)")
  for key in declared:
    if key not in config:
      raise errors.ConfigError(f"config {prefix}{key}: missing")


def _check_section(prefix: str, section, checks: dict, declared) -> None:
  _check_keys(prefix, section, declared)
  for key, value in section.items():
    if key in checks:
      checks[key](prefix + key, value)


def _sections(config) -> list[str]:
  """The keys of `config` that are model sections: trained entries of the
  model table (ctxtag.models.MODELS)."""
  return [key for key in config if key in models.trained_models()]


def validate(config, declared=None, datasets: Iterable[str] | None = None
             ) -> None:
  """Checks every setting of a run config.

  Args:
    config: a run config (ConfigDict or the dict of a saved config.json).
    declared: the config that declares every key (ctxtag/configs/default.py's
      `get_config()`); if given, keys it lacks are refused as misspellings,
      and keys it has must be present. A model section of any entry of the
      model table may be added; its keys are `default.model_config()`'s.
    datasets: the known dataset config names; if given, `dataset` must name
      one.

  Raises:
    errors.ConfigError: naming the first bad key and what was expected.
  """
  sections = _sections(config)
  _check_section("", {k: v for k, v in config.items() if k not in sections},
                 default.CHECKS, None if declared is None else
                 [k for k in declared if k not in _sections(declared)])
  if "dataset" not in config:
    raise errors.ConfigError("config dataset: missing")
  _dataset(config["dataset"], datasets)
  required = list(dict.fromkeys(
      ([] if declared is None else _sections(declared))
      + list(config.get("models", ()))))
  for name in required:
    if name not in config:
      raise errors.ConfigError(f"config {name}: missing model section")
  model_keys = list(default.model_config())
  for name in sections:
    _check_section(f"{name}.", config[name], default.MODEL_CHECKS,
                   None if declared is None else model_keys)
  _check_inits(config)
  for name in sections:
    _check_late_fusion(name, config[name])


def _check_late_fusion(name: str, section) -> None:
  """user_init and freeze_experts are settings of the late fusion; frozen
  experts must be trained models."""
  if section.get("user_init") and section.get("fusion") != "late":
    checks.fail(f"{name}.user_init", section["user_init"], "'' unless"
                f" {name}.fusion is 'late' (the paper's fusion has no"
                " user-only part to take)")
  if section.get("freeze_experts") and not (
      section.get("fusion") == "late" and section.get("audio_init")
      and section.get("user_init")):
    checks.fail(f"{name}.freeze_experts", True, f"False unless {name}.fusion"
                " is 'late' and audio_init and user_init name trained models"
                " (it keeps them as the experts)")


def _check_inits(config) -> None:
  """A model's audio_init (user_init) names a model of the kind it takes
  from, trained before it in `models`."""
  names = list(config.get("models", ()))
  for name in names:
    for init, batches in models.INIT_SOURCES.items():
      source = config[name].get(init)
      if not source:
        continue
      sources = [m for m in models.trained_models()
                 if models.get(m).batches == batches]
      if source not in sources:
        checks.fail(f"{name}.{init}", source, f"'' or one of {sources}")
      if source not in names or names.index(source) > names.index(name):
        checks.fail("models", tuple(names), f"'{source}' before '{name}'"
                    f" when {name}.{init}='{source}' (or set"
                    f" {name}.{init}='')")


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
    saved = load(path)
    if declared is not None:
      saved = _with_later_keys(saved, json.loads(
          declared.to_json_best_effort(sort_keys=True)))
    if saved != json.loads(text):
      raise errors.ConfigError(
          f"{path}: this workdir was made with another config"
          f" ({describe_differences(json.loads(text), saved)}); use a new"
          " --workdir or the same config")
    return
  files.write_text(path, text)


def _with_later_keys(saved: dict, defaults: dict) -> dict:
  """`saved` with the keys added to ctxtag since it was written, at their
  defaults: a run made before a key existed behaved as its default, so its
  workdir still resumes (and a non-default value is still "another
  config")."""
  merged = dict(saved)
  for key, value in defaults.items():
    if key not in merged:
      merged[key] = value
    elif isinstance(value, dict) and isinstance(merged[key], dict):
      merged[key] = _with_later_keys(merged[key], value)
  return merged


def describe_differences(here: dict, saved: dict, most: int = 3) -> str:
  """The keys whose values differ between this run's config and the saved
  config.json, as "seed: 0 here, 1 in config.json; ...", the first `most`
  of them, then "and N more".

  Args:
    here: the config given now, as a dict (JSON types).
    saved: the workdir's config.json.
    most: how many keys to name.
  """
  return compare.describe_differences(here, saved, "here", "in config.json",
                                      most)


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

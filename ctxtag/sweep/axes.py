"""A sweep's grid: its axes (a key and its values), parsed from flag text
and checked against the run config, and the config of each point.

An axis key is a run-config path (`seed`, `audio_user.fusion`,
`audio.learning_rate`; values of the type of the config's value) or a
setting of the simulated world, `world.<field>` (a field of
ctxtag.sources.simulated.SimulationConfig, applied through the config's
`dataset_options`). The grid is the Cartesian product of the axes, in
order, the last varying fastest; a point's directory is
`<label>_<value>[/<label>_<value>...]`, a label being the key's last
component (`seed_3/fusion_late`), the whole key where two axes share one,
and `influence` for world.user_influence (`influence_<x>/`).
"""

import dataclasses
import itertools
import os
import re

import ml_collections

from ctxtag import datasets
from ctxtag import errors
from ctxtag import run_config
from ctxtag.configs import default
from ctxtag.sources import options as options_lib
from ctxtag.sources import simulated
from tfds_builders import contextual_tags

INFLUENCE_FIELD = "user_influence"  # the simulated world's (SimulationConfig)
WORLD = "world."  # the prefix of a simulated world's setting as an axis key
INFLUENCE_KEY = WORLD + INFLUENCE_FIELD
INFLUENCE_LABEL = "influence"  # its directories: influence_<x>
SEED_KEY = "seed"  # the axis whose runs are grouped
SIMULATED = "contextual_tags/simulated"  # the configs that have the setting
# The grid of a sweep given no axes: the user-influence study.
DEFAULT_INFLUENCES = (0.0, 0.25, 0.5, 0.75, 1.0)
# What a value may name in a directory; anything else is refused up front
# rather than escaped, so that names read back as the values.
_NAME_TEXT = re.compile(r"[A-Za-z0-9._+-]+")
# Per-user values recomputed from the prediction tables must give


def parse_influences(text: str) -> tuple[float, ...]:
  """"0,0.25,1" -> (0.0, 0.25, 1.0), in the order given.

  Raises:
    errors.ConfigError: for an empty list, a value that is not a number or
      lies outside [0, 1], or a value given twice.
  """
  if not text.strip():
    raise errors.ConfigError(f"no {INFLUENCE_FIELD} values given; expected"
                             " numbers in [0, 1] separated by commas")
  values = []
  for item in (part.strip() for part in text.split(",")):
    try:
      value = float(item)
    except ValueError:
      raise errors.ConfigError(
          f"{item!r} is not a number; expected {INFLUENCE_FIELD} values in"
          " [0, 1] separated by commas, e.g. 0,0.25,0.5") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
      raise errors.ConfigError(
          f"{INFLUENCE_FIELD} {item} is outside [0, 1]")
    if value in values:
      raise errors.ConfigError(
          f"{INFLUENCE_FIELD} {number_text(value)} is given twice")
    values.append(value)
  return tuple(values)


def number_text(value: float) -> str:
  """The shortest text that reads back as `value`: 0, 0.25, 1."""
  text = repr(float(value))
  if "." in text and "e" not in text:
    text = text.rstrip("0").rstrip(".")
  return text


def value_text(value) -> str:
  """A setting's value as a directory name and a table cell: 0.25, 3, true,
  late, 8-16-32 (a tuple), '' (the empty string)."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    return number_text(value)
  if isinstance(value, (tuple, list)):
    return "-".join(value_text(item) for item in value) or "()"
  if value == "":
    return "''"
  return str(value)


def header(key: str) -> str:
  """An axis key as sweep.md and the plots name it: the key, and
  user_influence for the world's."""
  return INFLUENCE_FIELD if key == INFLUENCE_KEY else key


@dataclasses.dataclass(frozen=True)
class Axis:
  """One varied setting.

  Attributes:
    key: a run-config path ("seed", "audio.learning_rate") or
      "world.<field>" (a setting of the simulated world).
    values: its values, parsed, in the order run.
    label: what names its directories, `<label>_<value>`.
  """
  key: str
  values: tuple
  label: str

  @property
  def header(self) -> str:
    """Its column in sweep.md (`header`)."""
    return header(self.key)

  def name(self, value) -> str:
    """The directory of a run at `value`: label_value (label_ for the
    empty string, which no shell needs quoted)."""
    return f"{self.label}_{'' if value == '' else value_text(value)}"


def _split_top_level(text: str) -> list[str]:
  """Splits at commas outside parentheses: "(1,2),(3,4)" -> two items."""
  items, depth, start = [], 0, 0
  for position, character in enumerate(text):
    depth += {"(": 1, ")": -1}.get(character, 0)
    if character == "," and depth == 0:
      items.append(text[start:position])
      start = position + 1
  items.append(text[start:])
  return [item.strip() for item in items]


def parse_vary(text: str) -> tuple[str, list[str]]:
  """"KEY=V1,V2" -> (KEY, ["V1", "V2"]); the values stay text (their type
  is the config's, `make_axes`). A tuple value is parenthesised:
  audio.conv_widths=(8,16,32,64),(16,32,64,128).

  Raises:
    errors.ConfigError: without "=", a key or a value.
  """
  key, equals, values = text.partition("=")
  key = key.strip()
  if not equals or not key:
    raise errors.ConfigError(
        f"--vary {text!r} is not KEY=V1,V2,...; e.g. --vary=seed=0,1,2 or"
        " --vary=world.user_influence=0,0.5")
  items = _split_top_level(values)
  if not values.strip() or "" in items:
    raise errors.ConfigError(f"--vary {text!r}: an empty value; write the"
                             " empty string as ''")
  return key, items


def _config_value(config: ml_collections.ConfigDict, key: str):
  """The config's current value at `key` (a dotted path).

  Raises:
    errors.ConfigError: for an unknown key or a section.
  """
  node, path = config, []
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = f" in {'.'.join(path)}" if path else ""
      known = (sorted(node) if isinstance(node, ml_collections.ConfigDict)
               else [])
      raise errors.ConfigError(
          f"--vary {key}: unknown config key; known{where}: {known}, or"
          f" {WORLD}<field> for a setting of the simulated world")
    node = node[part]
    path.append(part)
  if isinstance(node, ml_collections.ConfigDict):
    raise errors.ConfigError(f"--vary {key}: a section of the config; name"
                             f" one of its keys, e.g. {key}.{sorted(node)[0]}")
  return node


def _world_default(key: str):
  """The simulated world's default for `world.<field>`.

  Raises:
    errors.ConfigError: for a field the world does not have.
  """
  field = key[len(WORLD):]
  fields = {f.name for f in dataclasses.fields(simulated.SimulationConfig)}
  if field not in fields:
    raise errors.ConfigError(f"--vary {key}: unknown setting of the simulated"
                             f" world; known: {sorted(fields)}")
  return getattr(simulated.SimulationConfig(), field)


def _scalar(key: str, text, kind):
  """One value of type `kind` from text (or a Python value)."""
  if not isinstance(text, str):
    if kind is float and isinstance(text, int) and not isinstance(text, bool):
      text = float(text)
    if type(text) is not kind:  # pylint: disable=unidiomatic-typecheck
      raise errors.ConfigError(f"--vary {key}: {text!r} is not of type"
                               f" {kind.__name__}")
    return text
  if kind is str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
      return text[1:-1]
    return text
  return options_lib.convert(kind, text, f"--vary {key}: {text!r}")


def _value(key: str, text, current):
  """A value of `current`'s type (a tuple's items of its first item's)."""
  if isinstance(current, tuple):
    kind = type(current[0]) if current else str
    if isinstance(text, str):
      if not (text.startswith("(") and text.endswith(")")):
        raise errors.ConfigError(
            f"--vary {key}: {text!r} is not a tuple; write each value in"
            f" parentheses, e.g. {key}=({','.join(map(str, current))})")
      inner = text[1:-1].strip()
      text = _split_top_level(inner) if inner else []
    if not isinstance(text, (tuple, list)):
      raise errors.ConfigError(f"--vary {key}: {text!r} is not a tuple")
    return tuple(_scalar(key, item, kind) for item in text)
  if current is None:
    return _scalar(key, text, str)
  return _scalar(key, text, type(current))


def _axis_values(config, key: str, texts) -> tuple:
  current = (_world_default(key) if key.startswith(WORLD)
             else _config_value(config, key))
  values = []
  for text in texts:
    value = _value(key, text, current)
    if value in values:
      raise errors.ConfigError(f"--vary {key}: {value_text(value)} is given"
                               " twice")
    name = value_text(value)
    if not _NAME_TEXT.fullmatch(name) and name != "''":
      raise errors.ConfigError(
          f"--vary {key}: {value!r} cannot name a directory; values may"
          " hold letters, digits and . _ + - only")
    values.append(value)
  if len({value_text(v) for v in values}) < len(values):
    raise errors.ConfigError(f"--vary {key}: two values give the same"
                             " directory name; give distinct values")
  return tuple(values)


def make_axes(config: ml_collections.ConfigDict, vary=(),
              split_strategy: str | None = None) -> list[Axis]:
  """The sweep's axes, checked against `config`.

  Args:
    config: the sweep's run config.
    vary: the axes in order: "KEY=V1,V2" texts (the --vary flags) or
      (key, values) pairs, the values text or of the config's types
      (launch.sweep's --influences is the pair (INFLUENCE_KEY, values),
      put first). None given: the influences DEFAULT_INFLUENCES.
    split_strategy: the sweep's --split_strategy (then split_strategy is no
      axis).

  Returns:
    The axes, in `vary`'s order.

  Raises:
    errors.ConfigError: for an unknown key, a bad value, a key given twice.
  """
  pairs = [parse_vary(item) if isinstance(item, str) else item
           for item in vary] or [(INFLUENCE_KEY, DEFAULT_INFLUENCES)]
  keys = [key for key, _ in pairs]
  for key in keys:
    if keys.count(key) > 1:
      also = (f" (--influences is --vary={INFLUENCE_KEY})"
              if key == INFLUENCE_KEY else "")
      raise errors.ConfigError(f"--vary {key} is given twice{also}; give its"
                               " values once")
    if key == "dataset_options":
      raise errors.ConfigError(
          f"--vary dataset_options: vary the world's settings one by one as"
          f" {WORLD}<field>, e.g. --vary={WORLD}track_sharpness=2,4")
    if key == "split_strategy" and split_strategy is not None:
      raise errors.ConfigError(
          "--vary split_strategy and --split_strategy both set the split;"
          " give one")
  labels = [INFLUENCE_LABEL if key == INFLUENCE_KEY else key.rpartition(".")[2]
            for key in keys]
  labels = [key if labels.count(label) > 1 else label
            for key, label in zip(keys, labels)]
  return [Axis(key, _axis_values(config, key, values), label)
          for (key, values), label in zip(pairs, labels)]


def _with_world(config: ml_collections.ConfigDict, world: dict) -> str:
  """`config`'s dataset options with the world's settings `world` added.

  Raises:
    errors.ConfigError: if the dataset is not the simulated world, or its
      options already set one of `world`'s fields.
  """
  field = next(iter(world))
  if not config.dataset.startswith(SIMULATED):
    raise errors.ConfigError(
        f"config dataset={config.dataset!r}: varying {WORLD}{field} needs"
        f" the simulated world ({SIMULATED} or one of its variants), whose"
        " setting it is")
  options = [item.strip() for item in config.dataset_options.split(",")
             if item.strip()]
  for item in options:
    if item.partition("=")[0].strip() in world:
      raise errors.ConfigError(
          f"config dataset_options={config.dataset_options!r} sets"
          f" {item.partition('=')[0].strip()}, which the sweep sets for each"
          " run from --influences or --vary; remove it")
  return ",".join(options + [f"{key}={value_text(value)}"
                             for key, value in world.items()])


def point_config(config: ml_collections.ConfigDict, point_values: dict,
                 split_strategy: str | None = None
                 ) -> ml_collections.ConfigDict:
  """`config` with a point's values (and the split).

  Args:
    config: the sweep's run config; left unchanged.
    point_values: {axis key: value}: config paths are set, `world.<field>`
      values are appended to dataset_options as field=value.
    split_strategy: replaces config.split_strategy unless None.

  Raises:
    errors.ConfigError: as `_with_world`.
  """
  changed = config.copy_and_resolve_references()
  world = {}
  for key, value in point_values.items():
    if key.startswith(WORLD):
      world[key[len(WORLD):]] = value
      continue
    *path, last = key.split(".")
    node = changed
    for part in path:
      node = node[part]
    node[last] = value
  if world:
    changed.dataset_options = _with_world(changed, world)
  if split_strategy is not None:
    changed.split_strategy = split_strategy
  return changed


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of a sweep: its value on each axis, directory and config."""
  values: dict  # {axis key: value}; sweep.json's "settings"
  path: str  # relative to the sweep's workdir
  config: ml_collections.ConfigDict

  def describe(self, axes: list[Axis]) -> str:
    return ", ".join(f"{axis.header} {value_text(self.values[axis.key])}"
                     for axis in axes)


def grid(config: ml_collections.ConfigDict, axes: list[Axis],
         split_strategy: str | None = None) -> list[Point]:
  """Every point of the axes' product, in run order, each config checked.

  Args:
    config: the sweep's run config.
    axes: from `make_axes`.
    split_strategy: every run's split (None: the config's).

  Returns:
    The points, the last axis varying fastest.

  Raises:
    errors.ConfigError: naming the first point whose config a run would
      refuse (ctxtag.run_config, the dataset's settings).
  """
  points = []
  names = [c.name for c in contextual_tags.BUILDER_CONFIGS]
  for values in itertools.product(*(axis.values for axis in axes)):
    point_values = {axis.key: value for axis, value in zip(axes, values)}
    path = os.path.join(*(axis.name(value)
                          for axis, value in zip(axes, values)))
    # Its errors name the config's key, whatever the point.
    changed = point_config(config, point_values, split_strategy)
    try:
      run_config.validate(changed, declared=default.get_config(),
                          datasets=names)
      datasets.check_dataset_settings(changed)
    except errors.ConfigError as error:
      raise errors.ConfigError(f"sweep point {path}: {error}") from None
    points.append(Point(point_values, path, changed))
  return points




def sort_key(axes: list[Axis]):
  """The order of sweep.json's runs and groups: by each axis's value, the
  first axis first (values compared, not their run order)."""
  return lambda point_values: tuple(point_values[axis.key] for axis in axes)

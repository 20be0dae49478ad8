"""Settings of a source changed as text: "key=value,key=value".

A source's settings are a frozen dataclass with a `validate()` method; the
build launcher's --option flags and the run config's `dataset_options` give
new values as text, parsed here against the dataclass's field types.
"""

import dataclasses
import math

from ctxtag import errors


def parse(text: str) -> dict[str, str]:
  """"key=value,key=value" -> {key: value}; "" -> {}."""
  overrides = {}
  for item in filter(None, (part.strip() for part in text.split(","))):
    key, equals, value = item.partition("=")
    if not equals or not key.strip() or not value.strip():
      raise errors.ConfigError(f"dataset option {item!r} is not key=value")
    overrides[key.strip()] = value.strip()
  return overrides


def convert(kind, text: str, named: str):
  """`text` as a value of type `kind` (bool, int, float or str).

  Args:
    kind: the type wanted.
    text: the value as written on a command line.
    named: how the error names the value, e.g. "simulated setting seed='x'".

  Raises:
    errors.ConfigError: "<named> is not ...", for a value of another type
      or a float that is not finite.
  """
  if kind is bool:
    if text.lower() not in ("true", "false", "1", "0"):
      raise errors.ConfigError(f"{named} is not a boolean (true or false)")
    return text.lower() in ("true", "1")
  try:
    value = kind(text)
  except ValueError:
    raise errors.ConfigError(
        f"{named} is not of type {kind.__name__}") from None
  if isinstance(value, float) and not math.isfinite(value):
    raise errors.ConfigError(f"{named} is not a finite number")
  return value


def replace(base, overrides: dict[str, str], what: str):
  """`base` with fields replaced by parsed `overrides`, validated.

  Args:
    base: a frozen dataclass instance with a `validate()` method.
    overrides: field name -> value as text.
    what: what the settings are, for errors ("simulation").

  Returns:
    (the new settings, a name suffix listing the values that differ from
    `base`, "" when none do).
  """
  fields = {f.name: f.type for f in dataclasses.fields(base)}
  values = {}
  for key, text in sorted(overrides.items()):
    if key not in fields:
      raise errors.ConfigError(f"unknown {what} setting {key!r}; known:"
                               f" {sorted(fields)}")
    kind = fields[key]
    kind = {"int": int, "float": float, "str": str, "bool": bool}.get(
        kind, kind)
    values[key] = convert(kind, text, f"{what} setting {key}={text!r}")
  settings = dataclasses.replace(base, **values)
  settings.validate()
  changed = {k: v for k, v in values.items() if getattr(base, k) != v}
  return settings, "-".join(f"{key}{value}" for key, value in changed.items())

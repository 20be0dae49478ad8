"""Which keys two configs (as JSON dicts) disagree on, said in one line:
for a workdir's config.json against the one given now, and for the configs
of the processes of one run."""

import json

_ABSENT = object()


def differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
  """Dotted keys whose values differ between `a` and `b` (present in one
  only counts), sorted."""
  keys = []
  for key in sorted(set(a) | set(b)):
    value_a, value_b = a.get(key, _ABSENT), b.get(key, _ABSENT)
    if isinstance(value_a, dict) and isinstance(value_b, dict):
      keys += differing_keys(value_a, value_b, f"{prefix}{key}.")
    elif value_a != value_b:
      keys.append(f"{prefix}{key}")
  return keys


def _shown(config: dict, key: str) -> str:
  for part in key.split("."):
    config = config.get(part, _ABSENT) if isinstance(config, dict) else (
        _ABSENT)
  return "absent" if config is _ABSENT else json.dumps(config)


def describe_differences(a: dict, b: dict, a_label: str, b_label: str,
                         most: int = 3) -> str:
  """"key: <a's value> <a_label>, <b's value> <b_label>; ..." for the first
  `most` differing keys, then "; and N more"; "" if none differ.

  Args:
    a, b: the two configs, as dicts of JSON types.
    a_label, b_label: where each value comes from ("here", "in
      config.json", "on process 1", ...).
    most: how many keys to name.
  """
  keys = differing_keys(a, b)
  text = "; ".join(f"{key}: {_shown(a, key)} {a_label}, {_shown(b, key)}"
                   f" {b_label}" for key in keys[:most])
  return text + (f"; and {len(keys) - most} more" if len(keys) > most
                 else "")

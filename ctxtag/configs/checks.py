"""The checks a config key can have: each returns `check(key, value)`, which
raises errors.ConfigError naming the key, the value and what was expected.

The keys' own checks stand beside their defaults, in ctxtag/configs/default.py.
"""

from collections.abc import Iterable
import math

from ctxtag import errors


def fail(key: str, value, expected: str):
  raise errors.ConfigError(f"config {key}={value!r}: expected {expected}")


def is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(minimum: int):
  def check(key, value):
    if not is_int(value) or value < minimum:
      fail(key, value, f"an integer >= {minimum}")
  return check


def number(low: float, high: float, low_open: bool, high_open: bool):
  """A finite number in an interval; `*_open` excludes that end."""
  def check(key, value):
    inside = (is_number(value) and math.isfinite(value)
              and (low < value if low_open else low <= value)
              and (value < high if high_open else value <= high))
    if not inside:
      interval = (("(" if low_open else "[") + f"{low:g}, {high:g}"
                  + (")" if high_open else "]"))
      fail(key, value, f"a finite number in {interval}")
  return check


def widths(key, value):
  if (not isinstance(value, (list, tuple)) or not value
      or not all(is_int(w) and w > 0 for w in value)):
    fail(key, value, "a non-empty list of positive integers")


def one_of(choices: Iterable[str]):
  choices = tuple(choices)
  def check(key, value):
    if value not in choices:
      fail(key, value, f"one of {list(choices)}")
  return check


def text(key, value):
  if not isinstance(value, str):
    fail(key, value, "a string")


def boolean(key, value):
  if not isinstance(value, bool):
    fail(key, value, "True or False")


def names_from(known_names):
  """A non-empty list of distinct names from `known_names()`, read when a
  config is checked (a table may have grown since import)."""
  def check(key, value):
    known = list(known_names())
    expected = f"a non-empty list of distinct names from {known}"
    if not isinstance(value, (list, tuple)) or not value:
      fail(key, value, expected)
    unknown = [name for name in value if name not in known]
    if unknown:
      fail(key, value, f"known model names only, {unknown[0]!r} is not one"
           f" of {known}")
    if len(set(value)) != len(value):
      fail(key, value, expected)
  return check


def fractions(key, value):
  """Train/validation/test shares, as ctxtag.sources.splits reads them."""
  if (not isinstance(value, (list, tuple)) or len(value) != 3
      or not all(is_number(v) and math.isfinite(v) and v > 0 for v in value)
      or abs(sum(value) - 1) > 1e-6):
    fail(key, value, "three positive numbers (train, validation, test)"
          " summing to 1")


POSITIVE = integer(1)
FINITE_POSITIVE = number(0, math.inf, True, True)
NON_NEGATIVE = number(0, math.inf, False, True)

"""What report.md, sweep.md and their plots share: numbers as table cells,
p-values as text, intervals as error bars, figures as PNG bytes.

One rule for each, so that a run's report and a sweep over runs print the
same value the same way.
"""

import io

import numpy as np


def _undefined(value) -> bool:
  return value is None or np.isnan(value)


def cell(value, ci=None) -> str:
  """A value as a table cell, with its interval where it has one.

  Args:
    value: a number; None or NaN where undefined.
    ci: its [low, high], or None; an end that is None or NaN drops the
      interval.

  Returns:
    "0.291 [0.280, 0.302]", "0.291" without an interval, "" for an
    undefined value.
  """
  if _undefined(value):
    return ""
  text = f"{value:.3f}"
  low, high = ci or (None, None)
  if not (_undefined(low) or _undefined(high)):
    text += f" [{low:.3f}, {high:.3f}]"
  return text


def p_value_text(p_value, prefix: str = "") -> str:
  """A p-value as text: `prefix` + "0.012", "6.3e-04" below 0.001, or
  "< 1e-300" for 0 (below the smallest float scipy returns); "" (without
  the prefix) where it is undefined.

  Args:
    p_value: a number in [0, 1]; None or NaN where undefined.
    prefix: put before a defined value ("p " gives "p 0.012").
  """
  if _undefined(p_value):
    return ""
  if p_value == 0:
    return prefix + "< 1e-300"
  return prefix + (f"{p_value:.3f}" if p_value >= 0.001
                   else f"{p_value:.1e}")


def error_bars(values, cis, clip: bool = False) -> np.ndarray:
  """matplotlib's `yerr`: the (2, n) distances from each value down and up
  to its interval's ends.

  Args:
    values: n values; None or NaN where undefined.
    cis: each value's [low, high], or None; an end may be None or NaN.
    clip: the sweeps' bars: a value beyond an end of its interval gets no
      bar on that side (0, not the distance), a value without both ends
      gets none (0), and any other undefined distance stays NaN, which
      matplotlib does not draw. Without it (the report's), every distance
      is its absolute value and an undefined one is 0.

  Returns:
    A float array of shape (2, n).
  """
  values_N = np.array([np.nan if v is None else v for v in values],
                      np.float64)
  ends_Nx2 = np.array([[np.nan if end is None else end for end in ci]
                       if ci else [np.nan, np.nan] for ci in cis],
                      np.float64).reshape(len(values_N), 2)
  distances_2xN = np.stack([values_N - ends_Nx2[:, 0],
                            ends_Nx2[:, 1] - values_N])
  if not clip:
    return np.nan_to_num(np.abs(distances_2xN))
  distances_2xN = np.maximum(distances_2xN, 0)  # NaN stays NaN
  without_ends = np.array([not ci or None in ci for ci in cis], bool)
  distances_2xN[:, without_ends] = 0
  return distances_2xN


def figure_png(figure, tight: bool = True, dpi: int = 100) -> bytes:
  """A matplotlib figure as PNG bytes, rendered by Agg (no pyplot, no GUI).

  Args:
    figure: a matplotlib.figure.Figure.
    tight: lay it out with `tight_layout` first.
    dpi: the resolution (the sweeps' plots use 80).
  """
  buffer = io.BytesIO()
  if tight:
    figure.tight_layout()
  figure.savefig(buffer, format="png", dpi=dpi)
  return buffer.getvalue()

"""The cells, p-values, error bars and PNGs that reports and sweeps share
(ctxtag.render), against hand-worked values."""

import math

from matplotlib import figure as mpl_figure
import numpy as np
import pytest

from ctxtag import render

NAN = float("nan")


@pytest.mark.parametrize("value,ci,text", [
    (0.2914, None, "0.291"),
    (0.2914, [0.28, 0.3025], "0.291 [0.280, 0.302]"),  # 0.3025 is below
    (-0.0086, (-0.0201, 0.0033), "-0.009 [-0.020, 0.003]"),
    (np.float32(0.5), [np.float64(0.25), 1], "0.500 [0.250, 1.000]"),
    (0.5, [None, None], "0.500"), (0.5, [NAN, 0.6], "0.500"),
    (0.5, [0.4, None], "0.500"), (None, [0.1, 0.2], ""), (NAN, None, ""),
    (math.inf, None, "inf"),
])
def test_cell(value, ci, text):
  assert render.cell(value, ci) == text


@pytest.mark.parametrize("p_value,text", [
    (0.0123, "0.012"), (0.001, "0.001"), (6.3e-4, "6.3e-04"),
    (1e-320, "1.0e-320"), (0, "< 1e-300"), (0.0, "< 1e-300"), (1.0, "1.000"),
])
def test_p_value_text(p_value, text):
  assert render.p_value_text(p_value) == text
  assert render.p_value_text(p_value, prefix="p ") == "p " + text


@pytest.mark.parametrize("undefined", [None, NAN])
def test_an_undefined_p_value_is_empty_without_its_prefix(undefined):
  assert render.p_value_text(undefined, prefix="p ") == ""


def test_error_bars_are_distances_to_the_ends():
  values = [0.5, 0.2, 0.3, NAN, 0.4]
  cis = [[0.4, 0.7], [0.25, 0.3], None, [0.1, 0.2], [NAN, NAN]]
  # The report's: absolute distances, 0 where undefined; 0.2 lies below
  # its interval [0.25, 0.3], 0.05 from its low end.
  np.testing.assert_allclose(render.error_bars(values, cis), [
      [0.1, 0.05, 0, 0, 0], [0.2, 0.1, 0, 0, 0]], atol=1e-15)
  # The sweeps': no bar toward an end the value lies beyond, none without
  # an interval, NaN (not drawn) where the value or an end is NaN.
  np.testing.assert_allclose(render.error_bars(values, cis, clip=True), [
      [0.1, 0, 0, NAN, NAN], [0.2, 0.1, 0, NAN, NAN]], atol=1e-15)
  assert render.error_bars([], []).shape == (2, 0)


def test_figure_png_is_a_png_of_the_asked_resolution():
  def figure():
    drawn = mpl_figure.Figure(figsize=(4, 3))
    drawn.subplots().plot([0, 1], [1, 0])
    return drawn

  for dpi in (80, 100):
    png = render.figure_png(figure(), dpi=dpi)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = (int.from_bytes(png[16 + 4 * i:20 + 4 * i], "big")
                     for i in (0, 1))
    assert (width, height) == (4 * dpi, 3 * dpi)
  assert render.figure_png(figure(), tight=False) != render.figure_png(
      figure())  # tight_layout moves the axes

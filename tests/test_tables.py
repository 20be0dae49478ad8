"""Prediction and ground-truth tables (ctxtag.tables): bad rows and
values name their file and line; good edge cases are read."""

import numpy as np
import pytest

from ctxtag import errors
from ctxtag import labels
from ctxtag import tables
from tests.fault_helpers import (GOOD_ROW, HEADER, TRACK_HEADER, track_rows,
    write_table)


def test_utf8_byte_order_mark_is_read_as_utf8(tmp_path):
  path = tmp_path / "gt.csv"
  path.write_bytes(("\ufeff" + HEADER + "\r\n" + GOOD_ROW + "\r\n"
                    + "3,4,0,1,0,0,0,0,0,0,0,0\r\n").encode("utf-8"))
  table = tables.read_groundtruth(str(path))
  assert table.song_id.tolist() == [0, 3]
  assert table.user_id.tolist() == [0, 4]
  assert table.values_RxC.argmax(axis=1).tolist() == [0, 1]


def test_id_beyond_int64_names_file_and_line(tmp_path):
  path = write_table(tmp_path / "gt.csv", HEADER,
                [GOOD_ROW, "9223372036854775808,2,0,1,0,0,0,0,0,0,0,0"])
  with pytest.raises(tables.TableError,
                     match=r"gt.csv, line 3: id 9223372036854775808 does not"
                     r" fit in 64 bits"):
    tables.read_groundtruth(path)
  # The largest int64 itself is an id like any other.
  path = write_table(tmp_path / "gt.csv", HEADER,
                [GOOD_ROW, "9223372036854775807,2,0,1,0,0,0,0,0,0,0,0"])
  assert tables.read_groundtruth(path).song_id[1] == np.iinfo(np.int64).max


def test_non_utf8_byte_names_file_and_line(tmp_path):
  path = tmp_path / "gt.csv"
  path.write_bytes((HEADER + "\n" + GOOD_ROW + "\n").encode()
                   + b"1,caf\xe9,0,1,0,0,0,0,0,0,0,0\n")
  with pytest.raises(tables.TableError,
                     match=r"gt.csv, line 3: byte b'\\xe9' is not UTF-8"):
    tables.read_groundtruth(str(path))


def test_error_is_a_user_error_and_a_value_error():
  assert issubclass(tables.TableError, errors.UserError)
  assert issubclass(tables.TableError, ValueError)


def test_blank_lines_are_skipped_and_lines_stay_the_files(tmp_path):
  path = write_table(tmp_path / "gt.csv", HEADER,
                [GOOD_ROW, "", "1,1,0,0,0,0,0,0,0,0,0,0"])
  with pytest.raises(tables.TableError, match=r"gt.csv, line 4: a ground"):
    tables.read_groundtruth(path)


@pytest.mark.parametrize("case,transform,shown", [
    ("percentages", lambda p: 100 * p, "car=70"),
    ("logits", lambda p: np.log(p / (1 - p)), "car=-0.847298"),
    ("negated", lambda p: -p, "car=-0.3"),
])
def test_audio_scores_outside_0_1_name_file_and_line(tmp_path, case,
                                                     transform, shown):
  probabilities = np.full((3, labels.NUM_LABELS), 0.5)
  probabilities[1] = 0.7
  probabilities[1, 0] = 0.3 if case != "percentages" else 0.7
  scores = probabilities.copy()
  scores[1:] = transform(probabilities[1:])
  path = write_table(tmp_path / "audio.csv", TRACK_HEADER, track_rows(scores))
  with pytest.raises(tables.TableError) as raised:
    tables.read_audio_predictions(path)
  assert str(raised.value) == (
      f"{path}, line 3: audio-model scores must lie in [0, 1], got {shown};"
      " give probabilities, not percentages, logits or negated scores")


def test_audio_scores_at_the_bounds_are_accepted(tmp_path):
  scores = np.zeros((2, labels.NUM_LABELS))
  scores[1] = 1.0
  path = write_table(tmp_path / "audio.csv", TRACK_HEADER, track_rows(scores))
  np.testing.assert_array_equal(
      tables.read_audio_predictions(path).values_RxC, scores)


def _pair_rows(rows):
  return [f"{i},{i}," + ",".join(f"{v:g}" for v in values)
          for i, values in enumerate(rows)]


def test_user_model_rows_must_be_distributions(tmp_path):
  uniform = np.full(labels.NUM_LABELS, 0.1)
  short = uniform.copy()
  short[0] = 0.0  # sums to 0.9: a context left out
  path = write_table(tmp_path / "user.csv", HEADER,
                _pair_rows([uniform, uniform, short]))
  with pytest.raises(tables.TableError) as raised:
    tables.read_pair_predictions(path)
  assert str(raised.value) == (
      f"{path}, line 4: a user-model row must be a distribution over the"
      " contexts summing to 1 (within 0.001), got a sum of 0.9")

  above = uniform.copy()
  above[0], above[1] = 1.2, -0.3
  path = write_table(tmp_path / "user.csv", HEADER, _pair_rows([uniform, above]))
  with pytest.raises(tables.TableError,
                     match=r"user.csv, line 3: user-model scores must lie in"
                     r" \[0, 1\], got car=1.2"):
    tables.read_pair_predictions(path)


def test_user_model_rows_within_tolerance_are_accepted(tmp_path):
  assert tables.ROW_SUM_TOLERANCE == 1e-3
  almost = np.full(labels.NUM_LABELS, 0.1)
  almost[0] += 0.0009  # sums to 1.0009
  path = write_table(tmp_path / "user.csv", HEADER, _pair_rows([almost]))
  assert tables.read_pair_predictions(path).values_RxC.sum() == (
      pytest.approx(1.0009))

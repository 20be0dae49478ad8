"""The manual dir's two layouts: which one it holds, what it must hold.

Either the CSV layout (`csv_reader`) or Million Playlist Dataset slices
(`mpd_reader`), never both; the builder's messages and inputs.json describe
the manual dir through `MANUAL_DOWNLOAD_INSTRUCTIONS`, `expected_files` and
`input_tables`.
"""

import glob
import os

from ctxtag.sources import user_embeddings
from ctxtag.sources.playlists import csv_reader
from ctxtag.sources.playlists import inputs as inputs_lib
from ctxtag.sources.playlists import mpd_reader

_PLAYLISTS_CSV = inputs_lib.PLAYLISTS_FILE
_TRACKS_CSV = inputs_lib.PLAYLIST_TRACKS_FILE
_MPD = inputs_lib.MPD_PATTERN

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
Put into the manual dir either {_PLAYLISTS_CSV} (playlist_id,user_id,title)
and {_TRACKS_CSV} (playlist_id,song_id), or Million Playlist
Dataset slices (*.json); each track's audio as audio/<song_id>.<ext> (for
MPD slices: audio/<track URI id>.<ext>), or else
spectrograms/mels<song_id>.npz (mels<track URI id>.npz); and, optionally,
user_embeddings.csv (else embeddings are computed from the playlists).
"""


def _columns(names: tuple[str, ...]) -> str:
  return ",".join(names)


def expected_files(manual_dir: str) -> str:
  """What the manual dir must hold, in one line, for messages.

  Args:
    manual_dir: unused; the builder asks every source the same way.

  Returns:
    Both layouts and the audio, in one sentence.
  """
  del manual_dir  # the previews' fetcher reads the zenodo release only
  return (f"{_PLAYLISTS_CSV} ({_columns(inputs_lib.PLAYLISTS_COLUMNS)}) and"
          f" {_TRACKS_CSV} ({_columns(inputs_lib.PLAYLIST_TRACKS_COLUMNS)}),"
          f" or Million Playlist Dataset slices ({_MPD}); and each"
          " track's audio/<song_id>.<ext> or spectrograms/mels<song_id>.npz")


def _slices(manual_dir: str) -> list[str]:
  """The MPD slices in `manual_dir`, sorted by path."""
  return sorted(glob.glob(os.path.join(glob.escape(manual_dir), _MPD)))


def input_tables(manual_dir: str) -> tuple[list[str], list[str]]:
  """The files a build reads, for inputs.json.

  Args:
    manual_dir: the playlists, the audio and optionally user_embeddings.csv.

  Returns:
    The tables hashed (the two CSVs, unless slices are there, and the
    optional user_embeddings.csv), and the MPD slices' names, which can
    be gigabytes (stat'ed only).
  """
  slices = [os.path.basename(path) for path in _slices(manual_dir)]
  tables = [] if slices else [_PLAYLISTS_CSV, _TRACKS_CSV]
  return tables + [user_embeddings.FILE], slices


def read_playlist_inputs(manual_dir: str) -> inputs_lib.PlaylistInputs:
  """Reads playlists.csv + playlist_tracks.csv, or MPD slices (*.json).

  Nothing here is skipped and counted: every defect of the inputs is an
  error (the rules' skips happen in `mine`).

  Args:
    manual_dir: holding one of the two layouts.

  Returns:
    The playlists and their track entries.

  Raises:
    PlaylistError: naming the file and row of the first defect, or the
      layouts expected when neither is in `manual_dir`.
  """
  csv_path = os.path.join(manual_dir, _PLAYLISTS_CSV)
  tracks_path = os.path.join(manual_dir, _TRACKS_CSV)
  slices = _slices(manual_dir)
  has_csv = os.path.exists(csv_path) or os.path.exists(tracks_path)
  if has_csv and slices:
    raise inputs_lib.PlaylistError(
        f"{manual_dir}: holds both {_PLAYLISTS_CSV}/{_TRACKS_CSV}"
        f" and {len(slices)} *.json slice(s) ({os.path.basename(slices[0])},"
        " ...); keep one layout")
  if slices:
    return mpd_reader.read_mpd(slices)
  for path in (csv_path, tracks_path):
    if not os.path.isfile(path):
      raise inputs_lib.PlaylistError(
          f"{path}: no such file; expected {_PLAYLISTS_CSV}"
          f" ({_columns(inputs_lib.PLAYLISTS_COLUMNS)}) and {_TRACKS_CSV}"
          f" ({_columns(inputs_lib.PLAYLIST_TRACKS_COLUMNS)}), or Million"
          f" Playlist Dataset slices ({_MPD}) in {manual_dir}")
  return csv_reader.read_csvs(csv_path, tracks_path)

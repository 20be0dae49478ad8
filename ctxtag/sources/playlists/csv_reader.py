"""The CSV layout: playlists.csv (playlist_id,user_id,title) and
playlist_tracks.csv (playlist_id,song_id), streamed into int64 columns.

Extra columns are ignored and blank lines skipped; any other defect is a
`PlaylistError` naming the file and line.
"""

import array
import csv

import numpy as np

from ctxtag.sources.playlists import inputs as inputs_lib


def read_csvs(playlists_path: str, tracks_path: str
              ) -> inputs_lib.PlaylistInputs:
  """Reads the CSV layout.

  Args:
    playlists_path: playlists.csv.
    tracks_path: playlist_tracks.csv.

  Returns:
    The playlists and track entries, rows named by their CSV line.

  Raises:
    PlaylistError: naming the file and line of the first defect.
  """
  playlist_id, user_id, titles, line_L = _read_playlists(playlists_path)
  order_L = inputs_lib.unique_id_order(
      playlist_id, lambda first, second: inputs_lib.PlaylistError(
          f"{playlists_path} line {line_L[second]}: playlist_id"
          f" {playlist_id[second]} repeats line {line_L[first]}; playlist"
          " ids must be unique"))
  track_playlist_id, track_song = _read_tracks(tracks_path)
  track_playlist = _playlist_rows(tracks_path, playlist_id, order_L,
                                  track_playlist_id, playlists_path)
  return inputs_lib.PlaylistInputs(
      playlist_id=playlist_id, user_id=user_id, title=titles,
      track_playlist=track_playlist, track_song=track_song,
      files=(playlists_path,),
      playlist_file=np.zeros(len(titles), np.int64),
      playlist_row=line_L)


def _read_playlists(path: str
                    ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
  """playlists.csv as int64 ids, int64 users, titles and int64 lines."""
  ids, users, lines = array.array("q"), array.array("q"), array.array("q")
  titles = []

  def add_playlist(row, indices, line):
    playlist, user = int(row[indices[0]]), int(row[indices[1]])
    title = row[indices[2]]
    ids.append(playlist)
    users.append(user)
    titles.append(title)
    lines.append(line)

  _read_rows(path, inputs_lib.PLAYLISTS_COLUMNS, add_playlist)
  return (inputs_lib.int64_array(ids), inputs_lib.int64_array(users), titles,
          inputs_lib.int64_array(lines))


def _read_tracks(path: str) -> tuple[np.ndarray, np.ndarray]:
  """playlist_tracks.csv as int64 playlist ids and int64 song ids."""
  track_ids, songs = array.array("q"), array.array("q")

  def add_track(row, indices, line):
    del line
    playlist, song = int(row[indices[0]]), int(row[indices[1]])
    track_ids.append(playlist)
    songs.append(song)

  _read_rows(path, inputs_lib.PLAYLIST_TRACKS_COLUMNS, add_track)
  return inputs_lib.int64_array(track_ids), inputs_lib.int64_array(songs)


def _header_columns(path: str, reader, columns: tuple[str, ...]
                    ) -> list[int]:
  """Indices of `columns` in the header row; PlaylistError if absent."""
  header = [name.strip() for name in next(reader, [])]
  missing = [name for name in columns if name not in header]
  if missing:
    raise inputs_lib.PlaylistError(
        f"{path} line 1: missing column(s) {', '.join(missing)}; expected a"
        f" header with {','.join(columns)}, got {','.join(header) or 'none'}")
  return [header.index(name) for name in columns]


def _row_error(path: str, line: int, row: list[str], indices: list[int],
               columns: tuple[str, ...]) -> inputs_lib.PlaylistError:
  """Why `row` could not be parsed (the error path only)."""
  if len(row) <= max(indices):
    return inputs_lib.PlaylistError(
        f"{path} line {line}: {len(row)} field(s), expected the columns"
        f" {','.join(columns)}")
  for index, name in zip(indices, columns):
    if name == "title":
      continue
    try:
      value = int(row[index])
    except ValueError:
      return inputs_lib.PlaylistError(
          f"{path} line {line}: {name} must be an integer, got"
          f" {row[index]!r}")
    if not inputs_lib.INT64_MIN <= value <= inputs_lib.INT64_MAX:
      return inputs_lib.PlaylistError(
          f"{path} line {line}: {name} {value} is beyond the int64 range")
  return inputs_lib.PlaylistError(
      f"{path} line {line}: cannot read the row {row!r}")


def _read_rows(path: str, columns: tuple[str, ...], add_row) -> None:
  """Streams the data rows of a CSV into `add_row(row, indices, line)`.

  `indices` are those of `columns` in the header. `add_row` parses the row
  and raises IndexError, ValueError or OverflowError on a bad one, which
  becomes a PlaylistError naming the line; blank lines are skipped. The
  loop is resumed after a blank line instead of testing every row, which
  keeps millions of rows fast.
  """
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.reader(f)
    try:
      indices = _header_columns(path, reader, columns)
      row = []
      while True:
        try:
          for row in reader:
            add_row(row, indices, reader.line_num)
          return
        except UnicodeDecodeError:
          raise
        except (IndexError, ValueError, OverflowError):
          if row:
            raise _row_error(path, reader.line_num, row, indices,
                             columns) from None
    except UnicodeDecodeError:
      raise inputs_lib.not_utf8(path) from None
    except csv.Error as error:
      raise inputs_lib.PlaylistError(
          f"{path} line {reader.line_num}: not a valid CSV row ({error})"
      ) from None


def _data_row_line(path: str, row_index: int) -> int:
  """The line of the `row_index`-th non-blank data row (error path only)."""
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.reader(f)
    next(reader, None)
    count = 0
    for row in reader:
      if row:
        if count == row_index:
          return reader.line_num
        count += 1
  return 0


def _playlist_rows(tracks_path: str, playlist_id: np.ndarray,
                   order_L: np.ndarray, track_playlist_id: np.ndarray,
                   playlists_path: str) -> np.ndarray:
  """Row of each track entry's playlist; PlaylistError if it has none."""
  sorted_ids = playlist_id[order_L]
  position = np.searchsorted(sorted_ids, track_playlist_id)
  position = np.minimum(position, max(len(sorted_ids) - 1, 0))
  found = (sorted_ids[position] == track_playlist_id if len(sorted_ids)
           else np.zeros(len(track_playlist_id), bool))
  if not found.all():
    missing = int(np.argmin(found))
    raise inputs_lib.PlaylistError(
        f"{tracks_path} line {_data_row_line(tracks_path, missing)}:"
        f" playlist_id {track_playlist_id[missing]} is not in"
        f" {playlists_path}; every track's playlist needs a row there")
  return order_L[position] if len(sorted_ids) else position

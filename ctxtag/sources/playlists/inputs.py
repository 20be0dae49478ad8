"""Playlists as read from either layout, and what both readers share.

The two layouts (`csv_reader`, `mpd_reader`) fill one `PlaylistInputs`;
their defects are `PlaylistError`s naming the file and row.
"""

import array
import dataclasses
import os
from typing import Callable

import numpy as np

from ctxtag import errors

PLAYLISTS_FILE = "playlists.csv"
PLAYLIST_TRACKS_FILE = "playlist_tracks.csv"
PLAYLISTS_COLUMNS = ("playlist_id", "user_id", "title")
PLAYLIST_TRACKS_COLUMNS = ("playlist_id", "song_id")
MPD_PATTERN = "*.json"

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


class PlaylistError(errors.UserError, ValueError):
  """Playlist input that cannot be read as the layout requires."""


@dataclasses.dataclass(frozen=True)
class PlaylistInputs:
  """Playlists and their tracks as read, one layout or the other.

  Attributes:
    playlist_id: int64[L], unique.
    user_id: int64[L], each playlist's creator.
    title: the L titles.
    track_playlist: int64[E], row in the playlist arrays of each track entry.
    track_song: int64[E], the song of each track entry.
    files: the files read, for messages.
    playlist_file: int64[L], index into `files` of each playlist's file.
    playlist_row: int64[L], each playlist's line (CSV) or position in the
      slice's "playlists" list (JSON).
    song_uris: song id -> URI id (audio file stem), for MPD slices; else None.
  """
  playlist_id: np.ndarray
  user_id: np.ndarray
  title: list[str]
  track_playlist: np.ndarray
  track_song: np.ndarray
  files: tuple[str, ...]
  playlist_file: np.ndarray
  playlist_row: np.ndarray
  song_uris: dict[int, str] | None = None

  def where(self, playlist: int, short: bool = False) -> str:
    """The file and row of playlist row `playlist`, e.g. "x.csv line 7".

    Args:
      playlist: a row of the playlist arrays.
      short: name the file without its directory.

    Returns:
      "<file> line <n>" for the CSV layout, else
      "<file> playlists[<position>] (pid <pid>)".
    """
    path = self.files[self.playlist_file[playlist]]
    if short:
      path = os.path.basename(path)
    row = int(self.playlist_row[playlist])
    if self.song_uris is None:
      return f"{path} line {row}"
    return f"{path} playlists[{row}] (pid {int(self.playlist_id[playlist])})"


def unique_id_order(playlist_id_L: np.ndarray,
                    repeat_error: Callable[[int, int], PlaylistError]
                    ) -> np.ndarray:
  """The order sorting the playlist ids, which must not repeat.

  Args:
    playlist_id_L: int64[L], one id per playlist row.
    repeat_error: (first row, repeating row) -> the error naming both,
      in the words of the layout they were read from.

  Returns:
    int64[L], a stable argsort of `playlist_id_L`.

  Raises:
    PlaylistError: from `repeat_error`, for the smallest repeated id and
      its first two rows.
  """
  order_L = np.argsort(playlist_id_L, kind="stable")
  sorted_ids = playlist_id_L[order_L]
  repeated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
  if len(repeated):
    raise repeat_error(order_L[repeated[0]], order_L[repeated[0] + 1])
  return order_L


def _undecodable_line(path: str) -> int:
  """The first line of `path` that is not UTF-8 (the error path only)."""
  with open(path, "rb") as f:
    for number, line in enumerate(f, start=1):
      try:
        line.decode("utf-8-sig" if number == 1 else "utf-8")
      except UnicodeDecodeError:
        return number
  return 0


def not_utf8(path: str) -> PlaylistError:
  """The error for a file that does not decode, naming its first bad line."""
  return PlaylistError(f"{path} line {_undecodable_line(path)}: a byte that"
                       " is not UTF-8; save the file as UTF-8")


def int64_array(values: array.array) -> np.ndarray:
  """An array("q") as int64, without copying."""
  return np.frombuffer(values, np.int64) if len(values) else np.zeros(
      0, np.int64)

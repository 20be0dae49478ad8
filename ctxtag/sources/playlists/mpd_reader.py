r"""The Million Playlist Dataset layout: slices `*.json` holding
  {"playlists": [{"pid": 7, "name": "gym", "tracks": [{"track_uri": ...}]}]}

Each playlist is its own user (user_id = pid) and each track URI gets a
stable int64 song id (`song_id_of_uri`); the URI's id part (after the last
":") names the track's audio, `audio/<uri id>.<ext>`, and the mapping song
id -> URI id comes back with the inputs so it can be kept beside the dataset.
Extra JSON keys are ignored.
"""

import array
import hashlib
import json
import re

import numpy as np

from ctxtag.sources.playlists import inputs as inputs_lib

_SONG_ID_MASK = 2**63 - 1
_AUDIO_STEM = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def song_id_of_uri(uri_id: str) -> int:
  """A stable int64 song id for a track's URI id: sha256, 63 bits.

  Args:
    uri_id: the part of a track URI after its last ":".

  Returns:
    An id in [0, 2**63).
  """
  digest = hashlib.sha256(uri_id.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") & _SONG_ID_MASK


class _SongIds:
  """URI <-> song id, hashing each URI once; collisions are errors."""

  def __init__(self):
    self.song_of_uri: dict[str, int] = {}  # the whole URI, for speed
    self.uri_of_song: dict[int, str] = {}  # the URI id, the audio stem

  def new_song_id(self, uri: object, where: str) -> int:
    """The song id of a URI not met before (the slow path)."""
    if not isinstance(uri, str):
      raise inputs_lib.PlaylistError(
          f"{where}: track_uri must be text, got {uri!r}")
    uri_id = uri.rsplit(":", 1)[-1]
    if not _AUDIO_STEM.fullmatch(uri_id):
      raise inputs_lib.PlaylistError(
          f"{where}: track_uri {uri!r} has no usable id after its last ':'"
          " (letters, digits, '_', '-', '.'; it names the audio file)")
    song = song_id_of_uri(uri_id)
    other = self.uri_of_song.setdefault(song, uri_id)
    if other != uri_id:
      raise inputs_lib.PlaylistError(
          f"{where}: track URI ids {other!r} and {uri_id!r} hash to the same"
          f" song id {song}; rename one track's URI id")
    self.song_of_uri[uri] = song
    return song

  def append_song_ids(self, tracks: list, where: str, pid: int,
                      track_song: array.array) -> None:
    """Appends the song id of each track of a playlist to `track_song`."""
    known = self.song_of_uri
    for number, track in enumerate(tracks):
      uri = track.get("track_uri") if isinstance(track, dict) else None
      song = known.get(uri) if isinstance(uri, str) else None
      if song is None:
        song = self.new_song_id(uri, f"{where}.tracks[{number}] (pid {pid})")
      track_song.append(song)


def _load_slice(path: str) -> list:
  """The "playlists" list of one MPD slice."""
  try:
    with open(path, encoding="utf-8-sig") as f:
      data = json.load(f)
  except UnicodeDecodeError:
    raise inputs_lib.not_utf8(path) from None
  except json.JSONDecodeError as error:
    raise inputs_lib.PlaylistError(f"{path} line {error.lineno}: not valid"
                                   f" JSON ({error.msg})") from None
  if not isinstance(data, dict) or not isinstance(data.get("playlists"),
                                                  list):
    raise inputs_lib.PlaylistError(
        f'{path}: expected an object with a "playlists" list'
        ' (a Million Playlist Dataset slice)')
  return data["playlists"]


def _checked_playlist(playlist: object, where: str
                      ) -> tuple[int, str, list]:
  """The pid, name and tracks of one playlist; PlaylistError if malformed."""
  if not isinstance(playlist, dict):
    raise inputs_lib.PlaylistError(
        f"{where}: expected an object with pid, name and tracks")
  pid, name = playlist.get("pid"), playlist.get("name")
  tracks = playlist.get("tracks")
  if isinstance(pid, bool) or not isinstance(pid, int) or not (
      inputs_lib.INT64_MIN <= pid <= inputs_lib.INT64_MAX):
    raise inputs_lib.PlaylistError(
        f"{where}: pid must be an int64 integer, got {pid!r}")
  if not isinstance(name, str):
    raise inputs_lib.PlaylistError(
        f"{where} (pid {pid}): name must be text, got {name!r}")
  if not isinstance(tracks, list):
    raise inputs_lib.PlaylistError(
        f"{where} (pid {pid}): tracks must be a list, got {tracks!r}")
  return pid, name, tracks


def _check_unique_pids(paths: list[str], playlist_id: np.ndarray,
                       playlist_file: np.ndarray,
                       playlist_row: np.ndarray) -> None:
  """PlaylistError naming both places of the first repeated pid."""
  def repeat_error(first, second):
    return inputs_lib.PlaylistError(
        f"{paths[playlist_file[second]]} playlists[{playlist_row[second]}]:"
        f" pid {playlist_id[second]} repeats"
        f" {paths[playlist_file[first]]} playlists[{playlist_row[first]}];"
        " pids must be unique")

  inputs_lib.unique_id_order(playlist_id, repeat_error)


def read_mpd(paths: list[str]) -> inputs_lib.PlaylistInputs:
  """Reads MPD slices: each playlist its own user, URIs hashed to song ids.

  Args:
    paths: the slices, in the order their playlists are numbered.

  Returns:
    The playlists and track entries, rows named by their position in
    their slice's "playlists" list, with the song id -> URI id mapping.

  Raises:
    PlaylistError: naming the slice and position of the first defect.
  """
  ids, files, rows, titles = [], [], [], []
  track_playlist, track_song = array.array("q"), array.array("q")
  song_ids = _SongIds()
  for file_index, path in enumerate(paths):
    for position, playlist in enumerate(_load_slice(path)):
      where = f"{path} playlists[{position}]"
      pid, name, tracks = _checked_playlist(playlist, where)
      song_ids.append_song_ids(tracks, where, pid, track_song)
      track_playlist.extend([len(ids)] * len(tracks))
      ids.append(pid)
      files.append(file_index)
      rows.append(position)
      titles.append(name)
  playlist_id = np.asarray(ids, np.int64)
  playlist_file = np.asarray(files, np.int64)
  playlist_row = np.asarray(rows, np.int64)
  _check_unique_pids(paths, playlist_id, playlist_file, playlist_row)
  return inputs_lib.PlaylistInputs(
      playlist_id=playlist_id, user_id=playlist_id.copy(), title=titles,
      track_playlist=inputs_lib.int64_array(track_playlist),
      track_song=inputs_lib.int64_array(track_song),
      files=tuple(paths), playlist_file=playlist_file,
      playlist_row=playlist_row, song_uris=song_ids.uri_of_song)

r"""Contexts mined from users' own playlists: the paper's collection method.

Inputs, in the manual dir, one of two layouts:
  playlists.csv        playlist_id,user_id,title   (one row a playlist)
  playlist_tracks.csv  playlist_id,song_id         (one row a track in one)
or Million Playlist Dataset slices, `*.json` holding
  {"playlists": [{"pid": 7, "name": "gym", "tracks": [{"track_uri": ...}]}]}
where each playlist is its own user (user_id = pid) and each track URI gets a
stable int64 song id (`song_id_of_uri`); the URI's id part (after the last
":") names the track's audio, `audio/<uri id>.<ext>`, and the mapping song
id -> URI id comes back with the inputs so it can be kept beside the dataset.
Extra columns or JSON keys are ignored; blank CSV lines are skipped.

The collection rules (docs/paper.md; thresholds in `MiningRules`):
  1. A playlist's context is the keyword found in its title as a whole word
     (`title_contexts`): title and keywords are Unicode-NFKC-normalised and
     case-folded ("GYM!!", full-width "ｇｙｍ"), and words are runs of letters,
     so digits and "_" separate them too ("gym_songs", "gym2", "gym-vibes",
     "my gym songs"; not "workouts", "Tonight", "Carpool"). A hyphenated
     word whose parts join into a keyword reads as it ("work-out mix":
     workout, not work). A title without a keyword is not a context
     playlist; one naming two or more different contexts is ambiguous and
     skipped (counted). The same keyword twice is fine.
  2. Each (user, song) in that user's context playlists gets the set of
     their contexts: exactly one makes a pair; several make it conflicting,
     and it is dropped (counted).
  3. A track is kept when its pairs come from `min_users` to `max_users`
     distinct users and carry at least `min_contexts` distinct contexts; one
     pass, no iteration.

Every dropped pair is counted under exactly one reason of the build report:
  ambiguous_title         a playlist whose title names several contexts; its
                          pairs are those of its (user, song) entries that no
                          unambiguous context playlist of the user gives
                          (each counted once, under the first such playlist);
  conflicting_contexts    a (user, song) with several contexts, one pair each;
  track_too_few_users     a track with pairs from fewer than min_users users;
  track_too_many_users    ... from more than max_users users;
  track_too_few_contexts  ... with the users right but too few contexts.
A track failing several track rules is counted under the first of the three
in that order (users before contexts). The report's "users" stay 0: these
rules take out pairs and tracks, never a user as such.

Bad input that is not a rule's case (a missing file or column, an
unparsable id, a playlist id of playlist_tracks.csv without a playlist, a
repeated playlist id, a title that is not text, a byte that is not UTF-8)
is a `PlaylistError` naming the file and row.
"""

import array
import csv
import dataclasses
import functools
import glob
import hashlib
import json
import os
import re
import unicodedata

import numpy as np

from ctxtag import errors
from ctxtag import labels
from ctxtag.sources import assemble
from ctxtag.sources import build_report
from ctxtag.sources import interactions as interactions_lib
from ctxtag.sources import mels
from ctxtag.sources import pairs as pairs_lib
from ctxtag.sources import user_embeddings

PLAYLISTS_FILE = "playlists.csv"
PLAYLIST_TRACKS_FILE = "playlist_tracks.csv"
PLAYLISTS_COLUMNS = ("playlist_id", "user_id", "title")
PLAYLIST_TRACKS_COLUMNS = ("playlist_id", "song_id")
MPD_PATTERN = "*.json"

AMBIGUOUS_TITLE = "ambiguous_title"
CONFLICTING_CONTEXTS = "conflicting_contexts"
TRACK_TOO_FEW_USERS = "track_too_few_users"
TRACK_TOO_MANY_USERS = "track_too_many_users"
TRACK_TOO_FEW_CONTEXTS = "track_too_few_contexts"
# Precedence of the track rules: a track is counted under the first it fails.
TRACK_REASONS = (TRACK_TOO_FEW_USERS, TRACK_TOO_MANY_USERS,
                 TRACK_TOO_FEW_CONTEXTS)

# Context of a playlist without a keyword, and of an ambiguous one.
NO_CONTEXT = -1
AMBIGUOUS = -2

_INT64_MIN, _INT64_MAX = -2**63, 2**63 - 1
_SONG_ID_MASK = 2**63 - 1
_WORD_EDGES = re.compile(r"\w(.*\w)?", re.DOTALL)
_AUDIO_STEM = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
Put into the manual dir either {PLAYLISTS_FILE} (playlist_id,user_id,title)
and {PLAYLIST_TRACKS_FILE} (playlist_id,song_id), or Million Playlist
Dataset slices (*.json); each track's audio as audio/<song_id>.<ext> (for
MPD slices: audio/<track URI id>.<ext>), or else
spectrograms/mels<song_id>.npz (mels<track URI id>.npz); and, optionally,
user_embeddings.csv (else embeddings are computed from the playlists).
"""


def expected_files(manual_dir: str) -> str:
  """What the manual dir must hold, in one line, for messages."""
  del manual_dir  # the previews' fetcher reads the zenodo release only
  return (f"{PLAYLISTS_FILE} ({','.join(PLAYLISTS_COLUMNS)}) and"
          f" {PLAYLIST_TRACKS_FILE} ({','.join(PLAYLIST_TRACKS_COLUMNS)}), or"
          f" Million Playlist Dataset slices ({MPD_PATTERN}); and each"
          " track's audio/<song_id>.<ext> or spectrograms/mels<song_id>.npz")


def input_tables(manual_dir: str) -> tuple[list[str], list[str]]:
  """The tables a build reads (hashed in inputs.json: the two CSVs and the
  optional user_embeddings.csv), and the MPD slices, which can be
  gigabytes (stat'ed only)."""
  slices = sorted(os.path.basename(path) for path in glob.glob(
      os.path.join(glob.escape(manual_dir), MPD_PATTERN)))
  tables = [] if slices else [PLAYLISTS_FILE, PLAYLIST_TRACKS_FILE]
  return tables + [user_embeddings.FILE], slices


class PlaylistError(errors.UserError, ValueError):
  """Playlist input that cannot be read as the layout requires."""


@dataclasses.dataclass(frozen=True)
class MiningRules:
  """The thresholds of the collection rules; checked on construction.

  Attributes:
    min_users: a kept track has pairs from at least this many distinct users.
    max_users: ... and from at most this many.
    min_contexts: a kept track carries at least this many distinct contexts.
    keywords: what marks a context in a title: "label" (the label's own name,
      e.g. "gym") or "keyword=label" (e.g. "training=workout"); every label
      must be one of `ctxtag.labels.LABELS`. Ambiguity is judged on the
      contexts the keywords stand for: "workout training" with
      training=workout names one context, not two.
  """
  min_users: int = 5
  max_users: int = 10
  min_contexts: int = 3
  keywords: tuple[str, ...] = labels.LABELS

  def __post_init__(self):
    object.__setattr__(self, "keywords", tuple(self.keywords))
    for name in ("min_users", "max_users", "min_contexts"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise errors.ConfigError(
            f"playlist rule {name} must be an integer >= 1, got {value!r}")
    if self.max_users < self.min_users:
      raise errors.ConfigError(
          f"playlist rule max_users={self.max_users} is below"
          f" min_users={self.min_users}")
    if self.min_contexts > labels.NUM_LABELS:
      raise errors.ConfigError(
          f"playlist rule min_contexts must be at most {labels.NUM_LABELS}"
          f" (the number of labels), got {self.min_contexts}")
    self.keyword_labels()

  def keyword_labels(self) -> dict[str, int]:
    """Lower-case keyword -> label index; ConfigError on a bad entry."""
    if not self.keywords:
      raise errors.ConfigError("playlist rule keywords is empty; expected"
                               " keywords such as gym or training=workout")
    mapping = {}
    for entry in self.keywords:
      keyword, _, label = str(entry).partition("=")
      keyword, label = keyword.strip().lower(), (label or keyword).strip()
      if label.lower() not in labels.LABEL_INDEX:
        raise errors.ConfigError(
            f"playlist rule keywords: {entry!r} maps to {label!r}, which is"
            f" not a label; expected one of {', '.join(labels.LABELS)}")
      if not _WORD_EDGES.fullmatch(keyword):
        raise errors.ConfigError(
            f"playlist rule keywords: {entry!r} must start and end with a"
            " letter or digit (it is matched as a whole word)")
      index = labels.LABEL_INDEX[label.lower()]
      if mapping.setdefault(keyword, index) != index:
        raise errors.ConfigError(
            f"playlist rule keywords: {keyword!r} maps to two labels")
    return mapping


@dataclasses.dataclass(frozen=True)
class PlaylistInputs:
  """Playlists and their tracks as read, one layout or the other.

  Attributes:
    playlist_id: int64[P], unique.
    user_id: int64[P], each playlist's creator.
    title: the P titles.
    track_playlist: int64[E], row in the playlist arrays of each track entry.
    track_song: int64[E], the song of each track entry.
    files: the files read, for messages.
    playlist_file: int64[P], index into `files` of each playlist's file.
    playlist_row: int64[P], each playlist's line (CSV) or position in the
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
    """
    path = self.files[self.playlist_file[playlist]]
    if short:
      path = os.path.basename(path)
    row = int(self.playlist_row[playlist])
    if self.song_uris is None:
      return f"{path} line {row}"
    return f"{path} playlists[{row}] (pid {int(self.playlist_id[playlist])})"


@dataclasses.dataclass(frozen=True)
class MinedPairs:
  """What the collection rules keep, and what embeddings are computed from.

  Attributes:
    pairs: the kept (song, user, context) pairs, sorted by song then user.
    interactions: every distinct (user, song) of every playlist, context or
      not: the listening data for user embeddings.
    song_uris: song id -> URI id for MPD slices, else None.
    stats: counts along the way: playlists, track_entries, users, songs,
      interactions, context_playlists, ambiguous_playlists, candidate_pairs
      (distinct (user, song) of context and ambiguous playlists),
      conflicting_pairs, kept_pairs, kept_tracks, kept_users.
  """
  pairs: pairs_lib.Pairs
  interactions: interactions_lib.Interactions
  song_uris: dict[int, str] | None
  stats: dict[str, int]


# Reading.


def read_playlist_inputs(manual_dir: str) -> PlaylistInputs:
  """Reads playlists.csv + playlist_tracks.csv, or MPD slices (*.json).

  Nothing here is skipped and counted: every defect of the inputs is an
  error (the rules' skips happen in `mine`).

  Raises:
    PlaylistError: naming the file and row of the first defect, or the
      layouts expected when neither is in `manual_dir`.
  """
  csv_path = os.path.join(manual_dir, PLAYLISTS_FILE)
  tracks_path = os.path.join(manual_dir, PLAYLIST_TRACKS_FILE)
  slices = sorted(glob.glob(os.path.join(glob.escape(manual_dir),
                                         MPD_PATTERN)))
  has_csv = os.path.exists(csv_path) or os.path.exists(tracks_path)
  if has_csv and slices:
    raise PlaylistError(
        f"{manual_dir}: holds both {PLAYLISTS_FILE}/{PLAYLIST_TRACKS_FILE}"
        f" and {len(slices)} *.json slice(s) ({os.path.basename(slices[0])},"
        " ...); keep one layout")
  if slices:
    return _read_mpd(slices)
  for path in (csv_path, tracks_path):
    if not os.path.isfile(path):
      raise PlaylistError(
          f"{path}: no such file; expected {PLAYLISTS_FILE}"
          f" ({','.join(PLAYLISTS_COLUMNS)}) and {PLAYLIST_TRACKS_FILE}"
          f" ({','.join(PLAYLIST_TRACKS_COLUMNS)}), or Million Playlist"
          f" Dataset slices ({MPD_PATTERN}) in {manual_dir}")
  return _read_csvs(csv_path, tracks_path)


def _undecodable_line(path: str) -> int:
  """The first line of `path` that is not UTF-8 (the error path only)."""
  with open(path, "rb") as f:
    for number, line in enumerate(f, start=1):
      try:
        line.decode("utf-8-sig" if number == 1 else "utf-8")
      except UnicodeDecodeError:
        return number
  return 0


def _not_utf8(path: str) -> PlaylistError:
  return PlaylistError(f"{path} line {_undecodable_line(path)}: a byte that"
                       " is not UTF-8; save the file as UTF-8")


def _header_columns(path: str, reader, columns: tuple[str, ...]
                    ) -> list[int]:
  """Indices of `columns` in the header row; PlaylistError if absent."""
  header = [name.strip() for name in next(reader, [])]
  missing = [name for name in columns if name not in header]
  if missing:
    raise PlaylistError(
        f"{path} line 1: missing column(s) {', '.join(missing)}; expected a"
        f" header with {','.join(columns)}, got {','.join(header) or 'none'}")
  return [header.index(name) for name in columns]


def _row_error(path: str, line: int, row: list[str], indices: list[int],
               columns: tuple[str, ...]) -> PlaylistError:
  """Why `row` could not be parsed (the error path only)."""
  if len(row) <= max(indices):
    return PlaylistError(
        f"{path} line {line}: {len(row)} field(s), expected the columns"
        f" {','.join(columns)}")
  for index, name in zip(indices, columns):
    if name == "title":
      continue
    try:
      value = int(row[index])
    except ValueError:
      return PlaylistError(f"{path} line {line}: {name} must be an integer,"
                           f" got {row[index]!r}")
    if not _INT64_MIN <= value <= _INT64_MAX:
      return PlaylistError(f"{path} line {line}: {name} {value} is beyond"
                           " the int64 range")
  return PlaylistError(f"{path} line {line}: cannot read the row {row!r}")


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
      raise _not_utf8(path) from None
    except csv.Error as error:
      raise PlaylistError(f"{path} line {reader.line_num}: not a valid CSV"
                          f" row ({error})") from None


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


def _int64(values: array.array) -> np.ndarray:
  return np.frombuffer(values, np.int64) if len(values) else np.zeros(
      0, np.int64)


def _read_csvs(playlists_path: str, tracks_path: str) -> PlaylistInputs:
  """The CSV layout, streamed row by row into int64 columns."""
  ids, users, lines = array.array("q"), array.array("q"), array.array("q")
  titles = []

  def add_playlist(row, indices, line):
    playlist, user = int(row[indices[0]]), int(row[indices[1]])
    title = row[indices[2]]
    ids.append(playlist)
    users.append(user)
    titles.append(title)
    lines.append(line)

  _read_rows(playlists_path, PLAYLISTS_COLUMNS, add_playlist)
  playlist_id, line_of_playlist = _int64(ids), _int64(lines)
  order_P = _check_unique_playlists(playlists_path, playlist_id,
                                    line_of_playlist)

  track_ids, songs = array.array("q"), array.array("q")

  def add_track(row, indices, line):
    del line
    playlist, song = int(row[indices[0]]), int(row[indices[1]])
    track_ids.append(playlist)
    songs.append(song)

  _read_rows(tracks_path, PLAYLIST_TRACKS_COLUMNS, add_track)
  track_playlist = _playlist_rows(tracks_path, playlist_id, order_P,
                                  _int64(track_ids), playlists_path)
  return PlaylistInputs(
      playlist_id=playlist_id, user_id=_int64(users), title=titles,
      track_playlist=track_playlist, track_song=_int64(songs),
      files=(playlists_path,),
      playlist_file=np.zeros(len(titles), np.int64),
      playlist_row=line_of_playlist)


def _check_unique_playlists(path: str, playlist_id: np.ndarray,
                            line_P: np.ndarray) -> np.ndarray:
  """The order sorting the playlist ids; PlaylistError on a repeated id."""
  order_P = np.argsort(playlist_id, kind="stable")
  sorted_ids = playlist_id[order_P]
  repeated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
  if len(repeated):
    first, second = order_P[repeated[0]], order_P[repeated[0] + 1]
    raise PlaylistError(
        f"{path} line {line_P[second]}: playlist_id {playlist_id[second]}"
        f" repeats line {line_P[first]}; playlist ids must be unique")
  return order_P


def _playlist_rows(tracks_path: str, playlist_id: np.ndarray,
                   order_P: np.ndarray, track_playlist_id: np.ndarray,
                   playlists_path: str) -> np.ndarray:
  """Row of each track entry's playlist; PlaylistError if it has none."""
  sorted_ids = playlist_id[order_P]
  position = np.searchsorted(sorted_ids, track_playlist_id)
  position = np.minimum(position, max(len(sorted_ids) - 1, 0))
  found = (sorted_ids[position] == track_playlist_id if len(sorted_ids)
           else np.zeros(len(track_playlist_id), bool))
  if not found.all():
    missing = int(np.argmin(found))
    raise PlaylistError(
        f"{tracks_path} line {_data_row_line(tracks_path, missing)}:"
        f" playlist_id {track_playlist_id[missing]} is not in"
        f" {playlists_path}; every track's playlist needs a row there")
  return order_P[position] if len(sorted_ids) else position


def song_id_of_uri(uri_id: str) -> int:
  """A stable int64 song id for a track's URI id: sha256, 63 bits."""
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
      raise PlaylistError(f"{where}: track_uri must be text, got {uri!r}")
    uri_id = uri.rsplit(":", 1)[-1]
    if not _AUDIO_STEM.fullmatch(uri_id):
      raise PlaylistError(
          f"{where}: track_uri {uri!r} has no usable id after its last ':'"
          " (letters, digits, '_', '-', '.'; it names the audio file)")
    song = song_id_of_uri(uri_id)
    other = self.uri_of_song.setdefault(song, uri_id)
    if other != uri_id:
      raise PlaylistError(
          f"{where}: track URI ids {other!r} and {uri_id!r} hash to the same"
          f" song id {song}; rename one track's URI id")
    self.song_of_uri[uri] = song
    return song


def _load_slice(path: str) -> list:
  """The "playlists" list of one MPD slice."""
  try:
    with open(path, encoding="utf-8-sig") as f:
      data = json.load(f)
  except UnicodeDecodeError:
    raise _not_utf8(path) from None
  except json.JSONDecodeError as error:
    raise PlaylistError(f"{path} line {error.lineno}: not valid JSON"
                        f" ({error.msg})") from None
  if not isinstance(data, dict) or not isinstance(data.get("playlists"),
                                                  list):
    raise PlaylistError(f'{path}: expected an object with a "playlists" list'
                        ' (a Million Playlist Dataset slice)')
  return data["playlists"]


def _read_mpd(paths: list[str]) -> PlaylistInputs:
  """MPD slices: each playlist its own user, URIs hashed to song ids."""
  ids, files, rows, titles = [], [], [], []
  track_playlist, track_song = array.array("q"), array.array("q")
  song_ids = _SongIds()
  for file_index, path in enumerate(paths):
    for position, playlist in enumerate(_load_slice(path)):
      where = f"{path} playlists[{position}]"
      if not isinstance(playlist, dict):
        raise PlaylistError(f"{where}: expected an object with pid, name and"
                            " tracks")
      pid, name = playlist.get("pid"), playlist.get("name")
      tracks = playlist.get("tracks")
      if isinstance(pid, bool) or not isinstance(pid, int) or not (
          _INT64_MIN <= pid <= _INT64_MAX):
        raise PlaylistError(f"{where}: pid must be an int64 integer, got"
                            f" {pid!r}")
      if not isinstance(name, str):
        raise PlaylistError(f"{where} (pid {pid}): name must be text, got"
                            f" {name!r}")
      if not isinstance(tracks, list):
        raise PlaylistError(f"{where} (pid {pid}): tracks must be a list,"
                            f" got {tracks!r}")
      row = len(ids)
      known = song_ids.song_of_uri
      for number, track in enumerate(tracks):
        uri = track.get("track_uri") if isinstance(track, dict) else None
        song = known.get(uri) if isinstance(uri, str) else None
        if song is None:
          song = song_ids.new_song_id(
              uri, f"{where}.tracks[{number}] (pid {pid})")
        track_song.append(song)
        track_playlist.append(row)
      ids.append(pid)
      files.append(file_index)
      rows.append(position)
      titles.append(name)
  playlist_id = np.asarray(ids, np.int64)
  playlist_file = np.asarray(files, np.int64)
  playlist_row = np.asarray(rows, np.int64)
  order_P = np.argsort(playlist_id, kind="stable")
  repeated = np.flatnonzero(np.diff(playlist_id[order_P]) == 0)
  if len(repeated):
    first, second = order_P[repeated[0]], order_P[repeated[0] + 1]
    raise PlaylistError(
        f"{paths[playlist_file[second]]} playlists[{playlist_row[second]}]:"
        f" pid {playlist_id[second]} repeats"
        f" {paths[playlist_file[first]]} playlists[{playlist_row[first]}];"
        " pids must be unique")
  return PlaylistInputs(
      playlist_id=playlist_id, user_id=playlist_id.copy(), title=titles,
      track_playlist=_int64(track_playlist), track_song=_int64(track_song),
      files=tuple(paths), playlist_file=playlist_file,
      playlist_row=playlist_row, song_uris=song_ids.uri_of_song)


# Rule 1: titles.


# A letter: a word character that is not a digit or "_". Words are runs of
# letters, so digits, "_" and punctuation all separate them ("gym_songs",
# "gym2": gym).
_LETTER = r"[^\W\d_]"
_HYPHENATED = re.compile(rf"{_LETTER}+(?:-{_LETTER}+)+")


def normalize(text: str) -> str:
  """A title or keyword as titles are matched: Unicode NFKC (full-width
  "ｇｙｍ" is "gym"), then case-folded ("GYM", "Gym": "gym")."""
  return unicodedata.normalize("NFKC", text).casefold()


@dataclasses.dataclass(frozen=True)
class _TitleMatcher:
  """The keyword table of a set of rules, compiled.

  Attributes:
    pattern: any keyword between non-letters; group i is keywords[i].
    label_of_group: the label of each group.
    joinable: the one-word keywords, which a hyphenated title word may
      spell across its hyphens ("work-out": workout).
  """
  pattern: re.Pattern
  label_of_group: tuple[int, ...]
  joinable: frozenset[str]

  def _join(self, match: re.Match) -> str:
    """A hyphenated word with each run of its parts that spells a keyword
    joined, longest run first from the left: "work-out" -> "workout" (a
    keyword), "pre-work-out" -> "pre-workout"; other parts stay apart
    ("gym-vibes", "summer-night": each part is matched alone)."""
    parts = match.group(0).split("-")
    out, start = [], 0
    while start < len(parts):
      for end in range(len(parts), start + 1, -1):
        if "".join(parts[start:end]) in self.joinable:
          out.append("".join(parts[start:end]))
          start = end
          break
      else:
        out.append(parts[start])
        start += 1
    return "-".join(out)

  def labels_of(self, title: str) -> set[int]:
    """The labels `title` names."""
    text = normalize(title)
    if "-" in text:
      text = _HYPHENATED.sub(self._join, text)
    return {self.label_of_group[m.lastindex - 1]
            for m in self.pattern.finditer(text)}


@functools.lru_cache(maxsize=8)
def _matcher(rules: MiningRules) -> _TitleMatcher:
  """The rules' keyword table as one regex of whole words.

  Longer keywords come first so that a phrase wins over a word inside it.
  """
  mapping = {}
  for keyword, label in rules.keyword_labels().items():
    mapping.setdefault(normalize(keyword), label)
  keywords = sorted(mapping, key=lambda k: (-len(k), k))
  pattern = re.compile(
      rf"(?<!{_LETTER})(?:"
      + "|".join(f"({re.escape(k)})" for k in keywords)
      + rf")(?!{_LETTER})")
  joinable = frozenset(k for k in keywords if re.fullmatch(f"{_LETTER}+", k))
  return _TitleMatcher(pattern, tuple(mapping[k] for k in keywords), joinable)


def title_contexts(titles: list[str], rules: MiningRules = MiningRules()
                   ) -> np.ndarray:
  """The context of each title: a label index, NO_CONTEXT or AMBIGUOUS.

  Titles and keywords are normalised alike (`normalize`), then a keyword
  counts where it stands between non-letters (start, end, space,
  punctuation, a digit or "_"). A hyphenated title word whose parts spell
  a keyword when joined reads as that keyword ("work-out": workout, not
  work); otherwise its parts are words of their own ("gym-vibes": gym,
  "summer-night": summer and night, ambiguous).

  Args:
    titles: playlist titles.
    rules: whose keywords to look for.

  Returns:
    int64[len(titles)].
  """
  matcher = _matcher(rules)
  contexts = np.full(len(titles), NO_CONTEXT, np.int64)
  for index, title in enumerate(titles):
    found = matcher.labels_of(title)
    if len(found) == 1:
      contexts[index] = found.pop()
    elif found:
      contexts[index] = AMBIGUOUS
  return contexts


def _title_labels(title: str, rules: MiningRules) -> list[str]:
  """The labels a title names, for messages."""
  return [labels.LABELS[index]
          for index in sorted(_matcher(rules).labels_of(title))]


# Counting drops.


def _drop_items(report: build_report.BuildReport, reason: str, count: int,
                describe, *, tracks=0, pairs=0) -> None:
  """Counts `count` items under `reason`.

  The first few go one by one (they are the report's examples, and the
  first is the strict error); the rest go in one call, as the report keeps
  only totals beyond its examples.

  Args:
    report: where to count.
    reason: the report's key.
    count: how many items.
    describe: item index -> (where, what, example), called for the first few.
    tracks, pairs: per-item int64 arrays (or one int for all items).
  """
  tracks_N = np.broadcast_to(np.asarray(tracks, np.int64), (count,))
  pairs_N = np.broadcast_to(np.asarray(pairs, np.int64), (count,))
  shown = min(count, build_report.MAX_EXAMPLES)
  for item in range(shown):
    where, what, example = describe(item)
    report.drop(reason, where, what, example, tracks=int(tracks_N[item]),
                pairs=int(pairs_N[item]))
  if count > shown:
    where, what, example = describe(shown)
    report.drop(reason, where, what, example,
                tracks=int(tracks_N[shown:].sum()),
                pairs=int(pairs_N[shown:].sum()))


# Rules 1-3 over the whole table.


@dataclasses.dataclass(frozen=True)
class _Codes:
  """Users and songs numbered 0..n-1, and a (user, song) key per entry."""
  user_values: np.ndarray  # int64[U] sorted user ids
  song_values: np.ndarray  # int64[S] sorted song ids
  key_E: np.ndarray  # int64[E] user_code * S + song_code

  def user_song(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    songs = len(self.song_values)
    return self.user_values[key // songs], self.song_values[key % songs]


def _codes(inputs: PlaylistInputs) -> _Codes:
  user_values, user_code_P = np.unique(inputs.user_id, return_inverse=True)
  song_values, song_code_E = np.unique(inputs.track_song, return_inverse=True)
  if len(user_values) * max(len(song_values), 1) * labels.NUM_LABELS >= 2**62:
    raise ValueError("too many users x songs for int64 (user, song) keys")
  key_E = user_code_P[inputs.track_playlist] * len(song_values) + song_code_E
  return _Codes(user_values, song_values, key_E)


def _distinct(values: np.ndarray) -> np.ndarray:
  """np.unique by sorting: numpy 2's default hashing is ~15x slower here."""
  values = np.sort(values)
  return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else (
      values)


def _runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Start index and length of each run of equal values."""
  starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]]
                          ) if len(sorted_values) else np.zeros(0, np.int64)
  return starts, np.diff(np.r_[starts, len(sorted_values)])


def _context_sets(codes: _Codes, context_E: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Rule 2: (user, song) keys with one context, their label, conflicts.

  Returns:
    single_key, single_label: the pairs, sorted by key;
    conflicting_key: the (user, song) keys with several contexts, sorted.
  """
  chosen = context_E >= 0
  key_label = _distinct(codes.key_E[chosen] * labels.NUM_LABELS
                        + context_E[chosen])
  key, label = key_label // labels.NUM_LABELS, key_label % labels.NUM_LABELS
  starts, lengths = _runs(key)
  single = starts[lengths == 1]
  return key[single], label[single], key[starts[lengths > 1]]


def _count_ambiguous(inputs, rules, codes, context_P, context_E,
                     candidate_key, report) -> int:
  """Rule 1's skips: each ambiguous playlist, with the pairs it alone held.

  Returns:
    How many (user, song) pairs only ambiguous playlists held.
  """
  ambiguous_P = np.flatnonzero(context_P == AMBIGUOUS)
  entries = np.flatnonzero(context_E == AMBIGUOUS)
  key, playlist = codes.key_E[entries], inputs.track_playlist[entries]
  lost = ~_isin_sorted(key, candidate_key)
  key, playlist = key[lost], playlist[lost]
  order = np.lexsort((playlist, key))
  starts, _ = _runs(key[order])
  lost_P = np.bincount(playlist[order][starts], minlength=len(context_P))

  def describe(item):
    index = ambiguous_P[item]
    title = inputs.title[index]
    return (inputs.where(index),
            f"title {title!r} names several contexts"
            f" ({', '.join(_title_labels(title, rules))}); expected one",
            f"{inputs.where(index, short=True)}: {title}")

  _drop_items(report, AMBIGUOUS_TITLE, len(ambiguous_P), describe,
              pairs=lost_P[ambiguous_P])
  return len(starts)


def _isin_sorted(values: np.ndarray, sorted_unique: np.ndarray) -> np.ndarray:
  if not len(sorted_unique):
    return np.zeros(len(values), bool)
  position = np.minimum(np.searchsorted(sorted_unique, values),
                        len(sorted_unique) - 1)
  return sorted_unique[position] == values


def _count_conflicts(inputs, codes, context_E, conflicting_key,
                     report) -> None:
  """Rule 2's skips: one pair per (user, song) with several contexts."""
  def describe(item):
    key = conflicting_key[item]
    user, song = codes.user_song(np.array([key]))
    entries = np.flatnonzero((codes.key_E == key) & (context_E >= 0))
    rows = np.unique(inputs.track_playlist[entries])
    contexts = sorted({labels.LABELS[context_E[e]] for e in entries})
    where = ", ".join(inputs.where(row) for row in rows)
    return (f"user {user[0]}, song {song[0]} ({where})",
            f"the user gave the song several contexts"
            f" ({', '.join(contexts)}); expected one",
            f"user {user[0]} song {song[0]}: {'+'.join(contexts)}")

  _drop_items(report, CONFLICTING_CONTEXTS, len(conflicting_key), describe,
              pairs=1)


def _track_reasons(rules: MiningRules, users_S: np.ndarray,
                   contexts_S: np.ndarray) -> np.ndarray:
  """Rule 3 per song: -1 kept, else the index in TRACK_REASONS."""
  return np.select(
      [users_S < rules.min_users, users_S > rules.max_users,
       contexts_S < rules.min_contexts],
      [0, 1, 2], default=-1)


def _apply_track_rule(rules, codes, key, label, report) -> np.ndarray:
  """Rule 3: the mask of pairs whose track is kept; drops counted."""
  songs = len(codes.song_values)
  song_code = key % songs
  users_S = np.bincount(song_code, minlength=songs)
  song_label = _distinct(song_code * labels.NUM_LABELS + label)
  contexts_S = np.bincount(song_label // labels.NUM_LABELS, minlength=songs)
  reason_S = _track_reasons(rules, users_S, contexts_S)
  reason_S[users_S == 0] = -1
  for index, reason in enumerate(TRACK_REASONS):
    failed = np.flatnonzero(reason_S == index)

    def describe(item, failed=failed):
      song = failed[item]
      return (f"song {codes.song_values[song]}",
              f"{users_S[song]} distinct users and {contexts_S[song]}"
              f" contexts; a kept track has {rules.min_users} to"
              f" {rules.max_users} users and at least {rules.min_contexts}"
              " contexts", int(codes.song_values[song]))

    _drop_items(report, reason, len(failed), describe, tracks=1,
                pairs=users_S[failed])
  return reason_S[song_code] == -1


def mine(inputs: PlaylistInputs, rules: MiningRules,
         report: build_report.BuildReport) -> MinedPairs:
  """Applies the collection rules 1-3 to the playlists.

  Args:
    inputs: from `read_playlist_inputs`.
    rules: the thresholds and keywords.
    report: where skips are counted; under strict the first one raises a
      DefectError naming its file and row.

  Returns:
    The kept pairs, every (user, song) interaction, the URI mapping.
  """
  codes = _codes(inputs)
  context_P = title_contexts(inputs.title, rules)
  context_E = context_P[inputs.track_playlist]
  key, label, conflicting_key = _context_sets(codes, context_E)
  candidate_key = _distinct(np.concatenate([key, conflicting_key]))
  ambiguous_only = _count_ambiguous(inputs, rules, codes, context_P, context_E,
                                   candidate_key, report)
  _count_conflicts(inputs, codes, context_E, conflicting_key, report)
  kept = _apply_track_rule(rules, codes, key, label, report)
  user, song = codes.user_song(key[kept])
  order = np.lexsort((user, song))
  pairs = pairs_lib.Pairs(song[order], user[order], label[kept][order])
  interaction_user, interaction_song = codes.user_song(_distinct(codes.key_E))
  stats = _stats(inputs, context_P, codes, pairs, len(conflicting_key))
  stats["interactions"] = len(interaction_user)
  stats["candidate_pairs"] = len(candidate_key) + ambiguous_only
  return MinedPairs(
      pairs=pairs,
      interactions=interactions_lib.Interactions(interaction_user,
                                                 interaction_song),
      song_uris=inputs.song_uris, stats=stats)


def _stats(inputs, context_P, codes, pairs, conflicting) -> dict[str, int]:
  return {
      "playlists": len(context_P),
      "track_entries": len(inputs.track_song),
      "users": len(codes.user_values),
      "songs": len(codes.song_values),
      "context_playlists": int(np.sum(context_P >= 0)),
      "ambiguous_playlists": int(np.sum(context_P == AMBIGUOUS)),
      "conflicting_pairs": int(conflicting),
      "kept_pairs": len(pairs),
      "kept_tracks": len(_distinct(pairs.song_id)),
      "kept_users": len(_distinct(pairs.user_id)),
  }


# The dataset: rules 4 to 6 and what the builder writes.


@dataclasses.dataclass(frozen=True)
class Options(mels.AudioSettings):
  """Settings of the playlists source (`--option key=value`): the audio's,
  the collection rules' thresholds, and the embeddings' seed."""
  min_users: int = 5
  max_users: int = 10
  min_contexts: int = 3
  # "" for the ten labels, else "keyword;keyword=label;...", e.g.
  # "gym;training=workout" (quote it on the command line).
  keywords: str = ""
  embedding_seed: int = 0  # of the SVD, when embeddings are computed

  def validate(self) -> None:
    super().validate()
    self.rules()

  def rules(self) -> MiningRules:
    keywords = tuple(k.strip() for k in self.keywords.split(";")
                     if k.strip()) or labels.LABELS
    return MiningRules(self.min_users, self.max_users, self.min_contexts,
                       keywords)


COMPUTED_EMBEDDINGS = "(computed from the playlists)"


def _computed_embeddings(mined: MinedPairs, pairs: pairs_lib.Pairs,
                         seed: int) -> user_embeddings.UserEmbeddings:
  users = np.unique(pairs.user_id)
  vectors = interactions_lib.user_embeddings(mined.interactions, users,
                                             seed=seed)
  return user_embeddings.UserEmbeddings(
      path=COMPUTED_EMBEDDINGS,
      row_of_user={u: i for i, u in enumerate(users.tolist())},
      vectors_UxE=vectors, invalid={})


def prepare(manual_dir: str, options: Options, split, cache_root: str,
            workers: int, report: build_report.BuildReport,
            beam_options=None) -> assemble.Prepared:
  """The collection rules in order, then the split.

  1-3 mine the playlists (`mine`); 4 drops kept tracks without usable audio,
  with their pairs, without filtering again; 5 drops users without a valid
  embedding when user_embeddings.csv is given, else embeds every user from
  the whole interaction matrix; 6 splits the pairs.

  Args:
    manual_dir: the playlists, the audio and optionally user_embeddings.csv.
    options: the source's settings.
    split: an `assemble.SplitSettings` (default: random).
    cache_root: directory for mel caches.
    workers: processes decoding audio.
    report: where skips are counted (or raised, under strict).
    beam_options: run the audio stage on Apache Beam with these options.
  """
  mined = mine(read_playlist_inputs(manual_dir), options.rules(), report)
  stems = mined.song_uris
  table, mel_dirs = assemble.drop_tracks_without_mels(
      {"all": mined.pairs}, manual_dir, options, cache_root, workers, report,
      beam_options,
      stem_of_song=(lambda song_id: stems[song_id]) if stems else None)
  embeddings_path = os.path.join(manual_dir, user_embeddings.FILE)
  if os.path.exists(embeddings_path):
    embeddings = user_embeddings.read(embeddings_path)
    table = assemble.drop_users(table, embeddings, report)
  else:
    embeddings = _computed_embeddings(mined, table["all"],
                                      options.embedding_seed)
  return assemble.package(split.apply(table["all"]), embeddings, mel_dirs,
                          report, song_stems=stems,
                          strategy=split.strategy or "random")

"""From split pair tables to the builder's track examples, counting drops.

The steps every real-data source shares (each input pair is counted under
the first reason that takes it out): users without a valid embedding are
dropped with their pairs; tracks without a usable mel are dropped with all
their pairs; the pairs are split (as given, or re-split); each split's pairs
are grouped by track.
"""

import dataclasses
import sys

import numpy as np

from ctxtag import errors
from ctxtag.sources import build_report
from ctxtag.sources import mels
from ctxtag.sources import pairs as pairs_lib
from ctxtag.sources import splits as splits_lib

SPLITS = ("train", "validation", "test")
USER_EMBEDDING_MISSING = "user_embedding_missing"
USER_EMBEDDING_INVALID = "user_embedding_invalid"
USER_EMBEDDING_CONFLICTING = "user_embedding_conflicting"


@dataclasses.dataclass(frozen=True)
class TrackPairs:
  """One track of one split with its pairs; what an example is made of."""
  song_id: int
  user_id_P: np.ndarray
  label_P: np.ndarray
  user_embedding_PxE: np.ndarray


def _pairs_per(values: dict[str, pairs_lib.Pairs], column: str) -> dict:
  ids = np.concatenate([getattr(p, column) for p in values.values()])
  unique, counts = np.unique(ids, return_counts=True)
  return dict(zip(unique.tolist(), counts.tolist()))


def drop_users(splits: dict[str, pairs_lib.Pairs], embeddings,
               report: build_report.BuildReport) -> dict[str, pairs_lib.Pairs]:
  """Drops the pairs of users without a valid embedding, counting them.

  Args:
    splits: split -> pairs.
    embeddings: has `row_of_user` (valid users), `invalid` (user -> (line,
      what)), `conflicting` (user -> ((line, line), what); optional) and
      `path`.
    report: where drops are counted.
  """
  counts = _pairs_per(splits, "user_id")
  conflicting = getattr(embeddings, "conflicting", None) or {}
  bad = []
  for user_id, count in sorted(counts.items()):
    if user_id in embeddings.row_of_user:
      continue
    bad.append(user_id)
    if user_id in conflicting:
      (line, other), what = conflicting[user_id]
      report.drop(USER_EMBEDDING_CONFLICTING,
                  f"{embeddings.path} lines {line} and {other}",
                  f"user {user_id} is {what}; which is theirs is unknown, so"
                  " both rows are dropped", user_id, users=1, pairs=count)
    elif user_id in embeddings.invalid:
      line, what = embeddings.invalid[user_id]
      report.drop(USER_EMBEDDING_INVALID, f"{embeddings.path} line {line}",
                  f"user {user_id}: {what}", user_id, users=1, pairs=count)
    else:
      report.drop(USER_EMBEDDING_MISSING, embeddings.path,
                  f"no embedding for user {user_id}, who has {count}"
                  " pair(s)", user_id, users=1, pairs=count)
  bad = np.asarray(bad, np.int64)
  return {split: p.take(~np.isin(p.user_id, bad))
          for split, p in splits.items()}


def mel_tasks(splits: dict[str, pairs_lib.Pairs],
              input_of_stem: dict[str, tuple[str, str]],
              cache_dir_of_kind: dict[str, str],
              stem_of_song=None) -> list[mels.Task]:
  """One extraction task per track that still has pairs.

  Args:
    splits: split (or any group) -> pairs.
    input_of_stem: file stem -> (path, kind) of the track's input.
    cache_dir_of_kind: where mels made from each kind of input go.
    stem_of_song: song id -> file stem, when files are not named by id.
  """
  song_ids = np.unique(np.concatenate([p.song_id for p in splits.values()]))
  tasks = []
  for song_id in song_ids.tolist():
    stem = stem_of_song(song_id) if stem_of_song else str(song_id)
    path, kind = input_of_stem.get(stem, (None, ""))
    tasks.append(mels.Task(song_id, path, kind,
                           cache_dir_of_kind.get(kind, "")))
  return tasks


def drop_tracks(splits: dict[str, pairs_lib.Pairs], statuses: dict[int, dict],
                where: str,
                report: build_report.BuildReport) -> dict[str, pairs_lib.Pairs]:
  """Drops the tracks whose mel failed, with all their pairs; counts the
  tracks read from each kind of input, the padded tracks among those kept,
  and the tracks whose decoder wrote notes."""
  counts = _pairs_per(splits, "song_id")
  bad = []
  for song_id in sorted(statuses):
    status = statuses[song_id]
    if "source" in status:
      report.count_source(status["source"])
    elif status.get("file"):  # a cache entry older than sources: by its path
      report.count_source(
          "spectrograms" if status["file"]["path"].endswith(".npz")
          else "audio")
    if status.get("decoder_notes"):
      report.decoder_note(song_id, status["file"]["path"], status["status"],
                          status["decoder_notes"])
    if status["status"] == mels.OK:
      report.padded += status["padded_seconds"] > 0
      continue
    bad.append(song_id)
    source = status.get("file", {}).get("path", where)
    report.drop(status["status"], f"{source}: song {song_id}",
                status["message"], song_id, tracks=1,
                pairs=counts.get(song_id, 0))
  bad = np.asarray(bad, np.int64)
  return {split: p.take(~np.isin(p.song_id, bad))
          for split, p in splits.items()}


def group_by_track(pairs: pairs_lib.Pairs, embeddings) -> list[TrackPairs]:
  """The split's tracks in song id order, each with its pairs in input
  order."""
  order = np.argsort(pairs.song_id, kind="stable")
  sorted_pairs = pairs.take(order)
  song_ids, starts = np.unique(sorted_pairs.song_id, return_index=True)
  ends = np.append(starts[1:], len(sorted_pairs))
  tracks = []
  for song_id, start, end in zip(song_ids.tolist(), starts, ends):
    users = sorted_pairs.user_id[start:end]
    rows = [embeddings.row_of_user[u] for u in users.tolist()]
    tracks.append(TrackPairs(song_id, users, sorted_pairs.label[start:end],
                             embeddings.vectors_UxE[rows]))
  return tracks


def record_splits(splits: dict[str, pairs_lib.Pairs],
                  report: build_report.BuildReport,
                  strategy: str = "") -> None:
  """Counts each split in the report; for a cold split, also prints and
  records what it guarantees (no test or validation user/track in train)."""
  for split, p in splits.items():
    report.set_split(split, len(np.unique(p.song_id)), len(p))
  guarantee = splits_lib.guarantee(splits, strategy)
  if guarantee:
    print(guarantee, flush=True, file=sys.stderr)
    report.split_guarantee = guarantee


@dataclasses.dataclass(frozen=True)
class SplitSettings:
  """How a dataset's pairs are split.

  Attributes:
    strategy: "" keeps the source's own splits (the release's for zenodo,
      the world's track draws for simulated; playlists have none and split
      at "random"); "given" says the same explicitly; "random" (over pairs),
      "cold_user" (no validation or test user in train) or "cold_track" (no
      validation or test track in train) re-split every pair.
    seed: fixes a re-split.
    fractions: (train, validation, test) shares of the pairs in a re-split.
  """
  strategy: str = ""
  seed: int = 0
  fractions: tuple[float, float, float] = splits_lib.DEFAULT_FRACTIONS

  def validate(self, has_given: bool) -> None:
    known = ("", "given") + tuple(splits_lib.STRATEGIES)
    if self.strategy not in known:
      raise errors.ConfigError(
          f"split_strategy must be one of {', '.join(known[1:])}, got"
          f" {self.strategy!r}")
    if self.strategy == "given" and not has_given:
      raise errors.ConfigError(
          "split_strategy=given: this source has no splits of its own; use"
          f" one of {', '.join(splits_lib.STRATEGIES)}")
    splits_lib.check_fractions(self.fractions)

  def resplits(self, has_given: bool) -> bool:
    return self.strategy not in ("", "given") or not has_given

  def suffix(self, has_given: bool) -> str:
    """A config-name suffix for a non-default split; "" for the default."""
    if not self.resplits(has_given) or (
        not has_given and self.strategy in ("", "random")
        and self == SplitSettings(self.strategy)):
      return ""
    text = f"{self.strategy or 'random'}_seed{self.seed}"
    if tuple(self.fractions) != splits_lib.DEFAULT_FRACTIONS:
      text += "_" + "_".join(f"{f:g}" for f in self.fractions)
    return text

  def apply(self, table: pairs_lib.Pairs) -> dict[str, pairs_lib.Pairs]:
    return splits_lib.split(table, self.strategy or "random", self.seed,
                            self.fractions)


def pool(splits: dict[str, pairs_lib.Pairs], where: str,
         report: build_report.BuildReport) -> pairs_lib.Pairs:
  """All splits' pairs in one table for a re-split; a (song, user) in
  several splits keeps its first row (counted as a duplicate)."""
  table = pairs_lib.Pairs.concatenate([splits[s] for s in SPLITS])
  keys = np.stack([table.song_id, table.user_id], axis=1)
  _, first = np.unique(keys, axis=0, return_index=True)
  keep = np.zeros(len(table), bool)
  keep[first] = True
  for row in np.flatnonzero(~keep).tolist():
    report.drop("duplicate_pair", where,
                f"(song {table.song_id[row]}, user {table.user_id[row]}) is in"
                " two splits; a re-split keeps its first row",
                f"song {table.song_id[row]} user {table.user_id[row]}",
                pairs=1)
  return table.take(np.sort(first))


def drop_tracks_without_mels(
    splits: dict[str, pairs_lib.Pairs], manual_dir: str,
    settings: mels.AudioSettings, cache_root: str, workers: int,
    report: build_report.BuildReport, beam_options=None,
    stem_of_song=None) -> tuple[dict[str, pairs_lib.Pairs], dict[int, str]]:
  """Computes the mels of every track with pairs and drops the tracks whose
  input is missing or defective, with their pairs.

  Each track is read from its audio file if it has one, else from its npz
  (as `settings.audio` allows); the report counts how many came from each,
  and lists the tracks with several audio files (which one was read).

  Args:
    splits: split (or any group) -> pairs.
    manual_dir: holds the audio/ and/or spectrograms/ directories.
    settings: the source's audio settings.
    cache_root: directory of the mel caches (one subdirectory per kind of
      input and front end).
    workers: worker processes for the mels.
    report: where drops are counted.
    beam_options: run the mels as an Apache Beam pipeline with these options.
    stem_of_song: song id -> file stem, when files are not named by id.

  Returns:
    The splits without the dropped tracks, and song id -> the directory
    holding its mel, for every kept track.

  Raises:
    ConfigError: excerpt settings that tracks read from npz files cannot
      have.
  """
  cache_dir_of_kind = {kind: settings.cache_dir(cache_root, kind)
                       for kind in mels.KINDS}
  inputs, ignored = mels.index_inputs(manual_dir, settings)
  tasks = mel_tasks(splits, inputs, cache_dir_of_kind, stem_of_song)
  for task in tasks:
    stem = stem_of_song(task.song_id) if stem_of_song else str(task.song_id)
    if task.kind == "audio" and stem in ignored:
      report.several_files(task.song_id, task.path, ignored[stem])
  front_end = settings.front_end()
  mels.check_front_end(front_end, tasks)
  statuses = mels.extract_all(tasks, front_end, workers, beam_options)
  mel_dirs = {task.song_id: task.cache_dir for task in tasks
              if statuses[task.song_id]["status"] == mels.OK}
  return drop_tracks(splits, statuses, manual_dir, report), mel_dirs


@dataclasses.dataclass(frozen=True)
class Prepared:
  """What the builder writes: per split, its tracks with their pairs; each
  track's mel is in the directory `mel_dirs` maps it to; `song_stems` maps
  song ids to the names of their input files where those differ from the
  ids."""
  tracks: dict[str, list[TrackPairs]]
  mel_dirs: dict[int, str]
  song_stems: dict[int, str] | None = None


def package(splits: dict[str, pairs_lib.Pairs], embeddings,
            mel_dirs: dict[int, str], report: build_report.BuildReport,
            song_stems: dict[int, str] | None = None,
            strategy: str = "") -> Prepared:
  """The final splits, counted in the report and grouped by track.

  Args:
    splits: split -> its final pairs.
    embeddings: the users' embeddings.
    mel_dirs: song id -> the directory holding its mel.
    report: where the splits are counted.
    song_stems: song id -> file stem, when files are not named by id.
    strategy: the split strategy, whose guarantee a cold split prints.
  """
  record_splits(splits, report, strategy)
  return Prepared({split: group_by_track(splits[split], embeddings)
                   for split in SPLITS}, mel_dirs, song_stems)

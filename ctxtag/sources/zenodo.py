"""The paper's public release (Zenodo record 3961560) with users' own audio.

The manual dir holds the release's CSVs and the tracks' audio:
  train_set.csv, validation_set.csv, test_set.csv
      song_id,user_id,car,gym,happy,night,relax,running,sad,summer,work,workout
      one row a (song, user) pair, its context one-hot;
  user_embeddings.csv
      user_id, then one column holding a 256-d vector "[0.1, -0.4, ...]";
  audio/<song_id>.<ext> (mp3, ogg, opus, flac, wav), else
  spectrograms/mels<song_id>.npz (the authors' mel power, arr_0 (1, 646, 96)):
  each track is read from its audio file if it has one, else from its npz.

The release's splits are kept as given. Defective rows, users and tracks are
skipped and counted in build_report.json (or raise under --strict); a
missing CSV or column is always an error.
"""

import dataclasses
import os

from ctxtag import errors
from ctxtag import labels
from ctxtag.sources import assemble
from ctxtag.sources import build_report
from ctxtag.sources import csv_files
from ctxtag.sources import mels
from ctxtag.sources import pairs as pairs_lib
from ctxtag.sources import user_embeddings

SPLIT_FILES = {"train": "train_set.csv", "validation": "validation_set.csv",
               "test": "test_set.csv"}
COLUMNS = ["song_id", "user_id", *labels.LABELS]
ROW_UNPARSABLE = "row_unparsable"
LABEL_NOT_ONE_HOT = "label_not_one_hot"
DUPLICATE_PAIR = "duplicate_pair"

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
Download the CSVs of Zenodo record 3961560 (https://zenodo.org/record/3961560)
into the manual dir: {', '.join(SPLIT_FILES.values())} and
{user_embeddings.FILE}. Then add each track's audio as
  audio/<song_id>.<ext>            30 s previews (mp3, ogg, opus, flac, wav;
                                   python -m launch.fetch_audio
                                   --manual_dir=DIR fetches them), or
  spectrograms/mels<song_id>.npz   the authors' mel spectrograms, arr_0 of
                                   shape (1, 646, 96).
A track with both is read from its audio file.
Pass the directory with --manual_dir (build) or --config.manual_dir (runs).
"""


def input_tables(manual_dir: str) -> tuple[list[str], list[str]]:
  """The tables a build reads (hashed in inputs.json), and large ones
  (stat'ed): the three splits and the user embeddings."""
  del manual_dir  # always the same four
  return [*SPLIT_FILES.values(), user_embeddings.FILE], []


def expected_files(manual_dir: str) -> str:
  """What the manual dir must hold, in one line, for messages."""
  return (f"{', '.join(SPLIT_FILES.values())} and {user_embeddings.FILE} of"
          " Zenodo record 3961560 (https://zenodo.org/record/3961560), and"
          " each track's audio/<song_id>.mp3 (`"
          + mels.FETCH_COMMAND.format(manual_dir=manual_dir)
          + "` fetches the 30 s previews) or spectrograms/mels<song_id>.npz")


@dataclasses.dataclass(frozen=True)
class Options(mels.AudioSettings):
  """Settings of the zenodo source (`--option key=value`): the audio's."""


def _label_of(values: list[str]) -> int | None:
  """The context index of a one-hot row, or None if it is not one-hot."""
  numbers = [float(v) for v in values]
  if not all(n in (0.0, 1.0) for n in numbers) or sum(numbers) != 1:
    return None
  return numbers.index(1.0)


def read_split(path: str, report: build_report.BuildReport
               ) -> pairs_lib.Pairs:
  """One split CSV -> its pairs, defective rows skipped and counted."""
  name = os.path.basename(path)
  songs, users, contexts, seen = [], [], [], set()
  with csv_files.open_csv(path) as (reader, header):
    columns = csv_files.require_columns(path, header, COLUMNS)
    for line, row in reader:
      where = f"{path} line {line}"
      try:
        values = [row[i] for i in columns]
        song_id = csv_files.parse_id(values[0], positive=True)
        user_id = csv_files.parse_id(values[1])
        label = _label_of(values[2:])
      except (ValueError, IndexError):
        report.drop(ROW_UNPARSABLE, where, "expected integer ids and 0/1"
                    f" labels in columns {','.join(COLUMNS)}",
                    f"{name}:{line}", pairs=1)
        continue
      if label is None:
        report.drop(LABEL_NOT_ONE_HOT, where, "the context columns are not"
                    " one-hot (exactly one 1, the rest 0)", f"{name}:{line}",
                    pairs=1)
        continue
      if (song_id, user_id) in seen:
        report.drop(DUPLICATE_PAIR, where, f"(song {song_id}, user"
                    f" {user_id}) repeats an earlier row; the first is kept",
                    f"{name}:{line}", pairs=1)
        continue
      seen.add((song_id, user_id))
      songs.append(song_id)
      users.append(user_id)
      contexts.append(label)
  return pairs_lib.Pairs(songs, users, contexts)


def read_splits(manual_dir: str, report: build_report.BuildReport
                ) -> dict[str, pairs_lib.Pairs]:
  """The release's three splits, as given; a split without a usable row is
  an error here, before any audio is decoded."""
  splits = {}
  for split, name in SPLIT_FILES.items():
    path = os.path.join(manual_dir, name)
    splits[split] = read_split(path, report)
    if not len(splits[split].song_id):
      raise errors.DatasetError(
          f"{path}: no usable row (expected rows song_id,user_id and one-hot"
          f" {','.join(labels.LABELS)} under the header; see the build"
          " report's drops for rows that were refused)")
  return splits


def prepare(manual_dir: str, options: Options,
            split: assemble.SplitSettings, cache_root: str, workers: int,
            report: build_report.BuildReport,
            beam_options=None) -> assemble.Prepared:
  """Reads the release, checks every row, user and track, computes mels.

  Args:
    manual_dir: where the CSVs and the audio are.
    options: the source's settings.
    split: keep the release's splits, or re-split its pairs.
    cache_root: directory for mel caches (one subdirectory per front end).
    workers: worker processes for decoding audio.
    report: where defects are counted (or raised, under strict).
    beam_options: run the audio stage on Apache Beam with these options.

  Returns:
    The tracks of each split with their pairs, and where each track's mel
    is cached.
  """
  splits = read_splits(manual_dir, report)
  embeddings = user_embeddings.read(
      os.path.join(manual_dir, user_embeddings.FILE))
  if split.resplits(has_given=True):
    splits = {"all": assemble.pool(splits, manual_dir, report)}
  splits = assemble.drop_users(splits, embeddings, report)
  splits, mel_dirs = assemble.drop_tracks_without_mels(
      splits, manual_dir, options, cache_root, workers, report, beam_options)
  if split.resplits(has_given=True):
    splits = split.apply(splits["all"])
  return assemble.package(splits, embeddings, mel_dirs, report,
                          strategy=split.strategy)

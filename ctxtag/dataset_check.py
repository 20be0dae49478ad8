"""Checks that a built dataset is whole before a run reads it.

TFDS renames a dataset into place only when every split is written, so a
killed build never passes for a dataset; but a dataset can be damaged later
(a truncated copy, a full disk during a sync, a flipped byte). Reading such
a dataset fails deep inside array_record with a message that names no file.
These checks name the damaged file and say how to rebuild.

ctxtag reads array_record (random access, no TensorFlow). A dataset that
`tfds build` wrote in its default tfrecord is whole but unreadable here: it
is refused in one line saying how to add array_record beside its files.
"""

import glob
import json
import os

import tensorflow_datasets as tfds

from ctxtag import errors

INFO_FILE = "dataset_info.json"
READ_FORMAT = tfds.core.FileFormat.ARRAY_RECORD


def _damaged(path: str, what: str, rebuild: str) -> errors.DatasetError:
  return errors.DatasetError(f"{path}: damaged ({what}); {rebuild}")


def check(dataset_path: str, full: bool = False,
          rebuild: str = "rebuild it with --force_rebuild") -> None:
  """Raises DatasetError naming the first damaged file of a dataset.

  Args:
    dataset_path: the versioned directory of a built dataset.
    full: read every record (finds a flipped byte anywhere); otherwise the
      metadata, each file's opening, and the first and last record of each
      split (finds truncation and missing files; milliseconds).
    rebuild: how to rebuild it, for the message.
  """
  info = os.path.join(dataset_path, INFO_FILE)
  try:
    with open(info) as f:
      json.load(f)
    builder = tfds.builder_from_directory(dataset_path)
  except Exception as error:  # json, protobuf and TFDS errors alike
    raise _damaged(info, f"{type(error).__name__}: {error}", rebuild) from None
  check_format(dataset_path, builder.info)
  for split in builder.info.splits.keys():
    _check_split(builder, dataset_path, split, full, rebuild)


def check_format(dataset_path: str, info: tfds.core.DatasetInfo) -> None:
  """Raises DatasetError, in one line saying how to get array_record, when
  the dataset holds no array_record files (`tfds build` writes tfrecord by
  default); one that holds them besides another format passes."""
  formats = info.available_file_formats()
  if READ_FORMAT in formats:
    return
  written = " and ".join(sorted(f.value for f in formats)) or "no known format"
  raise errors.DatasetError(
      f"{dataset_path}: written as {written}, which ctxtag does not read (it"
      f" reads {READ_FORMAT.value}); add {READ_FORMAT.value} files beside"
      f" them with `tfds convert_format --dataset_version_dir={dataset_path}"
      f" --out_file_format={READ_FORMAT.value}` (TensorFlow needed: pip"
      ' install -e ".[tfds-test]"), or build one into another data dir'
      f" with `tfds build ... --file_format={READ_FORMAT.value}` or `python"
      " -m launch.build_dataset`; see docs/tfds.md")


def _split_files(dataset_path: str, split: str) -> list[str]:
  return sorted(glob.glob(os.path.join(
      glob.escape(dataset_path), f"*-{split}.array_record-*")))


def _check_split(builder, dataset_path: str, split: str, full: bool,
                 rebuild: str) -> None:
  files = _split_files(dataset_path, split)
  expected = builder.info.splits[split].num_shards
  if len(files) != expected:
    raise _damaged(os.path.join(dataset_path, f"*-{split}.array_record-*"),
                   f"{len(files)} of {expected} shard files are there",
                   rebuild)
  try:
    source = builder.as_data_source(split)
    count = len(source)
  except Exception as error:  # array_record raises RuntimeError and others
    raise _damaged(files[0] if len(files) == 1 else f"{split} shards",
                   str(error).splitlines()[0], rebuild) from None
  indices = range(count) if full else sorted({0, max(count - 1, 0)})
  for index in indices:
    try:
      source[index]
    except Exception as error:  # pylint: disable=broad-except
      raise unreadable_record(dataset_path, split, index, error,
                              rebuild) from None


def unreadable_record(dataset_path: str, split: str, index: int,
                      error: Exception,
                      rebuild: str = "rebuild it with `python -m"
                      " launch.build_dataset ... --force_rebuild`, or delete"
                      " the dataset and rerun") -> errors.DatasetError:
  """The DatasetError for record `index` of `split` failing to read (a
  flipped byte fails the chunk's checksum), naming its file."""
  files = _split_files(dataset_path, split)
  where = files[0] if len(files) == 1 else f"{split} shards"
  return _damaged(where, f"record {index} of split {split!r} cannot be"
                  f" read: {str(error).splitlines()[0]}", rebuild)

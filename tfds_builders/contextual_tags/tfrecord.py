"""Adds tfrecord files beside a contextual_tags dataset's array_record ones.

ctxtag builds array_record (random access, read without TensorFlow), which
`tfds.load` and `builder.as_dataset()` do not read; they read tfrecord.
TFDS's `tfds convert_format` converts tfrecord to array_record but not back
(it reads shards through tf.data, which array_record has not: it reports
the conversion done and writes nothing). This copies each shard's records,
byte for byte, into a tfrecord shard beside it and makes tfrecord the
dataset's main format with array_record its alternative: the layout that
`tfds build` followed by `tfds convert_format --out_file_format=array_record`
makes, which `tfds.load` and ctxtag both read with no format argument.
Writing tfrecord needs TensorFlow (`pip install -e ".[tfds-test]"`):

  python -m tfds_builders.contextual_tags.tfrecord DATASET_VERSION_DIR...
"""

import contextlib
import json
import os
import sys

from absl import app
from array_record.python import array_record_data_source
import tensorflow_datasets as tfds

from ctxtag import dataset_check
from ctxtag import errors
from ctxtag import files

TFRECORD = tfds.core.FileFormat.TFRECORD
ARRAY_RECORD = tfds.core.FileFormat.ARRAY_RECORD
# Records read from array_record at a time.
_CHUNK = 256


def add_tfrecord(dataset_dir: str) -> list[str]:
  """Writes a tfrecord shard beside each array_record shard of a built
  dataset and records tfrecord as its main format; a dataset that has
  tfrecord already is left as it is.

  Args:
    dataset_dir: the versioned directory of a built dataset.

  Returns:
    The tfrecord files written.

  Raises:
    errors.DatasetError: the dataset has no array_record files, or a shard
      holds another number of records than dataset_info.json says.
  """
  info = tfds.builder_from_directory(dataset_dir).info
  formats = info.available_file_formats()
  if TFRECORD in formats:
    return []
  dataset_check.check_format(dataset_dir, info)
  written = []
  for split in info.splits.values():
    template = split.filename_template
    sources = template.sharded_filepaths(split.num_shards)
    targets = template.replace(
        filetype_suffix=TFRECORD.file_suffix).sharded_filepaths(
            split.num_shards)
    for source, target, expected in zip(sources, targets,
                                        split.shard_lengths):
      count = _copy_records(os.fspath(source), os.fspath(target))
      if count != expected:
        raise errors.DatasetError(
            f"{source}: holds {count} records, dataset_info.json says"
            f" {expected}; rebuild the dataset")
      written.append(os.fspath(target))
  _make_tfrecord_main(dataset_dir)
  return written


def _copy_records(source: str, target: str) -> int:
  """Copies the serialized examples of an array_record shard, in order, into
  a tfrecord file renamed into place once whole; returns how many."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  records = array_record_data_source.ArrayRecordDataSource([source])
  handle, temporary = files.temporary_beside(target)
  os.close(handle)
  try:
    with tf.io.TFRecordWriter(temporary) as writer:
      for start in range(0, len(records), _CHUNK):
        for record in records.__getitems__(
            range(start, min(start + _CHUNK, len(records)))):
          writer.write(record)
    os.replace(temporary, target)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(temporary)
    raise
  return len(records)


def _make_tfrecord_main(dataset_dir: str) -> None:
  """tfrecord becomes the main format, which `as_dataset` reads; the
  array_record files stay listed, for `as_data_source` (it picks them)."""
  path = os.path.join(dataset_dir, dataset_check.INFO_FILE)
  with open(path) as f:
    info = json.load(f)
  previous = info.get("fileFormat", ARRAY_RECORD.value)
  alternatives = [name for name in info.get("alternativeFileFormats", [])
                  if name not in (TFRECORD.value, previous)]
  info["fileFormat"] = TFRECORD.value
  info["alternativeFileFormats"] = [previous] + alternatives
  files.write_json(path, info)


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    raise app.UsageError("usage: python -m tfds_builders.contextual_tags."
                         "tfrecord DATASET_VERSION_DIR...")
  for dataset_dir in argv[1:]:
    try:
      written = add_tfrecord(dataset_dir)
    except errors.UserError as error:
      sys.exit(f"error: {error}")
    print(f"{dataset_dir}: {len(written)} tfrecord files written" if written
          else f"{dataset_dir}: has tfrecord files already")


if __name__ == "__main__":
  app.run(main)

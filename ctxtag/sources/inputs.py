"""What a real-data build read: inputs.json, beside build_report.json.

A dataset built from a manual dir is a function of that dir's files and of
the build's settings. The build records them before it reads anything:

  {"format": 1, "manual_dir": "/abs/DIR",
   "settings": {"config": ..., "source": {...}, "split": {...}},
   "tables": {"train_set.csv": {"sha256": ..., "size": n} or null, ...},
   "files": {"audio/5.mp3": [size, mtime_ns], "spectrograms/mels7.npz": ...}}

"tables" are the CSVs the source reads, hashed whole (null: absent), and
the playlist slices (*.json), which can be gigabytes, by size and
modification time; "files" are every file of audio/ and spectrograms/ the
source may read a track from (by the same rule as the build: an audio
extension, or mels<id>.npz), by size and modification time. Reusing the
dataset compares what the manual dir holds now with that record (a stat a
file, a hash a CSV: seconds for a release of 100,000 tracks), and refuses
a dataset whose inputs changed, naming what changed. The same files in
another directory (a moved manual dir) pass, with a note.
"""

import dataclasses
import hashlib
import json
import os

from ctxtag.sources import mels

INPUTS_FILE = "inputs.json"
FORMAT = 1
# Changed files a message names, per folder and kind of change.
_MAX_NAMED = 3
_NOUNS = {mels.AUDIO_DIR: "audio files", mels.SPECTROGRAM_DIR:
          "spectrogram files", "": "playlist slices"}
_FOLDERS = {"audio": mels.AUDIO_DIR, "spectrograms": mels.SPECTROGRAM_DIR}


def _sha256(path: str) -> dict:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return {"sha256": digest.hexdigest(), "size": os.path.getsize(path)}


def _stat(path: str) -> list[int]:
  stat = os.stat(path)
  return [stat.st_size, stat.st_mtime_ns]


def _media(manual_dir: str, kinds: tuple[str, ...]) -> dict[str, list[int]]:
  """Every file of the folders read that a track could be read from."""
  found = {}
  for kind in kinds:
    folder = _FOLDERS[kind]
    directory = os.path.join(manual_dir, folder)
    if not os.path.isdir(directory):
      continue
    with os.scandir(directory) as entries:
      for entry in entries:
        name = entry.name
        if kind == "audio":
          stem, _, extension = name.rpartition(".")
          usable = bool(stem) and extension.lower() in mels.AUDIO_EXTENSIONS
        else:
          usable = name.startswith("mels") and name.endswith(".npz")
        if usable and entry.is_file():
          stat = entry.stat()
          found[f"{folder}/{name}"] = [stat.st_size, stat.st_mtime_ns]
  return dict(sorted(found.items()))


def _plain(value):
  """`value` as JSON would give it back (tuples become lists)."""
  return json.loads(json.dumps(value))


def fingerprint(manual_dir: str, tables: list[str], slices: list[str],
                settings: mels.AudioSettings, config_name: str,
                split) -> dict:
  """What a build of `manual_dir` reads, as inputs.json records it.

  Args:
    manual_dir: the manual dir (absolute).
    tables: names (relative to `manual_dir`) of the CSVs the source reads,
      present or not; hashed.
    slices: names of large table files (playlist slices); stat'ed only.
    settings: the source's settings (which folders it reads tracks from).
    config_name: the builder config's name.
    split: the split settings (an `assemble.SplitSettings`).

  Returns:
    The record, JSON-serialisable.
  """
  recorded = {}
  for name in tables:
    path = os.path.join(manual_dir, name)
    recorded[name] = _sha256(path) if os.path.isfile(path) else None
  for name in slices:
    recorded[name] = {"stat": _stat(os.path.join(manual_dir, name))}
  return {
      "format": FORMAT,
      "manual_dir": manual_dir,
      "settings": _plain({"config": config_name,
                          "source": dataclasses.asdict(settings),
                          "split": dataclasses.asdict(split)}),
      "tables": recorded,
      "files": _media(manual_dir, settings.kinds()),
  }


def _folder(name: str) -> str:
  return name.partition("/")[0] if "/" in name else ""


def _file_changes(old: dict, new: dict) -> list[str]:
  """"12 audio files added (audio/1.mp3, ...), 1 changed (audio/5.mp3)",
  one entry per folder."""
  by_folder = {}
  for name in sorted(set(old) | set(new)):
    if name not in old:
      change = "added"
    elif name not in new:
      change = "removed"
    elif list(old[name]) != list(new[name]):
      change = "changed"
    else:
      continue
    by_folder.setdefault(_folder(name), {}).setdefault(change, []).append(
        name)
  texts = []
  for folder, changes in by_folder.items():
    parts = []
    for change in ("added", "removed", "changed"):
      names = changes.get(change, [])
      if not names:
        continue
      shown = ", ".join(names[:_MAX_NAMED]) + (
          ", ..." if len(names) > _MAX_NAMED else "")
      noun = ""
      if not parts:  # the first names the kind: "1 audio file added"
        noun = _NOUNS.get(folder, "files")
        noun = " " + (noun[:-1] if len(names) == 1 else noun)
      parts.append(f"{len(names)}{noun} {change} ({shown})")
    texts.append(", ".join(parts))
  return texts


def changes(recorded: dict, current: dict) -> list[str]:
  """What differs between the inputs a dataset was built from and those
  there now, one phrase each ([] if nothing that the dataset depends on).

  Args:
    recorded: the dataset's inputs.json.
    current: `fingerprint` of the manual dir now.
  """
  if not recorded:
    return [f"its {INPUTS_FILE} is unreadable"]
  found = []
  if recorded.get("settings") != current["settings"]:
    found.append("the build settings changed (was"
                 f" {json.dumps(recorded.get('settings'), sort_keys=True)})")
  old_tables, new_tables = recorded.get("tables", {}), current["tables"]
  slices_old = {n: v for n, v in old_tables.items() if v and "stat" in v}
  slices_new = {n: v for n, v in new_tables.items() if v and "stat" in v}
  for name in sorted(set(old_tables) | set(new_tables)):
    if name in slices_old or name in slices_new:
      continue
    old, new = old_tables.get(name), new_tables.get(name)
    if old == new:
      continue
    if old is None:
      found.append(f"{name} added")
    elif new is None:
      found.append(f"{name} removed")
    else:
      found.append(f"{name} changed")
  found += _file_changes({n: v["stat"] for n, v in slices_old.items()},
                         {n: v["stat"] for n, v in slices_new.items()})
  found += _file_changes(recorded.get("files", {}), current["files"])
  return found


def read(dataset_path: str) -> dict | None:
  """The dataset's inputs.json; None if it has none (built by a ctxtag
  before it recorded its inputs, or a simulated dataset)."""
  path = os.path.join(dataset_path, INPUTS_FILE)
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except ValueError:
    return {}  # damaged: compares as changed

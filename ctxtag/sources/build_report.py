"""What a build kept and what it dropped, per reason: build_report.json.

A real-data build never stops on a defective item and never drops one
silently: each is counted under exactly one reason, with the first few
examples, and the report is written beside dataset_info.json. Under
`strict`, the first defect is an error instead, naming the file and the row
or song id.

  {"splits": {split: {"tracks": n, "pairs": n}},
   "dropped": {reason: {"tracks": n, "pairs": n, "users": n,
                        "examples": [...]}},
   "padded": n,
   "sources": {"audio": n, "spectrograms": n},
   "decoder_notes": {"tracks": n, "examples": [{"song_id", "file",
                                                "status", "notes"}]},
   "several_audio_files": {"tracks": n, "examples": [{"song_id", "used",
                                                      "ignored": [...]}]},
   "split_guarantee": "cold_user split: 0 of ... test users are in train"}

"sources" counts the tracks read from audio/ and from spectrograms/ (a
track with neither is counted as dropped, audio_missing); some of them may
then be dropped as unreadable. "decoder_notes" counts the tracks whose
decoder wrote to stderr while decoding them (kept or not: "status" says),
with the notes of the first few. "several_audio_files" counts the tracks
with more than one file in audio/ (123.flac and 123.mp3): one is read, the
others are not, and which is which is listed for the first few; it is a
note, not a drop (the track is read from the file used, and --strict does
not stop on it). "split_guarantee" is there for cold splits only.
"""

import collections

from ctxtag import errors

REPORT_FILE = "build_report.json"
MAX_EXAMPLES = 5


class DefectError(errors.UserError, ValueError):
  """A defective input item met under --strict; the message names it."""


class BuildReport:
  """Counts of kept and dropped items of one build."""

  def __init__(self, strict: bool = False):
    self.strict = strict
    self.splits: dict[str, dict[str, int]] = {}
    self.dropped: dict[str, dict] = collections.OrderedDict()
    self.padded = 0
    self.sources = {"audio": 0, "spectrograms": 0}
    self.decoder_notes = {"tracks": 0, "examples": []}
    self.several_audio_files = {"tracks": 0, "examples": []}
    self.split_guarantee = ""

  def several_files(self, song_id: int, used: str,
                    ignored: list[str]) -> None:
    """Counts one track with several audio files.

    Args:
      song_id: the track.
      used: the file it is read from.
      ignored: its other files, not read.
    """
    self.several_audio_files["tracks"] += 1
    if len(self.several_audio_files["examples"]) < MAX_EXAMPLES:
      self.several_audio_files["examples"].append(
          {"song_id": song_id, "used": used, "ignored": list(ignored)})

  def count_source(self, kind: str) -> None:
    """Counts one track read from `kind` ("audio" or "spectrograms")."""
    self.sources[kind] = self.sources.get(kind, 0) + 1

  def decoder_note(self, song_id: int, path: str, status: str,
                   notes: str) -> None:
    """Counts one track whose decoder wrote `notes` to stderr.

    Args:
      song_id: the track.
      path: its file.
      status: what became of it: "ok" (kept) or the reason it was dropped.
      notes: the decoder's text.
    """
    self.decoder_notes["tracks"] += 1
    if len(self.decoder_notes["examples"]) < MAX_EXAMPLES:
      self.decoder_notes["examples"].append(
          {"song_id": song_id, "file": path, "status": status,
           "notes": notes})

  def drop(self, reason: str, where: str, what: str, example, *,
           tracks: int = 0, pairs: int = 0, users: int = 0) -> None:
    """Counts one defective item, or raises under `strict`.

    Args:
      reason: a short key, e.g. "audio_missing".
      where: the file and row, or the song id, e.g. "train_set.csv line 7".
      what: what is wrong and what was expected, for the strict error.
      example: what the report lists for it (an id or a row).
      tracks, pairs, users: how many of each this item takes out.
    """
    if self.strict:
      raise DefectError(f"{where}: {what} (--strict stops at the first"
                        " defect; without it the item is skipped and counted"
                        " in build_report.json)")
    entry = self.dropped.setdefault(
        reason, {"tracks": 0, "pairs": 0, "users": 0, "examples": []})
    entry["tracks"] += tracks
    entry["pairs"] += pairs
    entry["users"] += users
    if len(entry["examples"]) < MAX_EXAMPLES:
      entry["examples"].append(example)

  def add_pairs(self, reason: str, pairs: int) -> None:
    """Adds pairs taken out by an item already counted under `reason`."""
    self.dropped[reason]["pairs"] += pairs

  def set_split(self, split: str, tracks: int, pairs: int) -> None:
    self.splits[split] = {"tracks": int(tracks), "pairs": int(pairs)}

  def dropped_pairs(self) -> int:
    return sum(entry["pairs"] for entry in self.dropped.values())

  def to_json(self) -> dict:
    report = {"splits": self.splits, "dropped": dict(self.dropped),
              "padded": self.padded, "sources": dict(self.sources),
              "decoder_notes": self.decoder_notes,
              "several_audio_files": self.several_audio_files}
    if self.split_guarantee:
      report["split_guarantee"] = self.split_guarantee
    return report


def format_report(report: dict) -> str:
  """build_report.json as plain text, for the terminal."""
  kept = sum(s["pairs"] for s in report["splits"].values())
  dropped = sum(d["pairs"] for d in report["dropped"].values())
  lines = [f"build report: {kept} pairs kept, {dropped} dropped,"
           f" {report['padded']} tracks zero-padded"]
  if report["dropped"]:
    lines.append(f"  {'dropped because':<28} {'tracks':>7} {'pairs':>8}"
                 f" {'users':>7}  first examples")
    for reason, entry in report["dropped"].items():
      examples = ", ".join(str(e) for e in entry["examples"][:3])
      lines.append(f"  {reason:<28} {entry['tracks']:>7} {entry['pairs']:>8}"
                   f" {entry['users']:>7}  {examples}")
  if "sources" in report:  # reports of ctxtag before per-track inputs lack it
    sources = report["sources"]
    lines.append(f"  tracks read from audio/: {sources.get('audio', 0)},"
                 f" from spectrograms/: {sources.get('spectrograms', 0)}")
  notes = report.get("decoder_notes") or {"tracks": 0}
  if notes["tracks"]:
    lines.append(f"  decoder notes on {notes['tracks']} track(s):")
    for example in notes["examples"][:3]:
      text = example["notes"].splitlines()
      more = f" (+{len(text) - 1} more lines)" if len(text) > 1 else ""
      fate = ("kept" if example["status"] == "ok"
              else f"dropped: {example['status']}")
      lines.append(f"    song {example['song_id']} ({example['file']},"
                   f" {fate}): {text[0]}{more}")
  several = report.get("several_audio_files") or {"tracks": 0}
  if several["tracks"]:
    lines.append(f"  several audio files for {several['tracks']} track(s);"
                 " each is read from one, the others are ignored:")
    for example in several["examples"][:3]:
      lines.append(f"    song {example['song_id']}: used {example['used']},"
                   f" ignored {', '.join(example['ignored'])}")
  if report.get("split_guarantee"):
    lines.append(f"  {report['split_guarantee']}")
  return "\n".join(lines)

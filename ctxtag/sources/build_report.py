"""What a build kept and what it dropped, per reason: build_report.json.

A real-data build never stops on a defective item and never drops one
silently: each is counted under exactly one reason, with the first few
examples, and the report is written beside dataset_info.json. Under
`strict`, the first defect is an error instead, naming the file and the row
or song id.

  {"splits": {split: {"tracks": n, "pairs": n}},
   "dropped": {reason: {"tracks": n, "pairs": n, "users": n,
                        "examples": [...]}},
   "padded": n}
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
    return {"splits": self.splits, "dropped": dict(self.dropped),
            "padded": self.padded}


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
  return "\n".join(lines)

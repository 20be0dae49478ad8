"""The (song, user, context) pair table that real-data sources work on."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Pairs:
  """Pairs as parallel int64 arrays: one (song, user, context) per row.

  Attributes:
    song_id: the track of each pair.
    user_id: the user of each pair.
    label: index of each pair's context in `ctxtag.labels.LABELS`.
  """
  song_id: np.ndarray
  user_id: np.ndarray
  label: np.ndarray

  def __post_init__(self):
    for field in ("song_id", "user_id", "label"):
      object.__setattr__(self, field,
                         np.asarray(getattr(self, field), np.int64))
    if not len(self.song_id) == len(self.user_id) == len(self.label):
      raise ValueError("Pairs columns differ in length")

  def __len__(self) -> int:
    return len(self.label)

  def take(self, selection) -> "Pairs":
    """The rows picked by a boolean mask or an index array."""
    return Pairs(self.song_id[selection], self.user_id[selection],
                 self.label[selection])

  @classmethod
  def concatenate(cls, parts: list["Pairs"]) -> "Pairs":
    if not parts:
      return cls(np.zeros(0), np.zeros(0), np.zeros(0))
    return cls(np.concatenate([p.song_id for p in parts]),
               np.concatenate([p.user_id for p in parts]),
               np.concatenate([p.label for p in parts]))

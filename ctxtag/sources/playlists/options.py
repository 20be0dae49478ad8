"""The playlists source's settings: the collection rules' thresholds and
keywords (`MiningRules`), and the `--option key=value` settings of a build
(`Options`), which spell the same rules as flat fields."""

import dataclasses
import re

from ctxtag import errors
from ctxtag import labels
from ctxtag.sources import mels

_WORD_EDGES = re.compile(r"\w(.*\w)?", re.DOTALL)


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
    """The keyword table of these rules.

    Returns:
      Lower-case keyword -> label index.

    Raises:
      ConfigError: on an empty table, a keyword that is not a whole word, a
        label outside `ctxtag.labels.LABELS`, or a keyword given two labels.
    """
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
    """ConfigError on a bad audio setting or collection rule."""
    super().validate()
    self.rules()

  def rules(self) -> MiningRules:
    """The collection rules these settings spell."""
    keywords = tuple(k.strip() for k in self.keywords.split(";")
                     if k.strip()) or labels.LABELS
    return MiningRules(self.min_users, self.max_users, self.min_contexts,
                       keywords)

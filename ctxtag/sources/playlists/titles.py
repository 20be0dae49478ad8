"""Rule 1: a playlist's context is the keyword its title names.

Titles and keywords are Unicode-NFKC-normalised and case-folded, and a
keyword counts as a whole word, where words are runs of letters; a
hyphenated word whose parts join into a keyword reads as it.
"""

import dataclasses
import functools
import re
import unicodedata

import numpy as np

from ctxtag import labels
from ctxtag.sources.playlists import options

# Context of a playlist without a keyword, and of an ambiguous one.
NO_CONTEXT = -1
AMBIGUOUS = -2

# A letter: a word character that is not a digit or "_". Words are runs of
# letters, so digits, "_" and punctuation all separate them ("gym_songs",
# "gym2": gym).
_LETTER = r"[^\W\d_]"
_HYPHENATED = re.compile(rf"{_LETTER}+(?:-{_LETTER}+)+")


def normalize(text: str) -> str:
  """A title or keyword as titles are matched.

  Args:
    text: a title or keyword.

  Returns:
    `text` in Unicode NFKC (full-width "ｇｙｍ" is "gym"), then case-folded
    ("GYM", "Gym": "gym").
  """
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
def _matcher(rules: options.MiningRules) -> _TitleMatcher:
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


def title_contexts(titles: list[str],
                   rules: options.MiningRules = options.MiningRules()
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


def title_labels(title: str, rules: options.MiningRules) -> list[str]:
  """The labels a title names, for messages.

  Args:
    title: a playlist title.
    rules: whose keywords to look for.

  Returns:
    The label names, in label order.
  """
  return [labels.LABELS[index]
          for index in sorted(_matcher(rules).labels_of(title))]

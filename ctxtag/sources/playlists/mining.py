"""Rules 1-3 over the whole table: playlists mined into (song, user,
context) pairs, every dropped pair counted under one reason.

Users and songs are numbered 0..n-1 and each track entry gets one int64
(user, song) key, so that the rules are sorts and counts over arrays rather
than loops over playlists.
"""

import dataclasses

import numpy as np

from ctxtag import labels
from ctxtag.sources import build_report
from ctxtag.sources import interactions as interactions_lib
from ctxtag.sources import pairs as pairs_lib
from ctxtag.sources.playlists import inputs as inputs_lib
from ctxtag.sources.playlists import options
from ctxtag.sources.playlists import titles

AMBIGUOUS_TITLE = "ambiguous_title"
CONFLICTING_CONTEXTS = "conflicting_contexts"
TRACK_TOO_FEW_USERS = "track_too_few_users"
TRACK_TOO_MANY_USERS = "track_too_many_users"
TRACK_TOO_FEW_CONTEXTS = "track_too_few_contexts"
# Precedence of the track rules: a track is counted under the first it fails.
TRACK_REASONS = (TRACK_TOO_FEW_USERS, TRACK_TOO_MANY_USERS,
                 TRACK_TOO_FEW_CONTEXTS)


@dataclasses.dataclass(frozen=True)
class MinedPairs:
  """What the collection rules keep, and what embeddings are computed from.

  Attributes:
    pairs: the kept (song, user, context) pairs, sorted by song then user.
    interactions: every distinct (user, song) of every playlist, context or
      not: the listening data for user embeddings.
    song_uris: song id -> URI id for MPD slices, else None.
    stats: counts along the way: playlists, track_entries, users, songs,
      interactions, context_playlists, ambiguous_playlists, candidate_pairs
      (distinct (user, song) of context and ambiguous playlists),
      conflicting_pairs, kept_pairs, kept_tracks, kept_users.
  """
  pairs: pairs_lib.Pairs
  interactions: interactions_lib.Interactions
  song_uris: dict[int, str] | None
  stats: dict[str, int]


def mine(inputs: inputs_lib.PlaylistInputs, rules: options.MiningRules,
         report: build_report.BuildReport) -> MinedPairs:
  """Applies the collection rules 1-3 to the playlists.

  Args:
    inputs: from `read_playlist_inputs`.
    rules: the thresholds and keywords.
    report: where skips are counted; under strict the first one raises a
      DefectError naming its file and row.

  Returns:
    The kept pairs, every (user, song) interaction, the URI mapping.
  """
  codes = _codes(inputs)
  context_L = titles.title_contexts(inputs.title, rules)
  context_E = context_L[inputs.track_playlist]
  key, label, conflicting_key = _context_sets(codes, context_E)
  candidate_key = _distinct(np.concatenate([key, conflicting_key]))
  ambiguous_only = _count_ambiguous(inputs, rules, codes, context_L, context_E,
                                    candidate_key, report)
  _count_conflicts(inputs, codes, context_E, conflicting_key, report)
  kept = _apply_track_rule(rules, codes, key, label, report)
  user, song = codes.user_song(key[kept])
  order = np.lexsort((user, song))
  pairs = pairs_lib.Pairs(song[order], user[order], label[kept][order])
  interaction_user, interaction_song = codes.user_song(_distinct(codes.key_E))
  stats = _stats(inputs, context_L, codes, pairs, len(conflicting_key))
  stats["interactions"] = len(interaction_user)
  stats["candidate_pairs"] = len(candidate_key) + ambiguous_only
  return MinedPairs(
      pairs=pairs,
      interactions=interactions_lib.Interactions(interaction_user,
                                                 interaction_song),
      song_uris=inputs.song_uris, stats=stats)


@dataclasses.dataclass(frozen=True)
class _Codes:
  """Users and songs numbered 0..n-1, and a (user, song) key per entry."""
  user_values: np.ndarray  # int64[U] sorted user ids
  song_values: np.ndarray  # int64[S] sorted song ids
  key_E: np.ndarray  # int64[E] user_code * S + song_code

  def user_song(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The user ids and song ids of (user, song) keys."""
    songs = len(self.song_values)
    return self.user_values[key // songs], self.song_values[key % songs]


def _codes(inputs: inputs_lib.PlaylistInputs) -> _Codes:
  user_values, user_code_L = np.unique(inputs.user_id, return_inverse=True)
  song_values, song_code_E = np.unique(inputs.track_song, return_inverse=True)
  # Keys are later multiplied by the number of labels (`_context_sets`).
  if len(user_values) * max(len(song_values), 1) * labels.NUM_LABELS >= 2**62:
    raise ValueError("too many users x songs for int64 (user, song) keys")
  key_E = user_code_L[inputs.track_playlist] * len(song_values) + song_code_E
  return _Codes(user_values, song_values, key_E)


def _distinct(values: np.ndarray) -> np.ndarray:
  """np.unique by sorting: numpy 2's default hashing is ~15x slower here."""
  values = np.sort(values)
  return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else (
      values)


def _runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Start index and length of each run of equal values."""
  starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]]
                          ) if len(sorted_values) else np.zeros(0, np.int64)
  return starts, np.diff(np.r_[starts, len(sorted_values)])


def _isin_sorted(values: np.ndarray, sorted_unique: np.ndarray) -> np.ndarray:
  if not len(sorted_unique):
    return np.zeros(len(values), bool)
  position = np.minimum(np.searchsorted(sorted_unique, values),
                        len(sorted_unique) - 1)
  return sorted_unique[position] == values


def _context_sets(codes: _Codes, context_E: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Rule 2: (user, song) keys with one context, their label, conflicts.

  Returns:
    single_key, single_label: the pairs, sorted by key;
    conflicting_key: the (user, song) keys with several contexts, sorted.
  """
  chosen = context_E >= 0
  key_label = _distinct(codes.key_E[chosen] * labels.NUM_LABELS
                        + context_E[chosen])
  key, label = key_label // labels.NUM_LABELS, key_label % labels.NUM_LABELS
  starts, lengths = _runs(key)
  single = starts[lengths == 1]
  return key[single], label[single], key[starts[lengths > 1]]


def _drop_items(report: build_report.BuildReport, reason: str, count: int,
                describe, *, tracks=0, pairs=0) -> None:
  """Counts `count` items under `reason`.

  The first few go one by one (they are the report's examples, and the
  first is the strict error); the rest go in one call, as the report keeps
  only totals beyond its examples.

  Args:
    report: where to count.
    reason: the report's key.
    count: how many items.
    describe: item index -> (where, what, example), called for the first few.
    tracks, pairs: per-item int64 arrays (or one int for all items).
  """
  tracks_N = np.broadcast_to(np.asarray(tracks, np.int64), (count,))
  pairs_N = np.broadcast_to(np.asarray(pairs, np.int64), (count,))
  shown = min(count, build_report.MAX_EXAMPLES)
  for item in range(shown):
    where, what, example = describe(item)
    report.drop(reason, where, what, example, tracks=int(tracks_N[item]),
                pairs=int(pairs_N[item]))
  if count > shown:
    where, what, example = describe(shown)
    report.drop(reason, where, what, example,
                tracks=int(tracks_N[shown:].sum()),
                pairs=int(pairs_N[shown:].sum()))


def _count_ambiguous(inputs, rules, codes, context_L, context_E,
                     candidate_key, report) -> int:
  """Rule 1's skips: each ambiguous playlist, with the pairs it alone held.

  Returns:
    How many (user, song) pairs only ambiguous playlists held.
  """
  ambiguous_L = np.flatnonzero(context_L == titles.AMBIGUOUS)
  entries = np.flatnonzero(context_E == titles.AMBIGUOUS)
  key, playlist = codes.key_E[entries], inputs.track_playlist[entries]
  lost = ~_isin_sorted(key, candidate_key)
  key, playlist = key[lost], playlist[lost]
  # Each lost pair is counted once, under the first of its playlists.
  order = np.lexsort((playlist, key))
  starts, _ = _runs(key[order])
  lost_L = np.bincount(playlist[order][starts], minlength=len(context_L))

  def describe(item):
    index = ambiguous_L[item]
    title = inputs.title[index]
    return (inputs.where(index),
            f"title {title!r} names several contexts"
            f" ({', '.join(titles.title_labels(title, rules))}); expected"
            " one",
            f"{inputs.where(index, short=True)}: {title}")

  _drop_items(report, AMBIGUOUS_TITLE, len(ambiguous_L), describe,
              pairs=lost_L[ambiguous_L])
  return len(starts)


def _count_conflicts(inputs, codes, context_E, conflicting_key,
                     report) -> None:
  """Rule 2's skips: one pair per (user, song) with several contexts."""
  def describe(item):
    key = conflicting_key[item]
    user, song = codes.user_song(np.array([key]))
    entries = np.flatnonzero((codes.key_E == key) & (context_E >= 0))
    rows = np.unique(inputs.track_playlist[entries])
    contexts = sorted({labels.LABELS[context_E[e]] for e in entries})
    where = ", ".join(inputs.where(row) for row in rows)
    return (f"user {user[0]}, song {song[0]} ({where})",
            f"the user gave the song several contexts"
            f" ({', '.join(contexts)}); expected one",
            f"user {user[0]} song {song[0]}: {'+'.join(contexts)}")

  _drop_items(report, CONFLICTING_CONTEXTS, len(conflicting_key), describe,
              pairs=1)


def _track_reasons(rules: options.MiningRules, users_S: np.ndarray,
                   contexts_S: np.ndarray) -> np.ndarray:
  """Rule 3 per song: -1 kept, else the index in TRACK_REASONS."""
  return np.select(
      [users_S < rules.min_users, users_S > rules.max_users,
       contexts_S < rules.min_contexts],
      [0, 1, 2], default=-1)


def _apply_track_rule(rules, codes, key, label, report) -> np.ndarray:
  """Rule 3: the mask of pairs whose track is kept; drops counted."""
  songs = len(codes.song_values)
  song_code = key % songs
  users_S = np.bincount(song_code, minlength=songs)
  song_label = _distinct(song_code * labels.NUM_LABELS + label)
  contexts_S = np.bincount(song_label // labels.NUM_LABELS, minlength=songs)
  reason_S = _track_reasons(rules, users_S, contexts_S)
  # A song without pairs was never a candidate, so it is not a drop.
  reason_S[users_S == 0] = -1
  for index, reason in enumerate(TRACK_REASONS):
    failed = np.flatnonzero(reason_S == index)

    def describe(item, failed=failed):
      song = failed[item]
      return (f"song {codes.song_values[song]}",
              f"{users_S[song]} distinct users and {contexts_S[song]}"
              f" contexts; a kept track has {rules.min_users} to"
              f" {rules.max_users} users and at least {rules.min_contexts}"
              " contexts", int(codes.song_values[song]))

    _drop_items(report, reason, len(failed), describe, tracks=1,
                pairs=users_S[failed])
  return reason_S[song_code] == -1


def _stats(inputs, context_L, codes, pairs, conflicting) -> dict[str, int]:
  return {
      "playlists": len(context_L),
      "track_entries": len(inputs.track_song),
      "users": len(codes.user_values),
      "songs": len(codes.song_values),
      "context_playlists": int(np.sum(context_L >= 0)),
      "ambiguous_playlists": int(np.sum(context_L == titles.AMBIGUOUS)),
      "conflicting_pairs": int(conflicting),
      "kept_pairs": len(pairs),
      "kept_tracks": len(_distinct(pairs.song_id)),
      "kept_users": len(_distinct(pairs.user_id)),
  }

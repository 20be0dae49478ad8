"""Summary statistics of a contextual_tags split, as the paper reports them."""

import numpy as np

from ctxtag import input_pipeline
from ctxtag import labels


def summarize(split: input_pipeline.Split) -> dict:
  """Counts and shares of one split.

  Returns:
    dict with tracks, pairs, users, per-context shares of the pairs, and
    min/mean/max of users per track and distinct contexts per track.
  """
  users_per_track = np.bincount(split.pair_track_P, minlength=split.num_tracks)
  contexts_per_track = split.track_labels_NxC.sum(axis=1)
  shares = np.bincount(split.label_P, minlength=labels.NUM_LABELS) / max(
      split.num_pairs, 1)
  pairs_per_user = np.unique(split.user_id_P, return_counts=True)[1]
  return {
      "tracks": split.num_tracks,
      "pairs": split.num_pairs,
      "users": len(pairs_per_user),
      "pairs_per_user_mean": float(pairs_per_user.mean()),
      "context_shares": dict(zip(labels.LABELS, shares.round(4).tolist())),
      "users_per_track": _spread(users_per_track),
      "contexts_per_track": _spread(contexts_per_track),
  }


def _spread(values: np.ndarray) -> dict:
  return {"min": float(values.min()), "mean": round(float(values.mean()), 3),
          "max": float(values.max())}


def format_summary(summaries: dict[str, dict]) -> str:
  """A plain-text table of `summarize` results keyed by split name."""
  lines = [f"{'split':<11} {'tracks':>7} {'pairs':>8} {'users':>7}"
           f" {'pairs/user':>10} {'users/track':>16} {'contexts/track':>16}"]
  for name, summary in summaries.items():
    upt, cpt = summary["users_per_track"], summary["contexts_per_track"]
    lines.append(
        f"{name:<11} {summary['tracks']:>7} {summary['pairs']:>8}"
        f" {summary['users']:>7} {summary['pairs_per_user_mean']:>10.2f}"
        f" {upt['min']:>4.0f}/{upt['mean']:>5.2f}/{upt['max']:<4.0f}"
        f"  {cpt['min']:>4.0f}/{cpt['mean']:>5.2f}/{cpt['max']:<4.0f}")
  lines.append("(users/track and contexts/track: min/mean/max)")
  lines.append("context shares of the pairs:")
  lines.append(" " * 11 + "".join(f"{label:>8}" for label in labels.LABELS))
  for name, summary in summaries.items():
    lines.append(f"{name:<11}" + "".join(
        f"{share:>8.3f}" for share in summary["context_shares"].values()))
  return "\n".join(lines)

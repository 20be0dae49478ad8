r"""Mining contexts from playlists at scale: time, memory, report, splits.

  python -m benchmarks.playlist_mining [--playlists=100000] [--seed=0]
                                       [--mpd=true] [--keep_dir=DIR]

Generates a seeded synthetic playlist set shaped like a streaming service's:
users with several playlists (geometric, mean 2.5), ~50 tracks a playlist
(log-normal), tracks drawn by a long-tailed popularity that each context
reshuffles for half of its draws, and titles of which most name no context
(including near misses such as "workouts", "Tonight", "Carpool"), a third
name one (in several spellings, some repeating the keyword) and a few name
two (ambiguous). It writes playlists.csv + playlist_tracks.csv (and, with
--mpd, the same playlists as Million Playlist Dataset slices) to a temporary
directory and runs each stage in a fresh process so that its peak resident
memory (VmHWM) is its own: reading, mining (rules 1-3), 256-d user
embeddings, and the three split strategies. A second fresh process repeats
reading and mining under tracemalloc for the peak of Python and numpy
allocations.
"""

import csv
import datetime
import json
import multiprocessing
import os
import platform
import resource
import shutil
import tempfile
import time
import tracemalloc

from absl import app
from absl import flags
import numpy as np

from ctxtag import labels
from ctxtag.sources import build_report
from ctxtag.sources import interactions
from ctxtag.sources import playlists
from ctxtag.sources import splits

_PLAYLISTS = flags.DEFINE_integer("playlists", 100_000,
                                  "Playlists to generate.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic set.")
_MPD = flags.DEFINE_bool("mpd", True, "Also time the MPD-slice layout.")
_KEEP_DIR = flags.DEFINE_string(
    "keep_dir", None, "Write the inputs here and keep them (default: a"
    " temporary directory, removed at the end).")

CATALOGUE = 400_000
NON_CONTEXT_TITLES = (
    "my mix", "Favorites", "rock classics", "Throwbacks", "chill", "party",
    "dance hits", "Daily Mix", "roadtrip", "workouts", "Tonight",
    "Carpool karaoke", "oldies", "indie", "2019", "new music", "hip hop",
    "study", "love songs", "Summertime sadness?", "nights out")
CONTEXT_TEMPLATES = ("{kw}", "{KW}!!", "my {kw} songs", "{kw}-vibes",
                     "{Kw} 2020", "best of {kw}", "{kw} {kw}")
TITLE_SHARES = (0.62, 0.33, 0.05)  # no context, one context, ambiguous


def _titles(rng, count):
  """Playlist titles and the context each was drawn for (-1 for none)."""
  kind = rng.choice(3, size=count, p=TITLE_SHARES)
  shares = np.asarray(labels.PAPER_TEST_SHARES) / np.sum(
      labels.PAPER_TEST_SHARES)
  context = rng.choice(labels.NUM_LABELS, size=count, p=shares)
  other = (context + rng.integers(1, labels.NUM_LABELS, count)) % (
      labels.NUM_LABELS)
  template = rng.integers(len(CONTEXT_TEMPLATES), size=count)
  plain = rng.integers(len(NON_CONTEXT_TITLES), size=count)
  titles = []
  for index in range(count):
    keyword = labels.LABELS[context[index]]
    if kind[index] == 0:
      titles.append(NON_CONTEXT_TITLES[plain[index]])
    elif kind[index] == 1:
      titles.append(CONTEXT_TEMPLATES[template[index]].format(
          kw=keyword, KW=keyword.upper(), Kw=keyword.title()))
    else:
      titles.append(f"{keyword} {labels.LABELS[other[index]]}")
  return titles, np.where(kind == 1, context, -1)


def synthetic_playlists(count: int, seed: int):
  """A seeded synthetic playlist set.

  Returns:
    playlist user ids int64[P], titles, track entries' playlist rows
    int64[E] and song ids int64[E].
  """
  rng = np.random.default_rng(seed)
  per_user = rng.geometric(0.4, size=count)
  user_L = np.repeat(np.arange(count), per_user)[:count] + 1000
  titles, context_L = _titles(rng, count)
  lengths = np.clip(rng.lognormal(np.log(40), 0.6, count), 5, 250).astype(
      np.int64)
  playlist_E = np.repeat(np.arange(count), lengths)
  popularity = 1.0 / (np.arange(CATALOGUE) + 20.0)
  cumulative = np.cumsum(popularity) / popularity.sum()
  rank_E = np.minimum(np.searchsorted(cumulative, rng.random(len(playlist_E))),
                      CATALOGUE - 1)
  shuffles = np.stack([rng.permutation(CATALOGUE)
                       for _ in range(labels.NUM_LABELS)])
  context_E = context_L[playlist_E]
  reshuffled = (context_E >= 0) & (rng.random(len(playlist_E)) < 0.5)
  song_E = rank_E.copy()
  song_E[reshuffled] = shuffles[context_E[reshuffled], rank_E[reshuffled]]
  return user_L, titles, playlist_E, song_E * 7 + 100_003


def write_csvs(directory, user_L, titles, playlist_E, song_E):
  with open(os.path.join(directory, playlists.PLAYLISTS_FILE), "w",
            newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(playlists.PLAYLISTS_COLUMNS)
    writer.writerows(zip(range(len(titles)), user_L.tolist(), titles))
  with open(os.path.join(directory, playlists.PLAYLIST_TRACKS_FILE), "w",
            encoding="utf-8") as f:
    f.write(",".join(playlists.PLAYLIST_TRACKS_COLUMNS) + "\n")
    for start in range(0, len(playlist_E), 500_000):
      rows = zip(playlist_E[start:start + 500_000].tolist(),
                 song_E[start:start + 500_000].tolist())
      f.write("".join(f"{p},{s}\n" for p, s in rows))


def write_mpd(directory, titles, playlist_E, song_E, per_slice=1000):
  starts = np.searchsorted(playlist_E, np.arange(len(titles) + 1))
  for first in range(0, len(titles), per_slice):
    last = min(first + per_slice, len(titles))
    slice_playlists = [
        {"pid": pid, "name": titles[pid], "collaborative": "false",
         "tracks": [{"pos": pos, "track_uri": f"spotify:track:t{song:x}"}
                    for pos, song in enumerate(
                        song_E[starts[pid]:starts[pid + 1]].tolist())]}
        for pid in range(first, last)]
    path = os.path.join(directory, f"mpd.slice.{first}-{last - 1}.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"info": {"slice": f"{first}-{last - 1}"},
                 "playlists": slice_playlists}, f)


def _rss_mb() -> float:
  """This process's peak resident memory in MB.

  Linux's VmHWM starts afresh with the process image, whereas ru_maxrss
  also counts the parent's memory at fork.
  """
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stages(directory, queue):
  """Runs in a fresh process: times and peak memory of each stage."""
  result = {"rss_start": _rss_mb()}
  start = time.perf_counter()
  inputs = playlists.read_playlist_inputs(directory)
  result["read_s"], result["rss_read"] = time.perf_counter() - start, _rss_mb()
  report = build_report.BuildReport()
  start = time.perf_counter()
  mined = playlists.mine(inputs, playlists.MiningRules(), report)
  result["mine_s"], result["rss_mine"] = time.perf_counter() - start, _rss_mb()
  del inputs
  start = time.perf_counter()
  users = np.unique(mined.pairs.user_id)
  embeddings = interactions.user_embeddings(mined.interactions, users, seed=0)
  result["embed_s"] = time.perf_counter() - start
  result["rss_embed"] = _rss_mb()
  result["embedding_users"], result["embedding_shape"] = (
      len(users), embeddings.shape)
  result["splits"] = {}
  for strategy in splits.STRATEGIES:
    start = time.perf_counter()
    parts = splits.split(mined.pairs, strategy, seed=0)
    result["splits"][strategy] = (splits.describe(parts),
                                  time.perf_counter() - start)
    if strategy == "random":
      for name, part in parts.items():
        report.set_split(name, len(np.unique(part.song_id)), len(part))
  result["report"], result["stats"] = report.to_json(), mined.stats
  queue.put(result)


def _read_and_mine(directory, queue):
  """Runs in a fresh process: time and peak memory of reading and mining."""
  start = time.perf_counter()
  playlists.mine(playlists.read_playlist_inputs(directory),
                 playlists.MiningRules(), build_report.BuildReport())
  queue.put({"seconds": time.perf_counter() - start, "rss": _rss_mb()})


def _traced(directory, queue):
  """Runs in a fresh process: tracemalloc peak of reading and mining."""
  tracemalloc.start()
  start = time.perf_counter()
  inputs = playlists.read_playlist_inputs(directory)
  read_peak = tracemalloc.get_traced_memory()[1]
  playlists.mine(inputs, playlists.MiningRules(), build_report.BuildReport())
  queue.put({"read_peak": read_peak, "peak": tracemalloc.get_traced_memory()[1],
             "seconds": time.perf_counter() - start})


def _in_fresh_process(target, directory):
  context = multiprocessing.get_context("spawn")
  queue = context.Queue()
  process = context.Process(target=target, args=(directory, queue))
  process.start()
  result = queue.get()
  process.join()
  return result


def _print_splits(split_results):
  print(f"\n{'strategy':<11} {'split':<11} {'pairs':>8} {'tracks':>7}"
        f" {'users':>7}  shared with train: users, tracks   (time)")
  for strategy, (summary, seconds) in split_results.items():
    for name in splits.SPLITS:
      sizes = summary[name]
      shared = ("" if name == "train" else
                f"{summary['overlap']['users'][f'train&{name}']:>7}"
                f" {summary['overlap']['tracks'][f'train&{name}']:>7}")
      timing = f"   ({seconds:.2f} s)" if name == "train" else ""
      print(f"{strategy:<11} {name:<11} {sizes['pairs']:>8}"
            f" {sizes['tracks']:>7} {sizes['users']:>7}  {shared}{timing}")


def main(argv):
  del argv
  directory = _KEEP_DIR.value or tempfile.mkdtemp(prefix="playlist_mining_")
  os.makedirs(directory, exist_ok=True)
  csv_dir, mpd_dir = (os.path.join(directory, name) for name in ("csv", "mpd"))
  os.makedirs(csv_dir, exist_ok=True)
  start = time.perf_counter()
  user_L, titles, playlist_E, song_E = synthetic_playlists(
      _PLAYLISTS.value, _SEED.value)
  write_csvs(csv_dir, user_L, titles, playlist_E, song_E)
  if _MPD.value:
    os.makedirs(mpd_dir, exist_ok=True)
    write_mpd(mpd_dir, titles, playlist_E, song_E)
  generated = time.perf_counter() - start
  size_mb = sum(os.path.getsize(os.path.join(csv_dir, name))
                for name in os.listdir(csv_dir)) / 2**20
  del user_L, titles, playlist_E, song_E

  stages = _in_fresh_process(_stages, csv_dir)
  traced = _in_fresh_process(_traced, csv_dir)
  mpd = _in_fresh_process(_read_and_mine, mpd_dir) if _MPD.value else None
  stats = stages["stats"]
  print(f"playlist mining benchmark, {datetime.date.today()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()}"
        f" CPU cores, Python {platform.python_version()}")
  print(f"synthetic set (seed {_SEED.value}): {stats['playlists']} playlists,"
        f" {stats['users']} users, {stats['track_entries']} track entries,"
        f" {stats['songs']} distinct songs; CSVs {size_mb:.0f} MB;"
        f" generated and written in {generated:.0f} s")
  print(f"\n{'stage':<40} {'seconds':>8} {'peak RSS MB':>12}")
  print(f"{'(process start, imports)':<40} {'':>8}"
        f" {stages['rss_start']:>12.0f}")
  for name, seconds, rss in (
      ("read CSVs", stages["read_s"], stages["rss_read"]),
      ("mine: rules 1-3", stages["mine_s"], stages["rss_mine"]),
      (f"user embeddings {stages['embedding_shape']}", stages["embed_s"],
       stages["rss_embed"])):
    print(f"{name:<40} {seconds:>8.2f} {rss:>12.0f}")
  print(f"tracemalloc peak, read + mine: {traced['peak'] / 2**20:.0f} MB"
        f" (read alone {traced['read_peak'] / 2**20:.0f} MB;"
        f" {traced['seconds']:.1f} s traced)")
  if mpd:
    print(f"{'MPD slices (same playlists): read + mine':<40}"
          f" {mpd['seconds']:>8.2f} {mpd['rss']:>12.0f}")
  print("\nmining: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
  print(build_report.format_report(stages["report"]))
  _print_splits(stages["splits"])
  if not _KEEP_DIR.value:
    shutil.rmtree(directory)


if __name__ == "__main__":
  app.run(main)

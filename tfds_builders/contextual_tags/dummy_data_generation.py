r"""Writes dummy_data/, the manual dirs TFDS's test harness builds from.

  python -m tfds_builders.contextual_tags.dummy_data_generation

dummy_data/zenodo/ is a release in the paper's layout and dummy_data/
playlists/ a playlist export that the default collection rules keep whole;
both give each track as the authors' npz mels (30 s excerpts, the configs'
default), one constant row per track so that they pack to a few KB. The
simulated configs read no manual dir. Rerun after a change to a source's
layout; the harness's expected counts are in
contextual_tags_dataset_builder_test.py.
"""

import os

from absl import app
import numpy as np

from ctxtag import audio
from ctxtag import labels

DUMMY_DATA = os.path.join(os.path.dirname(__file__), "dummy_data")
# (song, user, context) of each split: 3 tracks in train, 2 in validation
# and test, a track in several splits with other pairs, as in the release.
ZENODO_SPLITS = {
    "train": [(1, 1, "car"), (1, 2, "gym"), (2, 3, "happy"), (3, 4, "night"),
              (3, 1, "relax")],
    "validation": [(1, 5, "running"), (4, 6, "sad")],
    "test": [(2, 5, "summer"), (4, 2, "work")],
}
# Each playlist user u has one playlist, of context LABELS[u % 10]; track s
# is in the playlists of users s..s+5: 6 users (the rules keep 5-10) with 6
# contexts (at least 3).
PLAYLIST_TRACKS = 6
PLAYLIST_USERS_PER_TRACK = 6


def _write(path: str, lines: list[str]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def _write_mels(directory: str, songs) -> None:
  frames = audio.num_frames(audio.PAPER_EXCERPT_SECONDS)
  os.makedirs(os.path.join(directory, "spectrograms"), exist_ok=True)
  for song in songs:
    row = np.linspace(0.001, 0.01 * song, audio.N_MELS, dtype=np.float32)
    power = np.broadcast_to(row, (1, frames, audio.N_MELS))
    np.savez_compressed(
        os.path.join(directory, "spectrograms", f"mels{song}.npz"), power)


def _embedding(user: int) -> str:
  values = np.round(np.sin(np.arange(labels.USER_EMBEDDING_DIM) * user), 2)
  return '"[' + ", ".join(f"{v:g}" for v in values) + ']"'


def write_zenodo(directory: str) -> None:
  names = {"train": "train_set.csv", "validation": "validation_set.csv",
           "test": "test_set.csv"}
  for split, rows in ZENODO_SPLITS.items():
    lines = ["song_id,user_id," + ",".join(labels.LABELS)]
    for song, user, context in rows:
      cells = ["1" if label == context else "0" for label in labels.LABELS]
      lines.append(",".join([str(song), str(user), *cells]))
    _write(os.path.join(directory, names[split]), lines)
  users = sorted({user for rows in ZENODO_SPLITS.values()
                  for _, user, _ in rows})
  _write(os.path.join(directory, "user_embeddings.csv"),
         ["user_id,embedding"] + [f"{u},{_embedding(u)}" for u in users])
  _write_mels(directory, sorted({song for rows in ZENODO_SPLITS.values()
                                 for song, _, _ in rows}))


def write_playlists(directory: str) -> None:
  songs = range(1, PLAYLIST_TRACKS + 1)
  users = range(1, PLAYLIST_TRACKS + PLAYLIST_USERS_PER_TRACK)
  _write(os.path.join(directory, "playlists.csv"),
         ["playlist_id,user_id,title"]
         + [f"{u},{u},{labels.LABELS[u % 10]} mix" for u in users])
  _write(os.path.join(directory, "playlist_tracks.csv"),
         ["playlist_id,song_id"]
         + [f"{u},{s}" for s in songs
            for u in range(s, s + PLAYLIST_USERS_PER_TRACK)])
  _write_mels(directory, songs)


def main(argv: list[str]) -> None:
  del argv
  write_zenodo(os.path.join(DUMMY_DATA, "zenodo"))
  write_playlists(os.path.join(DUMMY_DATA, "playlists"))


if __name__ == "__main__":
  app.run(main)

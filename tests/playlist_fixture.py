"""A small playlist export with audio, written by the tests (and the README's
worked example): the paper's collection method has something to mine.

Each kept track sits in the context playlists of 6 users, with 3 or more
contexts; planted beside them: a track in too few users' playlists, one in
too many, one with too few contexts, an ambiguous title, a conflicting
(user, song), and a kept track without audio. Tracks may come as the
authors' npz mels instead of (or besides) audio.
"""

import json
import os

import numpy as np
import soundfile

from ctxtag import audio
from ctxtag import labels

NO_AUDIO_TRACK = 999


def _context_title(rng, context: str) -> str:
  pattern = rng.choice(["{} mix", "My {} songs", "{}!!", "{}-vibes",
                        "best of {}"])
  return pattern.format(context.upper() if rng.uniform() < 0.3 else context)


def _tracks_plan(num_tracks: int, rng) -> dict[int, list[tuple[int, str]]]:
  """song -> (user, context) entries, with the planted track cases."""
  plan = {}
  for song in range(1, num_tracks + 1):
    users = rng.choice(np.arange(1, 4 * num_tracks), size=6, replace=False)
    contexts = list(rng.choice(labels.LABELS, size=3, replace=False)) + list(
        rng.choice(labels.LABELS, size=3))
    plan[song] = list(zip(users.tolist(), contexts))
  base = 10 * num_tracks
  plan[1001] = [(base + i, c) for i, c in enumerate(["car", "gym", "sad"])]
  plan[1002] = [(base + 10 + i, labels.LABELS[i % 10]) for i in range(12)]
  plan[1003] = [(base + 30 + i, ["car", "gym"][i % 2]) for i in range(6)]
  plan[NO_AUDIO_TRACK] = plan[1][:]
  return plan


def write_playlists(directory: str, num_tracks: int = 30,
                    seconds: float = 2.0, seed: int = 0,
                    mpd: bool = False, npz_only=(), npz_too=()) -> str:
  """Writes playlists.csv + playlist_tracks.csv (or one MPD slice with
  `mpd`) and audio/ into `directory`; returns it.

  Songs in `npz_only` get the authors' npz mels (spectrograms/mels<id>.npz)
  instead of audio; songs in `npz_too` get both. Tracks read from npz
  files are 30 s excerpts, so the audio of such an export should be
  `seconds` >= 29."""
  rng = np.random.default_rng(seed)
  playlists, entries = {}, []
  for song, annotations in _tracks_plan(num_tracks, rng).items():
    for user, context in annotations:
      key = (user, context)
      if key not in playlists:
        playlists[key] = (len(playlists) + 1, _context_title(rng, context))
      entries.append((playlists[key][0], song))
  rows = [(pid, user, title) for (user, _), (pid, title) in playlists.items()]
  extra = len(rows) + 1
  rows += [(extra, 1, "Gym and work"), (extra + 1, 2, "road trip"),
           (extra + 2, 3, "Tonight: Carpool workouts")]
  entries += [(extra, 1), (extra + 1, 2), (extra + 1, 3), (extra + 2, 4)]
  first_user, first_context = _tracks_plan(num_tracks, np.random.default_rng(
      seed))[2][0]
  other = labels.LABELS[(labels.LABEL_INDEX[first_context] + 1) % 10]
  rows.append((extra + 3, first_user, f"{other} time"))  # a conflict
  entries.append((extra + 3, 2))
  if mpd:
    _write_mpd(directory, rows, entries)
  else:
    _write_csvs(directory, rows, entries)
  songs = {song for _, song in entries} - {NO_AUDIO_TRACK}
  _write_audio(directory, songs - set(npz_only), seconds, mpd)
  _write_npz(directory, songs & (set(npz_only) | set(npz_too)), mpd)
  return directory


def _write_csvs(directory, rows, entries):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "playlists.csv"), "w") as f:
    f.write("playlist_id,user_id,title\n")
    f.writelines(f'{p},{u},"{t}"\n' for p, u, t in rows)
  with open(os.path.join(directory, "playlist_tracks.csv"), "w") as f:
    f.write("playlist_id,song_id\n")
    f.writelines(f"{p},{s}\n" for p, s in entries)


def uri_of(song: int) -> str:
  return f"spotify:track:Tr{song:06d}x"


def _write_mpd(directory, rows, entries):
  os.makedirs(directory, exist_ok=True)
  tracks = {}
  for pid, song in entries:
    tracks.setdefault(pid, []).append({"track_uri": uri_of(song),
                                       "pos": len(tracks.get(pid, []))})
  # In the MPD each playlist is its own user: the pid.
  slice_ = {"info": {"slice": "0-999"}, "playlists": [
      {"pid": pid, "name": title, "tracks": tracks.get(pid, [])}
      for pid, _, title in rows]}
  with open(os.path.join(directory, "mpd.slice.0-999.json"), "w") as f:
    json.dump(slice_, f)


def _write_npz(directory, songs, mpd):
  os.makedirs(os.path.join(directory, "spectrograms"), exist_ok=True)
  frames = audio.num_frames(audio.PAPER_EXCERPT_SECONDS)
  for song in sorted(songs):
    power = np.random.default_rng(song).exponential(
        0.01, size=(1, frames, audio.N_MELS)).astype(np.float32)
    stem = uri_of(song).rpartition(":")[2] if mpd else str(song)
    np.savez(os.path.join(directory, "spectrograms", f"mels{stem}.npz"),
             power)


def _write_audio(directory, songs, seconds, mpd):
  os.makedirs(os.path.join(directory, "audio"), exist_ok=True)
  for song in sorted(songs):
    time = np.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * (100 + 7 * song) * time)
    stem = uri_of(song).rpartition(":")[2] if mpd else str(song)
    soundfile.write(os.path.join(directory, "audio", f"{stem}.wav"),
                    wave.astype(np.float32), audio.SAMPLE_RATE)

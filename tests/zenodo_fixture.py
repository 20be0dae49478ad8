"""A small copy of the paper's public release, written by the tests.

Real files in the release's layout (CSVs, user_embeddings.csv, audio in each
format or the authors' npz mels) with defects planted where the tests name
them. `EXPECTED_KEPT` lists, by hand, the pairs a build must keep.
"""

import os

import numpy as np
import soundfile

from ctxtag import audio
from ctxtag import labels

EXCERPT_SECONDS = 2.0
SAMPLE_RATE = 44100
# Good tracks and the format of their audio.
GOOD_TRACKS = {11: "wav", 12: "flac", 13: "ogg", 14: "mp3", 15: "opus",
               16: "wav"}
PADDED_TRACK = 16  # 0.4 s short of the excerpt: zero-padded, counted
TOO_SHORT_TRACK = 21  # 1.5 s short: more than the 1 s allowed
UNREADABLE_TRACK = 22  # not audio at all
MISSING_TRACK = 23  # no file
MISSING_USER, WRONG_SIZE_USER, NAN_USER, TEXT_USER = 90, 91, 92, 93

_C = labels.LABEL_INDEX

# (song, user, context) rows of each split, in file order; a context of None
# writes the raw label cells given instead.
SPLIT_ROWS = {
    "train": [
        (11, 1, "car"), (11, 2, "gym"), (12, 1, "happy"), (12, 3, "night"),
        (13, 4, "relax"), (14, 5, "running"), (15, 6, "sad"),
        (16, 7, "summer"),
        (11, 8, [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]),   # two contexts: not one-hot
        (12, 8, [0] * 10),                         # no context: not one-hot
        (11, 1, "work"),                           # repeats (11, 1)
        ("x", 9, "car"),                           # unparsable song id
        (13, MISSING_USER, "car"), (14, WRONG_SIZE_USER, "gym"),
        (15, NAN_USER, "sad"), (16, TEXT_USER, "sad"),
        (TOO_SHORT_TRACK, 1, "car"), (UNREADABLE_TRACK, 2, "gym"),
        (MISSING_TRACK, 3, "work"),
    ],
    "validation": [
        (11, 10, "workout"), (13, 11, "work"), (12, 12, "car"),
        (TOO_SHORT_TRACK, 10, "sad"), (13, MISSING_USER, "gym"),
    ],
    "test": [
        (14, 13, "gym"), (15, 14, "summer"), (11, 15, "relax"),
        (16, 13, "night"), (MISSING_TRACK, 14, "car"),
    ],
}
GOOD_USERS = list(range(1, 16))

EXPECTED_KEPT = {
    "train": [(11, 1, "car"), (11, 2, "gym"), (12, 1, "happy"),
              (12, 3, "night"), (13, 4, "relax"), (14, 5, "running"),
              (15, 6, "sad"), (16, 7, "summer")],
    "validation": [(11, 10, "workout"), (12, 12, "car"), (13, 11, "work")],
    "test": [(11, 15, "relax"), (14, 13, "gym"), (15, 14, "summer"),
             (16, 13, "night")],
}
# reason -> (tracks, pairs, users) the build report must count.
EXPECTED_DROPPED = {
    "label_not_one_hot": (0, 2, 0),
    "duplicate_pair": (0, 1, 0),
    "row_unparsable": (0, 1, 0),
    "user_embedding_missing": (0, 2, 1),
    "user_embedding_invalid": (0, 3, 3),
    "audio_too_short": (1, 2, 0),
    "audio_unreadable": (1, 1, 0),
    "audio_missing": (1, 2, 0),
}


def embedding_of(user_id: int) -> np.ndarray:
  rng = np.random.default_rng(user_id)
  return rng.normal(size=labels.USER_EMBEDDING_DIM).astype(np.float32)


def _label_cells(context) -> list:
  if isinstance(context, list):
    return context
  cells = [0] * labels.NUM_LABELS
  cells[_C[context]] = 1
  return cells


def _write_splits(directory: str) -> None:
  files = {"train": "train_set.csv", "validation": "validation_set.csv",
           "test": "test_set.csv"}
  for split, rows in SPLIT_ROWS.items():
    lines = ["song_id,user_id," + ",".join(labels.LABELS)]
    for song, user, context in rows:
      lines.append(",".join(str(v) for v in [song, user]
                            + _label_cells(context)))
    with open(os.path.join(directory, files[split]), "w") as f:
      f.write("\n".join(lines) + "\n")


def _write_embeddings(directory: str) -> None:
  rows = ["user_id,embedding"]
  for user in GOOD_USERS:
    vector = ", ".join(repr(float(v)) for v in embedding_of(user))
    rows.append(f'{user},"[{vector}]"')
  rows.append(f'{WRONG_SIZE_USER},"[0.5, 0.25]"')
  rows.append(f'{NAN_USER},"[{", ".join(["nan"] * 256)}]"')
  rows.append(f'{TEXT_USER},"__import__(\'os\').getcwd()"')
  # Excel writes a byte-order mark; it must not hide the user_id column.
  with open(os.path.join(directory, "user_embeddings.csv"), "w",
            encoding="utf-8-sig") as f:
    f.write("\n".join(rows) + "\n")


def _tone(song_id: int, seconds: float) -> np.ndarray:
  rng = np.random.default_rng(song_id)
  time = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
  left = np.sin(2 * np.pi * (200 + 40 * song_id) * time)
  right = rng.uniform(-1, 1, size=time.shape)
  return (0.3 * np.stack([left, 0.5 * right], axis=1)).astype(np.float32)


def write_audio_file(path: str, song_id: int, seconds: float) -> None:
  extension = path.rpartition(".")[2]
  fmt = {"wav": ("WAV", None), "flac": ("FLAC", None), "ogg": ("OGG", None),
         "mp3": ("MP3", None), "opus": ("OGG", "OPUS")}[extension]
  rate = 48000 if extension == "opus" else SAMPLE_RATE
  wave = _tone(song_id, seconds)
  if rate != SAMPLE_RATE:
    wave = np.repeat(wave, 2, axis=0)[:int(seconds * rate)]
  soundfile.write(path, wave, rate, format=fmt[0], subtype=fmt[1])


def write_release(directory: str, kind: str = "audio") -> str:
  """Writes the fixture release into `directory`; returns it.

  Args:
    directory: the manual dir to fill.
    kind: "audio" (files in every format) or "spectrograms" (npz mels of
      the paper's 646 x 96 shape; the bad tracks get a wrong shape or none).
  """
  os.makedirs(directory, exist_ok=True)
  _write_splits(directory)
  _write_embeddings(directory)
  if kind == "audio":
    audio_dir = os.path.join(directory, "audio")
    os.makedirs(audio_dir, exist_ok=True)
    for song, extension in GOOD_TRACKS.items():
      seconds = EXCERPT_SECONDS + 0.5 if song != PADDED_TRACK else (
          EXCERPT_SECONDS - 0.4)
      write_audio_file(os.path.join(audio_dir, f"{song}.{extension}"), song,
                       seconds)
    write_audio_file(os.path.join(audio_dir, f"{TOO_SHORT_TRACK}.wav"),
                     TOO_SHORT_TRACK, EXCERPT_SECONDS - 1.5)
    with open(os.path.join(audio_dir, f"{UNREADABLE_TRACK}.mp3"), "wb") as f:
      f.write(b"this is no audio at all" * 100)
    with open(os.path.join(audio_dir, "notes.txt"), "w") as f:
      f.write("not a track")
  else:
    spectrogram_dir = os.path.join(directory, "spectrograms")
    os.makedirs(spectrogram_dir, exist_ok=True)
    frames = audio.num_frames(audio.PAPER_EXCERPT_SECONDS)
    for song in list(GOOD_TRACKS) + [TOO_SHORT_TRACK]:
      shape = (1, frames, audio.N_MELS) if song != TOO_SHORT_TRACK else (
          1, 600, audio.N_MELS)
      power = np.random.default_rng(song).exponential(0.01, size=shape)
      np.savez(os.path.join(spectrogram_dir, f"mels{song}.npz"),
               power.astype(np.float32))
    with open(os.path.join(spectrogram_dir,
                           f"mels{UNREADABLE_TRACK}.npz"), "wb") as f:
      f.write(b"not a zip file")
  return directory


def write_synthetic_release(directory: str, num_tracks: int, seconds: float,
                            extension: str = "wav", seed: int = 0,
                            mono_22k: bool = False) -> str:
  """A defect-free release of `num_tracks` tracks, shaped like the paper's:
  5 to 10 users a track, at least 3 contexts a track, pairs split at random
  0.56/0.16/0.28, one audio file of `seconds` a track (44.1 kHz stereo, or
  22.05 kHz mono WAV with `mono_22k`)."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(directory, "audio"), exist_ok=True)
  rows = {"train": [], "validation": [], "test": []}
  users = set()
  for song in range(1, num_tracks + 1):
    count = int(rng.integers(5, 11))
    track_users = rng.choice(20 * num_tracks, size=count, replace=False) + 1
    contexts = rng.integers(0, labels.NUM_LABELS, size=count)
    contexts[:3] = rng.choice(labels.NUM_LABELS, size=3, replace=False)
    for user, context in zip(track_users.tolist(), contexts.tolist()):
      split = rng.choice(3, p=[0.56, 0.16, 0.28])
      rows[("train", "validation", "test")[split]].append(
          (song, user, labels.LABELS[context]))
      users.add(user)
    path = os.path.join(directory, "audio", f"{song}.{extension}")
    if mono_22k:  # small files, for tests that only need many of them
      soundfile.write(path, _tone(song, seconds)[::2, 0], audio.SAMPLE_RATE)
    else:
      write_audio_file(path, song, seconds)
  files = {"train": "train_set.csv", "validation": "validation_set.csv",
           "test": "test_set.csv"}
  for split, split_rows in rows.items():
    lines = ["song_id,user_id," + ",".join(labels.LABELS)]
    lines += [",".join(str(v) for v in [s, u] + _label_cells(c))
              for s, u, c in split_rows]
    with open(os.path.join(directory, files[split]), "w") as f:
      f.write("\n".join(lines) + "\n")
  lines = ["user_id,embedding"] + [
      f'{u},"[{", ".join(f"{v:.6f}" for v in embedding_of(u))}]"'
      for u in sorted(users)]
  with open(os.path.join(directory, "user_embeddings.csv"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return directory


# A release whose tracks come partly as audio, partly as the authors' npz
# mels (whose fixed 30 s excerpts the audio then matches): each track is
# read from its audio file, else from its npz.
MIXED_AUDIO_ONLY = {12: "flac", 15: "wav", 16: "wav",
                    TOO_SHORT_TRACK: "wav"}
MIXED_NPZ_ONLY = (13, 14, UNREADABLE_TRACK)  # 22's npz is no zip file
MIXED_BOTH = 11  # audio wins
MIXED_NEITHER = MISSING_TRACK
# What the build report says of the mixed release.
EXPECTED_MIXED_SOURCES = {"audio": 5, "spectrograms": 3}


def write_npz_mel(path: str, song_id: int, frames: int | None = None) -> None:
  """The authors' layout: mel power, arr_0 of shape (1, frames, 96)."""
  frames = frames or audio.num_frames(audio.PAPER_EXCERPT_SECONDS)
  power = np.random.default_rng(song_id).exponential(
      0.01, size=(1, frames, audio.N_MELS))
  np.savez(path, power.astype(np.float32))


def write_mixed_release(directory: str) -> str:
  """The fixture release's CSVs with tracks in both folders; returns it.

  Audio only: MIXED_AUDIO_ONLY (16 is 0.4 s short of 30 s: padded; 21 is
  1.5 s short: too short); npz only: MIXED_NPZ_ONLY (22's is no zip file);
  both: MIXED_BOTH; neither: MIXED_NEITHER. Audio is 22.05 kHz mono, small
  and quick to decode.
  """
  os.makedirs(directory, exist_ok=True)
  _write_splits(directory)
  _write_embeddings(directory)
  audio_dir = os.path.join(directory, "audio")
  spectrogram_dir = os.path.join(directory, "spectrograms")
  os.makedirs(audio_dir, exist_ok=True)
  os.makedirs(spectrogram_dir, exist_ok=True)
  full = audio.PAPER_EXCERPT_SECONDS + 0.5
  lengths = {PADDED_TRACK: audio.PAPER_EXCERPT_SECONDS - 0.4,
             TOO_SHORT_TRACK: audio.PAPER_EXCERPT_SECONDS - 1.5}
  audio_tracks = {**MIXED_AUDIO_ONLY, MIXED_BOTH: "wav"}
  for song, extension in audio_tracks.items():
    wave = _tone(song, lengths.get(song, full))[::2, 0]
    soundfile.write(os.path.join(audio_dir, f"{song}.{extension}"), wave,
                    audio.SAMPLE_RATE)
  for song in (13, 14, MIXED_BOTH):
    write_npz_mel(os.path.join(spectrogram_dir, f"mels{song}.npz"), song)
  with open(os.path.join(spectrogram_dir, f"mels{UNREADABLE_TRACK}.npz"),
            "wb") as f:
    f.write(b"not a zip file")
  return directory


def corrupt_mp3(path: str, song_id: int, seconds: float) -> None:
  """An MP3 with stretches of its frames overwritten by noise: it decodes,
  and mpg123 writes "Illegal Audio-MPEG-Header ... Trying to resync" notes
  to the process's stderr."""
  write_audio_file(path, song_id, seconds)
  with open(path, "rb") as f:
    data = bytearray(f.read())
  rng = np.random.default_rng(song_id)
  for offset in range(2000, len(data) - 2000, 3000):
    data[offset:offset + 400] = rng.integers(0, 256, 400, np.uint8).tobytes()
  with open(path, "wb") as f:
    f.write(bytes(data))

"""Tagging new audio with a trained run, without its dataset.

A run keeps in its workdir what inference needs (`save_run_card`, called
when the run's dataset is ready):
  inference.json  the front end of the run's data (excerpt, offset, padding,
                  frames) and the run's dataset name;
  users.npz       user_id int64[U] and embedding float32[U, 256] of every
                  user of the run's data, so a known user is tagged with the
                  audio + user model.
With config.json and the best checkpoints, that is all: model states are
restored from shapes alone (`jax.eval_shape`), and no dataset is read.
"""

import dataclasses
import functools
import json
import os
import time

import jax
import ml_collections
import numpy as np

from ctxtag import audio
from ctxtag import errors
from ctxtag import files
from ctxtag import input_pipeline
from ctxtag import labels
from ctxtag import models
from ctxtag import train
from ctxtag.sources import mels

CARD_FILE = "inference.json"
USERS_FILE = "users.npz"


def save_run_card(workdir: str, dataset_path: str, dataset: str,
                  excerpt_seconds: float, offset_seconds: float = 0.0,
                  max_padding_seconds: float = 0.0) -> None:
  """Writes inference.json and users.npz for the run in `workdir`."""
  tables = [input_pipeline.load_split(dataset_path, split)
            for split in ("train", "validation", "test")]
  user_P = np.concatenate([t.user_id_P for t in tables])
  embedding_PxE = np.concatenate([t.user_embedding_PxE for t in tables])
  user_ids, first = np.unique(user_P, return_index=True)
  with files.atomic_open(os.path.join(workdir, USERS_FILE), "wb") as f:
    np.savez(f, user_id=user_ids, embedding=embedding_PxE[first])
  files.write_json(os.path.join(workdir, CARD_FILE), {
      "dataset": dataset, "excerpt_seconds": excerpt_seconds,
      "offset_seconds": offset_seconds,
      "max_padding_seconds": max_padding_seconds,
      "frames": audio.num_frames(excerpt_seconds), "mels": audio.N_MELS,
      "users": int(len(user_ids))})


@dataclasses.dataclass(frozen=True)
class Card:
  excerpt_seconds: float
  offset_seconds: float
  max_padding_seconds: float
  frames: int


def load_card(workdir: str) -> Card:
  path = os.path.join(workdir, CARD_FILE)
  try:
    with open(path) as f:
      card = json.load(f)
    return Card(float(card["excerpt_seconds"]), float(card["offset_seconds"]),
                float(card["max_padding_seconds"]), int(card["frames"]))
  except FileNotFoundError:
    raise errors.DatasetError(
        f"{path}: missing; is {workdir} a ctxtag run whose dataset was built?"
        " (a run writes it when its dataset is ready)") from None
  except (ValueError, KeyError, TypeError) as error:
    raise errors.DatasetError(f"{path}: damaged ({error})") from None


def load_users(workdir: str) -> dict[int, np.ndarray]:
  """user id -> embedding, of every user of the run's data."""
  path = os.path.join(workdir, USERS_FILE)
  try:
    with np.load(path) as table:
      return dict(zip(table["user_id"].tolist(), table["embedding"]))
  except FileNotFoundError:
    raise errors.DatasetError(f"{path}: missing; rerun the run's launcher to"
                              " write it") from None


class Tagger:
  """A trained model's best state, restored without the training data."""

  def __init__(self, name: str, config: ml_collections.ConfigDict,
               workdir: str, frames: int):
    self.name, self.output = name, models.OUTPUTS[name]
    self.state = train.restore_best_state(name, config, workdir, frames)
    self._predict = jax.jit(functools.partial(train.predict_step,
                                              output=self.output))

  def scores(self, mel_BxTxF: np.ndarray,
             embedding_BxE: np.ndarray | None = None) -> np.ndarray:
    """Scores of each example, (B, 10): sigmoids (audio) or a softmax."""
    batch = {"mel": mel_BxTxF.astype(np.float32)}
    if embedding_BxE is not None:
      batch["user_embedding"] = embedding_BxE.astype(np.float32)
    return np.asarray(self._predict(self.state, batch))


def find_audio(path: str) -> list[str]:
  """`path` if a file, else the audio files below it (recursively), sorted."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise errors.DatasetError(f"--audio {path}: no such file or directory")
  found = []
  for root, _, names in os.walk(path):
    found += [os.path.join(root, n) for n in names
              if n.rpartition(".")[2].lower() in mels.AUDIO_EXTENSIONS]
  if not found:
    raise errors.DatasetError(
        f"--audio {path}: no audio files"
        f" ({', '.join(mels.AUDIO_EXTENSIONS)})")
  return sorted(found)


def _mel_or_error(path: str, card: Card):
  try:
    mel, _ = audio.excerpt_from_file(path, card.excerpt_seconds,
                                     card.offset_seconds,
                                     card.max_padding_seconds)
    return path, mel.astype(np.float16), None
  except audio.AudioError as error:
    return path, None, str(error)


def decode_all(paths: list[str], card: Card, pool=None):
  """Yields (path, mel or None, error or None) in order, with progress;
  decodes in `pool`'s processes if one is given."""
  work = functools.partial(_mel_or_error, card=card)
  start, last = time.time(), time.time()
  results = (pool.imap(work, paths, chunksize=2) if pool is not None
             else map(work, paths))
  for done, result in enumerate(results, 1):
    if time.time() - last > 5 or done == len(paths):
      last = time.time()
      print(f"tag: {done}/{len(paths)} files,"
            f" {done / max(last - start, 1e-9):.1f} files/s", flush=True)
    yield result


def ranked(scores_C: np.ndarray, top_k: int) -> list[dict]:
  """The top_k contexts, best first, with their scores."""
  order = np.argsort(-scores_C, kind="stable")[:top_k]
  return [{"context": labels.LABELS[i], "score": round(float(scores_C[i]), 6)}
          for i in order]


def read_embedding(path: str) -> np.ndarray:
  """A user embedding from a .npy file: 256 finite numbers."""
  try:
    vector = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as error:
    raise errors.DatasetError(f"--user_embedding {path}: cannot read a .npy"
                              f" array ({error})") from None
  vector = np.asarray(vector, np.float64).reshape(-1) if np.size(
      vector) == labels.USER_EMBEDDING_DIM else vector
  if np.shape(vector) != (labels.USER_EMBEDDING_DIM,):
    raise errors.DatasetError(
        f"--user_embedding {path}: shape {np.shape(vector)}, expected"
        f" ({labels.USER_EMBEDDING_DIM},)")
  if not np.all(np.isfinite(vector)):
    raise errors.DatasetError(f"--user_embedding {path}: holds NaN or"
                              " infinite numbers")
  return vector.astype(np.float32)


def _choose(config, workdir: str, user_id, embedding):
  """(model name, embedding or None, user note or None)."""
  trained = set(config.models)
  note = None
  if user_id is not None and embedding is None:
    users = load_users(workdir)
    if user_id in users:
      embedding = users[user_id]
    else:
      note = (f"user {user_id} is not one of the run's {len(users)} users;"
              " tagged with the audio model")
  if embedding is not None and "audio_user" in trained:
    return "audio_user", embedding, note
  if embedding is not None:
    note = "the run has no audio + user model; tagged with the audio model"
  if "audio" not in trained:
    raise errors.ConfigError(
        f"{workdir}: the run trained {sorted(trained)}; tagging without a"
        " known user needs the audio model")
  return "audio", None, note


def tag(workdir: str, config: ml_collections.ConfigDict, audio_path: str,
        user_id: int | None = None, embedding: np.ndarray | None = None,
        top_k: int = 3, workers: int = 1, batch_size: int = 32) -> dict:
  """Tags every audio file at `audio_path` for a user (or for nobody).

  Args:
    workdir: a trained run.
    config: its config (config.json).
    audio_path: a file, or a directory searched recursively.
    user_id: a user of the run's data, or None.
    embedding: a 256-d user embedding, instead of a user id.
    top_k: contexts to list per file, best first.
    workers: processes decoding audio.
    batch_size: files per model call.

  Returns:
    {"results": [{"file", "user_id", "model", "contexts": [{"context",
    "score"}]}], "errors": [{"file", "error"}], "notes": [...]}.
  """
  if not 1 <= top_k <= labels.NUM_LABELS:
    raise errors.ConfigError(f"--top_k must lie in [1, {labels.NUM_LABELS}],"
                             f" got {top_k}")
  paths = find_audio(audio_path)
  card = load_card(workdir)
  name, embedding, note = _choose(config, workdir, user_id, embedding)
  # Workers first: forked before this process starts JAX's runtime.
  pool = (mels.worker_pool(min(workers, len(paths)))
          if workers > 1 and len(paths) > 1 else None)
  try:
    return _tag(workdir, config, paths, card, name, embedding, note, user_id,
                top_k, pool, batch_size)
  finally:
    if pool is not None:
      pool.terminate()


def _tag(workdir, config, paths, card, name, embedding, note, user_id, top_k,
         pool, batch_size) -> dict:
  tagger = Tagger(name, config, workdir, card.frames)
  output = {"results": [], "errors": [], "notes": [note] if note else []}
  pending = []

  def flush():
    mels = np.stack([mel for _, mel in pending])
    count = len(mels)
    mels = np.concatenate([mels, np.zeros((batch_size - count,) + mels.shape[
        1:], mels.dtype)])  # one compiled shape for every batch
    users = (None if embedding is None
             else np.repeat(embedding[None], batch_size, axis=0))
    for (path, _), scores in zip(pending, tagger.scores(mels, users)[:count]):
      output["results"].append({"file": path, "user_id": user_id,
                                "model": name,
                                "contexts": ranked(scores, top_k)})
    pending.clear()

  for path, mel, error in decode_all(paths, card, pool):
    if error is not None:
      output["errors"].append({"file": path, "error": error})
      continue
    pending.append((path, mel))
    if len(pending) == batch_size:
      flush()
  if pending:
    flush()
  return output

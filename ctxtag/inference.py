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
import sys
import time
import zipfile

import jax
import ml_collections
import numpy as np

from ctxtag import audio
from ctxtag import errors
from ctxtag import files
from ctxtag import input_pipeline
from ctxtag import labels
from ctxtag import locks
from ctxtag import models
from ctxtag import steps
from ctxtag import transfer
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


def _users_table(workdir: str, *arrays: str) -> tuple[np.ndarray, ...]:
  """The named arrays of the run's users.npz, with one error for a missing
  or damaged file."""
  path = os.path.join(workdir, USERS_FILE)
  try:
    with np.load(path) as table:
      return tuple(table[name] for name in arrays)
  except FileNotFoundError:
    raise errors.DatasetError(
        f"{path}: missing; is {workdir} a ctxtag run whose dataset was"
        " built? (a run writes it when its dataset is ready)") from None
  except (OSError, ValueError, KeyError, EOFError,
          zipfile.BadZipFile) as error:
    raise errors.DatasetError(
        f"{path}: damaged ({type(error).__name__}: {error}); rerun"
        " launch.reproduce or launch.train on the workdir to write it"
        " again") from None


def load_users(workdir: str) -> dict[int, np.ndarray]:
  """user id -> embedding, of every user of the run's data."""
  user_ids, embeddings = _users_table(workdir, "user_id", "embedding")
  return dict(zip(user_ids.tolist(), embeddings))


def list_users(workdir: str, first: int = 10) -> str:
  """How many users the run knows, the first few ids, and where all of
  them are, as text (for `launch.tag --list_users`).

  Args:
    workdir: a run whose dataset was built.
    first: how many ids to show.
  """
  user_ids, = _users_table(workdir, "user_id")
  path = os.path.join(workdir, USERS_FILE)
  shown = ", ".join(str(u) for u in user_ids[:first].tolist())
  more = ", ..." if len(user_ids) > first else ""
  return (f"{len(user_ids):,} users in the run's data (pass one with"
          f" --user_id); the first {min(first, len(user_ids))}:"
          f" {shown}{more}\n"
          f"all of them, sorted: {path}, array user_id (python -c \"import"
          f" numpy; print(*numpy.load('{path}')['user_id'], sep=chr(10))\")")


def checkpoint_note(name: str, workdir: str, step: int) -> str | None:
  """Why the checkpoint at `step` is not model `name`'s evaluated best, or
  None when it is: its training has not finished (or is running), or the
  best checkpoint that training chose could not be restored."""
  path = os.path.join(workdir, name, "summary.json")
  try:
    with open(path) as f:
      best = int(json.load(f)["best_step"])
  except FileNotFoundError:
    return (f"the {name} model's training has not finished (no {path}):"
            f" used its best checkpoint so far, step {step}")
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise errors.DatasetError(f"{path}: damaged ({error})") from None
  if best != step:
    return (f"the {name} model's evaluated best checkpoint (step {best})"
            f" could not be restored: used step {step} instead")
  return None


def training_note(workdir: str) -> str | None:
  """A note when another process (a training, an evaluation) holds the
  workdir's lock: its checkpoints may change while we read them."""
  try:
    with locks.held(workdir, locks.RUN_LOCK, locks.RUN_RULE, shared=True):
      return None
  except locks.BusyError as busy:
    return (f"another process is working on {workdir}, so its checkpoints"
            f" may be replaced while they are read ({busy})")


class Tagger:
  """A trained model's best state, restored without the training data."""

  def __init__(self, name: str, config: ml_collections.ConfigDict,
               workdir: str, frames: int):
    self.name, self.output = name, models.get(name).output
    self.state = transfer.restore_best(name, config, workdir, frames)
    self.step = int(self.state.step)
    self.note = checkpoint_note(name, workdir, self.step)
    self._predict = jax.jit(functools.partial(steps.predict_step,
                                              output=self.output))

  def scores(self, mel_BxTxF: np.ndarray,
             embedding_BxE: np.ndarray | None = None) -> np.ndarray:
    """Scores of each example, (B, 10): sigmoids (audio) or a softmax."""
    batch = {"mel": mel_BxTxF.astype(np.float32)}
    if embedding_BxE is not None:
      batch["user_embedding"] = embedding_BxE.astype(np.float32)
    return np.asarray(self._predict(self.state, batch))


def _kind(path: str) -> str:
  """What a path that is not a regular file is, for the skip's reason."""
  return audio.not_a_file(path) or "not a regular file"


def find_audio(path: str) -> tuple[list[str], list[dict]]:
  """The audio files at `path` (a file, or a directory searched
  recursively), sorted, and the entries skipped as not regular files
  (FIFOs, devices, sockets, broken links: reading one could block forever).

  Returns:
    (paths, [{"file", "reason"}] of the skipped entries).
  """
  if os.path.isfile(path):
    return [path], []
  if not os.path.isdir(path):
    if os.path.lexists(path):
      raise errors.DatasetError(f"--audio {path}: {_kind(path)}; expected"
                                " an audio file or a directory")
    raise errors.DatasetError(f"--audio {path}: no such file or directory")
  found, skipped = [], []
  for root, _, names in os.walk(path):
    for name in names:
      if name.rpartition(".")[2].lower() not in mels.AUDIO_EXTENSIONS:
        continue
      full = os.path.join(root, name)
      if os.path.isfile(full):  # follows links; a FIFO's stat never blocks
        found.append(full)
      else:
        skipped.append({"file": printable(full), "reason": _kind(full)})
  if not found:
    raise errors.DatasetError(
        f"--audio {path}: no audio files"
        f" ({', '.join(mels.AUDIO_EXTENSIONS)})"
        + (f"; skipped {len(skipped)} that are not regular files"
           if skipped else ""))
  return sorted(found), sorted(skipped, key=lambda s: s["file"])


def printable(path: str) -> str:
  """`path` as valid UTF-8 text: a byte of a name that is not UTF-8 (which
  Python keeps as a lone surrogate) is written as "\\xNN"."""
  return os.fsencode(path).decode("utf-8", "backslashreplace")


def _mel_or_error(path: str, card: Card):
  # soundfile encodes a str path strictly: hand it a name that is not
  # UTF-8 as the bytes it is.
  source = path if printable(path) == path else os.fsencode(path)
  # A decoder's notes (mpg123's "Trying to resync...") go with the file's
  # entry in the JSON, not raw onto the terminal.
  with audio.captured_notes() as notes:
    try:
      mel, _ = audio.excerpt_from_file(source, card.excerpt_seconds,
                                       card.offset_seconds,
                                       card.max_padding_seconds)
      result = mel.astype(np.float16), None
    except audio.AudioError as error:
      result = None, str(error)
  return (path, *result, notes[0].strip())


def decode_all(paths: list[str], card: Card, pool=None):
  """Yields (path, mel or None, error or None, decoder notes) in order,
  with progress; decodes in `pool`'s processes if one is given."""
  work = functools.partial(_mel_or_error, card=card)
  start, last = time.time(), time.time()
  results = (pool.imap(work, paths, chunksize=2) if pool is not None
             else map(work, paths))
  for done, result in enumerate(results, 1):
    if time.time() - last > 5 or done == len(paths):
      last = time.time()
      # stderr: stdout carries the JSON alone (`> out.json`, `| jq`).
      print(f"tag: {done}/{len(paths)} files,"
            f" {done / max(last - start, 1e-9):.1f} files/s", flush=True,
            file=sys.stderr)
    yield result


def ranked(scores_C: np.ndarray, top_k: int) -> list[dict]:
  """The top_k contexts, best first, with their scores."""
  order = np.argsort(-scores_C, kind="stable")[:top_k]
  return [{"context": labels.LABELS[i], "score": round(float(scores_C[i]), 6)}
          for i in order]


def read_embedding(path: str) -> np.ndarray:
  """A user embedding from a .npy file: 256 finite numbers.

  Args:
    path: a .npy file holding 256 numbers (any shape of that size).

  Returns:
    The embedding, float32 of shape (256,).

  Raises:
    errors.DatasetError: naming the file and the expected shape.
  """
  expected = (f"expected {labels.USER_EMBEDDING_DIM} float values (a .npy of"
              f" shape ({labels.USER_EMBEDDING_DIM},))")
  try:
    vector = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as error:
    raise errors.DatasetError(f"--user_embedding {path}: cannot read a .npy"
                              f" array ({error}); {expected}") from None
  if not isinstance(vector, np.ndarray):  # an .npz archive
    raise errors.DatasetError(f"--user_embedding {path}: an .npz archive,"
                              f" not a .npy array; {expected}")
  if vector.dtype.kind not in "iuf":
    raise errors.DatasetError(
        f"--user_embedding {path}: holds {vector.dtype} values of shape"
        f" {vector.shape}; {expected}")
  if vector.size != labels.USER_EMBEDDING_DIM:
    raise errors.DatasetError(
        f"--user_embedding {path}: shape {vector.shape}, {expected}")
  vector = vector.astype(np.float64).reshape(-1)
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
    "score"}]}], "errors": [{"file", "error"}], "skipped": [{"file",
    "reason"}] (not regular files), "notes": [...]}; a file name that is not
    UTF-8 is given with "\\xNN" escapes.
  """
  if not 1 <= top_k <= labels.NUM_LABELS:
    raise errors.ConfigError(f"--top_k must lie in [1, {labels.NUM_LABELS}],"
                             f" got {top_k}")
  paths, skipped = find_audio(audio_path)
  card = load_card(workdir)
  name, embedding, note = _choose(config, workdir, user_id, embedding)
  # Workers first: forked before this process starts JAX's runtime.
  pool = (mels.worker_pool(min(workers, len(paths)))
          if workers > 1 and len(paths) > 1 else None)
  try:
    output = _tag(workdir, config, paths, card, name, embedding, note,
                  user_id, top_k, pool, batch_size)
  finally:
    if pool is not None:
      pool.terminate()
  output["skipped"] = skipped
  if skipped:
    output["notes"].append(f"skipped {len(skipped)} entries that are not"
                           " regular files (listed under \"skipped\")")
  return output


def _tag(workdir, config, paths, card, name, embedding, note, user_id, top_k,
         pool, batch_size) -> dict:
  tagger = Tagger(name, config, workdir, card.frames)
  notes = [note, tagger.note, training_note(workdir)]
  output = {"results": [], "errors": [], "checkpoint": {
      "model": name, "step": tagger.step, "evaluated_best": tagger.note is None},
            "notes": [n for n in notes if n]}
  pending = []

  def flush():
    batch = np.stack([mel for _, mel, _ in pending])
    count = len(batch)
    batch = np.concatenate([batch, np.zeros((batch_size - count,)
                                            + batch.shape[1:], batch.dtype)])
    # (one compiled shape for every batch)
    users = (None if embedding is None
             else np.repeat(embedding[None], batch_size, axis=0))
    for (path, _, decoder), scores in zip(pending,
                                          tagger.scores(batch, users)[:count]):
      entry = {"file": printable(path), "user_id": user_id, "model": name,
               "contexts": ranked(scores, top_k)}
      if decoder:
        entry["decoder_notes"] = decoder
      output["results"].append(entry)
    pending.clear()

  for path, mel, error, decoder in decode_all(paths, card, pool):
    if error is not None:
      output["errors"].append(dict({"file": printable(path), "error": error},
                                   **({"decoder_notes": decoder}
                                      if decoder else {})))
      continue
    pending.append((path, mel, decoder))
    if len(pending) == batch_size:
      flush()
  if pending:
    flush()
  noted = sum("decoder_notes" in entry
              for entry in output["results"] + output["errors"])
  if noted:
    output["notes"].append(
        f"the decoder wrote notes on {noted} file(s) (such as mpg123's"
        " \"Trying to resync...\" on a damaged MP3): see each file's"
        " \"decoder_notes\"")
  return output

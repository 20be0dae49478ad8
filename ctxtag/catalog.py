"""A catalog index: what a run's models need to score any user on each of a
catalog's tracks, computed once per track.

An index is a directory:
  index.json         the run it belongs to (workdir, each model's best
                     checkpoint step and parameter fingerprint), its tracks'
                     count and source; written last: an index without it is
                     not complete
  tracks.json        each track's name (its file, relative to the catalog
                     root) or song id (a split of the run's dataset)
  <model>.npy        float32[tracks, D] per indexed model: a multi-label
                     model's logits; a pair model's per-track audio features
                     (`features_only`: the late fusion's audio expert logits,
                     the concatenation's conv stack output)
  report.json        files indexed, and those skipped with their reasons
  parts/             chunks of work, kept until the index is merged: a
                     killed indexing resumes from them, and several processes
                     (`shard`) each index a share of the chunks

Every file is written to a temporary name and renamed.
"""

import dataclasses
import functools
import hashlib
import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np

from ctxtag import audio
from ctxtag import errors
from ctxtag import files
from ctxtag import inference
from ctxtag import input_pipeline
from ctxtag import labels
from ctxtag import models
from ctxtag import transfer
from ctxtag.sources import mels

INDEX_FILE = "index.json"
TRACKS_FILE = "tracks.json"
REPORT_FILE = "report.json"
PARTS = "parts"
FORMAT = 1
CHUNK_TRACKS = 256  # tracks per part: the work a kill can lose
BATCH = 32  # tracks per model call


class CatalogError(errors.UserError, ValueError):
  """An index that cannot be used (damaged, incomplete, another run's)."""


def indexed_models(config: ml_collections.ConfigDict) -> list[str]:
  """The run's models an index holds: multi-label models (their logits) and
  pair models with per-track audio features."""
  return [name for name in config.models
          if models.get(name).output == "multi_label"
          or models.get(name).track_features]


def fingerprint(state) -> str:
  """A short hash of a state's parameters: which checkpoint it is."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(state.params):
    digest.update(np.asarray(leaf).tobytes())
  return digest.hexdigest()[:16]


class _Vectors:
  """Each indexed model's per-track vectors of a batch of mels."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               frames: int, names=None):
    self.states, self._fns = {}, {}
    for name in names or indexed_models(config):
      state = transfer.restore_best(name, config, workdir, frames)
      features = models.get(name).output != "multi_label"
      self.states[name] = state
      self._fns[name] = jax.jit(functools.partial(_apply,
                                                  features_only=features))

  def __call__(self, mel_BxTxF: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.asarray(fn(self.states[name], mel_BxTxF), np.float32)
            for name, fn in self._fns.items()}

  def provenance(self) -> dict:
    return {name: {"step": int(state.step), "fingerprint": fingerprint(state)}
            for name, state in self.states.items()}


def _apply(state, mel_BxTxF, features_only: bool):
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  # The models read the mel alone here; a pair model's user part is unused.
  batch = {"mel": mel_BxTxF, "user_embedding": np.zeros(
      (mel_BxTxF.shape[0], labels.USER_EMBEDDING_DIM), np.float32)}
  if features_only:
    return state.apply_fn(variables, batch, train=False, features_only=True)
  return state.apply_fn(variables, batch, train=False)


def _padded_vectors(vectors: _Vectors, mels_: np.ndarray,
                    batch_size: int = BATCH) -> dict[str, np.ndarray]:
  """`vectors` of any number of mels, in batches of one compiled shape."""
  found = {}
  for start in range(0, len(mels_), batch_size):
    batch = mels_[start:start + batch_size]
    count = len(batch)
    if count < batch_size:
      batch = np.concatenate([batch, np.zeros(
          (batch_size - count,) + batch.shape[1:], batch.dtype)])
    for name, values in vectors(batch.astype(np.float32)).items():
      found.setdefault(name, []).append(values[:count])
  return {name: np.concatenate(parts) for name, parts in found.items()}


def _decode(path: str, card: inference.Card):
  """(path, mel or None, reason or None, message, decoder notes): the
  decoder's notes go to the index's report, not onto the terminal."""
  with audio.captured_notes() as notes:
    try:
      mel, _ = audio.excerpt_from_file(
          path, card.excerpt_seconds, card.offset_seconds,
          card.max_padding_seconds)
      found = mel.astype(np.float16), None, None
    except audio.AudioTooShortError as error:
      found = None, "too_short", str(error)
    except audio.AudioError as error:
      found = None, "undecodable", str(error)
  return (path, *found, notes[0].strip())


def _chunk_path(output: str, chunk: int) -> str:
  return os.path.join(output, PARTS, f"chunk-{chunk:06d}.npz")


def _write_chunk(path: str, names: list[str], vectors: dict, skipped: list):
  with files.atomic_open(path, "wb") as f:
    np.savez(f, names=np.asarray(names, dtype=object).astype(str),
             skipped=np.asarray(json.dumps(skipped)),
             **{f"model_{k}": v for k, v in vectors.items()})


def _manifest(output: str, workdir: str, names: list[str], source: str,
              provenance: dict) -> None:
  """Records (or checks) what the parts are parts of."""
  path = os.path.join(output, PARTS, "manifest.json")
  value = {"workdir": files.absolute(workdir), "source": source,
           "tracks": hashlib.sha256("\n".join(names).encode(
               "utf-8", "surrogateescape")).hexdigest(),
           "models": provenance}
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved != value:
      raise CatalogError(
          f"{output}: an unfinished index of another catalog or run is"
          " there; use a new --output (or remove it)")
    return
  files.write_json(path, value)


def parse_shard(text: str) -> tuple[int, int]:
  """"K/N" -> (K, N), K in 1..N."""
  head, _, tail = str(text).partition("/")
  if not (head.isdigit() and tail.isdigit()) or not 1 <= int(head) <= int(
      tail):
    raise errors.ConfigError(
        f"--shard={text}: expected K/N with 1 <= K <= N")
  return int(head), int(tail)


def index_audio(config: ml_collections.ConfigDict, workdir: str,
                audio_path: str, output: str, workers: int = 1,
                shard: tuple[int, int] = (1, 1)) -> dict:
  """Indexes every audio file at `audio_path` with the run's models.

  Files are sorted and cut into chunks of CHUNK_TRACKS; a shard (K, N)
  indexes the chunks whose number is K - 1 modulo N, skipping chunks already
  done; the index is merged by whichever shard finds every chunk done.

  Args:
    config: the run's config.
    workdir: a trained run.
    audio_path: a file, or a directory searched recursively.
    output: the index's directory.
    workers: processes decoding audio.
    shard: (K, N): this process's share.

  Returns:
    The index's report (files indexed and skipped), or, for a shard that
    left chunks to others, {"chunks_done", "chunks"}.
  """
  paths, not_files = inference.find_audio(audio_path)
  root = audio_path if os.path.isdir(audio_path) else os.path.dirname(
      audio_path)
  names = [inference.printable(os.path.relpath(p, root)) for p in paths]
  card = inference.load_card(workdir)
  chunks = range(0, len(paths), CHUNK_TRACKS)
  todo = [i for i, _ in enumerate(chunks)
          if i % shard[1] == shard[0] - 1
          and not os.path.exists(_chunk_path(output, i))]
  # Workers first: forked before this process starts JAX's runtime.
  pool = mels.worker_pool(workers) if workers > 1 and todo else None
  try:
    vectors = _Vectors(config, workdir, card.frames)
    _manifest(output, workdir, names, f"audio:{files.absolute(audio_path)}",
              vectors.provenance())
    _index_chunks(output, paths, names, todo, card, vectors, pool)
  finally:
    if pool is not None:
      pool.terminate()
  skipped = [{"file": s["file"], "reason": s["reason"]} for s in not_files]
  return merge_if_done(output, workdir, len(chunks), skipped,
                       vectors.provenance(), files.absolute(root))


def _index_chunks(output, paths, names, todo, card, vectors, pool) -> None:
  work = functools.partial(_decode, card=card)
  start, done_tracks = time.time(), 0
  for chunk in todo:
    first = chunk * CHUNK_TRACKS
    chunk_paths = paths[first:first + CHUNK_TRACKS]
    decoded = (pool.map(work, chunk_paths, chunksize=4) if pool is not None
               else map(work, chunk_paths))
    kept, kept_mels, skipped = [], [], []
    for name, (_, mel, reason, message, notes) in zip(
        names[first:first + CHUNK_TRACKS], decoded):
      if mel is None:
        skipped.append(dict({"file": name, "reason": reason,
                             "error": message},
                            **({"decoder_notes": notes} if notes else {})))
      else:
        kept.append(name)
        kept_mels.append(mel)
        if notes:  # indexed all the same: kept in the report
          skipped.append({"file": name, "reason": None,
                          "decoder_notes": notes})
    found = (_padded_vectors(vectors, np.stack(kept_mels))
             if kept_mels else {})
    _write_chunk(_chunk_path(output, chunk), kept, found, skipped)
    done_tracks += len(chunk_paths)
    rate = done_tracks / max(time.time() - start, 1e-9)
    print(f"index: chunk {chunk + 1}, {done_tracks}/{len(todo) * CHUNK_TRACKS}"
          f" files of this share, {rate:.1f} tracks/s", flush=True,
          file=sys.stderr)


def index_split(config: ml_collections.ConfigDict, workdir: str,
                dataset_path: str, split: str, output: str) -> dict:
  """Indexes a split of the run's dataset (its mels, no decoding)."""
  data = input_pipeline.load_split(dataset_path, split)
  vectors = _Vectors(config, workdir, data.mel_shape[0])
  names = [str(int(s)) for s in data.song_id_N]
  _manifest(output, workdir, names, f"split:{split}", vectors.provenance())
  for chunk, first in enumerate(range(0, len(names), CHUNK_TRACKS)):
    if os.path.exists(_chunk_path(output, chunk)):
      continue
    rows = np.arange(first, min(first + CHUNK_TRACKS, len(names)))
    mels_ = data.mels(rows)
    _write_chunk(_chunk_path(output, chunk), names[first:first + len(rows)],
                 _padded_vectors(vectors, mels_), [])
  return merge_if_done(output, workdir,
                       -(-len(names) // CHUNK_TRACKS), [],
                       vectors.provenance())


def merge_if_done(output: str, workdir: str, chunks: int, skipped: list,
                  provenance: dict, root: str | None = None) -> dict:
  """Merges the parts into the index once every chunk is there; `root`:
  the catalog's directory (its tracks are named relative to it)."""
  done = sum(os.path.exists(_chunk_path(output, c)) for c in range(chunks))
  if done < chunks:
    return {"chunks_done": done, "chunks": chunks}
  names, vectors = [], {}
  for chunk in range(chunks):
    with np.load(_chunk_path(output, chunk), allow_pickle=False) as part:
      names += part["names"].tolist()
      skipped += json.loads(str(part["skipped"]))
      for key in part.files:
        if key.startswith("model_"):
          vectors.setdefault(key[len("model_"):], []).append(part[key])
  if not names:
    raise CatalogError(f"{output}: no track of the catalog could be indexed"
                      f" ({len(skipped)} skipped; see their reasons with"
                      " --verbose)")
  for name, parts in vectors.items():
    with files.atomic_open(os.path.join(output, f"{name}.npy"), "wb") as f:
      np.save(f, np.concatenate(parts))
  files.write_json(os.path.join(output, TRACKS_FILE), names, indent=None)
  noted = [e for e in skipped if e["reason"] is None]
  skipped = [e for e in skipped if e["reason"] is not None]
  reasons = {}
  for entry in skipped:
    reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
  report = {"indexed": len(names), "skipped": len(skipped),
            "skipped_by_reason": reasons, "skipped_files": skipped,
            "decoder_notes": [{"file": e["file"],
                               "decoder_notes": e["decoder_notes"]}
                              for e in noted]}
  files.write_json(os.path.join(output, REPORT_FILE), report)
  files.write_json(os.path.join(output, INDEX_FILE), {
      "format": FORMAT, "workdir": files.absolute(workdir),
      "tracks": len(names), "models": provenance, "root": root})
  return report


@dataclasses.dataclass(frozen=True)
class Index:
  """A complete index, its arrays memory-mapped (read once per process,
  shared by every query).

  Attributes:
    directory: where it is (None: in memory).
    meta: index.json.
    names: each track's name (file or song id).
    vectors: {model: float32[tracks, D]}.
  """
  directory: str | None
  meta: dict
  names: list[str]
  vectors: dict[str, np.ndarray]

  @property
  def num_tracks(self) -> int:
    return len(self.names)


def load(directory: str) -> Index:
  """The index at `directory`.

  Raises:
    CatalogError: naming the file, for a missing, incomplete or damaged
      index.
  """
  meta_path = os.path.join(directory, INDEX_FILE)
  if not os.path.isdir(directory):
    raise CatalogError(f"--index {directory}: no such directory")
  if not os.path.exists(meta_path):
    done = os.path.isdir(os.path.join(directory, PARTS))
    raise CatalogError(
        f"--index {directory}: not a complete index (no {INDEX_FILE})"
        + ("; its indexing is unfinished: rerun launch.index to finish it"
           if done else ""))
  try:
    with open(meta_path) as f:
      meta = json.load(f)
    with open(os.path.join(directory, TRACKS_FILE)) as f:
      names = json.load(f)
    vectors = {name: np.load(os.path.join(directory, f"{name}.npy"),
                             mmap_mode="r", allow_pickle=False)
               for name in meta["models"]}
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise CatalogError(f"--index {directory}: damaged ({error}); index the"
                       " catalog again into a new --output") from None
  for name, values in vectors.items():
    if (values.ndim != 2 or len(values) != len(names)
        or len(names) != meta["tracks"]):
      raise CatalogError(
          f"--index {directory}/{name}.npy: damaged (shape {values.shape}"
          f" for {len(names)} tracks); index the catalog again")
  return Index(directory, meta, [str(n) for n in names], vectors)


def check_belongs(index: Index, workdir: str, states: dict) -> None:
  """Refuses an index made from other checkpoints than `states` (the run's
  best states by model) or for another workdir.

  Raises:
    CatalogError: in one line, naming both.
  """
  for name, state in states.items():
    made = index.meta["models"].get(name)
    if made is None:
      raise CatalogError(f"--index {index.directory}: has no {name!r}"
                         " vectors; index the catalog with this run")
    if made["fingerprint"] != fingerprint(state):
      raise CatalogError(
          f"--index {index.directory}: made from another run's {name!r}"
          f" checkpoint (step {made['step']}, of {index.meta['workdir']});"
          f" {workdir}'s best is step {int(state.step)}: index the catalog"
          " with this run (launch.index --workdir=" f"{workdir})")


def split_index(config: ml_collections.ConfigDict, workdir: str,
                dataset_path: str, split: str, names=None
                ) -> tuple[Index, dict]:
  """An index of a split of the run's dataset, in memory (no files).

  Args:
    config: the run config.
    workdir: the run.
    dataset_path: its dataset.
    split: the split to index.
    names: the models to index (default: every indexed model).

  Returns:
    (the index, {model: its best state}).
  """
  data = input_pipeline.load_split(dataset_path, split)
  vectors = _Vectors(config, workdir, data.mel_shape[0], names)
  found = {}
  for first in range(0, data.num_tracks, CHUNK_TRACKS):
    rows = np.arange(first, min(first + CHUNK_TRACKS, data.num_tracks))
    for name, values in _padded_vectors(vectors, data.mels(rows)).items():
      found.setdefault(name, []).append(values)
  index = Index(None, {"workdir": files.absolute(workdir),
                       "tracks": data.num_tracks,
                       "models": vectors.provenance()},
                [str(int(s)) for s in data.song_id_N],
                {name: np.concatenate(v) for name, v in found.items()})
  return index, vectors.states

"""Recommendation: the tracks of a catalog index most likely to be given a
context by a user, best first.

A scorer turns an index's per-track vectors and a batch of queries (a user
embedding and a context each) into every track's probability of the query's
context for that user, (queries, tracks):

  TrackScorer       a multi-label model: the track's sigmoid of the context,
                    the same for every user;
  LateFusionScorer  the late fusion: its logits are affine in the audio
                    expert's logits A_t, a A_t + w(u), so with
                    E_t = exp(a A_t) (once per index) and v = exp(w(u)) (once
                    per query), p(k | t, u) = E_tk v_k / (E_t . v): one
                    matrix-vector product per query;
  PairScorer        any other pair model with per-track audio features: the
                    model's head over every (track, user), in chunks.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ctxtag import catalog
from ctxtag import datasets
from ctxtag import errors
from ctxtag import inference
from ctxtag import input_pipeline
from ctxtag import labels
from ctxtag import models
from ctxtag import transfer
from ctxtag.evaluation import retrieval

_PAIR_CHUNK = 4096  # (track, user) pairs per call of a PairScorer's head
_USER_CHUNK = 256  # users per call of the late fusion's user term


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
  """`rows` padded with zero rows to `size`."""
  return np.concatenate([rows, np.zeros((size - len(rows),) + rows.shape[1:],
                                        rows.dtype)])


class TrackScorer:
  """A multi-label model's scores: the same ranking for every user."""

  def __init__(self, logits_TxC: np.ndarray):
    self._logits_CxT = np.ascontiguousarray(np.asarray(logits_TxC).T)

  def scores(self, embeddings_QxE: np.ndarray, contexts_Q) -> np.ndarray:
    del embeddings_QxE
    return 1 / (1 + np.exp(-self._logits_CxT[np.asarray(contexts_Q)]))

  def ranking_values(self, embeddings_QxE, contexts_Q) -> np.ndarray:
    """Values that rank like `scores` (here the logits: no exp per track)."""
    del embeddings_QxE
    return self._logits_CxT[np.asarray(contexts_Q)]


def _variables(state) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


class LateFusionScorer:
  """The late fusion's probabilities, from its audio expert's logits."""

  def __init__(self, state, expert_logits_TxC: np.ndarray):
    self._state = state
    scaled = float(state.params["audio_weight"]) * np.asarray(
        expert_logits_TxC, np.float64)
    # A per-track constant cancels between numerator and denominator.
    self._exp_CxT = np.ascontiguousarray(
        np.exp(scaled - scaled.max(axis=1, keepdims=True)).T, np.float32)
    self._user_terms = jax.jit(self._user_terms_fn)

  def _user_terms_fn(self, state, embeddings_QxE):
    zeros = jnp.zeros((embeddings_QxE.shape[0], labels.NUM_LABELS))
    return state.apply_fn(_variables(state), {
        "audio_features": zeros, "user_embedding": embeddings_QxE},
                          train=False)

  def scores(self, embeddings_QxE: np.ndarray, contexts_Q) -> np.ndarray:
    return self.grouped_scores(*_grouped(embeddings_QxE), contexts_Q)

  def grouped_scores(self, users_UxE: np.ndarray, inverse_Q: np.ndarray,
                     contexts_Q) -> np.ndarray:
    """`scores` of the queries whose embeddings are users_UxE[inverse_Q]."""
    # A user's queries (several contexts) share one denominator.
    users = np.asarray(users_UxE, np.float32)
    terms = np.concatenate([  # one compiled shape
        np.asarray(self._user_terms(self._state, _padded(
            users[start:start + _USER_CHUNK], _USER_CHUNK)), np.float64)
        for start in range(0, len(users), _USER_CHUNK)])[:len(users)]
    v_UxC = np.exp(terms - terms.max(axis=1, keepdims=True)).astype(
        np.float32)
    contexts_Q, inverse = np.asarray(contexts_Q), np.asarray(inverse_Q)
    denominator_UxT = v_UxC @ self._exp_CxT
    numerator_QxT = self._exp_CxT[contexts_Q] * v_UxC[inverse, contexts_Q,
                                                      None]
    return numerator_QxT / denominator_UxT[inverse]

  ranking_values = scores


class PairScorer:
  """A pair model's probabilities from its head over every (track, user)."""

  def __init__(self, state, features_TxD: np.ndarray):
    self._state = state
    self._features = np.asarray(features_TxD, np.float32)
    self._probabilities = jax.jit(self._probabilities_fn)

  def _probabilities_fn(self, state, features_BxD, embedding_E):
    embeddings = jnp.broadcast_to(embedding_E, (features_BxD.shape[0],
                                                embedding_E.shape[0]))
    logits = state.apply_fn(_variables(state), {
        "audio_features": features_BxD, "user_embedding": embeddings},
                            train=False)
    return jax.nn.softmax(logits)

  def scores(self, embeddings_QxE: np.ndarray, contexts_Q) -> np.ndarray:
    return self.grouped_scores(*_grouped(embeddings_QxE), contexts_Q)

  def grouped_scores(self, users_UxE: np.ndarray, inverse_Q: np.ndarray,
                     contexts_Q) -> np.ndarray:
    """`scores` of the queries whose embeddings are users_UxE[inverse_Q]."""
    # Queries of one user (several contexts) share one pass over the index.
    contexts_Q, inverse = np.asarray(contexts_Q), np.asarray(inverse_Q)
    found = np.empty((len(contexts_Q), len(self._features)), np.float32)
    for u, embedding in enumerate(np.asarray(users_UxE, np.float32)):
      rows = np.flatnonzero(inverse == u)
      if len(rows):
        found[rows] = self._user_probabilities(
            embedding)[:, contexts_Q[rows]].T
    return found

  def _user_probabilities(self, embedding_E: np.ndarray) -> np.ndarray:
    """(T, C) probabilities of every track for one user."""
    count = len(self._features)
    probs = np.empty((count, labels.NUM_LABELS), np.float32)
    for start in range(0, count, _PAIR_CHUNK):
      chunk = self._features[start:start + _PAIR_CHUNK]
      size = len(chunk)
      if size < _PAIR_CHUNK:  # one compiled shape
        chunk = np.concatenate([chunk, np.zeros(
            (_PAIR_CHUNK - size, chunk.shape[1]), np.float32)])
      probs[start:start + size] = np.asarray(self._probabilities(
          self._state, chunk, embedding_E))[:size]
    return probs

  ranking_values = scores


def _grouped(embeddings_QxE) -> tuple[np.ndarray, np.ndarray]:
  """The distinct embeddings and each query's row among them."""
  users, inverse = np.unique(np.asarray(embeddings_QxE, np.float32), axis=0,
                             return_inverse=True)
  return users, inverse.ravel()


def scorer(name: str, state, index: catalog.Index):
  """The scorer of model `name` (its entry and module say which)."""
  model = models.get(name)
  vectors = index.vectors[name]
  if model.output == "multi_label":
    return TrackScorer(vectors)
  # state.apply_fn is the module's bound `apply`.
  if isinstance(getattr(state.apply_fn, "__self__", None),
                models.LateFusionTagger):
    return LateFusionScorer(state, vectors)
  return PairScorer(state, vectors)


@dataclasses.dataclass(frozen=True)
class Query:
  """One recommendation request: a user (an id, an embedding, or neither
  for the audio model's ranking) and a context."""
  context: str
  user_id: int | None = None
  embedding: np.ndarray | None = None


def top_k(values_QxT: np.ndarray, k: int) -> np.ndarray:
  """Each row's k largest, best first: (Q, k) indices (ties: lower index
  first, so the same call gives the same list)."""
  values_QxT = np.asarray(values_QxT)
  if k >= values_QxT.shape[1]:
    return np.argsort(-values_QxT, axis=1, kind="stable")
  part = np.argpartition(-values_QxT, k - 1, axis=1)[:, :k]
  rows = np.arange(len(values_QxT))[:, None]
  order = np.lexsort((part, -values_QxT[rows, part]), axis=1)
  return part[rows, order]


def overlap(a_K: np.ndarray, b_K: np.ndarray) -> float:
  """The share of one top-k list found in the other."""
  return len(set(np.asarray(a_K).tolist()) & set(np.asarray(b_K).tolist())
             ) / max(len(a_K), 1)



class Recommender:
  """A run's models over a catalog index, answering batches of queries.

  Args:
    config: the run's config (ctxtag.run.load_run_config).
    workdir: the trained run.
    index: its catalog index (catalog.load), checked against the run's
      best checkpoints.
    model: the personalised model (default: the run's first indexed model
      that reads users).
  """

  def __init__(self, config, workdir: str, index: catalog.Index,
               model: str | None = None):
    frames = inference.load_card(workdir).frames
    states = {name: transfer.restore_best(name, config, workdir, frames)
              for name in catalog.indexed_models(config)}
    catalog.check_belongs(index, workdir, states)
    self.index, self.workdir = index, workdir
    self.users = inference.load_users(workdir)
    personal = [n for n in states if models.get(n).batches == "pairs"]
    audio = [n for n in states if models.get(n).output == "multi_label"]
    if model is not None and model not in personal:
      raise errors.ConfigError(
          f"--model={model}: expected one of the run's indexed pair models"
          f" {personal}")
    self.personal = model or (personal[0] if personal else None)
    self.audio = audio[0] if audio else None
    self.scorers = {name: scorer(name, states[name], index)
                    for name in filter(None, (self.personal, self.audio))}

  def _embedding(self, query: Query) -> tuple[np.ndarray | None, str | None]:
    if query.embedding is not None:
      return query.embedding, None
    if query.user_id is None:
      return None, None
    if query.user_id in self.users:
      return self.users[query.user_id], None
    return None, (f"user {query.user_id} is not one of the run's"
                  f" {len(self.users):,} users: the audio model's ranking")

  def answer(self, queries: list[Query], k: int, compare: bool) -> dict:
    """Each query's top `k` tracks with their scores, best first; with
    `compare`, the audio model's top `k` and the two lists' overlap."""
    results = []
    for query in queries:
      embedding, note = self._embedding(query)
      context = labels.LABELS.index(query.context)
      name = self.personal if embedding is not None else self.audio
      if name is None:
        raise errors.ConfigError(
            f"{self.workdir}: no indexed model can answer this query (the"
            " run has no audio model for unknown users)")
      entry = self._ranked(name, embedding, context, k)
      entry.update(context=query.context, user_id=query.user_id)
      if note:
        entry["note"] = note
      if compare and name != self.audio and self.audio is not None:
        audio = self._ranked(self.audio, None, context, k)
        entry["audio"] = audio
        entry["overlap"] = overlap(
            [t["track"] for t in entry["tracks"]],
            [t["track"] for t in audio["tracks"]])
      results.append(entry)
    return {"workdir": self.workdir, "index": self.index.directory,
            "results": results}

  def _ranked(self, name: str, embedding, context: int, k: int) -> dict:
    embeddings = (np.zeros((1, labels.USER_EMBEDDING_DIM), np.float32)
                  if embedding is None else np.asarray(embedding)[None])
    scorer_ = self.scorers[name]
    values = scorer_.ranking_values(embeddings, [context])
    best = top_k(values, k)[0]
    scores = values[0][best]
    if isinstance(scorer_, TrackScorer):  # logits rank alike; show sigmoids
      scores = 1 / (1 + np.exp(-scores))
    return {"model": name, "tracks": [
        {"track": self.index.names[t], "score": round(float(s), 6)}
        for t, s in zip(best, scores)]}


class ModelCatalog:
  """A scorer as the retrieval protocol's catalog: users by id.

  `depersonalized` is the same model scoring every user as the average
  user (the mean of the users' embeddings): the ranking it would give
  without knowing who asks, against which the user's own effect is
  measured (the model's single-label form and calibration stay alike)."""

  def __init__(self, scorer_, song_ids_T: np.ndarray,
               embeddings: dict[int, np.ndarray], average: bool = False):
    self._scorer, self.song_ids = scorer_, np.asarray(song_ids_T)
    self._embeddings = embeddings
    self._average = (np.mean(np.stack(list(embeddings.values())), axis=0)
                     if average else None)
    if not average:
      self.depersonalized = ModelCatalog(scorer_, song_ids_T, embeddings,
                                         average=True)

  def scores(self, user_ids_Q, contexts_Q) -> np.ndarray:
    # Grouped by id: finding equal embeddings row by row costs more than
    # the scoring itself.
    if self._average is not None:
      users, inverse = self._average[None], np.zeros(len(contexts_Q), int)
    else:
      ids, inverse = np.unique(np.asarray(user_ids_Q), return_inverse=True)
      users = np.stack([self._embeddings[int(u)] for u in ids])
    return self._scorer.grouped_scores(users, inverse.ravel(), contexts_Q)


def evaluation_catalogs(config, workdir: str, dataset_path: str,
                        split: str) -> dict:
  """The catalogs the prediction tables cannot give, for the retrieval
  protocol on `split`: each pair model with per-track features over the
  split's tracks, and, on simulated data, the true distribution
  ("oracle").

  Returns:
    {model: catalog} (ctxtag.evaluation.retrieval).
  """
  data = input_pipeline.load_split(dataset_path, split)
  found = {}
  pair = [name for name in catalog.indexed_models(config)
          if models.get(name).batches == "pairs"]
  if pair:
    index, states = catalog.split_index(config, workdir, dataset_path, split,
                                        pair)
    embeddings = dict(zip(data.user_id_P.tolist(), data.user_embedding_PxE))
    for name in pair:
      found[name] = ModelCatalog(scorer(name, states[name], index),
                                 data.song_id_N, embeddings)
  world = datasets.simulated_world(config)
  if world is not None:
    users = np.unique(data.user_id_P)
    found["oracle"] = retrieval.MixtureCatalog(
        data.song_id_N, world.track_probs_NxC[data.song_id_N],
        dict(zip(users.tolist(), world.user_probs_UxC[users])),
        world.config.user_influence)
  return found

"""A simulated listening world whose ground truth is known.

Tracks have latent musical attributes that are rendered into real waveforms
and go through the same front end as real audio, so a model has to hear them.
Users have latent tastes; their 256-d embedding is a noisy projection of the
taste, as an embedding of a listening history would be. Each (user, track)
pair gets exactly one context, drawn from

    p(context | user, track) = (1 - user_influence) * softmax(track_logits)
                               + user_influence * softmax(user_logits),

so `user_influence` = 0 makes the context depend on the audio only. The
per-pair distribution is kept with every pair, which gives the Bayes-optimal
score. Sizes, splits and label shares are shaped like the paper's dataset.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np

from ctxtag import audio
from ctxtag import errors
from ctxtag import labels
from ctxtag.sources import pairs as pairs_lib

ATTRIBUTES = ("tempo", "energy", "brightness", "valence", "percussiveness")

# How each attribute (centred to [-1, 1]) pulls each context, rows in label
# order; the world's audio semantics: gym/running/workout want fast, loud,
# percussive music; relax/sad/night want slow and quiet; happy/summer want
# bright and major.
_CONTEXT_AFFINITY = np.array([
    # tempo energy bright valence percussive
    [0.3, 0.2, 0.0, 0.4, 0.0],     # car
    [0.6, 1.0, 0.0, 0.0, 0.6],     # gym
    [0.3, 0.2, 0.6, 1.0, 0.0],     # happy
    [-0.3, 0.0, -0.8, -0.2, 0.3],  # night
    [-0.8, -0.8, 0.0, 0.2, -0.6],  # relax
    [1.0, 0.4, 0.2, 0.0, 0.6],     # running
    [-0.6, -0.4, -0.4, -1.0, -0.2],  # sad
    [0.2, 0.3, 0.8, 0.6, 0.0],     # summer
    [-0.2, -0.4, 0.0, 0.0, -1.0],  # work
    [0.6, 0.8, -0.2, -0.2, 0.8],   # workout
])
_SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
  """Settings of a simulated world; every one is checked by `validate`."""
  num_tracks: int = 3000  # size of the track pool the splits draw from
  num_users: int = 12000  # size of the user pool
  train_tracks: int = 2000
  validation_tracks: int = 600
  test_tracks: int = 1000
  min_users_per_track: int = 5
  max_users_per_track: int = 10
  min_contexts_per_track: int = 3
  user_influence: float = 0.5  # 0: context from audio only; 1: from user only
  # How strongly attributes pick contexts. Sharp enough that the track's
  # half of the mix changes which context is likeliest for many pairs (at
  # 2.0, the earlier default, the user's sharper half decided almost every
  # pair: knowing the track added 0.006 to the best accuracy from the
  # user's embedding); above ~4.5 some tracks at user_influence 0 cannot
  # get 3 distinct contexts from their users.
  track_sharpness: float = 4.0
  user_sharpness: float = 2.5  # how strongly tastes pick contexts
  taste_dim: int = 8
  embedding_noise: float = 1.0  # std of the noise added to the projection
  excerpt_seconds: float = 3.0
  seed: int = 0

  def validate(self) -> None:
    """Raises ConfigError naming the first invalid setting."""
    positive = ("num_tracks", "num_users", "train_tracks", "validation_tracks",
                "test_tracks", "min_users_per_track", "taste_dim")
    for name in positive:
      if getattr(self, name) <= 0:
        raise errors.ConfigError(f"simulation setting {name} must be positive, got"
                         f" {getattr(self, name)}")
    for name in ("train_tracks", "validation_tracks", "test_tracks"):
      if getattr(self, name) > self.num_tracks:
        raise errors.ConfigError(
            f"simulation setting {name}={getattr(self, name)} exceeds"
            f" num_tracks={self.num_tracks}")
    if self.max_users_per_track < self.min_users_per_track:
      raise errors.ConfigError(
          f"simulation setting max_users_per_track={self.max_users_per_track}"
          f" is below min_users_per_track={self.min_users_per_track}")
    if self.max_users_per_track > self.num_users:
      raise errors.ConfigError(
          f"simulation setting max_users_per_track={self.max_users_per_track}"
          f" exceeds num_users={self.num_users}: a track cannot have more"
          " distinct users than the world has")
    if not 1 <= self.min_contexts_per_track <= min(
        labels.NUM_LABELS, self.min_users_per_track):
      raise errors.ConfigError(
          "simulation setting min_contexts_per_track must lie in [1,"
          f" min(10, min_users_per_track)], got {self.min_contexts_per_track}")
    if not 0.0 <= self.user_influence <= 1.0:
      raise errors.ConfigError("simulation setting user_influence must lie in [0, 1],"
                       f" got {self.user_influence}")
    for name in ("track_sharpness", "user_sharpness", "embedding_noise"):
      if getattr(self, name) < 0:
        raise errors.ConfigError(f"simulation setting {name} must be >= 0, got"
                         f" {getattr(self, name)}")
    if self.excerpt_seconds < 1.0:
      raise errors.ConfigError("simulation setting excerpt_seconds must be >= 1 s to"
                       f" hold a beat, got {self.excerpt_seconds}")

  def split_tracks(self, split: str) -> int:
    return {"train": self.train_tracks, "validation": self.validation_tracks,
            "test": self.test_tracks}[split]


@dataclasses.dataclass(frozen=True)
class Pair:
  user_id: int
  label: int
  user_embedding: np.ndarray  # float32[256]
  context_probs: np.ndarray  # float32[10], the true distribution


@dataclasses.dataclass(frozen=True)
class TrackExample:
  song_id: int
  pairs: tuple[Pair, ...]


def _softmax(logits: np.ndarray) -> np.ndarray:
  shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return shifted / shifted.sum(axis=-1, keepdims=True)


def _harmonic_sum(phase: np.ndarray, count: int) -> np.ndarray:
  """sum over h = 1..count of sin(h * phase) / h."""
  sine, cosine = np.sin(phase), np.cos(phase)
  previous, current = np.zeros_like(sine), sine
  total = sine.copy()
  for harmonic in range(2, count + 1):
    previous, current = current, 2 * cosine * current - previous
    total += current / np.float32(harmonic)
  return total


def _calibrated_bias(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Bias b such that mean(softmax(scores + b)) matches `target` shares."""
  bias = np.log(target)
  for _ in range(200):
    mean = _softmax(scores + bias).mean(axis=0)
    bias += np.log(target) - np.log(mean)
  return bias


class World:
  """A seeded simulated world: tracks, users and their contexts."""

  def __init__(self, config: SimulationConfig):
    config.validate()
    self.config = config
    self._clock_cache = None
    rng = np.random.default_rng([config.seed, 0])
    self.attributes_NxA = rng.uniform(
        size=(config.num_tracks, len(ATTRIBUTES)))
    self.taste_UxD = rng.normal(size=(config.num_users, config.taste_dim))
    taste_to_context = rng.normal(
        size=(labels.NUM_LABELS, config.taste_dim)) / np.sqrt(config.taste_dim)
    projection = rng.normal(
        size=(labels.USER_EMBEDDING_DIM, config.taste_dim)) / np.sqrt(
            config.taste_dim)
    noise = rng.normal(size=(config.num_users, labels.USER_EMBEDDING_DIM))
    self.embedding_UxE = (self.taste_UxD @ projection.T
                          + config.embedding_noise * noise).astype(np.float32)

    shares = np.asarray(labels.PAPER_TEST_SHARES)
    track_scores = config.track_sharpness * (
        (2 * self.attributes_NxA - 1) @ _CONTEXT_AFFINITY.T)
    user_scores = config.user_sharpness * (self.taste_UxD @ taste_to_context.T)
    self.track_probs_NxC = _softmax(
        track_scores + _calibrated_bias(track_scores, shares))
    self.user_probs_UxC = _softmax(
        user_scores + _calibrated_bias(user_scores, shares))

  def context_probs(self, song_ids: np.ndarray,
                    user_ids: np.ndarray) -> np.ndarray:
    """True context distribution of each (track, user) pair, (P, 10)."""
    mix = self.config.user_influence
    return ((1 - mix) * self.track_probs_NxC[song_ids]
            + mix * self.user_probs_UxC[user_ids]).astype(np.float32)

  def split_song_ids(self, split: str) -> np.ndarray:
    """The sorted pool indices of the tracks in `split`."""
    rng = np.random.default_rng([self.config.seed, 1, _SPLITS.index(split)])
    chosen = rng.choice(self.config.num_tracks,
                        size=self.config.split_tracks(split), replace=False)
    return np.sort(chosen)

  def split_examples(self, split: str) -> Iterator[TrackExample]:
    """Yields the tracks of `split` with their pairs, in song_id order."""
    config = self.config
    rng = np.random.default_rng([config.seed, 2, _SPLITS.index(split)])
    for song_id in self.split_song_ids(split):
      num_users = rng.integers(config.min_users_per_track,
                               config.max_users_per_track + 1)
      user_ids, contexts, probs = self._annotate(rng, song_id, num_users)
      yield TrackExample(
          song_id=int(song_id),
          pairs=tuple(
              Pair(int(u), int(c), self.embedding_UxE[u], p)
              for u, c, p in zip(user_ids, contexts, probs)))

  def all_pairs(self) -> pairs_lib.Pairs:
    """Every pair of the world's three splits in one table, for a re-split;
    a (track, user) drawn in two splits keeps its first draw."""
    rows = {}
    for split in _SPLITS:
      for track in self.split_examples(split):
        for pair in track.pairs:
          rows.setdefault((track.song_id, pair.user_id), pair.label)
    keys = sorted(rows)
    return pairs_lib.Pairs([k[0] for k in keys], [k[1] for k in keys],
                           [rows[k] for k in keys])

  def track_examples(self, table: pairs_lib.Pairs) -> list[TrackExample]:
    """The tracks of `table` in song id order, each with its pairs."""
    examples = []
    for song_id in np.unique(table.song_id).tolist():
      rows = np.flatnonzero(table.song_id == song_id)
      users, contexts = table.user_id[rows], table.label[rows]
      probs = self.context_probs(np.full(len(rows), song_id), users)
      examples.append(TrackExample(song_id, tuple(
          Pair(int(u), int(c), self.embedding_UxE[u], p)
          for u, c, p in zip(users, contexts, probs))))
    return examples

  def _annotate(self, rng, song_id, num_users):
    """Draws users and one context each, with enough distinct contexts."""
    for _ in range(1000):
      user_ids = np.sort(rng.choice(self.config.num_users, size=num_users,
                                    replace=False))
      probs = self.context_probs(np.full(num_users, song_id), user_ids)
      cumulative = np.cumsum(probs, axis=1)
      draws = rng.uniform(size=(num_users, 1))
      contexts = np.minimum((draws > cumulative).sum(axis=1),
                            labels.NUM_LABELS - 1)
      if len(set(contexts)) >= self.config.min_contexts_per_track:
        return user_ids, contexts, probs
    raise ValueError(
        f"track {song_id}: no draw of {num_users} users gave"
        f" {self.config.min_contexts_per_track} distinct contexts; lower"
        " track_sharpness/user_sharpness or min_contexts_per_track")

  def render(self, song_id: int) -> np.ndarray:
    """The waveform of track `song_id`: mono float32 at 22,050 Hz.

    Computed in float32 (a build renders thousands of tracks): each note's
    phase runs from the phase its beat starts at, and its harmonics come
    from the recurrence sin((h + 1) x) = 2 cos(x) sin(h x) - sin((h - 1) x).
    """
    tempo, energy, brightness, valence, percussive = self.attributes_NxA[
        song_id]
    rng = np.random.default_rng([self.config.seed, 3, song_id])
    time, kick = self._clock()
    beat = 60.0 / (70.0 + 100.0 * tempo)
    phase = rng.uniform(0, beat)
    # Beat k spans [phase + k beat, phase + (k + 1) beat); the excerpt
    # starts inside beat -1.
    beat_index = np.floor((time - np.float32(phase)) / np.float32(beat))
    since_beat = np.maximum(time - np.float32(phase) - beat_index
                            * np.float32(beat), 0)
    beat_index = beat_index.astype(np.int32) + 1

    # A melody on a pentatonic scale over a root set by brightness; valence
    # sets how many harmonics each note has (dull and dark vs rich).
    root = 110.0 * 2.0 ** (4.0 * brightness)
    steps = np.array([0, 2, 4, 7, 9, 12])
    notes = rng.choice(steps, size=beat_index[-1] + 1)
    angular = 2 * np.pi * root * 2.0 ** (notes / 12.0)  # rad/s per beat
    # Each beat's phase at its start, 0 at the excerpt's start: beat -1
    # plays `phase` seconds of the excerpt, and began `beat` before its end.
    played = np.full(len(notes), beat)
    played[0] = phase
    ends = np.cumsum(angular * played)
    starts = np.mod(np.concatenate([[ends[0] - angular[0] * beat], ends[:-1]]),
                    2 * np.pi)
    note_phase = (starts.astype(np.float32)[beat_index]
                  + angular.astype(np.float32)[beat_index] * since_beat)
    tone = _harmonic_sum(note_phase, 1 + int(round(5 * valence)))
    tone *= np.exp(since_beat * np.float32(-1 / (0.5 * beat)))

    # Percussion on every beat: a noise burst plus a low kick.
    envelope = np.exp(since_beat * np.float32(-1 / 0.04))
    drums = np.float32(percussive) * envelope * (
        rng.standard_normal(len(time), dtype=np.float32) + kick)
    floor = np.float32(0.02) * rng.standard_normal(len(time),
                                                   dtype=np.float32)
    gain = np.float32(0.05 + 0.3 * energy)
    return gain * (np.float32(0.5) * tone + drums) + floor

  def _clock(self) -> tuple[np.ndarray, np.ndarray]:
    """Sample times in seconds and the kick drum's 60 Hz sine (float32),
    the same for every track."""
    if self._clock_cache is None:
      num_samples = audio.excerpt_samples(self.config.excerpt_seconds)
      time = np.arange(num_samples) / audio.SAMPLE_RATE
      self._clock_cache = (time.astype(np.float32),
                           (2 * np.sin(2 * np.pi * 60 * time)).astype(
                               np.float32))
    return self._clock_cache

  def mel(self, song_id: int) -> np.ndarray:
    """The log-mel spectrogram of track `song_id`, (frames, 96) float32."""
    return self.mels([song_id])[0]

  def mels(self, song_ids) -> np.ndarray:
    """`mel` of each of `song_ids`, (len(song_ids), frames, 96), computed
    as one batch (audio.log_mels)."""
    return audio.log_mels(np.stack([self.render(s) for s in song_ids]))

"""contextual_tags: (user, track, context) annotations with log-mel audio.

One example per track per split: the track's log-mel spectrogram, stored once,
and the sequence of its (user, context) pairs in that split. The same track
may appear in several splits with different pairs, as in the paper's release.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from ctxtag import audio
from ctxtag import labels
from ctxtag.sources import simulated as simulation_lib


@dataclasses.dataclass(kw_only=True)
class ContextualTagsConfig(tfds.core.BuilderConfig):
  """A source of contextual-tag data.

  Attributes:
    simulation: settings of a simulated world; the only source so far.
      Further sources (the paper's public CSVs with users' audio, users' own
      playlists) add their own fields and are read from the manual dir.
  """
  simulation: simulation_lib.SimulationConfig | None = None

  @property
  def excerpt_seconds(self) -> float:
    return self.simulation.excerpt_seconds


_SIMULATED_NOTES = (
    "A simulated listening world (ctxtag.sources.simulated) whose tracks are rendered"
    " to audio; pairs carry their true context distribution.")

BUILDER_CONFIGS = (
    ContextualTagsConfig(
        name="simulated",
        description=_SIMULATED_NOTES + " Sized for the CPU reproduction.",
        simulation=simulation_lib.SimulationConfig()),
    ContextualTagsConfig(
        name="simulated_small",
        description=_SIMULATED_NOTES + " Tiny, for tests.",
        simulation=simulation_lib.SimulationConfig(
            num_tracks=60, num_users=200, train_tracks=40,
            validation_tracks=20, test_tracks=20, excerpt_seconds=2.0)),
)


def features_for(config: ContextualTagsConfig) -> tfds.features.FeaturesDict:
  """The dataset schema of `config`; the one place it is written down."""
  pair = {
      "user_id": np.int64,
      "label": np.int64,
      "user_embedding": tfds.features.Tensor(
          shape=(labels.USER_EMBEDDING_DIM,), dtype=np.float32),
  }
  if config.simulation is not None:
    pair["context_probs"] = tfds.features.Tensor(
        shape=(labels.NUM_LABELS,), dtype=np.float32)
  return tfds.features.FeaturesDict({
      "song_id": np.int64,
      "mel": tfds.features.Tensor(
          shape=(audio.num_frames(config.excerpt_seconds), audio.N_MELS),
          dtype=np.float16, encoding=tfds.features.Encoding.BYTES),
      "pairs": tfds.features.Sequence(pair),
  })


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for contextual_tags."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Simulated sources; one example per track per split.",
  }
  BUILDER_CONFIGS = list(BUILDER_CONFIGS)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features_for(self.builder_config),
        supervised_keys=None,
        homepage="https://zenodo.org/record/3961560",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Simulated data needs no download.
    world = simulation_lib.World(self.builder_config.simulation)
    return {
        split: self._generate_examples(world, split)
        for split in ("train", "validation", "test")
    }

  def _generate_examples(self, world: simulation_lib.World, split: str):
    for track in world.split_examples(split):
      yield track.song_id, {
          "song_id": track.song_id,
          "mel": world.mel(track.song_id).astype(np.float16),
          "pairs": [{
              "user_id": pair.user_id,
              "label": pair.label,
              "user_embedding": pair.user_embedding,
              "context_probs": pair.context_probs,
          } for pair in track.pairs],
      }


def parse_overrides(text: str) -> dict[str, str]:
  """"key=value,key=value" -> {key: value}; "" -> {}."""
  overrides = {}
  for item in filter(None, (part.strip() for part in text.split(","))):
    key, equals, value = item.partition("=")
    if not equals or not key.strip() or not value.strip():
      raise ValueError(f"simulation override {item!r} is not key=value")
    overrides[key.strip()] = value.strip()
  return overrides


def config_with_overrides(name: str,
                          overrides: dict[str, str]) -> ContextualTagsConfig:
  """The builder config `name`, with simulation settings replaced.

  A changed world gets its own config name (hence its own directory), so a
  dataset built with other settings is never taken for this one.

  Args:
    name: one of BUILDER_CONFIGS' names.
    overrides: simulation setting -> value as text, e.g. {"num_tracks":
      "500", "user_influence": "0.8"}.
  """
  known = {config.name: config for config in BUILDER_CONFIGS}
  if name not in known:
    raise ValueError(f"unknown contextual_tags config {name!r}; known:"
                     f" {sorted(known)}")
  base = known[name]
  if not overrides:
    return base
  if base.simulation is None:
    raise ValueError(f"config {name!r} is not simulated; it takes no"
                     " simulation overrides")
  fields = {f.name: f.type for f in
            dataclasses.fields(simulation_lib.SimulationConfig)}
  values = {}
  for key, text in sorted(overrides.items()):
    if key not in fields:
      raise ValueError(f"unknown simulation setting {key!r}; known:"
                       f" {sorted(fields)}")
    kind = fields[key]
    try:
      values[key] = kind(text)
    except ValueError:
      raise ValueError(f"simulation setting {key}={text!r} is not of type"
                       f" {kind.__name__}") from None
  simulation = dataclasses.replace(base.simulation, **values)
  simulation.validate()
  suffix = "-".join(f"{key}{value}" for key, value in values.items())
  return ContextualTagsConfig(
      name=f"{name}-{suffix}",
      description=f"{base.description} Overrides: {values}.",
      simulation=simulation)

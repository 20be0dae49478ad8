"""contextual_tags: (user, track, context) annotations with log-mel audio.

One example per track per split: the track's log-mel spectrogram, stored once,
and the sequence of its (user, context) pairs in that split. The same track
may appear in several splits with different pairs, as in the paper's release.

The builder only describes features and writes examples; the data comes from
a source in `ctxtag.sources`, picked by the config:
  simulated, simulated_small   a simulated world (no download)
  zenodo                       the paper's public CSVs with users' own audio
                               (manual dir), with build_report.json
  playlists                    contexts mined from users' playlists (manual
                               dir), with build_report.json
"""

from collections.abc import Callable
import dataclasses
import os
import re
import sys

import numpy as np
import tensorflow_datasets as tfds

from ctxtag import audio
from ctxtag import errors
from ctxtag import files
from ctxtag import labels
from ctxtag.sources import assemble
from ctxtag.sources import build_report
from ctxtag.sources import inputs as inputs_lib
from ctxtag.sources import mels
from ctxtag.sources import options as options_lib
from ctxtag.sources import playlists
from ctxtag.sources import simulated
from ctxtag.sources import splits as splits_lib
from ctxtag.sources import zenodo

SPLITS = ("train", "validation", "test")
SONG_IDS_FILE = "song_ids.csv"


@dataclasses.dataclass(kw_only=True)
class ContextualTagsConfig(tfds.core.BuilderConfig):
  """A source of contextual-tag data and its settings.

  Attributes:
    source: "simulated", "zenodo" or "playlists".
    settings: the source's settings: `simulated.SimulationConfig`,
      `zenodo.Options` or `playlists.Options`.
    split: how the pairs are split (the source's own splits by default).
  """
  source: str
  settings: object
  split: assemble.SplitSettings = assemble.SplitSettings()

  @property
  def excerpt_seconds(self) -> float:
    return self.settings.excerpt_seconds

  @property
  def simulation(self) -> simulated.SimulationConfig | None:
    return self.settings if self.source == "simulated" else None


_SIMULATED_NOTES = (
    "A simulated listening world (ctxtag.sources.simulated) whose tracks are"
    " rendered to audio; pairs carry their true context distribution.")

BUILDER_CONFIGS = (
    ContextualTagsConfig(
        name="simulated",
        description=_SIMULATED_NOTES + " Sized for the CPU reproduction.",
        source="simulated", settings=simulated.SimulationConfig()),
    ContextualTagsConfig(
        name="simulated_small",
        description=_SIMULATED_NOTES + " Tiny, for tests.",
        source="simulated", settings=simulated.SimulationConfig(
            num_tracks=60, num_users=200, train_tracks=40,
            validation_tracks=20, test_tracks=20, excerpt_seconds=2.0)),
    ContextualTagsConfig(
        name="playlists",
        description=("Contexts mined from users' own playlists by the"
                     " paper's collection rules, with the tracks' audio and"
                     " user embeddings given or computed from the playlists;"
                     " from the manual dir."),
        source="playlists", settings=playlists.Options()),
    ContextualTagsConfig(
        name="zenodo",
        description=("The paper's public release (Zenodo 3961560): its"
                     " splits, users' embeddings, and the tracks' audio or"
                     " the authors' mels, from the manual dir."),
        source="zenodo", settings=zenodo.Options()),
)

@dataclasses.dataclass(frozen=True)
class _Source:
  """What the builder needs to know of a source.

  Attributes:
    settings_name: how errors about its --option settings name them.
    has_given_splits: it has splits of its own, kept unless another
      strategy is asked for.
    prepare: for real-data sources, prepare(manual_dir, settings, split,
      cache_root, workers, report, beam_options) -> assemble.Prepared.
    expected_files: for real-data sources, expected_files(manual_dir) ->
      what the manual dir must hold, in one line.
    input_tables: for real-data sources, input_tables(manual_dir) ->
      (tables hashed, large tables stat'ed) for inputs.json.
  """
  settings_name: str
  has_given_splits: bool
  prepare: Callable | None = None
  expected_files: Callable | None = None
  input_tables: Callable | None = None


# What a real-data source's manual dir must hold, for TFDS, by source.
_INSTRUCTIONS = {
    "zenodo": zenodo.MANUAL_DOWNLOAD_INSTRUCTIONS,
    "playlists": playlists.MANUAL_DOWNLOAD_INSTRUCTIONS,
}

SOURCES = {
    "simulated": _Source("simulation", has_given_splits=True),
    "zenodo": _Source("zenodo", has_given_splits=True,
                      prepare=zenodo.prepare,
                      expected_files=zenodo.expected_files,
                      input_tables=zenodo.input_tables),
    "playlists": _Source("playlists", has_given_splits=False,
                         prepare=playlists.prepare,
                         expected_files=playlists.expected_files,
                         input_tables=playlists.input_tables),
}


def expected_files(config: ContextualTagsConfig, manual_dir: str) -> str:
  """What `config`'s manual dir must hold, in one line; "" for a config
  that reads none."""
  source = SOURCES[config.source]
  return source.expected_files(manual_dir) if source.expected_files else ""


def input_fingerprint(config: ContextualTagsConfig, manual_dir: str
                      ) -> dict | None:
  """What a build of `config` reads from `manual_dir` (inputs.json); None
  for a config that reads no manual dir (simulated)."""
  source = SOURCES[config.source]
  if source.input_tables is None:
    return None
  tables, slices = source.input_tables(manual_dir)
  return inputs_lib.fingerprint(manual_dir, tables, slices, config.settings,
                                config.name, config.split)


def features_for(config: ContextualTagsConfig) -> tfds.features.FeaturesDict:
  """The dataset schema of `config`; the one place it is written down."""
  pair = {
      "user_id": np.int64,
      "label": np.int64,
      "user_embedding": tfds.features.Tensor(
          shape=(labels.USER_EMBEDDING_DIM,), dtype=np.float32),
  }
  if config.source == "simulated":
    pair["context_probs"] = tfds.features.Tensor(
        shape=(labels.NUM_LABELS,), dtype=np.float32)
  return tfds.features.FeaturesDict({
      "song_id": np.int64,
      "mel": tfds.features.Tensor(
          shape=(audio.num_frames(config.excerpt_seconds), audio.N_MELS),
          dtype=np.float16, encoding=tfds.features.Encoding.BYTES),
      "pairs": tfds.features.Sequence(pair),
  })


def config_with_overrides(
    name: str, overrides: dict[str, str],
    split: assemble.SplitSettings = assemble.SplitSettings()
) -> ContextualTagsConfig:
  """The builder config `name`, with its source's settings and split changed.

  A changed dataset gets its own config name (hence its own directory), so a
  dataset built with other settings is never taken for this one.

  Args:
    name: one of BUILDER_CONFIGS' names.
    overrides: setting -> value as text, e.g. {"num_tracks": "500"}.
    split: how to split the pairs.
  """
  known = {config.name: config for config in BUILDER_CONFIGS}
  if name not in known:
    raise errors.ConfigError(f"unknown contextual_tags config {name!r};"
                             f" known: {sorted(known)}")
  base = known[name]
  source = SOURCES[base.source]
  has_given = source.has_given_splits
  split.validate(has_given)
  settings, suffix = options_lib.replace(
      base.settings, overrides, source.settings_name)
  suffixes = [text for text in (suffix, split.suffix(has_given)) if text]
  if not suffixes:  # the same data as `base`: TFDS wants the very object
    return base
  return dataclasses.replace(
      base, name="-".join([name] + suffixes), settings=settings, split=split,
      description=f"{base.description} Changed: {', '.join(suffixes)}.")


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for contextual_tags."""

  # A new config leaves the data of existing ones unchanged: same version.
  # A change to what an existing config writes (a source's defaults, the
  # schema) needs a new version, or a dataset built before it is read back
  # as if it were current. Everything else derives the version from here.
  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "2.0.0": "The simulated world's defaults changed (track_sharpness 4.0,"
               " user_influence 0.5; earlier 2.0 and 0.6): simulated configs"
               " built at 1.0.0 hold other data.",
      "1.0.0": "One example per track per split; simulated configs, then the"
               " zenodo config (the paper's release with users' audio) with"
               " build_report.json.",
  }
  BUILDER_CONFIGS = list(BUILDER_CONFIGS)
  # Every config's, for TFDS's catalog; an instance keeps its own config's
  # only (none for a simulated one): `tfds build` and TFDS's test harness
  # read the instance's, and the harness gives a manual dir only where the
  # instructions say one is read.
  MANUAL_DOWNLOAD_INSTRUCTIONS = "".join(
      f"{source}:{instructions}"
      for source, instructions in _INSTRUCTIONS.items())

  def __init__(self, *, strict: bool = False, workers: int | None = None,
               beam_options=None, inputs: dict | None = None, **kwargs):
    """Args beyond TFDS's, all optional (`tfds build` and TFDS's test
    harness pass none of them, and build with the defaults):

    strict: the first defective input item is an error, not a counted skip.
    workers: processes decoding audio (default: all cores).
    beam_options: Apache Beam PipelineOptions: build on Beam (audio stage and
      example writing) instead of in this process and a process pool; the
      caller passes the same options in TFDS's DownloadConfig.
    inputs: what the build reads (`input_fingerprint`), taken by the caller
      before it reads anything; by default the build takes it when it
      starts. Written as inputs.json beside the dataset.
    """
    self._inputs = inputs
    self._strict = strict
    self._workers = workers
    self._beam_options = beam_options
    super().__init__(**kwargs)
    self.MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.get(
        self.builder_config.source)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features_for(self.builder_config),
        supervised_keys=None,
        homepage="https://zenodo.org/record/3961560",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    if config.source == "simulated":
      world = simulated.World(config.settings)
      if config.split.resplits(SOURCES["simulated"].has_given_splits):
        tables = config.split.apply(world.all_pairs())
        guarantee = splits_lib.guarantee(tables, config.split.strategy)
        if guarantee:
          print(guarantee, file=sys.stderr, flush=True)
        tracks = {s: world.track_examples(tables[s]) for s in SPLITS}
      else:
        tracks = {s: world.split_examples(s) for s in SPLITS}
      return {split: self._generate_examples(split, world=world,
                                             tracks=tracks[split])
              for split in SPLITS}
    manual_dir = _manual_dir(dl_manager, config)
    inputs = self._inputs or input_fingerprint(config, manual_dir)
    report = build_report.BuildReport(self._strict)
    prepared = SOURCES[config.source].prepare(
        manual_dir, config.settings, config.split,
        _mel_cache(self.data_dir_root),
        self._workers or os.cpu_count() or 1, report, self._beam_options)
    generators = {split: self._generate_examples(split, prepared=prepared,
                                                 report=report)
                  for split in SPLITS}
    # The audio stage is over, so the report is whole; this is TFDS's
    # incomplete dir, renamed into place with the splits: a dataset is never
    # seen without these files.
    _write_beside_data(os.fspath(self.data_dir), report, inputs, prepared)
    return generators

  def _generate_examples(self, split: str, world=None, tracks=None,
                         prepared=None, report=None):
    """The examples of `split`: the simulated `world`'s `tracks`, or the
    tracks a real source `prepared` (an iterator, or a Beam transform),
    whose drops `report` counted."""
    if world is not None:
      return self._simulated_examples(world, tracks)
    return self._real_examples(split, prepared.tracks[split],
                               prepared.mel_dirs, report)

  def _simulated_examples(self, world: simulated.World, tracks):
    chunks = list(_chunks(tracks, _MEL_BATCH))
    for chunk, chunk_mels in zip(chunks, _rendered(world, chunks)):
      yield from (self._simulated_example(track, mel)
                  for track, mel in zip(chunk, chunk_mels))

  @staticmethod
  def _simulated_example(track, mel):
    return track.song_id, {
        "song_id": track.song_id,
        "mel": mel.astype(np.float16),
        "pairs": [{
            "user_id": pair.user_id,
            "label": pair.label,
            "user_embedding": pair.user_embedding,
            "context_probs": pair.context_probs,
        } for pair in track.pairs],
    }

  def _real_examples(self, split: str, tracks, mel_dirs: dict[int, str],
                     report: build_report.BuildReport):
    if not tracks:
      raise errors.DatasetError(
          f"split {split!r} has no pair left: {report.dropped_pairs()}"
          f" pairs were dropped ({', '.join(report.dropped) or 'none'});"
          " check the inputs, or loosen the rules with --option")
    make = _ExampleMaker(mel_dirs)
    if self._beam_options is None:
      return map(make, tracks)
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
    return beam.Create(tracks) | beam.Map(make)


# Simulated tracks whose mels are computed together (audio.log_mels).
_MEL_BATCH = 64
# Most processes that render a simulated build's chunks at once.
_MAX_RENDER_WORKERS = 8
# The world that rendering workers render (`_set_world`).
_WORLD = None


def _set_world(world) -> None:
  global _WORLD
  _WORLD = world


def _world_mels(song_ids):
  return _WORLD.mels(song_ids)


def _render_workers(chunks: int) -> int:
  try:
    cpus = len(os.sched_getaffinity(0))
  except (AttributeError, OSError, TypeError):  # not Linux; a mocked os
    cpus = 1
  return max(1, min(cpus, chunks, _MAX_RENDER_WORKERS))


def _rendered(world: simulated.World, chunks: list):
  """Each chunk's mels, in order, rendered by a worker process per core:
  rendering and the mel front end are most of a simulated build, and each
  track's waveform depends on its song id alone, so the data are the same
  bytes whatever the number of workers."""
  song_ids = [[track.song_id for track in chunk] for chunk in chunks]
  workers = _render_workers(len(chunks))
  if workers < 2:
    yield from map(world.mels, song_ids)
    return
  with mels.worker_pool(workers, _set_world, (world,)) as pool:
    yield from pool.imap(_world_mels, song_ids)


def _chunks(items, size: int):
  """Lists of `size` consecutive items of the iterable `items` (the last
  may be shorter)."""
  chunk = []
  for item in items:
    chunk.append(item)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


class _ExampleMaker:
  """TrackPairs -> (key, example), reading the mel from the cache; a class
  so Beam can pickle it."""

  def __init__(self, mel_dirs: dict[int, str]):
    self.mel_dirs = mel_dirs  # song id -> its mel's cache dir

  def __call__(self, track):
    return track.song_id, {
        "song_id": track.song_id,
        "mel": mels.load(self.mel_dirs[track.song_id], track.song_id),
        "pairs": {"user_id": track.user_id_P, "label": track.label_P,
                  "user_embedding": track.user_embedding_PxE},
    }


def _mel_cache(data_dir_root) -> str:
  """Where a build caches decoded mels, resumed by the next build: beside
  the datasets (<data_dir>/downloads/ctxtag_mels), not in TFDS's download
  dir, which TFDS's test harness points at the read-only dummy data."""
  return os.path.join(os.fspath(data_dir_root), "downloads", "ctxtag_mels")


def _write_beside_data(directory: str, report: build_report.BuildReport,
                       inputs: dict, prepared: assemble.Prepared) -> None:
  """build_report.json, inputs.json and (for MPD slices) song_ids.csv."""
  files.write_json(os.path.join(directory, build_report.REPORT_FILE),
                   report.to_json())
  files.write_json(os.path.join(directory, inputs_lib.INPUTS_FILE), inputs,
                   indent=None)
  if prepared.song_stems:
    _write_song_ids(os.path.join(directory, SONG_IDS_FILE), prepared)


def _write_song_ids(path: str, prepared) -> None:
  """song_id -> the id its audio is named by (an MPD track URI's id), for
  every song the dataset holds."""
  songs = sorted({t.song_id for tracks in prepared.tracks.values()
                  for t in tracks})
  with files.atomic_open(path, "w", newline="") as f:
    f.write("song_id,uri_id\n")
    f.writelines(f"{song},{prepared.song_stems[song]}\n" for song in songs)


# How TFDS names a missing or empty manual dir (its message then runs on
# with MANUAL_DOWNLOAD_INSTRUCTIONS over many lines).
_TFDS_NO_MANUAL_DIR = re.compile(
    r"Manual directory (.+?) does not exist or is empty")


def _manual_dir(dl_manager, config: ContextualTagsConfig) -> str:
  """The manual dir TFDS was given, absolute (inputs.json records it); a
  missing or empty one is a one-line error naming what belongs there and
  how to pass it."""
  try:
    return os.path.abspath(os.fspath(dl_manager.manual_dir))
  except AssertionError as error:
    found = _TFDS_NO_MANUAL_DIR.search(str(error))
    where = found.group(1) if found else "DIR"
    named = f"manual dir {where}" if found else "the manual dir"
    raise errors.DatasetError(
        f"{named} is missing or empty; contextual_tags/{config.name} reads"
        f" there {expected_files(config, where)}; pass the directory with"
        " --manual_dir (tfds build, python -m launch.build_dataset) or"
        " --config.manual_dir (runs)") from None

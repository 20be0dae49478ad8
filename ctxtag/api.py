"""The Python API for notebooks and scripts: open a finished run and use it.

  run = ctxtag.open_run("workdirs/default")
  run.tag("music/", user_id=17)                 # audio files, any model
  run.score("audio_user", mels, embeddings)     # (user, track) pairs
  run.predictions("test")                       # the run's CSVs as tables
  run.evaluate("test")                          # every protocol, a dict
  run.recommend(index, "gym", user_id=17)       # rank a catalog index

docs/python.md walks through each; its examples run as tests.
"""

import dataclasses
import functools
import os

import jax
import ml_collections
import numpy as np

from ctxtag import catalog
from ctxtag import files
from ctxtag import inference
from ctxtag import models
from ctxtag import predictions
from ctxtag import recommend
from ctxtag import run as run_lib
from ctxtag import steps
from ctxtag import study
from ctxtag import tables
from ctxtag import transfer
from ctxtag.evaluation import inputs as inputs_lib


@dataclasses.dataclass
class Run:
  """A trained run, opened from its workdir.

  Attributes:
    workdir: where it is.
    config: its config (config.json).
    models: the models it trained, in training order.
  """
  workdir: str
  config: ml_collections.ConfigDict
  models: tuple[str, ...]
  _states: dict = dataclasses.field(default_factory=dict, repr=False)

  def state(self, name: str) -> steps.TrainState:
    """Model `name`'s best-by-validation state (restored once)."""
    self._check(name)
    if name not in self._states:
      self._states[name] = transfer.restore_best(
          name, self.config, self.workdir,
          inference.load_card(self.workdir).frames)
    return self._states[name]

  def _check(self, name: str) -> None:
    if name not in self.models:
      raise ValueError(f"model {name!r} is not one of the run's"
                       f" {list(self.models)}")

  def score(self, name: str, mel_BxTxF: np.ndarray,
            embedding_BxE: np.ndarray | None = None) -> np.ndarray:
    """Model `name`'s scores, (B, 10): sigmoids per context for a
    multi-label model, a softmax per (user, track) pair otherwise.

    Args:
      name: a model of the run.
      mel_BxTxF: log-mels of the run's front end (`mel` reads a file).
      embedding_BxE: each example's user embedding (pair models).
    """
    batch = {"mel": np.asarray(mel_BxTxF, np.float32)}
    if embedding_BxE is not None:
      batch["user_embedding"] = np.asarray(embedding_BxE, np.float32)
    return np.asarray(_predict(self.state(name), batch,
                               models.get(name).output))

  def mel(self, path: str) -> np.ndarray:
    """The log-mel of an audio file, as the run's front end makes it."""
    path, mel, error, _ = inference._mel_or_error(  # pylint: disable=protected-access
        path, inference.load_card(self.workdir))
    if error is not None:
      raise ValueError(error)
    return mel.astype(np.float32)

  def users(self) -> dict[int, np.ndarray]:
    """user id -> embedding, of every user of the run's data."""
    return inference.load_users(self.workdir)

  def tag(self, audio_path: str, user_id: int | None = None,
          embedding: np.ndarray | None = None, top_k: int = 3) -> dict:
    """launch.tag's JSON for the audio file(s) at `audio_path`."""
    return inference.tag(self.workdir, self.config, audio_path, user_id,
                         embedding, top_k)

  def predictions(self, split: str = "test") -> dict[str, tables.Table]:
    """The run's prediction tables of `split`, by name: "groundtruth" and
    each model's (made by the run's evaluation)."""
    found = {}
    for name in ("groundtruth", *models.MODELS):
      path = predictions.path(self.workdir, split, name)
      if os.path.exists(path):
        found[name] = (tables.read_groundtruth(path) if name == "groundtruth"
                       else inputs_lib.read_scores(name, path))
    if "groundtruth" not in found:
      raise FileNotFoundError(
          f"{predictions.path(self.workdir, split, 'groundtruth')}: missing;"
          " evaluate the run first (run.evaluate)")
    return found

  def evaluate(self, split: str = "test", settings=None) -> dict:
    """Predicts with every model and runs every protocol on `split` (writes
    the run's results.json, report.md and plots, as launch.evaluate)."""
    return run_lib.evaluate_workdir(self.workdir,
                                    run_lib.run_dataset_path(self.workdir),
                                    split, settings=settings)

  def index(self, output: str, audio_path: str | None = None,
            split: str | None = None, workers: int = 1) -> catalog.Index:
    """Indexes audio files (or a split of the run's dataset) into `output`
    for `recommend` (launch.index); a finished index is reused."""
    if (audio_path is None) == (split is None):
      raise ValueError("give audio_path or split, one of them")
    if split is not None:
      catalog.index_split(self.config, self.workdir,
                          run_lib.run_dataset_path(self.workdir), split,
                          output)
    else:
      catalog.index_audio(self.config, self.workdir, audio_path, output,
                          workers)
    return catalog.load(output)

  def recommend(self, index: catalog.Index, context: str,
                user_id: int | None = None,
                embedding: np.ndarray | None = None, top_k: int = 20,
                compare: bool = False) -> dict:
    """The index's tracks best for the user in `context` (launch.recommend's
    JSON for one query)."""
    recommender = recommend.Recommender(self.config, self.workdir, index)
    query = recommend.Query(context, user_id, embedding)
    return recommender.answer([query], top_k, compare)["results"][0]


@functools.partial(jax.jit, static_argnames="output")
def _predict(state, batch, output):
  return steps.predict_step(state, batch, output=output)


def open_run(workdir: str) -> Run:
  """The trained run at `workdir`.

  Raises:
    FileNotFoundError: if `workdir` is not a ctxtag run.
  """
  workdir = files.absolute(workdir)
  config = run_lib.load_run_config(workdir)
  return Run(workdir, config, tuple(config.models))


def load_index(directory: str) -> catalog.Index:
  """A catalog index made by launch.index (ctxtag.catalog)."""
  return catalog.load(directory)


def evaluate_tables(csv_files: study.CsvFiles, settings=None) -> dict:
  """Every protocol and statistic of prediction CSVs (no run needed)."""
  return study.evaluate_csvs(csv_files, settings)

"""docs/extending.md's worked examples, as tests: a model and an evaluator
registered from this file alone are trained, predicted, evaluated by every
protocol and statistic, and shown in results.json, report.md and the plots;
no other file is edited."""

import json
import os

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from ctxtag import labels
from ctxtag import models
from ctxtag import report
from ctxtag import run
from ctxtag import sweep
from ctxtag.configs import default
from ctxtag.configs import smoke
from ctxtag.evaluation import evaluators


class PooledTagger(nn.Module):
  """A pair model of our own: the mel averaged over time, beside the user's
  embedding, through one hidden layer."""
  hidden: int

  @nn.compact
  def __call__(self, batch: dict, train: bool = False) -> jnp.ndarray:
    mel_BxF = nn.BatchNorm(use_running_average=not train)(
        batch["mel"].mean(axis=1))
    x = jnp.concatenate([mel_BxF, batch["user_embedding"]], axis=-1)
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(labels.NUM_LABELS)(x)


POOLED = models.Model(
    name="pooled", display="pooled audio + user", output="single_label",
    batches="pairs", build=lambda section: PooledTagger(section.hidden),
    sg_protocol="pooled_sg", sg_title="SG, pooled audio + user",
    sg_plot="pooled audio + user (SG)", style=("v-", "C5"),
    compared_with=("audio", "audio_user"))


class PredictedShares:
  """An evaluator of our own: how often each model answers each context."""

  def run(self, study, results):
    del results
    return {"predicted_shares": {
        name: dict(zip(labels.LABELS, np.bincount(
            scores.argmax(axis=1), minlength=labels.NUM_LABELS).tolist()))
        for name, scores in study.scores.items()}}


@pytest.fixture
def registered(monkeypatch):
  """The model and the evaluator in their tables, for this test only."""
  monkeypatch.setitem(models.MODELS, POOLED.name, POOLED)
  monkeypatch.setattr(evaluators, "EVALUATORS",
                      evaluators.EVALUATORS + [PredictedShares()])


def pooled_config():
  """The smoke run with our model, and the paper's concatenation beside the
  late fusion: two models of one kind, each with its section."""
  config = smoke.get_config()
  config.models = (*config.models, "audio_user_concat", "pooled")
  config.pooled = default.model_config(hidden=16, batch_size=8, max_epochs=2,
                                       patience=2)
  config.audio_user_concat = config.audio_user.copy_and_resolve_references()
  config.audio_user_concat.fusion = "concat"
  return config


@pytest.mark.slow
def test_a_registered_model_and_evaluator_go_everywhere(registered,
                                                        tmp_path):
  workdir = str(tmp_path / "run")
  results = run.reproduce(pooled_config(), workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == json.loads(json.dumps(results))
  assert os.path.exists(os.path.join(workdir, "predictions",
                                     "test_pooled.csv"))
  assert set(results["pooled_sg"]["average"]) >= {"auc", "f1", "f1_ci"}
  for kind in ("satisfaction", "ranking"):
    assert list(results[kind]) == ["audio", "audio_user", "user", "oracle",
                                   "audio_user_concat", "pooled"]
  assert {"pooled_vs_audio", "pooled_vs_audio_user",
          "audio_user_concat_vs_audio_user"} <= set(results["comparisons"])
  assert "audio_user_concat_sg" in results
  difference = results["comparisons"]["pooled_vs_audio"]["f1"]["difference"]
  assert difference == pytest.approx(
      results["satisfaction"]["pooled"]["f1"]
      - results["satisfaction"]["audio"]["f1"])
  assert "pooled" in results["ceiling_share"]["share"]
  # The evaluator's keys, checked against the prediction CSV by hand.
  scores = np.loadtxt(os.path.join(workdir, "predictions", "test_pooled.csv"),
                      delimiter=",", skiprows=1)[:, 2:]
  assert list(results["predicted_shares"]["pooled"].values()) == np.bincount(
      scores.argmax(axis=1), minlength=10).tolist()
  with open(os.path.join(workdir, "report.md")) as f:
    text = f.read()
  assert "| SG, pooled audio + user |" in text
  assert "| pooled audio + user |" in text  # satisfaction, ranking, training
  assert "| pooled audio + user - audio |" in text
  figure = report.per_context_figure(results)
  assert "pooled audio + user (SG)" in [
      t.get_text() for t in figure.axes[0].get_yticklabels()]
  training = report.training_curves_figure(
      {name: json.load(open(os.path.join(workdir, name, "summary.json")))
       for name in results["satisfaction"] if name != "oracle"})
  assert "pooled audio + user" in [axis.get_title() for axis in
                                   training.axes]


@pytest.mark.slow
def test_a_registered_model_is_in_a_sweeps_groups_and_plots(registered,
                                                            tmp_path):
  config = pooled_config()
  config.models = ("user", "pooled")  # no conv stack: a quick grid
  axes = sweep.make_axes(config, ["pooled.hidden=8,16", "seed=0,1"])
  result = sweep.run(config, str(tmp_path / "sweep"), axes, log=lambda _: 0)
  assert len(result["runs"]) == 4 and len(result["groups"]) == 2
  for group in result["groups"]:
    assert "pooled" in group["models"]
    assert "pooled_vs_user" in group["comparisons"] or (
        "user_vs_pooled" in group["comparisons"])
    per_seed = group["models"]["pooled"]["satisfaction_f1"]["per_seed"]
    hidden = group["settings"]["pooled.hidden"]
    runs = [r for r in result["runs"]
            if r["settings"]["pooled.hidden"] == hidden]
    assert per_seed == [r["satisfaction"]["pooled"]["f1"] for r in runs]
  with open(tmp_path / "sweep" / "sweep.md") as f:
    text = f.read()
  assert "| pooled audio + user |" in text
  assert (tmp_path / "sweep" / "sweep.png").read_bytes().startswith(
      b"\x89PNG")
  assert sweep.model_lookups.style("pooled") == POOLED.style


def test_a_section_for_an_unknown_model_is_refused(registered):
  config = pooled_config()
  config.models = ("audio", "pooled", "mine")
  with pytest.raises(Exception, match="'mine' is not one of"):
    run.run_config.validate(config, declared=default.get_config())


def test_two_fusions_in_one_run_are_two_entries_with_their_sections():
  from ctxtag.configs import fusions  # pylint: disable=import-outside-toplevel
  config = fusions.get_config()
  run.run_config.validate(config, declared=default.get_config())
  assert config.audio_user.fusion == "late"
  assert config.audio_user_concat.fusion == "concat"
  assert ("audio_user_concat", "audio_user") in models.comparisons(
      config.models)
  assert isinstance(models.create_model("audio_user_concat",
                                        config.audio_user_concat),
                    models.AudioUserTagger)

"""The user-influence study (ctxtag.sweep, launch.sweep): its settings, its
outputs from results dicts, resuming, and one real run of the launcher."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ctxtag import errors
from ctxtag import models
from ctxtag import run
from ctxtag import run_config
from ctxtag import study
from ctxtag import sweep
from ctxtag import tables
from ctxtag.configs import default
from ctxtag.configs import smoke
from ctxtag.evaluation import bootstrap

# The default run's models, in the model table's order.
_MODELS = ("audio", "audio_user", "user", "oracle")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(*args):
  return subprocess.run([sys.executable, "-m", "launch.sweep", *args],
                        capture_output=True, text=True, cwd=REPO)


@pytest.mark.parametrize("text,expected", [
    ("0,0.25,0.5,0.75,1", (0.0, 0.25, 0.5, 0.75, 1.0)),
    (" 1, 0 ", (1.0, 0.0)),  # the order given is the order run
    ("0.6", (0.6,)),
])
def test_influences_parse(text, expected):
  assert sweep.parse_influences(text) == expected


@pytest.mark.parametrize("text,message", [
    ("", "no user_influence values given"),
    ("0,,1", "'' is not a number"),
    ("0,high", "'high' is not a number"),
    ("0,1.5", "user_influence 1.5 is outside \\[0, 1\\]"),
    ("-0.1", "user_influence -0.1 is outside"),
    ("nan", "user_influence nan is outside"),
    ("0.5,0.50", "user_influence 0.5 is given twice"),
])
def test_bad_influences_are_refused(text, message):
  with pytest.raises(errors.ConfigError, match=message):
    sweep.parse_influences(text)


def _influence_axes(config, influences):
  """The axes of --influences: world.user_influence alone."""
  return sweep.make_axes(config, [(sweep.INFLUENCE_KEY, influences)])


def test_influence_names():
  (axis,) = _influence_axes(default.get_config(), (0.0, 0.25, 1.0, 0.6))
  assert (axis.label, axis.header) == ("influence", "user_influence")
  assert [axis.name(x) for x in axis.values] == [
      "influence_0", "influence_0.25", "influence_1", "influence_0.6"]
  assert sweep.number_text(1e-50) == "1e-50"  # no digit stripped from it
  assert float(sweep.number_text(0.1 + 0.2)) == 0.1 + 0.2


def test_run_config_keeps_options_and_sets_the_influence_and_split():
  config = default.get_config()
  config.dataset_options = "seed=3, embedding_noise=0.5"
  config.lock()
  changed = sweep.point_config(config, {sweep.INFLUENCE_KEY: 0.25},
                               "cold_user")
  assert changed.dataset_options == (
      "seed=3,embedding_noise=0.5,user_influence=0.25")
  assert changed.split_strategy == "cold_user"
  assert config.dataset_options == "seed=3, embedding_noise=0.5"  # a copy
  assert config.split_strategy == ""
  assert sweep.point_config(
      config, {sweep.INFLUENCE_KEY: 1.0}).split_strategy == ""  # config's
  run_config.validate(changed, declared=default.get_config())


def test_run_config_refuses_a_set_influence_and_real_data():
  config = default.get_config()
  config.dataset_options = "seed=3, user_influence = 0.2"
  with pytest.raises(errors.ConfigError, match="sets user_influence"):
    sweep.point_config(config, {sweep.INFLUENCE_KEY: 0.5})
  config = default.get_config()
  config.dataset = "contextual_tags/zenodo"
  with pytest.raises(errors.ConfigError, match="needs the simulated world"):
    sweep.point_config(config, {sweep.INFLUENCE_KEY: 0.5})


def _fake_results(f1: dict, seed: int = 0) -> dict:
  """A results dict with study.evaluate's keys, values derived from `f1`
  (model -> satisfaction F1) so that each can be told apart."""
  rng = np.random.default_rng(seed)
  results = {"satisfaction": {}, "ranking": {}, "comparisons": {},
             "bootstrap": {"unit": "user", "resamples": 1000, "seed": 0,
                           "confidence": 0.9}}
  for model, value in f1.items():
    results["satisfaction"][model] = {
        "accuracy": 0.9, "recall": 0.8, "precision": 0.7, "f1": value,
        "f1_ci": [value - 0.01, value + 0.02], "users": 500}
    results["ranking"][model] = {"hit@1": 0.1, "mrr": value + 0.2,
                                 "mrr_ci": [value + 0.19, value + 0.23]}
  for a, b in models.comparisons(_MODELS):
    if a in f1 and b in f1:
      results["comparisons"][f"{a}_vs_{b}"] = {
          metric: {"difference": results[kind][a][metric]
                                 - results[kind][b][metric],
                   "ci": sorted(rng.uniform(-0.1, 0.1, 2).tolist()),
                   "p_value": float(rng.uniform())}
          for kind, metric in (("satisfaction", "f1"), ("ranking", "mrr"),
                               ("satisfaction", "recall"))}
  return results


def _collect_influences(results_by_influence: dict, dataset: str,
                        dataset_options: str = "",
                        split_strategy: str = "") -> dict:
  """sweep.json's dict of an influence sweep from {influence: results}."""
  axis = sweep.Axis(sweep.INFLUENCE_KEY, tuple(sorted(results_by_influence)),
                    "influence")
  return sweep.collect_points(
      [axis], {axis.name(x): ({sweep.INFLUENCE_KEY: x}, results)
               for x, results in results_by_influence.items()},
      dataset, dataset_options, split_strategy)


def test_collect_copies_each_run_in_influence_order():
  runs = {1.0: _fake_results({"audio": 0.17, "audio_user": 0.35,
                              "user": 0.33, "oracle": 0.4}),
          0.0: _fake_results({"audio": 0.30, "audio_user": 0.29,
                              "user": 0.11, "oracle": 0.36}, seed=1)}
  result = _collect_influences(runs, "contextual_tags/simulated", "seed=3",
                               "cold_track")
  assert [r["user_influence"] for r in result["runs"]] == [0.0, 1.0]
  assert result["confidence"] == 0.9
  assert (result["dataset_options"], result["split_strategy"]) == (
      "seed=3", "cold_track")
  for entry in result["runs"]:
    source = runs[entry["user_influence"]]
    assert entry["workdir"] == (
        f"influence_{sweep.number_text(entry['user_influence'])}")
    assert entry["settings"] == {
        sweep.INFLUENCE_KEY: entry["user_influence"]}
    assert entry["users"] == 500
    for model in _MODELS:
      assert entry["satisfaction"][model] == {
          "f1": source["satisfaction"][model]["f1"],
          "f1_ci": source["satisfaction"][model]["f1_ci"]}
      assert entry["ranking"][model] == {
          "mrr": source["ranking"][model]["mrr"],
          "mrr_ci": source["ranking"][model]["mrr_ci"]}
    assert set(entry["comparisons"]) == {
        "audio_user_vs_audio", "user_vs_audio", "audio_user_vs_user"}
    for key, metrics in entry["comparisons"].items():
      assert set(metrics) == {"f1", "mrr"}  # recall left in results.json
      assert metrics["f1"] == source["comparisons"][key]["f1"]
  gain = result["runs"][1]["comparisons"]["audio_user_vs_audio"]["f1"]
  assert gain["difference"] == pytest.approx(0.35 - 0.17)


def test_collect_from_a_real_evaluation():
  """The gain in sweep.json is audio + user's F1 minus audio's, as study
  computed them from prediction tables."""
  rng = np.random.default_rng(0)
  song_P = np.repeat(np.arange(40), 5)
  user_P = np.arange(200) % 70 + 1000 * song_P
  label_P = rng.integers(0, 10, 200)
  truth = tables.Table("gt.csv", song_P, user_P, np.eye(10)[label_P])
  audio = tables.Table("a.csv", np.arange(40), None,
                       rng.uniform(size=(40, 10)))
  # audio + user is told the truth for a third of the pairs.
  informed = np.where(rng.uniform(size=(200, 1)) < 1 / 3, np.eye(10)[label_P],
                      rng.dirichlet(np.ones(10), 200))
  pair_models = {"audio_user": tables.Table("u.csv", song_P, user_P,
                                            informed)}
  results = study.evaluate(study.Inputs(
      truth, dict(pair_models, audio=audio),
      settings=bootstrap.Settings(resamples=200)))
  entry = _collect_influences({0.5: results},
                              "contextual_tags/simulated")["runs"][0]
  satisfaction = results["satisfaction"]
  assert entry["satisfaction"]["audio_user"]["f1"] == satisfaction[
      "audio_user"]["f1"]
  assert set(entry["satisfaction"]) == {"audio", "audio_user"}
  assert set(entry["comparisons"]) == {"audio_user_vs_audio"}
  gain = entry["comparisons"]["audio_user_vs_audio"]["f1"]
  assert gain["difference"] == pytest.approx(
      satisfaction["audio_user"]["f1"] - satisfaction["audio"]["f1"])
  assert gain["ci"][0] < gain["difference"] < gain["ci"][1]
  assert gain["ci"][0] > 0 and gain["p_value"] < 0.01  # a real gain


def _fabricated_sweep():
  runs = {0.0: _fake_results({"audio": 0.3, "audio_user": 0.2914}),
          1.0: _fake_results({"audio": 0.17, "audio_user": 0.35})}
  runs[0.0]["comparisons"]["audio_user_vs_audio"]["f1"] = {
      "difference": -0.0086, "ci": [-0.0201, 0.0033], "p_value": 6.3e-4}
  return _collect_influences(runs, "contextual_tags/simulated")


def test_table_text_cells():
  text = sweep.table_text(_fabricated_sweep())
  lines = text.splitlines()
  header = lines.index("## User satisfaction F1") + 2
  assert lines[header] == ("| user_influence | audio | audio + user |"
                           " audio + user - audio |")
  assert lines[header + 2] == (
      "| 0 | 0.300 [0.290, 0.320] | 0.291 [0.281, 0.311] |"
      " -0.009 [-0.020, 0.003] (p 6.3e-04) |")
  assert lines[header + 3].startswith(
      "| 1 | 0.170 [0.160, 0.190] | 0.350 [0.340, 0.370] | 0.180 [")
  assert "90% bootstrap interval" in text
  assert "| 1 | 0.370 [0.360, 0.400] | 0.550 [0.540, 0.580] |" in text  # MRR


def test_plot_and_outputs_are_written_together(tmp_path):
  fabricated = _fabricated_sweep()
  fabricated["runs"][1]["satisfaction"]["audio"]["f1"] = float("nan")
  paths = sweep.write_outputs(str(tmp_path), fabricated)
  assert sorted(os.path.basename(p) for p in paths) == sorted(sweep.OUTPUTS)
  saved = json.loads((tmp_path / "sweep.json").read_text())  # strict JSON
  assert saved["runs"][1]["satisfaction"]["audio"]["f1"] is None
  png = (tmp_path / "sweep.png").read_bytes()
  assert png.startswith(b"\x89PNG") and len(png) < 100_000
  single = _collect_influences(
      {0.6: _fake_results({"audio": 0.2, "user": 0.3})},
      "contextual_tags/simulated", "", "cold_user")
  assert sweep.plot(single).startswith(b"\x89PNG")  # one influence: a point
  assert "split: cold_user" in sweep.table_text(single)


class _StubReproduce:
  """Writes what a finished reproduction leaves (config.json, results.json)
  and counts the runs; `stop_before_results` plays a killed run."""

  def __init__(self):
    self.runs = []
    self.stop_before_results = set()

  def __call__(self, config, workdir):
    self.runs.append(os.path.basename(workdir))
    os.makedirs(workdir, exist_ok=True)
    run_config.save(config, os.path.join(workdir, "config.json"))
    if os.path.basename(workdir) in self.stop_before_results:
      raise KeyboardInterrupt
    influence = float(config.dataset_options.rpartition("=")[2])
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(_fake_results({"audio": 0.2, "audio_user": 0.2 + influence},
                              seed=len(self.runs)), f)


def test_run_skips_finished_influences_and_reruns_killed_ones(tmp_path,
                                                              monkeypatch):
  config, workdir = smoke.get_config(), str(tmp_path)
  stub, lines = _StubReproduce(), []
  monkeypatch.setattr(run, "reproduce", stub)
  stub.stop_before_results.add("influence_0.5")
  with pytest.raises(KeyboardInterrupt):
    sweep.run(config, workdir, _influence_axes(config, (0.0, 0.5, 1.0)),
              log=lines.append)
  assert stub.runs == ["influence_0", "influence_0.5"]
  assert not os.path.exists(tmp_path / "sweep.json")

  stub.stop_before_results.clear()
  result = sweep.run(config, workdir,
                     _influence_axes(config, (0.0, 0.5, 1.0)),
                     log=lines.append)
  assert stub.runs[2:] == ["influence_0.5", "influence_1"]
  assert any("influence_0 finished earlier" in line for line in lines)
  gains = [r["comparisons"]["audio_user_vs_audio"]["f1"]["difference"]
           for r in result["runs"]]
  np.testing.assert_allclose(gains, [0.0, 0.5, 1.0])
  assert json.loads((tmp_path / "sweep.json").read_text()) == result

  sweep.run(config, workdir, _influence_axes(config, (1.0, 0.0)),
            log=lines.append)
  assert len(stub.runs) == 4  # everything reused
  with pytest.raises(errors.ConfigError,
                     match=r"influence_1/config.json: this finished run was"
                     " made with another config"):
    sweep.run(config, workdir, _influence_axes(config, (1.0,)),
              split_strategy="cold_user")


def test_results_without_intervals_are_named(tmp_path):
  results = _fake_results({"audio": 0.2})
  del results["satisfaction"]["audio"]["f1_ci"]
  (tmp_path / "results.json").write_text(json.dumps(results))
  with pytest.raises(errors.UserError, match=r"results.json: no"
                     r" satisfaction.audio.f1_ci .*launch.evaluate"):
    sweep.load_results(str(tmp_path))


@pytest.mark.slow
def test_launcher_usage_errors_in_one_line(tmp_path):
  bad = _launch(f"--workdir={tmp_path}", "--influences=0,2")
  assert bad.returncode == 2
  assert bad.stderr.strip() == ("error: flag --influences=0,2: user_influence"
                                " 2 is outside [0, 1] (see --helpshort)")
  clash = _launch(f"--workdir={tmp_path}",
                  "--config.dataset_options=user_influence=0.3")
  assert clash.returncode == 1
  assert clash.stderr.count("\n") == 1 and "sets user_influence" in (
      clash.stderr)
  assert not os.listdir(tmp_path)  # nothing run, nothing written


@pytest.mark.slow
def test_launcher_runs_each_world_and_reuses_them(tmp_path):
  """The one real sweep: smoke runs of the user-only model (seconds) in two
  worlds; each run's dataset is its own world."""
  args = (f"--workdir={tmp_path}", "--influences=1,0",
          f"--config={os.path.join(REPO, 'launch/configs/smoke.py')}",
          "--config.models=('user',)", "--config.dataset_options=seed=1")
  first = _launch(*args)
  assert first.returncode == 0, first.stderr[-3000:]
  result = json.loads((tmp_path / "sweep.json").read_text())
  assert [r["user_influence"] for r in result["runs"]] == [0.0, 1.0]
  assert result["dataset_options"] == "seed=1"
  for entry in result["runs"]:
    run_dir = tmp_path / entry["workdir"]
    dataset = (run_dir / "dataset_path.txt").read_text()
    assert f"user_influence{entry['user_influence']}" in dataset
    assert "seed1" in dataset
    saved = json.loads((run_dir / "results.json").read_text())
    assert entry["satisfaction"]["user"]["f1"] == saved["satisfaction"][
        "user"]["f1"]
  # With the user alone deciding, the oracle's per-user score is higher.
  oracle = [r["satisfaction"]["oracle"]["f1"] for r in result["runs"]]
  assert oracle[1] > oracle[0]
  again = _launch(*args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stderr.count("finished earlier") == 2
  assert "| 0 |" in again.stdout and "| 1 |" in again.stdout

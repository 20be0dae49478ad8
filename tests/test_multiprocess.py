"""One run on two processes: JAX's multi-process runtime on this machine's CPU.

The smoke reproduction runs as two processes of one CPU device each (JAX's
gloo collectives, a coordinator on a free localhost port) and as one process
with the same two devices: the global mesh, the batches and so every
reduction are the same, so results.json must agree. (Against one device the
discrete metrics may differ: a batch split over two devices sums its
gradients in another order.) Process 1 runs under a Python audit hook that
logs every file it writes, to show that only process 0 writes the run's
files; orbax's own checkpoint files are all it may touch.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from ctxtag import distributed
from ctxtag import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 600

# Runs a module as `python -m` would, logging the files this process writes
# (opened for writing, created, renamed, removed) under a directory.
_AUDITED_RUN = textwrap.dedent("""\
    import os, runpy, sys
    root, log_path, module = (os.path.realpath(sys.argv[1]), sys.argv[2],
                              sys.argv[3])
    log = open(log_path, "a", buffering=1)
    WRITE_FLAGS = (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
                   | os.O_APPEND)

    def under(path):
      try:
        full = os.path.realpath(os.fsdecode(path))
      except TypeError:  # a file descriptor
        return False
      return full == root or full.startswith(root + os.sep)

    def hook(event, args):
      if event == "open":
        path, mode, flags = args
        writes = (any(c in mode for c in "wax+") if isinstance(mode, str)
                  else bool((flags or 0) & WRITE_FLAGS))
        if writes and under(path):
          log.write(f"open {path}\\n")
      elif event in ("os.rename", "os.replace", "os.link", "os.symlink"):
        if under(args[0]) or under(args[1]):
          log.write(f"{event} {args[0]} {args[1]}\\n")
      elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate",
                     "os.chmod", "shutil.rmtree"):
        if under(args[0]):
          log.write(f"{event} {args[0]}\\n")

    sys.addaudithook(hook)
    sys.argv = [module] + sys.argv[4:]
    sys.path[0] = os.getcwd()
    runpy.run_module(module, run_name="__main__", alter_sys=True)
""")

# Every test here starts JAX processes.
pytestmark = pytest.mark.slow


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=(
      f"--xla_force_host_platform_device_count={devices}"))


def _reproduce_args(workdir: str) -> list[str]:
  return ["launch.reproduce", "--config=launch/configs/smoke.py",
          f"--workdir={workdir}"]


def _wait_all(processes: dict, logs: dict) -> None:
  """Waits for every process; on a failure, stops the rest and shows logs."""
  try:
    for name, process in processes.items():
      process.wait(timeout=TIMEOUT_S)
  finally:
    for process in processes.values():
      if process.poll() is None:
        process.kill()
        process.wait()
  failed = {name: process.returncode for name, process in processes.items()
            if process.returncode}
  if failed:
    tails = "\n".join(f"--- {name} (exit {failed[name]}):\n"
                      + open(logs[name]).read()[-3000:] for name in failed)
    pytest.fail(f"processes failed: {failed}\n{tails}")


def _start(args: list[str], devices: int, log_path: str):
  return subprocess.Popen(args, cwd=REPO, env=_env(devices),
                          stdout=open(log_path, "w"),
                          stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The smoke reproduction on one process (two devices) and on two
  processes (one device each); process 1 audited. Returns the paths."""
  base = tmp_path_factory.mktemp("multiprocess")
  paths = {"one": str(base / "one"), "two": str(base / "two"),
           "writes": str(base / "process_1_writes.txt"),
           "audited_run": str(base / "audited_run.py")}
  with open(paths["audited_run"], "w") as f:
    f.write(_AUDITED_RUN)
  port = _free_port()
  cluster = [f"--coordinator_address=localhost:{port}", "--num_processes=2"]
  logs = {name: str(base / f"{name}.log") for name in ("p0", "p1", "one")}
  _wait_all({
      "p0": _start([sys.executable, "-m", *_reproduce_args(paths["two"]),
                    *cluster, "--process_id=0"], 1, logs["p0"]),
      "p1": _start([sys.executable, paths["audited_run"], paths["two"],
                    paths["writes"], *_reproduce_args(paths["two"]),
                    *cluster, "--process_id=1"], 1, logs["p1"]),
      "one": _start([sys.executable, "-m", *_reproduce_args(paths["one"])],
                    2, logs["one"])}, logs)
  paths.update({f"{name}_log": path for name, path in logs.items()})
  return paths


def _numbers_and_shape(value, path=""):
  """{path: number} of every number in `value`, and its non-number leaves."""
  numbers, others = {}, {}
  if isinstance(value, dict):
    items = value.items()
  elif isinstance(value, list):
    items = enumerate(value)
  else:
    items = None
  if items is not None:
    others[path] = type(value).__name__ + (
        str(sorted(value)) if isinstance(value, dict) else str(len(value)))
    for key, item in items:
      sub_numbers, sub_others = _numbers_and_shape(item, f"{path}/{key}")
      numbers.update(sub_numbers)
      others.update(sub_others)
  elif isinstance(value, (int, float)) and not isinstance(value, bool):
    numbers[path] = float(value)
  else:
    others[path] = value
  return numbers, others


def test_two_processes_give_one_process_results(runs):
  with open(os.path.join(runs["one"], "results.json")) as f:
    one = json.load(f)
  with open(os.path.join(runs["two"], "results.json")) as f:
    two = json.load(f)
  one_numbers, one_others = _numbers_and_shape(one)
  two_numbers, two_others = _numbers_and_shape(two)
  assert two_others == one_others  # same keys, lengths, nulls and strings
  assert one_numbers.keys() == two_numbers.keys()
  assert len(one_numbers) > 500  # every protocol, statistic and comparison
  differences = {path: abs(one_numbers[path] - two_numbers[path])
                 for path in one_numbers}
  worst = max(differences, key=differences.get)
  assert differences[worst] <= 1e-4, (worst, one_numbers[worst],
                                      two_numbers[worst])
  # The models trained alike: every epoch's losses agree too.
  for name in ("audio", "audio_user", "user"):
    with open(os.path.join(runs["one"], name, "summary.json")) as f:
      one_history = json.load(f)["history"]
    with open(os.path.join(runs["two"], name, "summary.json")) as f:
      two_history = json.load(f)["history"]
    assert len(one_history) == len(two_history) == 2
    for one_epoch, two_epoch in zip(one_history, two_history):
      assert two_epoch["validation_loss"] == pytest.approx(
          one_epoch["validation_loss"], rel=1e-5)


def test_only_process_zero_writes_the_run_files(runs):
  with open(runs["writes"]) as f:
    writes = [line.split(" ", 1)[1].strip() for line in f if line.strip()]
  # orbax coordinates checkpoints itself: every process writes its part.
  checkpoints = [w for w in writes if "/checkpoints/" in w]
  others = [w for w in writes if "/checkpoints/" not in w]
  assert not others, f"process 1 wrote run files: {others[:10]}"
  assert checkpoints, "the audit hook saw none of process 1's checkpoint part"
  # Process 0 wrote everything a run has.
  for name in ("config.json", "dataset_path.txt", "inference.json",
               "users.npz", "results.json", "report.md",
               "predictions/test_audio_user.csv",
               "plots/satisfaction.png", "audio/summary.json",
               "audio/metrics.jsonl", "user/tensorboard"):
    assert os.path.exists(os.path.join(runs["two"], name)), name
  # Process 1 printed neither the summary tables nor the report.
  with open(runs["p1_log"]) as f:
    process_1_output = f.read()
  with open(runs["p0_log"]) as f:
    process_0_output = f.read()
  for line in ("context shares of the pairs", "reproduction finished"):
    assert line in process_0_output and line not in process_1_output


_ON_MAIN_SCRIPT = textwrap.dedent("""\
    import sys
    from ctxtag import distributed
    distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
    print("shared", distributed.on_main("share", lambda: {"path": "/data"},
                                        share=True))
    print("unshared", distributed.on_main("keep", lambda: 7))
    def fail():
      raise ValueError("config batch_size=0: expected a positive number")
    try:
      distributed.on_main("check the config", fail)
    except Exception as error:
      print("error", type(error).__name__, error)
""")


def test_on_main_hands_its_result_or_error_to_the_others(tmp_path):
  script = tmp_path / "on_main.py"
  script.write_text(_ON_MAIN_SCRIPT)
  address = f"localhost:{_free_port()}"
  logs = {i: str(tmp_path / f"{i}.log") for i in (0, 1)}
  processes = {i: _start([sys.executable, str(script), address, str(i)], 1,
                         logs[i]) for i in (0, 1)}
  _wait_all(processes, logs)
  lines = {i: [line for line in open(logs[i]).read().splitlines()
               if line.startswith(("shared", "unshared", "error"))]
           for i in (0, 1)}
  assert lines[0] == [
      "shared {'path': '/data'}", "unshared 7",
      "error ValueError config batch_size=0: expected a positive number"]
  assert lines[1] == [
      "shared {'path': '/data'}", "unshared None",
      "error MainProcessError process 0 failed (check the config): config"
      " batch_size=0: expected a positive number"]


@pytest.mark.parametrize("address,count,index,message", [
    ("localhost:1234", 0, 0, "--num_processes must be >= 1"),
    ("localhost:1234", 2, 2, "--process_id must lie in [0, 2)"),
    ("localhost:1234", 2, -1, "--process_id must lie in [0, 2)"),
    (None, 2, 1, "needs --coordinator_address"),
])
def test_initialize_refuses_inconsistent_flags(address, count, index,
                                               message):
  with pytest.raises(errors.ConfigError, match=re.escape(message)):
    distributed.initialize(address, count, index)


def test_one_process_needs_no_runtime():
  distributed.initialize(None, 1, 0)  # a plain run: nothing to join
  assert distributed.is_main()
  assert distributed.on_main("work", lambda: 42) == 42


def _launch(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=_env(1),
                        capture_output=True, text=True, timeout=timeout)


def _lines(process) -> list[str]:
  return [line for line in process.stderr.splitlines() if line.strip()]


def _cluster(port: int, index: int, timeout: float = 3) -> list[str]:
  return [f"--coordinator_address=localhost:{port}", "--num_processes=2",
          f"--process_id={index}", f"--distributed_timeout={timeout:g}"]


def test_a_process_that_never_comes_is_one_line_naming_who_joined():
  port = _free_port()
  args = ["launch.evaluate", "--workdir=/nonexistent"]
  start = time.time()
  alone = _launch(args + _cluster(port, 0))
  assert time.time() - start < 60
  assert alone.returncode == 1
  assert _lines(alone) == [
      "error: 1 of 2 processes joined within 3 s (--distributed_timeout);"
      f" missing --process_id 1: start them with"
      f" --coordinator_address=localhost:{port}"]
  orphan = _launch(args + _cluster(port, 1))
  assert orphan.returncode == 1
  assert _lines(orphan) == [
      f"error: process 1: no process 0 answered at localhost:{port} within"
      " 3 s (--distributed_timeout); start it with the same"
      " --coordinator_address and --process_id=0"]


def test_an_address_without_port_and_a_port_in_use_are_one_line():
  no_port = _launch(["launch.evaluate", "--workdir=/nonexistent",
                     "--coordinator_address=localhost", "--num_processes=2",
                     "--process_id=0"])
  assert no_port.returncode == 1
  assert _lines(no_port) == [
      "error: --coordinator_address=localhost: expected host:port, e.g."
      " localhost:12345 (process 0's host and a free port)"]
  with socket.create_server(("", 0)) as taken:
    port = taken.getsockname()[1]
    in_use = _launch(["launch.evaluate", "--workdir=/nonexistent",
                      *_cluster(port, 0)])
  assert in_use.returncode == 1
  assert _lines(in_use) == [
      f"error: --coordinator_address=localhost:{port}: port {port} is in use"
      " on this host; choose a free port (the same on every process)"]


def test_ctrl_c_while_waiting_for_the_others_is_one_line():
  process = subprocess.Popen(
      [sys.executable, "-m", "launch.evaluate", "--workdir=/nonexistent",
       *_cluster(_free_port(), 0, timeout=120)], cwd=REPO, env=_env(1),
      stderr=subprocess.PIPE, text=True,
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  time.sleep(8)  # imports done, waiting
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=30)
  assert process.returncode == 130
  assert [l for l in stderr.splitlines() if l.strip()] == [
      "interrupted; rerun the same command to resume"]


def test_configs_that_differ_between_processes_are_one_line_each(tmp_path):
  port = _free_port()
  common = ["launch.train", "--config=ctxtag/configs/smoke.py",
            f"--workdir={tmp_path / 'run'}", "--model=audio"]
  logs = {i: str(tmp_path / f"{i}.log") for i in (0, 1)}
  processes = {
      0: _start([sys.executable, "-m", *common, *_cluster(port, 0, 60)], 1,
                logs[0]),
      1: _start([sys.executable, "-m", *common, *_cluster(port, 1, 60),
                 "--config.seed=1", "--config.audio.batch_size=16"], 1,
                logs[1])}
  for process in processes.values():
    assert process.wait(timeout=TIMEOUT_S) == 1
  differences = ("--config differs between process 1 and process 0:"
                 " audio.batch_size: 16 on process 1, 8 on process 0; seed:"
                 " 1 on process 1, 0 on process 0; give every process the"
                 " same config")
  for index in (0, 1):
    lines = [l for l in open(logs[index]).read().splitlines() if l.strip()]
    assert lines == [f"error: process {index}: {differences}"]
  assert not (tmp_path / "run").exists()

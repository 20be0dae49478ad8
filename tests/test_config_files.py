"""--config as a user names it: an exception raised by the config's file (or
what it imports) is one line naming the file, its line and the exception,
exit status 2; the shipped configs are found from any directory, as a
module (`ctxtag.configs.smoke`) or by their path inside the package, after
a non-editable install too; a config that is not there names them."""

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from launch import config_flag
from tests.fault_helpers import REPO, stderr_lines

SHIPPED = "default, fusions, paper, smoke"


def _not_found(argument: str, what: str = "file") -> str:
  return (f"--config={argument}: no such {what}; the shipped configs are"
          f" {SHIPPED} in {config_flag.CONFIGS_DIR}: name one as"
          " --config=ctxtag.configs.NAME from any directory, or by its path")


@pytest.fixture
def importable(tmp_path, monkeypatch):
  """tmp_path on sys.path, and the modules imported from it forgotten
  after the test."""
  monkeypatch.syspath_prepend(str(tmp_path))
  yield tmp_path
  for name, module in list(sys.modules.items()):
    if str(tmp_path) in (getattr(module, "__file__", None) or ""):
      del sys.modules[name]


def _write(directory, files: dict[str, str]) -> None:
  for name, text in files.items():
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


# (files, --config's argument, the error's message); {tmp} is the folder of
# the files. The helper modules are importable (on sys.path).
_RAISING_CONFIGS = [
    ({"c.py": "import nonexistent_module_xyz\n"}, "{tmp}/c.py",
     "--config={tmp}/c.py, line 1: ModuleNotFoundError: No module named"
     " 'nonexistent_module_xyz'"),
    ({"c.py": "def get_config():\n  return 1/0\n"}, "{tmp}/c.py",
     "--config={tmp}/c.py, line 2: ZeroDivisionError: division by zero"
     " (in get_config)"),
    ({"c.py": "SEED = undefined_name\n"}, "{tmp}/c.py",
     "--config={tmp}/c.py, line 1: NameError: name 'undefined_name' is not"
     " defined"),
    ({"c.py": """\
        import ml_collections
        def get_config():
          config = ml_collections.ConfigDict()
          config.seed = sead
          return config
        """}, "{tmp}/c.py",
     "--config={tmp}/c.py, line 4: NameError: name 'sead' is not defined"
     " (in get_config)"),
    # A helper module beside it: failing at its import, in a call, or not
    # Python at all.
    ({"c.py": "import helper_a\n", "helper_a.py": "\n\nLIMIT = 1 / 0\n"},
     "{tmp}/c.py",
     "--config={tmp}/c.py, line 1: ZeroDivisionError: division by zero"
     " (raised at {tmp}/helper_a.py, line 3)"),
    ({"c.py": "import helper_b\ndef get_config():\n  return helper_b.make()\n",
      "helper_b.py": "def make():\n  return {}['audio']\n"}, "{tmp}/c.py",
     "--config={tmp}/c.py, line 3: KeyError: 'audio' (in get_config; raised"
     " at {tmp}/helper_b.py, line 2)"),
    ({"c.py": "from helper_c import base\n", "helper_c.py": "def base(:\n"},
     "{tmp}/c.py",
     "--config={tmp}/c.py, line 1: SyntaxError: invalid syntax (raised at"
     " {tmp}/helper_c.py, line 1)"),
    ({"c.py": "import helper_missing\n"}, "{tmp}/c.py",
     "--config={tmp}/c.py, line 1: ModuleNotFoundError: No module named"
     " 'helper_missing'"),
    ({"c.py": "def get_config():\n  raise ValueError()\n"}, "{tmp}/c.py",
     "--config={tmp}/c.py, line 2: ValueError (in get_config)"),
    ({"c.py": "def get_config():\n  raise RuntimeError('one\\n  two')\n"},
     "{tmp}/c.py",
     "--config={tmp}/c.py, line 2: RuntimeError: one two (in get_config)"),
    # get_config() given a text it does not take: no line of the file.
    ({"c.py": "def get_config():\n  return None\n"}, "{tmp}/c.py:fast",
     "--config={tmp}/c.py:fast: TypeError: get_config() takes 0 positional"
     " arguments but 1 was given"),
    ({}, "ctxtag.configs.smoke:fast",
     "--config=ctxtag.configs.smoke:fast: TypeError: get_config() takes 0"
     " positional arguments but 1 was given"),
    # The module form: a module's error, its package's.
    ({"pkg_a/__init__.py": "", "pkg_a/conf.py": """\
        def get_config():
          return 1/0
        """}, "pkg_a.conf",
     "--config=pkg_a.conf, line 2: ZeroDivisionError: division by zero"
     " (in get_config)"),
    ({"pkg_b/__init__.py": "import missing_dependency_xyz\n",
      "pkg_b/conf.py": ""}, "pkg_b.conf",
     "--config=pkg_b.conf: ModuleNotFoundError: No module named"
     " 'missing_dependency_xyz' (raised at {tmp}/pkg_b/__init__.py, line 1)"),
]


@pytest.mark.parametrize("files,argument,message", _RAISING_CONFIGS)
def test_an_error_raised_by_a_config_is_one_line_naming_its_line(
    importable, files, argument, message):
  _write(importable, files)
  with pytest.raises(config_flag.ConfigFileError) as raised:
    config_flag.load("config", argument.format(tmp=importable))
  assert str(raised.value) == message.format(tmp=importable)


@pytest.mark.parametrize("argument,message", [
    ("{tmp}/missing.py", _not_found("{tmp}/missing.py")),
    ("ctxtag/configs/missing.py", _not_found("ctxtag/configs/missing.py")),
    ("ctxtag.configs.missing", _not_found("ctxtag.configs.missing",
                                          "file or module")),
    ("nonexistent_pkg_xyz.configs", _not_found("nonexistent_pkg_xyz.configs",
                                               "file or module")),
    ("{tmp}", "--config={tmp}: is a directory; expected a Python file"
     " defining get_config(), such as ctxtag/configs/default.py"),
    ("ctxtag.configs.checks", "--config=ctxtag.configs.checks: defines no"
     " get_config(); expected a Python file defining get_config(), such as"
     " ctxtag/configs/default.py"),
])
def test_a_config_that_is_not_there_names_the_shipped_ones(
    tmp_path, argument, message):
  with pytest.raises(config_flag.ConfigFileError) as raised:
    config_flag.load("config", argument.format(tmp=tmp_path))
  assert str(raised.value) == message.format(tmp=tmp_path)


def test_the_shipped_configs_are_those_with_get_config():
  assert ", ".join(config_flag.shipped_configs()) == SHIPPED


def test_modules_name_configs_a_users_package_included(importable):
  _write(importable, {"pkg_c/__init__.py": "", "pkg_c/base.py": """\
      from ctxtag.configs import smoke
      def get_config():
        config = smoke.get_config()
        config.seed = 7
        return config
      """, "pkg_c/conf.py": """\
      from . import base
      def get_config():
        return base.get_config()
      """})
  assert config_flag.load("config", "pkg_c.conf").seed == 7
  smoke = config_flag.load("config", "ctxtag.configs.smoke")
  assert smoke.dataset == "contextual_tags/simulated_small"
  assert config_flag.load("config", "ctxtag.configs.default").to_dict() == (
      config_flag.load("config", config_flag.DEFAULT_FILE).to_dict())


# What launch.train's flags made of a command line: its config flag, parsed.
_SHOW_CONFIG = textwrap.dedent("""\
    import sys
    from absl import flags
    from launch import config_flag
    from launch import train
    flags.FLAGS(sys.argv)
    config = flags.FLAGS.config
    print(config.dataset, config.seed, config.audio.batch_size)
    print(config_flag.CONFIGS_DIR)
""")


def _show_config(cwd, *args, env=None):
  return subprocess.run(
      [sys.executable, "-c", _SHOW_CONFIG, "--workdir=w", "--model=audio",
       *args], cwd=cwd, capture_output=True, text=True, timeout=300,
      env=env)


def _env_with(path: str) -> dict:
  return {**os.environ, "PYTHONPATH": path}


@pytest.mark.slow
def test_shipped_configs_are_found_from_any_directory(tmp_path):
  env = _env_with(REPO)  # ctxtag importable however it is installed
  for argument in ("ctxtag.configs.smoke", "ctxtag/configs/smoke.py",
                   "./launch/configs/smoke.py"):
    shown = _show_config(tmp_path, f"--config={argument}", "--config.seed=3",
                         "--config.audio.batch_size=5", env=env)
    assert shown.returncode == 0, (argument, shown.stderr)
    assert shown.stdout.splitlines()[0] == (
        "contextual_tags/simulated_small 3 5"), argument
  # A file of that name where the command runs is the one meant.
  _write(tmp_path, {"ctxtag/configs/smoke.py": """\
      from ctxtag.configs import smoke
      def get_config():
        config = smoke.get_config()
        config.dataset = "contextual_tags/simulated"
        return config
      """})
  shown = _show_config(tmp_path, "--config=ctxtag/configs/smoke.py", env=env)
  assert shown.stdout.splitlines()[0] == "contextual_tags/simulated 0 8"


@pytest.mark.slow
def test_a_missing_config_on_a_launcher_names_the_shipped_ones(tmp_path):
  process = subprocess.run(
      [sys.executable, "-m", "launch.train", "--config=ctxtag/configs/smok.py",
       f"--workdir={tmp_path}/run", "--model=audio"], cwd=tmp_path,
      capture_output=True, text=True, timeout=300, env=_env_with(REPO))
  assert process.returncode == 2
  assert stderr_lines(process) == [
      "error: " + _not_found("ctxtag/configs/smok.py")]
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["train", "reproduce", "sweep"])
def test_a_raising_config_ends_every_launcher_in_one_line(tmp_path, launcher):
  config = tmp_path / "bad.py"
  config.write_text("def get_config():\n  return 1/0\n")
  command = [sys.executable, "-m", f"launch.{launcher}", f"--config={config}",
             "--config.seed=3", f"--workdir={tmp_path}/run"]
  command += ["--model=audio"] if launcher == "train" else []
  process = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                           timeout=300)
  assert process.returncode == 2
  assert stderr_lines(process) == [
      f"error: --config={config}, line 2: ZeroDivisionError: division by"
      " zero (in get_config)"]
  assert not (tmp_path / "run").exists()
  if launcher == "train":  # --debug shows where it came from too
    debug = subprocess.run(command + ["--debug"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert f'File "{config}", line 2, in get_config' in debug.stderr
    assert stderr_lines(debug)[-1] == stderr_lines(process)[0]


def _builds_wheels() -> bool:
  """Whether pip can build this project without build isolation here
  (setuptools makes wheels itself from 70.1, before with `wheel`)."""
  return (importlib.util.find_spec("wheel") is not None
          or importlib.util.find_spec("setuptools.command.bdist_wheel")
          is not None)


@pytest.mark.slow
@pytest.mark.skipif(not _builds_wheels(),
                    reason="setuptools cannot build wheels here (no wheel)")
def test_a_non_editable_install_finds_its_configs(tmp_path):
  # A copy of what setup.py installs, so that the build writes nothing
  # into the checkout (build/, egg-info).
  source = tmp_path / "source"
  source.mkdir()
  shutil.copy(os.path.join(REPO, "setup.py"), source)
  for package in ("ctxtag", "launch", "tfds_builders"):
    shutil.copytree(os.path.join(REPO, package), source / package,
                    ignore=shutil.ignore_patterns("__pycache__"))
  site = tmp_path / "site"
  install = subprocess.run(
      [sys.executable, "-m", "pip", "install", "--no-deps",
       "--no-build-isolation", "--no-index", "--quiet", str(source),
       "--target", str(site)], capture_output=True, text=True, timeout=600)
  assert install.returncode == 0, install.stderr
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = _env_with(str(site))
  installed = str(site / "ctxtag" / "configs")
  for argument in ("ctxtag.configs.smoke", "ctxtag/configs/smoke.py"):
    shown = _show_config(elsewhere, f"--config={argument}", "--config.seed=4",
                         env=env)
    assert shown.returncode == 0, (argument, shown.stderr)
    assert shown.stdout.splitlines() == [
        "contextual_tags/simulated_small 4 8", installed], argument
  missing = _show_config(elsewhere, "--config=ctxtag/configs/smok.py",
                         env=env)
  assert missing.returncode == 2
  assert stderr_lines(missing) == [
      "error: " + _not_found("ctxtag/configs/smok.py").replace(
          config_flag.CONFIGS_DIR, installed)]

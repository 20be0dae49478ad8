"""`--config`: ml_collections' config file flag (locked), whose file and
overrides are checked first, so that a mistake is one line.

ml_collections loads the default file and applies the command line's
overrides to it when a launcher defines the flag, at import; a misspelt
override, a syntax error, an exception raised by the file or a file without
get_config() would be a traceback from there, and a missing --config file
an error only where the config is first read. So `define` checks what the
command line names before it defines the flag, and a mistake ends the
launcher with `error: <message>`, naming the flag, file, line and key, and
exit status 2 (`--debug` adds the traceback of an exception the file
raised).

The flag names a config three ways, so that an installed ctxtag (not a
checkout) finds its own from any directory:
- a path to a Python file (`my_config.py`, `ctxtag/configs/paper.py`); a
  relative path under `ctxtag/` or `launch/` that is not there from the
  current directory is the installed package's file;
- a module (`ctxtag.configs.smoke`, or any importable module defining
  get_config(), a user's package's included);
- either, followed by `:TEXT`, passed to get_config(TEXT).
"""

import difflib
import glob
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import traceback

from absl import flags
import ml_collections
from ml_collections.config_flags import config_flags

from ctxtag import configs
from ctxtag import errors
from launch import cli

CONFIGS_DIR = os.path.dirname(os.path.abspath(configs.__file__))
DEFAULT_FILE = os.path.join(CONFIGS_DIR, "default.py")
# The packages whose relative paths (`ctxtag/configs/paper.py`) also mean
# their installed files.
_SHIPPED_PACKAGES = ("ctxtag", "launch")
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_EXPECTED = ("expected a Python file defining get_config(), such as"
             " ctxtag/configs/default.py")

# Flags defined through `define` are the key flags of the launcher calling
# it (its --helpshort lists them), as with absl's own DEFINE functions.
flags.disclaim_key_flags()


class ConfigFileError(errors.UserError):
  """A --config file or module that is missing, does not parse, raises, or
  has no get_config(); or an override of a key the config does not have."""


def shipped_configs() -> list[str]:
  """The names of the configs ctxtag ships (the modules of ctxtag.configs
  that define get_config())."""
  names = []
  for path in sorted(glob.glob(os.path.join(CONFIGS_DIR, "*.py"))):
    with open(path, encoding="utf-8") as f:
      if re.search(r"^def get_config\(", f.read(), re.M):
        names.append(os.path.splitext(os.path.basename(path))[0])
  return names


def _not_found(name: str, argument: str, source: str) -> ConfigFileError:
  as_path = source.endswith(".py") or os.sep in source or "/" in source
  what = "file" if as_path else "file or module"
  return ConfigFileError(
      f"--{name}={argument}: no such {what}; the shipped configs are"
      f" {', '.join(shipped_configs())} in {CONFIGS_DIR}: name one as"
      f" --{name}=ctxtag.configs.NAME from any directory, or by its path")


def _installed_path(source: str) -> str | None:
  """`source`, a relative path under a package ctxtag ships, as that
  package's installed file; None if it is not one."""
  relative = os.path.normpath(source)
  top = relative.split(os.sep, 1)[0]
  if os.path.isabs(relative) or top not in _SHIPPED_PACKAGES:
    return None
  spec = importlib.util.find_spec(top)
  for location in (spec.submodule_search_locations or []) if spec else []:
    path = os.path.join(os.path.dirname(location), relative)
    if os.path.isfile(path):
      return path
  return None


def _raised(name: str, argument: str, origin: str | None,
            error: Exception) -> ConfigFileError:
  """`error`, raised by the config `origin` (its file; None: not known) or
  by what it imports or calls, as one line naming the line of `origin`
  where it came from, the function, and where it was raised if elsewhere."""
  frames = [frame for frame in traceback.extract_tb(error.__traceback__)
            if not frame.filename.startswith("<frozen ")
            and frame.filename != __file__]
  if isinstance(error, SyntaxError) and error.filename:  # an imported file's
    frames.append(traceback.FrameSummary(error.filename, error.lineno,
                                         "<module>"))
  same = origin and os.path.realpath(origin)
  mine = [frame for frame in frames
          if same and os.path.realpath(frame.filename) == same]
  where, notes = "", []
  if mine:
    where = f", line {mine[-1].lineno}"
    if mine[-1].name != "<module>":
      notes.append(f"in {mine[-1].name}")
  if frames and (not mine or frames[-1] is not mine[-1]):
    notes.append(f"raised at {frames[-1].filename}, line {frames[-1].lineno}")
  text = error.msg if isinstance(error, SyntaxError) else str(error)
  text = " ".join(str(text).split())
  what = f"{type(error).__name__}: {text}" if text else type(error).__name__
  notes = f" ({'; '.join(notes)})" if notes else ""
  return ConfigFileError(f"--{name}={argument}{where}: {what}{notes}")


def _module_of(name: str, argument: str, source: str):
  """The config module that `source` names: a file (see the module
  docstring) or an importable module; and its file."""
  path = source
  if not os.path.isfile(path) and not os.path.isdir(path):
    path = _installed_path(source) or path
  if os.path.isdir(path):
    raise ConfigFileError(f"--{name}={argument}: is a directory; {_EXPECTED}")
  if os.path.isfile(path):
    loader = importlib.machinery.SourceFileLoader(f"{name}_config", path)
    module = importlib.util.module_from_spec(
        importlib.util.spec_from_loader(loader.name, loader))
    try:
      loader.exec_module(module)
    except SyntaxError as error:
      if error.filename and os.path.realpath(
          error.filename) == os.path.realpath(path):
        raise ConfigFileError(
            f"--{name}={argument}, line {error.lineno}: {error.msg};"
            f" {_EXPECTED}") from error
      raise _raised(name, argument, path, error) from error
    except Exception as error:  # pylint: disable=broad-exception-caught
      raise _raised(name, argument, path, error) from error
    return module, path
  if source.endswith(".py") or not _MODULE_NAME.fullmatch(source):
    raise _not_found(name, argument, source)
  try:
    spec = importlib.util.find_spec(source)  # imports its packages
  except Exception as error:  # pylint: disable=broad-exception-caught
    on_the_way = (isinstance(error, ModuleNotFoundError) and error.name
                  and f"{source}.".startswith(f"{error.name}."))
    if not on_the_way:  # raised by a package on the way
      raise _raised(name, argument, None, error) from error
    spec = None
  if spec is None:
    raise _not_found(name, argument, source)
  try:
    module = importlib.import_module(source)
  except Exception as error:  # pylint: disable=broad-exception-caught
    raise _raised(name, argument, spec.origin, error) from error
  return module, spec.origin


def load(name: str, argument: str) -> ml_collections.ConfigDict:
  """The config that `--name=argument` names (see the module docstring):
  get_config() of a Python file or module, called with the text after a
  ':' if any.

  Raises:
    ConfigFileError: in one line, naming the file and its line for an
      exception raised while loading it or in its get_config().
  """
  source, colon, config_string = argument.partition(":")
  module, origin = _module_of(name, argument, source)
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ConfigFileError(f"--{name}={argument}: defines no get_config();"
                          f" {_EXPECTED}")
  try:
    config = get_config(*([config_string] if colon else []))
  except Exception as error:  # pylint: disable=broad-exception-caught
    raise _raised(name, argument, origin, error) from error
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigFileError(
        f"--{name}={argument}: get_config() returned"
        f" {type(config).__name__}, expected an ml_collections.ConfigDict")
  return config


class _Parser(config_flags.ConfigFileFlagParser):
  """ml_collections' parser of the flag, reading a config as `load` does
  (modules and installed paths besides files)."""

  def parse(self, argument):
    try:
      config = load(self.name, argument)
    except ConfigFileError as error:
      raise ValueError(str(error)) from error  # absl's one-line flag error
    config.lock()
    return config


def _dotted_keys(config, prefix: str = "") -> list[str]:
  keys = []
  for key, value in config.items():
    keys.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      keys += _dotted_keys(value, f"{prefix}{key}.")
  return keys


def check_override(name: str, config, override: str) -> None:
  """Refuses `--name.override` naming a key `config` lacks, with the
  closest keys it has."""
  node = config
  for part in override.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or "[" in part:
      return  # a field ml_collections parses itself (dataclass, index)
    if part not in node:
      known = _dotted_keys(config)
      close = difflib.get_close_matches(override, known, n=3, cutoff=0.6)
      top = sorted(key for key in known if "." not in key)
      hint = (f"closest: {', '.join(close)}" if close
              else f"its keys: {', '.join(top)}")
      raise ConfigFileError(f"--{name}.{override}: the config has no key"
                            f" {override}; {hint}")
    node = node[part]


def _command_line(name: str, argv: list[str]) -> tuple[str | None, list[str]]:
  """The file `--name` names on `argv` (None: none) and the keys that
  `--name.key=value` overrides, read as absl and ml_collections read them."""
  argument, overrides = None, []
  args = iter(argv[1:])
  for arg in args:
    if arg == "--":  # absl parses no flag after it
      break
    if match := re.fullmatch(rf"--?{re.escape(name)}(=(.*))?", arg, re.S):
      argument = match[2] if match[1] else next(args, "")
    elif match := re.match(rf"--?(no)?{re.escape(name)}\.([^=]+)", arg):
      overrides.append(match[2])
  return argument, overrides


def define(name: str, default: str, help_string: str) -> flags.FlagHolder:
  """config_flags.DEFINE_config_file(lock_config=True), once the config the
  command line names (else `default`) and its overrides are checked; the
  flag reads a file, an installed path or a module (see the module
  docstring).

  Args:
    name: the flag's name.
    default: the config file used without the flag.
    help_string: the flag's help.

  Returns:
    The flag's holder; its value is the (overridden) ConfigDict.
  """
  try:
    argument, overrides = _command_line(
        name, flags.FLAGS.read_flags_from_files(sys.argv, force_gnu=False))
    config = load(name, default if argument is None else argument)
    for override in overrides:
      check_override(name, config, override)
  except (ConfigFileError, flags.Error) as error:  # flags.Error: a --flagfile
    if cli.debug_requested() and error.__cause__ is not None:
      traceback.print_exception(error.__cause__)
    cli.fail(cli.message(error), cli.USAGE_EXIT)
  holder = config_flags.DEFINE_config_file(name, default, help_string,
                                           lock_config=True)
  # The command line's file or module is read when flags are parsed, by
  # the flag's parser; ml_collections' own reads files alone.
  flags.FLAGS[name].parser = _Parser(name, lock_config=True)
  return holder

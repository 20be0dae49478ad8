"""`--config`: ml_collections' config file flag (locked), whose file and
overrides are checked first, so that a mistake is one line.

ml_collections loads the default file and applies the command line's
overrides to it when a launcher defines the flag, at import; a misspelt
override, a syntax error or a file without get_config() would be a
traceback from there, and a missing --config file an error only where the
config is first read. So `define` checks what the command line names before
it defines the flag, and a mistake ends the launcher with
`error: <message>`, naming the flag, file and key, and exit status 2.
"""

import difflib
import importlib.machinery
import importlib.util
import os
import re
import sys

from absl import flags
import ml_collections
from ml_collections.config_flags import config_flags

from ctxtag import configs
from ctxtag import errors
from launch import cli

DEFAULT_FILE = os.path.join(os.path.dirname(configs.__file__), "default.py")

# Flags defined through `define` are the key flags of the launcher calling
# it (its --helpshort lists them), as with absl's own DEFINE functions.
flags.disclaim_key_flags()


class ConfigFileError(errors.UserError):
  """A --config file that is missing, does not parse, or has no
  get_config(); or an override of a key the config does not have."""


def load(name: str, argument: str) -> ml_collections.ConfigDict:
  """The config that `--name=argument` names: get_config() of a Python
  file, called with the text after a ':' if any."""
  path, colon, config_string = argument.partition(":")
  expected = ("expected a Python file defining get_config(), such as"
              " ctxtag/configs/default.py")
  if not os.path.isfile(path):
    what = "is a directory" if os.path.isdir(path) else "no such file"
    raise ConfigFileError(f"--{name}={argument}: {what}; {expected}")
  loader = importlib.machinery.SourceFileLoader(f"{name}_config", path)
  module = importlib.util.module_from_spec(
      importlib.util.spec_from_loader(loader.name, loader))
  try:
    loader.exec_module(module)
  except SyntaxError as error:
    raise ConfigFileError(
        f"--{name}={argument}, line {error.lineno}: {error.msg}; {expected}"
        ) from None
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ConfigFileError(f"--{name}={argument}: defines no get_config();"
                          f" {expected}")
  config = get_config(*([config_string] if colon else []))
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigFileError(
        f"--{name}={argument}: get_config() returned"
        f" {type(config).__name__}, expected an ml_collections.ConfigDict")
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
  """config_flags.DEFINE_config_file(lock_config=True), once the file the
  command line names (else `default`) and its overrides are checked.

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
    cli.fail(cli.message(error), cli.USAGE_EXIT)
  return config_flags.DEFINE_config_file(name, default, help_string,
                                         lock_config=True)

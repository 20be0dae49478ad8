"""Errors that a user can act on: bad input, bad settings, a full disk.

Each message names the file, row or setting and what was expected. Launchers
print these as one line and exit non-zero; any other exception is a bug and
keeps its traceback.
"""


class UserError(Exception):
  """Base of every error caused by the user's input, settings or machine."""


class ConfigError(UserError, ValueError):
  """A run or dataset setting that is out of range or unknown."""


class DatasetError(UserError, ValueError):
  """A dataset on disk that is missing, incomplete or damaged."""


class CheckpointError(UserError, FileNotFoundError):
  """A trained model's checkpoint that is missing or cannot be restored."""


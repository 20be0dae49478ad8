"""XLA's persistent compilation cache, kept per machine kind.

Much of a small run on a CPU is compilation, not steps: initialising the
default audio model compiles for about 3 s (mostly its initialisers'
random bits), its train step for about 2 s, and every run, sweep point,
launcher and test process compiles the same programs again. With the cache,
a program compiled once is loaded (in well under a second) by every later
process that compiles it on the same kind of machine.

The cache lives in `$CTXTAG_COMPILATION_CACHE` (default
`$XDG_CACHE_HOME/ctxtag/xla`, else `~/.cache/ctxtag/xla`), in a
subdirectory per machine kind: a CPU program compiled for one instruction
set must never be loaded on a host without it (a home directory shared
over NFS by unlike hosts). `CTXTAG_COMPILATION_CACHE=off` turns it off.
Loading a cached program gives the same executable, so results are the same
with or without it.
"""

import hashlib
import os
import platform
import sys

import jax

ENV = "CTXTAG_COMPILATION_CACHE"
_OFF = ("", "0", "off", "false", "no", "none")
# Programs faster to compile than this are not worth a file each.
_MIN_COMPILE_SECONDS = 0.2


def _cpu_flags() -> str:
  """The host's instruction-set flags (Linux), else its processor name."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return " ".join(sorted(line.split(":", 1)[1].split()))
  except OSError:
    pass
  return platform.processor()


def machine_key() -> str:
  """A short name for this kind of machine and software: the processor's
  architecture and instruction sets, and the jax and jaxlib versions."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  text = "|".join([platform.machine(), _cpu_flags(), jax.__version__,
                   getattr(jaxlib, "__version__", ""), sys.version])
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def directory() -> str | None:
  """Where this machine's cache is (see the module's docstring); None when
  it is turned off."""
  value = os.environ.get(ENV)
  if value is not None and value.strip().lower() in _OFF:
    return None
  if not value:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    value = os.path.join(base, "ctxtag", "xla")
  return os.path.join(os.path.abspath(os.path.expanduser(value)),
                      machine_key())


def enable() -> str | None:
  """Turns the cache on for this process; call it before the first
  compilation (jax reads the setting once). A directory that cannot be made
  leaves it off: a cache is never a reason for a run to fail.

  Returns:
    The directory in use, or None.
  """
  path = directory()
  if path is None:
    return None
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return None
  if not os.access(path, os.W_OK):
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    _MIN_COMPILE_SECONDS)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path

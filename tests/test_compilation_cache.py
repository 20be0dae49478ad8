"""The persistent compilation cache (ctxtag.compilation_cache): where it is,
per machine kind, off when asked, and a second process loading what the
first compiled, with the same results."""

import json
import os
import subprocess
import sys

import pytest

from ctxtag import compilation_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_directory_follows_the_environment(monkeypatch, tmp_path):
  key = compilation_cache.machine_key()
  monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "cache"))
  assert compilation_cache.directory() == str(tmp_path / "cache" / key)
  monkeypatch.delenv(compilation_cache.ENV)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compilation_cache.directory() == str(
      tmp_path / "xdg" / "ctxtag" / "xla" / key)
  for off in ("off", "0", "", "None"):
    monkeypatch.setenv(compilation_cache.ENV, off)
    assert compilation_cache.directory() is None
    assert compilation_cache.enable() is None


def test_each_kind_of_machine_has_its_own_directory(monkeypatch):
  key = compilation_cache.machine_key()
  monkeypatch.setattr(compilation_cache, "_cpu_flags", lambda: "sse2 avx2")
  other = compilation_cache.machine_key()
  monkeypatch.setattr(compilation_cache, "_cpu_flags", lambda: "sse2")
  assert len({key, other, compilation_cache.machine_key()}) == 3


def test_a_cache_that_cannot_be_made_is_left_off(monkeypatch, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  monkeypatch.setenv(compilation_cache.ENV, str(blocker / "cache"))
  assert compilation_cache.enable() is None


_SCRIPT = """
import json, sys
import jax
from ctxtag import compilation_cache
hits = []
jax.monitoring.register_event_listener(
    lambda event, **_: hits.append(event)
    if event == "/jax/compilation_cache/cache_hits" else None)
path = compilation_cache.enable()
import functools
import jax.numpy as jnp
from ctxtag import models
from ctxtag.configs import default
model = models.create_model("audio", default.get_config().audio)
variables = jax.jit(functools.partial(model.init, train=False))(
    jax.random.PRNGKey(0), {"mel": jnp.zeros((1, 65, 96))})
total = sum(float(jnp.sum(x)) for x in jax.tree.leaves(variables))
print(json.dumps({"path": path, "hits": len(hits), "sum": total}))
"""


@pytest.mark.slow
def test_a_second_process_loads_what_the_first_compiled(tmp_path):
  env = dict(os.environ, **{compilation_cache.ENV: str(tmp_path / "cache")},
             JAX_PLATFORMS="cpu")
  outputs = []
  for _ in range(2):
    done = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    outputs.append(json.loads(done.stdout.strip().splitlines()[-1]))
  first, second = outputs
  assert first["path"] and first["path"] == second["path"]
  assert first["path"].startswith(str(tmp_path / "cache"))
  assert os.listdir(first["path"])  # the init program, at least
  assert first["hits"] == 0 and second["hits"] >= 1
  assert second["sum"] == first["sum"]  # the same program, the same values

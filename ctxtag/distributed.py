"""One run on several processes (hosts), through JAX's multi-process runtime.

Each host runs one process with the same command, except for its
`process_id`; together their devices form one global "data" mesh
(ctxtag.train.Steps). Every process runs the whole program: it feeds its own
share of every batch (ctxtag.input_pipeline), takes part in every jitted
step, and calls orbax's checkpoint saves and restores, which orbax
coordinates. Only process 0 writes the run's files (config, logs, CSVs,
results, reports) and builds the dataset: `on_main` runs such work there
while the other processes wait for it, and hands them its result or its
error.
"""

import itertools
import json

import jax

from ctxtag import errors

# How long the other processes wait for process 0's share of the work: a
# dataset build from real audio takes hours.
_WAIT_MS = 7 * 24 * 3600 * 1000
# Keys of the coordination service's key-value store: every process makes
# the same `on_main` calls in the same order, so the n-th call of each
# process names the same key.
_KEY_NUMBERS = itertools.count()


class MainProcessError(errors.UserError):
  """Process 0 failed in work the other processes were waiting for."""


def initialize(coordinator_address: str | None, num_processes: int,
               process_id: int) -> None:
  """Joins the job of `num_processes` processes; does nothing for one.

  Call before any other JAX call. On CPU, collectives across processes go
  through gloo (JAX's default CPU runtime has none).

  Args:
    coordinator_address: "host:port" of process 0, the same for all.
    num_processes: processes in the job (1: a single process).
    process_id: this process's index, in [0, num_processes).

  Raises:
    errors.ConfigError: for inconsistent values, naming the flag.
  """
  if num_processes < 1:
    raise errors.ConfigError(
        f"--num_processes must be >= 1, got {num_processes}")
  if not 0 <= process_id < num_processes:
    raise errors.ConfigError(
        f"--process_id must lie in [0, {num_processes}) for --num_processes="
        f"{num_processes}, got {process_id}")
  if num_processes == 1:
    return
  if not coordinator_address:
    raise errors.ConfigError(
        f"--num_processes={num_processes} needs --coordinator_address"
        " (host:port of process 0, the same on every host)")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id)


def _client():
  """The coordination service's client; None in a single process."""
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client


def is_main() -> bool:
  """Whether this process writes the run's files (process 0, or the only
  one). Starts no JAX backend in a single process."""
  return _client() is None or jax.process_index() == 0


def on_main(name: str, fn, share: bool = False):
  """Runs `fn()` on process 0 only; the others wait until it is done.

  `fn` must not call collective JAX operations (the others are not there to
  join them): building a dataset, writing files, host-side evaluation.
  Every process must make the same `on_main` calls in the same order.

  Args:
    name: what `fn` does, for the key and error messages.
    fn: the work, without arguments.
    share: hand `fn`'s result (JSON-serialisable) to the other processes;
      else they get None.

  Returns:
    `fn()`'s result on process 0; on the others, that result if `share`,
    else None.

  Raises:
    MainProcessError: on the other processes, if `fn` raised on process 0
      (which raises the original error itself).
  """
  client = _client()
  if client is None:
    return fn()
  key = f"ctxtag/on_main/{next(_KEY_NUMBERS)}/{name}"
  if jax.process_index() != 0:
    reply = json.loads(client.blocking_key_value_get(key, _WAIT_MS))
    if "error" in reply:
      raise MainProcessError(f"process 0 failed ({name}): {reply['error']}")
    return reply["result"]
  try:
    result = fn()
  except BaseException as error:
    text = " ".join((str(error) or type(error).__name__).split())
    client.key_value_set(key, json.dumps({"error": text}))
    raise
  client.key_value_set(key, json.dumps({"result": result if share else None}))
  return result

"""One run on several processes (hosts), through JAX's multi-process runtime.

Each host runs one process with the same command, except for its
`process_id`; together their devices form one global "data" mesh
(ctxtag.steps.Steps). Every process runs the whole program: it feeds its own
share of every batch (ctxtag.input_pipeline), takes part in every jitted
step, and calls orbax's checkpoint saves and restores, which orbax
coordinates. Only process 0 writes the run's files (config, logs, CSVs,
results, reports) and builds the dataset: `on_main` runs such work there
while the other processes wait for it, and hands them its result or its
error.
"""

import errno
import itertools
import json
import socket
import time

import jax

from ctxtag import errors
from ctxtag.configs import compare

# How long the other processes wait for process 0's share of the work: a
# dataset build from real audio takes hours.
_WAIT_MS = 7 * 24 * 3600 * 1000
# How long a process waits for the others to join, by default.
DEFAULT_TIMEOUT_S = 300.0
# Keys of the coordination service's key-value store: every process makes
# the same `on_main` calls in the same order, so the n-th call of each
# process names the same key.
_KEY_NUMBERS = itertools.count()


class MainProcessError(errors.UserError):
  """Process 0 failed in work the other processes were waiting for."""


class JoinError(errors.UserError):
  """The processes of a run did not all join, or do not agree."""


def parse_address(address: str) -> tuple[str, int]:
  """(host, port) of "host:port" (an IPv6 host in brackets: "[::1]:1234").

  Raises:
    errors.ConfigError: naming the flag and the form expected.
  """
  host, colon, port = address.rpartition(":")
  expected = (f"--coordinator_address={address}: expected host:port, e.g."
              " localhost:12345 (process 0's host and a free port)")
  if not colon or not host or not port.isdigit() or not (
      0 < int(port) < 65536) or (":" in host and not host.startswith("[")):
    raise errors.ConfigError(expected)
  return host.strip("[]"), int(port)


def _send(connection: socket.socket, message: dict) -> None:
  connection.sendall(json.dumps(message).encode() + b"\n")


def _receive(connection: socket.socket, deadline: float) -> dict | None:
  """One JSON line from `connection`; None at its end or the deadline."""
  data = b""
  while not data.endswith(b"\n"):
    left = deadline - time.monotonic()
    if left <= 0:
      return None
    connection.settimeout(min(left, 1.0))
    try:
      chunk = connection.recv(4096)
    except socket.timeout:
      continue
    except OSError:
      return None
    if not chunk:
      return None
    data += chunk
  return json.loads(data)


def _gather(address: str, port: int, num_processes: int,
            timeout_s: float) -> None:
  """Process 0: holds the coordinator's port until every other process has
  said hello, so a port in use and a process that never comes are each one
  line rather than a crash or a silent wait in JAX's runtime."""
  try:
    server = socket.create_server(
        ("", port), family=socket.AF_INET6, dualstack_ipv6=True) if (
            socket.has_dualstack_ipv6()) else socket.create_server(("", port))
  except OSError as error:
    if error.errno == errno.EADDRINUSE:
      raise errors.ConfigError(
          f"--coordinator_address={address}: port {port} is in use on this"
          " host; choose a free port (the same on every process)") from None
    raise errors.ConfigError(f"--coordinator_address={address}: cannot"
                             f" listen on port {port} ({error.strerror})"
                             ) from None
  joined = {}  # process id -> its connection
  deadline = time.monotonic() + timeout_s
  try:
    server.settimeout(0.2)
    while len(joined) < num_processes - 1 and time.monotonic() < deadline:
      try:
        connection, _ = server.accept()
      except socket.timeout:
        continue
      hello = _receive(connection, time.monotonic() + 5.0)
      refusal = None
      if not hello or "process_id" not in hello:
        connection.close()
        continue
      if hello.get("num_processes") != num_processes:
        refusal = (f"process {hello['process_id']} has --num_processes="
                   f"{hello.get('num_processes')}, process 0 has"
                   f" {num_processes}")
      elif hello["process_id"] in joined or hello["process_id"] == 0:
        refusal = (f"two processes have --process_id={hello['process_id']};"
                   " give each its own")
      if refusal:
        for other in [connection, *joined.values()]:
          with _suppressed():
            _send(other, {"error": refusal})
        raise JoinError(refusal)
      joined[hello["process_id"]] = connection
    if len(joined) < num_processes - 1:
      missing = sorted(set(range(1, num_processes)) - set(joined))
      text = (f"{len(joined) + 1} of {num_processes} processes joined within"
              f" {timeout_s:g} s (--distributed_timeout); missing"
              f" --process_id {', '.join(map(str, missing))}: start them"
              f" with --coordinator_address={address}")
      for connection in joined.values():
        with _suppressed():
          _send(connection, {"error": text})
      raise JoinError(text)
    for connection in joined.values():
      _send(connection, {"go": True})
    # Let each other process close first, so the port is free at once.
    for connection in joined.values():
      _receive(connection, time.monotonic() + 5.0)
  finally:
    for connection in joined.values():
      connection.close()
    server.close()


class _suppressed:
  """Ignores a failed send to a process that is gone already."""

  def __enter__(self):
    return self

  def __exit__(self, kind, value, traceback):
    return kind is not None and issubclass(kind, OSError)


def _join(address: str, host: str, port: int, num_processes: int,
          process_id: int, timeout_s: float) -> None:
  """A process other than 0: says hello to process 0 and waits for its
  go-ahead (every process has joined) or its refusal."""
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      connection = socket.create_connection(
          (host, port), timeout=max(min(deadline - time.monotonic(), 1.0),
                                    0.1))
      break
    except OSError:
      if time.monotonic() >= deadline:
        raise JoinError(
            f"process {process_id}: no process 0 answered at {address}"
            f" within {timeout_s:g} s (--distributed_timeout); start it"
            " with the same --coordinator_address and --process_id=0"
            ) from None
      time.sleep(0.2)
  with connection:
    _send(connection, {"process_id": process_id,
                       "num_processes": num_processes})
    # Process 0 answers within its own timeout, which began when it started.
    reply = _receive(connection, time.monotonic() + timeout_s + 10.0)
  if reply is None:
    raise JoinError(f"process {process_id}: process 0 at {address} stopped"
                    " answering before every process joined")
  if "error" in reply:
    raise JoinError(f"process {process_id}: {reply['error']}")


def initialize(coordinator_address: str | None, num_processes: int,
               process_id: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
  """Joins the job of `num_processes` processes; does nothing for one.

  Call before any other JAX call. On CPU, collectives across processes go
  through gloo (JAX's default CPU runtime has none). Before JAX's runtime
  starts, process 0 checks that the coordinator's port is free and waits
  for every other process to say hello, so that neither a port in use nor a
  missing process ends in a crash of the runtime.

  Args:
    coordinator_address: "host:port" of process 0, the same for all.
    num_processes: processes in the job (1: a single process).
    process_id: this process's index, in [0, num_processes).
    timeout_s: how long to wait for the others to join.

  Raises:
    errors.ConfigError: for inconsistent values, naming the flag; for a
      port in use on process 0.
    JoinError: when the processes did not all join within `timeout_s`, or
      disagree on --num_processes or --process_id.
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
  host, port = parse_address(coordinator_address)
  if process_id == 0:
    _gather(coordinator_address, port, num_processes, timeout_s)
  else:
    _join(coordinator_address, host, port, num_processes, process_id,
          timeout_s)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id,
                             initialization_timeout=max(int(timeout_s), 1))


def check_same_everywhere(name: str, text: str,
                          timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
  """Refuses a run whose processes were given different `name` (a JSON
  config): each shares its own through the coordination service's
  key-value store and compares process 0's with it.

  Args:
    name: the flag, for the message (--config).
    text: this process's value, as JSON with sorted keys.
    timeout_s: how long to wait for process 0's value.

  Raises:
    JoinError: naming the keys that differ, at most a few.
  """
  client = _client()
  if client is None:
    return
  key, wait_ms = f"ctxtag/same/{name}", max(int(timeout_s * 1000), 1)
  if jax.process_index() == 0:
    # Process 0 waits for every verdict, so that it ends too.
    client.key_value_set(key, text)
    for index in range(1, jax.process_count()):
      try:
        verdict = client.blocking_key_value_get(f"{key}/{index}", wait_ms)
      except Exception as error:  # pylint: disable=broad-except
        raise JoinError(f"process 0: process {index} did not compare its"
                        f" {name} within {timeout_s:g} s ({error})"
                        ) from None
      if verdict != "same":
        raise JoinError(f"process 0: {verdict}")
    return
  try:
    main = client.blocking_key_value_get(key, wait_ms)
  except Exception as error:  # pylint: disable=broad-except
    raise JoinError(f"process {jax.process_index()}: process 0 did not share"
                    f" its {name} within {timeout_s:g} s ({error})"
                    ) from None
  if main == text:
    client.key_value_set(f"{key}/{jax.process_index()}", "same")
    return
  index = jax.process_index()
  shown = compare.describe_differences(
      json.loads(text), json.loads(main), f"on process {index}",
      "on process 0") or "(its text)"
  text = (f"{name} differs between process {index} and process 0:"
          f" {shown}; give every process the same config")
  client.key_value_set(f"{key}/{jax.process_index()}", text)
  raise JoinError(f"process {jax.process_index()}: {text}")


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

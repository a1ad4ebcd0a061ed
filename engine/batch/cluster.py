"""`engine.batch --ray [ADDRESS]`: the same work as the local pool, on Ray Core actors.

One actor per worker slot (1 CPU each) loads the models once (the same `BatchWorker` the local
processes use) and runs one input at a time; the driver hands the next input to whichever actor is
free (engine.batch.ray_dispatch, with the rules for actors that die). Inputs and outputs travel as
paths, so every node must see them under the same path (NFS, a shared mount): only the summary rows
come back through Ray.

`ray` is an optional dependency (`pip install 'emotion-engine[ray]'`), imported only here.
Without ADDRESS a Ray instance is started on this machine (`ray.init(num_cpus=N)`) unless the
process already runs inside one; with ADDRESS (`auto`, `HOST:6379`, `ray://HOST:10001`) it joins
that cluster.

Joining a cluster never hangs the batch: a `HOST:PORT` / `ray://HOST:PORT` address is first
probed with a plain TCP connect (PROBE_S), so a dead address fails at once with one line, and
`ray.init` itself runs in a helper thread that the driver waits on for at most JOIN_S, so Ctrl-C is seen within a tenth of a second and an address that accepts the
connection but never answers as Ray fails in a stated time. `ray.init` blocks in C++ where
Python cannot interrupt it; a call given up on is abandoned, and after that (or after Ctrl-C, once
Ray is shut down) `engine.batch` ends its process without Ray's exit hooks (`exit_now()`), which
would wait seconds to minutes.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

from engine.api import EngineOptions
from engine.batch.ray_dispatch import RESTART_S, dispatch
from engine.core.errors import UserError
from engine.core.urls import redact

#: a TCP connect to the Ray address gets this long (a dead or firewalled address fails in this time, not in minutes)
PROBE_S = 3.0
#: the most joining a cluster (ray.init with an ADDRESS) may take before the batch gives up with one line
JOIN_S = 30.0
#: how often the waiting driver looks up (its Ctrl-C latency while ray.init runs)
POLL_S = 0.1
#: set when the process should end without Ray's exit hooks (see exit_now)
_exit_now = threading.Event()
INSTALL = "--ray needs Ray: pip install 'emotion-engine[ray]' (or: pip install 'ray>=2.9')"


class _RayWorker:
    """The actor: a `BatchWorker` in a Ray worker process."""

    def __init__(self, engine: EngineOptions, out: str, name: str):
        import socket

        from engine.batch.job import BatchWorker

        self.out = out
        self.error = None
        self.worker = None
        try:
            self.worker = BatchWorker(engine, worker=f"{name}@{socket.gethostname()}")
        except UserError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported as one line by the driver
            self.error = f"cannot load the models: {type(exc).__name__}: {exc}"

    def ready(self) -> str | None:
        return self.error

    def run(self, job: dict) -> dict:
        return self.worker.run(job, self.out)


def _import_ray():
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # read as Ray loads: its C++ retry warnings would bury the one line
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL) from None
    return ray


def exit_now() -> bool:
    """True when the process should end without Ray's exit hooks: a ray.init given up on may still run (the exit
    hook's ray.shutdown would wait on it), or Ctrl-C stopped a batch whose Ray is already shut down (the hooks
    then only cost the user seconds of waiting)."""
    return _exit_now.is_set()


def host_port(address: str) -> tuple[str, int] | None:
    """The (host, port) an ADDRESS names (`HOST:PORT`, `[::1]:PORT`, `ray://HOST:PORT`); None for auto/local."""
    try:
        parts = urlsplit(address if "://" in address else f"tcp://{address}")
        port = parts.port
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname and port else None


def probe(address: str, timeout: float = PROBE_S) -> None:
    """Fail in at most `timeout` seconds with one line when nothing accepts a TCP connection at `address`:
    ray.init against a dead address retries for minutes, and the ray:// client for 30 s."""
    target = host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except TimeoutError:
        raise UserError(f"cannot reach Ray at {redact(address)}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise UserError(f"cannot reach Ray at {redact(address)}: {exc.strerror or exc} (is Ray running there? `ray start --head`)") from None


class _NoThreadWarning(logging.Filter):
    """ray.init in a helper thread warns that it set no SIGTERM handler: intended (engine.batch handles SIGTERM)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def connect(ray, address: str | None, workers: int | None) -> None:
    """ray.init, starting Ray here or joining `address` (probed first, then given at most JOIN_S in a helper
    thread, so that Ctrl-C raises KeyboardInterrupt within POLL_S); UserError (one line) when it fails."""
    kw = {"log_to_driver": False, "logging_level": "error", "configure_logging": True}  # Ray's warnings are not the batch's one line
    if not address:  # starting Ray here: in this thread (Ray's own start timeouts bound it), as Ray expects
        try:
            ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, **kw)
        except Exception as exc:  # noqa: BLE001 - an unwritable RAY_TMPDIR, a port in use...: one line, exit 2
            raise UserError(f"cannot start Ray on this machine: {_first_line(exc)}") from None
        return
    probe(address)
    result: dict = {}

    def target() -> None:
        try:
            ray.init(**kw)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting driver
            result["error"] = exc

    logging.getLogger("ray._private.worker").addFilter(_NoThreadWarning())
    thread = threading.Thread(target=target, name="ray-init", daemon=True)
    thread.start()
    deadline = time.monotonic() + JOIN_S
    try:
        while thread.is_alive():
            if time.monotonic() > deadline:
                raise UserError(f"cannot reach Ray at {redact(address)}: no answer within {JOIN_S:g} s")
            thread.join(POLL_S)
    except BaseException:
        if thread.is_alive():
            _exit_now.set()
        elif ray.is_initialized():  # Ctrl-C just as it finished
            ray.shutdown()
        raise
    if "error" in result:
        raise UserError(f"cannot reach Ray at {redact(address)}: {_first_line(result['error']).replace(address, redact(address))}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_ray(jobs: list[dict], engine: EngineOptions, out: str, workers: int | None, on_event: Callable,
            address: str | None = None, should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Run `jobs` on Ray actors; rows arrive through on_event("done", index, row). Returns cluster facts."""
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        connect(ray, address, workers)
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        # one CPU per actor: more actors than the cluster's CPUs would never be scheduled (ready() would hang)
        n = max(1, min(workers or cpus, cpus, len(jobs)))
        actor_cls = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)(_RayWorker)
        actors = [actor_cls.remote(engine, out, f"r{i + 1}") for i in range(n)]
        wait_ready(ray, actors)
        dispatch(ray, actors, jobs, out, on_event, should_stop)
        return {"ray_address": redact(address) if address else "local", "ray_cpus": cpus, "ray_nodes": len(ray.nodes()), "actors": n}
    except KeyboardInterrupt:
        _exit_now.set()
        raise
    finally:
        if started:
            ray.shutdown()


def wait_ready(ray, actors: list, limit: float = RESTART_S) -> None:
    """Wait until every actor has loaded the models, in short waits (a blocking ray.get sees Ctrl-C only seconds
    late); UserError when one cannot load them, or when they are not all up within `limit` (too few CPUs free)."""
    refs = [a.ready.remote() for a in actors]
    deadline = time.monotonic() + limit
    while refs:
        done, refs = ray.wait(refs, num_returns=len(refs), timeout=POLL_S * 5)
        errors = [e for e in (ray.get(r) for r in done) if e]
        if errors:
            raise UserError(errors[0])
        if refs and time.monotonic() > deadline:
            raise UserError(f"{len(refs)} Ray worker(s) did not start within {limit:g} s (are the cluster's CPUs busy?)")

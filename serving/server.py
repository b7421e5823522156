"""A local ``tritonserver`` that radpair starts, supervises and stops (``triton.mode = "embedded"``).

The binary is the one shipped inside the ``nvidia-pytriton`` wheel. That build has only the Python
backend, whose stub must match the interpreter; the wheel ships one stub per Python version in a
side folder. Rather than copying the stub into the installed package (the venv stays untouched),
a backend directory is assembled under a writable folder: ``python/`` holding symlinks to the
wheel's backend library and utilities plus the 3.11 stub. The stub runs the first ``python`` on
``PATH``, so the venv's ``bin/`` goes first and a model's ``model.py`` can ``import torch``.

Nothing of a server outlives radpair. ``tritonserver`` runs in its own process group, and so do
the Python backend stubs it starts (which ignore SIGTERM, and which ``PR_SET_PDEATHSIG`` on the
server alone does not reach). A tiny watchdog process holds a pipe from radpair: when radpair
ends, however it ends (SIGKILL included), the pipe closes and the watchdog SIGKILLs the whole
group. The group's id is also written to ``tritonserver.pgid`` in the working folder, so a start
first kills what a previous server left (were the watchdog killed too), and a supervised restart
kills the dead server's stubs before starting the next one.

The server runs with ``--model-control-mode=explicit``: only the models named at start are loaded,
and the served version of each follows its ``config.pbtxt`` on disk, so a restart after a crash
comes back with the same versions a hot swap left in place.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from radpair.core.settings import Settings
from radpair.core.task import deployed_tasks
from radpair.serving.repository import install_shipped_model, served_repository

log = logging.getLogger(__name__)

def _package_dir(name: str) -> Path:
    """An installed package's folder, found without importing it (pytriton's import pulls its whole client stack)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return Path(f"<{name} not installed>")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


PYTRITON_DIR = _package_dir("pytriton")
TRITON_DIR = PYTRITON_DIR / "tritonserver"
PYTHON_TAG = f"{sys.version_info.major}.{sys.version_info.minor}"


class TritonServerError(RuntimeError):
    """The managed server could not be started or did not become ready."""


def tritonserver_binary() -> Path:
    """The ``tritonserver`` executable inside the installed ``nvidia-pytriton`` package."""
    binary = TRITON_DIR / "bin" / "tritonserver"
    if not binary.is_file():
        raise TritonServerError(f"tritonserver not found at {binary}: is nvidia-pytriton installed?")
    return binary


def prepare_backend_dir(work_dir: Path) -> Path:
    """Assemble ``work_dir/backends/python`` (the wheel's backend + this Python's stub); return ``backends``.

    Idempotent: links that already point at the right files are kept.
    """
    source = TRITON_DIR / "backends" / "python"
    stub = TRITON_DIR / "python_backend_stubs" / PYTHON_TAG / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonServerError(f"no Python backend stub for Python {PYTHON_TAG} in {stub.parent.parent}")
    backends = work_dir / "backends"
    target = backends / "python"
    target.mkdir(parents=True, exist_ok=True)
    links = {p.name: p for p in source.iterdir() if p.is_file()}
    links[stub.name] = stub
    for name, path in links.items():
        link = target / name
        if link.is_symlink() and link.resolve() == path.resolve():
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path)
    return backends


def server_environment() -> dict[str, str]:
    """The environment ``tritonserver`` and its Python stubs need (wheel libraries, venv first on PATH)."""
    env = dict(os.environ)
    libs = PYTRITON_DIR.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child between fork and exec only calls it
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends it SIGTERM when radpair dies, even by SIGKILL,
    so a killed radpair never leaves a tritonserver holding its ports."""
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


# Runs as ``python -c WATCHDOG PGID``: waits for EOF on stdin (radpair's end of the pipe closing),
# then kills the group. SIGINT/SIGTERM to radpair's own group must not stop it before that.
WATCHDOG = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.stdin.buffer.read()
try:
    os.killpg(int(sys.argv[1]), signal.SIGKILL)
except ProcessLookupError:
    pass
"""
_SERVER_NAMES = ("tritonserver", "triton_python_backend_stub")
# A glog error line: "E1204 00:01:02.345678 123 http_server.cc:4000] message".
_GLOG_ERROR = re.compile(r"^E\d{4} [\d:.]+ +\d+ [^\]]*\] (.*)$", re.M)


def group_members(pgid: int) -> list[int]:
    """Pids of the Triton processes (server or backend stub) in process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            name = stat.with_name("comm").read_text().strip()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z" and any(n.startswith(name) for n in _SERVER_NAMES):
            members.append(int(stat.parent.name))
    return members


def kill_group(pgid: int) -> int:
    """SIGKILL the Triton processes of group ``pgid`` (only if the group still holds Triton
    processes: a recycled id of someone else's group is left alone); returns how many there were."""
    members = group_members(pgid)
    if members:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return 0
    return len(members)


class ManagedTritonServer:
    """Start, supervise (restart on death) and stop a local ``tritonserver`` on loopback ports."""

    def __init__(
        self,
        repo: Path | str,
        http_port: int,
        grpc_port: int,
        metrics_port: int,
        models: Sequence[str],
        work_dir: Path | str | None = None,
        startup_timeout: float = 120.0,
        restart_backoff: float = 1.0,
    ) -> None:
        self.repo = Path(repo).resolve()
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.models = tuple(models)
        self.work_dir = Path(work_dir or self.repo.parent / ".triton").resolve()
        self.startup_timeout = startup_timeout
        self.restart_backoff = restart_backoff
        self.restarts = 0
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._log_file = None
        self._log_start = 0
        self._watchdog: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log_path(self) -> Path:
        return self.work_dir / "tritonserver.log"

    @property
    def pgid_path(self) -> Path:
        return self.work_dir / "tritonserver.pgid"

    def _kill_leftovers(self) -> None:
        """Kill what the previous server of this working folder left behind (its stubs, or all of it)."""
        try:
            pgid = int(self.pgid_path.read_text())
        except (OSError, ValueError):
            return
        if killed := kill_group(pgid):
            log.warning("killed %d process(es) a previous tritonserver left (process group %d)", killed, pgid)
        self.pgid_path.unlink(missing_ok=True)

    def command(self) -> list[str]:
        backends = prepare_backend_dir(self.work_dir)
        # A distinct shared-memory prefix per start: a killed server's regions never collide
        # with the next one's, nor with another radpair on the same host.
        prefix = f"radpair{os.getpid()}_{self.http_port}_{self.restarts}_"
        cmd = [
            str(tritonserver_binary()),
            f"--model-repository={self.repo}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            # A model that fails to load is reported by readiness, not a server that exits.
            "--exit-on-error=false",
            "--strict-readiness=false",
            f"--backend-config=python,shm-region-prefix-name={prefix}",
            "--log-verbose=0",
            # In-flight requests get this long to finish at stop; clients keep idle connections open.
            "--exit-timeout-secs=5",
        ]
        cmd += [f"--load-model={name}" for name in self.models]
        return cmd

    def start(self) -> "ManagedTritonServer":
        """Start the server, wait until it is ready (models that failed to load are logged), then supervise it."""
        self._stopping.clear()
        self._spawn()
        self.wait_ready()
        self.supervise()
        return self

    def supervise(self) -> None:
        """Watch the server from a thread and restart it (with backoff) whenever it is not running."""
        if self._supervisor is None or not self._supervisor.is_alive():
            self._supervisor = threading.Thread(target=self._supervise, name="triton-supervisor", daemon=True)
            self._supervisor.start()

    def _spawn(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._kill_leftovers()
        cmd = self.command()
        if self._log_file is None:
            self._log_file = open(self.log_path, "ab")
        self._log_start = self._log_file.tell()
        with self._lock:
            self._process = subprocess.Popen(
                cmd, env=server_environment(), stdout=self._log_file, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
            )
            self.pgid_path.write_text(str(self._process.pid))  # its own session: pgid == pid
            self._end_watchdog()
            self._watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(self._process.pid)],
                                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL)
        log.info("tritonserver started (pid %d, http %s, grpc %s, models %s, log %s)",
                 self._process.pid, self.http_url, self.grpc_url, ", ".join(self.models) or "none", self.log_path)

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def exit_reason(self) -> str:
        """The last error line this run of tritonserver wrote to its log (glog ``E…] message``),
        e.g. "failed to start HTTP service: Address already in use"; tritonserver's exit status
        alone is always 1."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        errors = [m.group(1) for m in _GLOG_ERROR.finditer(text)]
        return errors[-1].strip() if errors else ""

    def _exited(self) -> str:
        code = self._process.returncode if self._process else None
        reason = self.exit_reason()
        return f"status {code}: {reason}" if reason else f"status {code}; see {self.log_path}"

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_ready(self, timeout: float | None = None) -> list[str]:
        """Block until the server answers ready; return (and log) the start-up models that failed to load.

        Triton loads the ``--load-model`` models before it opens its endpoints, so once it is
        ready a model that is not ready has failed (the log says why); the server keeps running
        and radpair's jobs wait for the model rather than the service failing.
        """
        limit = timeout or self.startup_timeout
        deadline = time.monotonic() + limit
        while self._get("/v2/health/ready") != 200:
            if not self.alive():
                raise TritonServerError(f"tritonserver exited with {self._exited()}")
            if time.monotonic() > deadline:
                raise TritonServerError(f"tritonserver not ready after {limit:.0f} s; see {self.log_path}")
            time.sleep(0.2)
        failed = [m for m in self.models if self._get(f"/v2/models/{m}/ready") != 200]
        if failed:
            log.error("tritonserver is up but model(s) %s failed to load; see %s", ", ".join(failed), self.log_path)
        return failed

    def _supervise(self) -> None:
        delay = self.restart_backoff
        while not self._stopping.wait(0.5):
            if self.alive():
                continue
            log.warning("tritonserver (pid %s) died with %s; restarting in %.1f s", self.pid, self._exited(), delay)
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            try:
                self._spawn()
                self.wait_ready()
            except TritonServerError as exc:
                log.error("tritonserver restart %d failed: %s", self.restarts, exc)
                delay = min(delay * 2, 30.0)
                continue
            log.info("tritonserver restarted (restart %d, pid %d)", self.restarts, self.pid)
            delay = self.restart_backoff

    def stop(self, timeout: float = 20.0) -> None:
        """Stop supervising, then terminate the server (SIGTERM, then SIGKILL after ``timeout``)."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        with self._lock:
            process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not stop in %.0f s; killing it", timeout)
                process.kill()
                process.wait()
            log.info("tritonserver stopped (pid %d)", process.pid)
        if process is not None:
            kill_group(process.pid)  # backend stubs that outlived the server
            self.pgid_path.unlink(missing_ok=True)
        self._end_watchdog()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _end_watchdog(self) -> None:
        """Close the watchdog's pipe (it kills the group it watched, if anything is left) and reap it."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.stdin.close()
            watchdog.wait(10)

    def __enter__(self) -> "ManagedTritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def managed_server_from_settings(settings: Settings) -> ManagedTritonServer | None:
    """The embedded server ``settings.triton`` asks for, or None (``remote`` / ``off``: nothing to start).

    It serves :func:`served_repository` (the shipped model is copied there on first start) and
    loads the models of the deployed tasks that the repository holds (a missing one is logged: the
    pipeline's jobs then wait for it); its working folder (backend links, server log) is
    ``<data_dir>/triton``.
    """
    t = settings.triton
    if t.mode != "embedded":
        return None
    repo = served_repository(settings)
    wanted = list(dict.fromkeys(task.model for task in deployed_tasks(settings)))
    for name in wanted:
        if install_shipped_model(repo, name):
            log.info("model repository %s: installed the shipped model %r", repo.root, name)
    present = set(repo.models())
    for name in wanted:
        if name not in present:
            log.warning("model %r is not in %s: export one with `radpair export` or `make model`", name, repo.root)
    return ManagedTritonServer(repo.root, t.http_port, t.grpc_port, t.metrics_port, [n for n in wanted if n in present],
                               work_dir=settings.data_dir / "triton", startup_timeout=t.startup_timeout)


class TritonService:
    """``radpair serve`` component: the embedded Triton, started before the pipeline and stopped after it."""

    name = "triton"

    def __init__(self, settings: Settings, engine: object = None) -> None:
        self.server = managed_server_from_settings(settings)

    def start(self, scheduler: object) -> None:
        """Blocks until the models are ready; a server that cannot start does not stop the service:
        inference jobs wait (Triton unavailable) while the supervisor keeps retrying."""
        if self.server is None:
            return
        try:
            self.server.start()
        except TritonServerError as exc:
            log.error("embedded Triton did not start: %s; inference jobs wait while it is retried", exc)
            self.server.supervise()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

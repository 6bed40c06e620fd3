"""`serve --processes N`: N processes serving the two ports and one running the worker, as
children of a small supervisor that binds the ports, starts them, replaces one that dies and
stops them all on a signal.

One process tops out at about one core: requests, the worker's hashing and the event loop
all take turns on one GIL. Each API child listens on sockets of its own that the supervisor
bound on both ports (SO_REUSEPORT: the kernel spreads new connections over them) and shares
everything else through the database, as replicas on several machines do: leases, fetch
claims and the change feed already work across processes. What a process would otherwise keep to itself is passed
explicitly: a datagram on a socket pair wakes the worker when an API process makes work
(else it would wait for its next poll), and counts are shared for `/metrics`
(`SiblingCounts`). Rate limits stay per process.

Children are forked from the supervisor before it runs an event loop or opens the store,
and get SIGTERM when it dies (prctl), so `kill -9` of the supervisor leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from dataclasses import replace
from types import FrameType

from imagedepot import bootstrap
from imagedepot.adapters.sibling_counts import SiblingCounts
from imagedepot.config import Settings

log = logging.getLogger(__name__)

WORKER = "worker"
RESTART_DELAY_MAX = 30.0
"""A child that keeps dying (the database away, say) is started again at most this often."""
_PR_SET_PDEATHSIG = 1
_HANDLED = {signal.SIGINT, signal.SIGTERM}
_BLOCKED_ACROSS_FORK = {*_HANDLED, signal.SIGQUIT}


def supervise(settings: Settings) -> None:
    """Serve with `settings.api_processes` API processes and a worker process until a
    signal: SIGTERM or SIGINT is passed on to every child as SIGTERM (they drain their open
    requests for `shutdown_seconds`, however many SIGTERMs they get: systemd sends one to
    each process of the service); a second one is passed on as SIGQUIT: stop at once."""
    api_roles = [f"api-{index}" for index in range(1, settings.api_processes + 1)]
    # A socket of its own per API process (SO_REUSEPORT): one shared socket lets whichever
    # process wakes first take every connection of a quiet spell; the kernel spreads
    # connections over sockets evenly. The supervisor keeps them, so connections to a
    # process being replaced wait in its socket's backlog for the next one.
    listeners = {role: bootstrap.bind_ports(settings, shared=True) for role in api_roles}
    try:
        _prepare(settings)
        counts = SiblingCounts(settings.data_dir / "run" / "counts")
        counts.clear()
        wake_receiver, wake_sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for end in (wake_receiver, wake_sender):
            end.setblocking(False)
        siblings = {
            role: bootstrap.Sibling(listeners[role], wake_sender, counts) for role in api_roles
        }
        if settings.run_worker:
            siblings[WORKER] = bootstrap.Sibling({}, wake_receiver, counts)
        _Children(settings, siblings).run()
    finally:
        for bound in listeners.values():
            for listener in bound.values():
                listener.close()


def _prepare(settings: Settings) -> None:
    """Migrate the store, check the blob store and the secret key, and make the admin token,
    once and before any child starts (SystemExit naming what is wrong)."""
    core = bootstrap.checked_core(settings)
    if core.admin_token_path is not None:
        log.warning("admin token is in %s", core.admin_token_path)
    core.close()


class _Children:
    def __init__(self, settings: Settings, siblings: dict[str, bootstrap.Sibling]) -> None:
        self._settings = settings
        self._siblings = siblings
        self._context = multiprocessing.get_context("fork")
        self._running: dict[str, multiprocessing.process.BaseProcess] = {}
        self._started_at: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._due: dict[str, float] = {}
        self._signals = 0

    def run(self) -> None:
        previous = {signum: signal.signal(signum, self._on_signal) for signum in _HANDLED}
        try:
            for role in self._siblings:
                self._start(role)
            scheme = "https" if self._settings.tls_cert else "http"
            log.info(
                "imagedepot serving API on %s://%s, registry on %s://%s, with %d API processes%s",
                scheme,
                bootstrap.address(self._settings.host, self._settings.port),
                scheme,
                bootstrap.address(self._settings.host, self._settings.registry_port),
                self._settings.api_processes,
                " and a worker process" if WORKER in self._siblings else "",
            )
            self._watch()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for child in self._running.values():
                child.kill()
                child.join()

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        self._signals += 1
        passed_on = signal.SIGTERM if self._signals == 1 else signal.SIGQUIT
        for child in self._running.values():
            if child.pid is not None:  # never 0: that would signal the whole process group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, passed_on)

    def _watch(self) -> None:
        while self._running or (self._due and not self._signals):
            now = time.monotonic()
            for role, due in list(self._due.items()):
                if due <= now and not self._signals:
                    del self._due[role]
                    self._start(role)
            waits = [child.sentinel for child in self._running.values()]
            timeout = min((due - now for due in self._due.values()), default=1.0)
            if waits:
                multiprocessing.connection.wait(waits, timeout=max(0.05, min(timeout, 1.0)))
            else:
                time.sleep(max(0.05, min(timeout, 1.0)))
            for role, child in list(self._running.items()):
                if child.exitcode is None:
                    continue
                child.join()
                del self._running[role]
                if not self._signals:
                    self._schedule_restart(role, child.exitcode)

    def _schedule_restart(self, role: str, exitcode: int) -> None:
        lived = time.monotonic() - self._started_at[role]
        # 1 s, doubled each time it dies again within RESTART_DELAY_MAX of its start.
        doubled = 2 * self._delay.get(role, 0.5)
        self._delay[role] = 1.0 if lived > RESTART_DELAY_MAX else min(doubled, RESTART_DELAY_MAX)
        log.warning(
            "the %s process ended (exit code %s); starting another in %.0f s",
            role,
            exitcode,
            self._delay[role],
        )
        self._due[role] = time.monotonic() + self._delay[role]

    def _start(self, role: str) -> None:
        child = self._context.Process(
            target=_child_main,
            args=(self._settings, role, self._siblings[role], os.getpid()),
            name=f"imagedepot-{role}",
        )
        # Blocked across the fork: until the child has set its own, a signal would run the
        # supervisor's handler in it (forwarding SIGTERM to the siblings it knows of).
        signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED_ACROSS_FORK)
        try:
            child.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED_ACROSS_FORK)
        self._running[role] = child
        self._started_at[role] = time.monotonic()


def _child_main(
    settings: Settings, role: str, sibling: bootstrap.Sibling, supervisor_pid: int
) -> None:
    # Ctrl-C reaches every process of the terminal's group; the supervisor passes it on as
    # SIGTERM, so a child that also took SIGINT would count two signals and stop at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Until `serve` handles them, SIGTERM and SIGQUIT end a child that is still starting.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED_ACROSS_FORK)
    _end_with(supervisor_pid)
    is_worker = role == WORKER
    settings = replace(settings, run_worker=is_worker)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(bootstrap.serve(settings, with_api=not is_worker, sibling=sibling))


def _end_with(supervisor_pid: int) -> None:
    """SIGTERM this process when the supervisor dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor_pid:  # it died before the line above took effect
        os.kill(os.getpid(), signal.SIGTERM)

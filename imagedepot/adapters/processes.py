"""Operating-system facts needed to recover after a crash: who holds a lease or an upload,
whether a process that left a lease, an upload or a temp file behind is still running, and
how to make a rename durable."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path


def new_holder_id(node: str | None = None) -> str:
    """This process as a holder of leases and uploads: node/pid/nonce, the node being the
    host's name unless given (two processes with one node name must share a pid space)."""
    name = (node or socket.gethostname()).replace("/", "_")
    return f"{name}/{os.getpid()}/{secrets.token_hex(4)}"


def dead_holders(holders: list[str], me: str) -> tuple[str, ...]:
    """Holders on this host whose process is gone (or is us under an earlier life)."""
    host, pid_text, _ = me.split("/", 2)
    dead = []
    for holder in holders:
        parts = holder.split("/", 2)
        if len(parts) != 3 or parts[0] != host or holder == me or not parts[1].isdigit():
            continue
        if parts[1] == pid_text or not process_alive(int(parts[1])):
            dead.append(holder)
    return tuple(dead)


def process_alive(pid: int) -> bool:
    """True for this process and any live one (even one we may not signal)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_directory(directory: Path) -> None:
    """Make the renames and creations inside `directory` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

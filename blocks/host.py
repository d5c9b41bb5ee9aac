"""This host and its processes, as far as a PID can be checked from here.

The publish lock records its holder's process with these, and the next run that renders a
dbt profile removes profile dirs of processes that are gone; both must agree on when a
process counts as gone.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Optional


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def host_identity() -> str:
    """This host, as far as PIDs are comparable: hostname, boot and PID namespace."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{boot}/{namespace}"


def process_start(pid: int) -> Optional[str]:
    """When process `pid` started (clock ticks since boot), so a reused PID is not mistaken for it.
    None when there is no such process. Where /proc is missing, 'alive' or None."""
    stat = _read(f"/proc/{pid}/stat")
    if stat:
        return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name
    if Path("/proc/self/stat").exists():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "alive"


def process_gone(pid: int, started: str) -> bool:
    """Whether process `pid` of this host, which started at `started` (see `process_start`), has ended."""
    now = process_start(pid)
    return now is None or (now != "alive" and now != started)

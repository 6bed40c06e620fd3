"""Running a peer's command line (skopeo, kubectl, ctr) the one way the tests do: output
captured as text, a time limit, and a failure that shows what the command said."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence


def run_command(
    command: Sequence[str],
    *,
    check: bool = True,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(command),
        env=None if env is None else dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result

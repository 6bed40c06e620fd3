"""The README's runnable blocks, run as pasted, in order, in one shell, against the servers the
blocks themselves start: the tour cannot rot without this failing.

A block is runnable when the line before its fence is `<!-- runnable -->`. Shell blocks run
as they are; Python blocks run with the virtualenv's `python`. What a user's machine has and
a test machine does not is stood in for, and only that: the ports (free loopback ones instead
of 8080/5050/8443/5443), the working directory (a fresh one instead of the clone's root, so
`./data` is the test's own), and the upstream registries (`docker.io` and
`registry.example.com` reach a local docker-registry through `IMAGEDEPOT_MIRRORS`, holding
the images the tour names).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.images import make_layer, push_image
from tests.support.ports import free_port
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^<!-- runnable -->\n```(sh|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def runnable_blocks() -> list[tuple[str, str]]:
    return [(kind, body) for kind, body in BLOCK.findall((REPO / "README.md").read_text())]


def tour_script(ports: dict[str, int]) -> str:
    lines = ["set -euo pipefail"]
    for number, (kind, body) in enumerate(runnable_blocks()):
        lines.append(f"echo '### README block {number} ({kind})'")
        if kind == "python":
            lines += ["python - <<'README_PYTHON_BLOCK'", body.rstrip("\n"), "README_PYTHON_BLOCK"]
        else:
            lines.append(body.rstrip("\n"))
    script = "\n".join(lines) + "\n"
    script = script.replace("make install", f"make -C {REPO} install")
    script = script.replace("$PWD/.venv/bin", f"{REPO}/.venv/bin")
    for usual, free in ports.items():
        script = re.sub(rf"\b{usual}\b", str(free), script)
    return script


def test_the_readme_has_the_blocks_of_the_tour() -> None:
    kinds = [kind for kind, _ in runnable_blocks()]
    assert kinds.count("sh") >= 10
    assert kinds.count("python") >= 2
    assert "imagedepot serve &" in runnable_blocks()[0][1]


def test_the_readme_runs_as_pasted(tmp_path: Path) -> None:
    with RegistryServer() as upstream:
        push_image(upstream.url, "library/nginx", "stable", [make_layer(seed=9001)])
        push_image(upstream.url, "team/app", "v1", [make_layer(seed=9002)])
        ports = {usual: free_port() for usual in ("8080", "5050", "8443", "5443")}
        env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEDEPOT")}
        home = tmp_path / "home"
        home.mkdir()
        env.update(
            HOME=str(home),
            IMAGEDEPOT_PORT=str(ports["8080"]),
            IMAGEDEPOT_REGISTRY_PORT=str(ports["5050"]),
            IMAGEDEPOT_SERVER=f"http://127.0.0.1:{ports['8080']}",  # the CLI's default, moved
            IMAGEDEPOT_MIRRORS=(
                f"docker.io={upstream.endpoint},registry.example.com={upstream.endpoint}"
            ),
            IMAGEDEPOT_RETRY_BASE_DELAY="0.05",
        )
        work = tmp_path / "clone"
        work.mkdir()
        log = tmp_path / "tour.log"
        # Output to a file, not a pipe: the servers the tour starts in the background keep
        # their stdout open after the shell ends.
        with log.open("w") as output_file:
            shell = subprocess.Popen(
                ["bash", "-c", tour_script(ports)],
                cwd=work,
                env=env,
                stdout=output_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                shell.wait(timeout=480)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"the README tour did not finish:\n{log.read_text()[-6000:]}"
                ) from None
            finally:
                # Servers the blocks started and a failed block left running.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(shell.pid, signal.SIGKILL)
                shell.wait()
    output = log.read_text()
    assert shell.returncode == 0, output[-6000:]
    assert "Available" in output
    assert (work / "app-layout" / "index.json").is_file()  # skopeo copied from the registry port
    assert (work / "app-copy" / "manifest.json").is_file()  # skopeo read the exported archive
    assert '"result":"Matched"' in output.replace(" ", "")
    assert output.count('"errno":0') >= 3  # DiDi create, changeName and the job result
    assert "*** no token" not in output
    assert not (REPO / "app.yaml").exists()  # nothing was written into the clone

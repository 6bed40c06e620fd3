"""packaging/ agrees with itself and with the code: the systemd unit passes systemd's own
check, starts `serve` on the packaged config and may write where that config keeps its data,
and the line the Containerfile rewrites is in the example config."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagedepot.config import read_config_file

PACKAGING = Path(__file__).parents[2] / "packaging"
UNIT = PACKAGING / "imagedepot.service"
INSTALLED = "/opt/imagedepot/bin/imagedepot"


def unit_values(key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", UNIT.read_text(), flags=re.MULTILINE)


def test_the_unit_serves_the_packaged_config_and_may_write_its_data_dir() -> None:
    assert unit_values("ExecStart") == [
        f"{INSTALLED} serve --config /etc/imagedepot/imagedepot.toml"
    ]
    data_dir = read_config_file(PACKAGING / "imagedepot.toml")["data_dir"]
    assert unit_values("StateDirectory") == [Path(str(data_dir)).name]
    assert unit_values("ReadWritePaths") == [str(data_dir)]
    assert unit_values("User") == ["imagedepot"]
    assert "imagedepot" in (PACKAGING / "imagedepot.sysusers").read_text().split()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_finds_nothing_wrong_with_the_unit(tmp_path: Path) -> None:
    # `verify` also checks that ExecStart exists: point it at this checkout's console script.
    script = Path(sys.executable).parent / "imagedepot"
    checked = tmp_path / UNIT.name
    checked.write_text(UNIT.read_text().replace(INSTALLED, str(script)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(checked)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_the_line_the_containerfile_rewrites_is_in_the_example() -> None:
    containerfile = (PACKAGING / "Containerfile").read_text()
    original = re.search(r"s\|\^(.*)\$\|", containerfile)
    assert original is not None
    assert original.group(1) in (PACKAGING / "imagedepot.toml").read_text().splitlines()

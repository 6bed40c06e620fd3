"""The TOML config file: precedence (flags > environment > file > defaults), every key of it
converted to its Settings field, every mistake reported in one line naming the file and key,
the environment variables read exactly as before, and packaging/imagedepot.toml valid."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from imagedepot.cli import main
from imagedepot.config import ConfigError, Settings, from_env, read_config_file

EXAMPLE = Path(__file__).parents[2] / "packaging" / "imagedepot.toml"
COMMENTED_SETTING = re.compile(r"^# ([a-z][a-z0-9_]* = .*)$")


def write(directory: Path, text: str, name: str = "imagedepot.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        'port = 9000\nquota_caches = 3\nplatforms = ["linux/arm64"]\nregistry_port = 9001\n',
    )
    settings = from_env(
        {"IMAGEDEPOT_QUOTA_CACHES": "7"}, config_file=path, port=9100, registry_port=None
    )
    assert settings.port == 9100  # flag over file
    assert settings.quota_caches == 7  # environment over file
    assert settings.platforms == ("linux/arm64",)  # file over default
    assert settings.registry_port == 9001  # a flag left out does not hide the file
    assert settings.rate_limit == Settings().rate_limit  # default where nobody says


def test_imagedepot_config_names_the_file_and_the_flag_beats_it(tmp_path: Path) -> None:
    from_variable = write(tmp_path, "quota_images = 11\n", "variable.toml")
    from_flag = write(tmp_path, "quota_images = 22\n", "flag.toml")
    environ = {"IMAGEDEPOT_CONFIG": str(from_variable)}
    assert from_env(environ).quota_images == 11
    assert from_env(environ, config_file=from_flag).quota_images == 22
    assert from_env({}).quota_images == Settings().quota_images
    assert from_env({"IMAGEDEPOT_CONFIG": ""}).quota_images == Settings().quota_images


def test_every_kind_of_key_becomes_its_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
data_dir = "state"
database_url = "postgresql://depot@db/depot"
tls_cert = "/etc/tls/server.crt"
policy_file = "policy.json"
run_worker = false
retry_base_delay = 2
mirrors = { "docker.io" = ["mirror-a:5000", "mirror-b"], "quay.io" = [] }
insecure_registries = ["lab:5000"]
""",
    )
    settings = from_env({}, config_file=path)
    assert settings.data_dir == tmp_path / "state"  # relative to the file, not the cwd
    assert settings.database_url == "postgresql://depot@db/depot"
    assert settings.tls_cert == Path("/etc/tls/server.crt")
    assert settings.policy_file == tmp_path / "policy.json"
    assert settings.run_worker is False
    assert settings.retry_base_delay == 2.0
    assert isinstance(settings.retry_base_delay, float)
    assert settings.mirrors == {"docker.io": ("mirror-a:5000", "mirror-b"), "quay.io": ()}
    assert settings.insecure_registries == ("lab:5000",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prot = 8080", "key 'prot' is not a setting (did you mean 'port'?)"),
        ("colour = 1", "key 'colour' is not a setting"),
        ('port = "8080"', "key 'port' must be an integer, got '8080'"),
        ("port = 80.5", "key 'port' must be an integer"),
        ("port = true", "key 'port' must be an integer, got True"),
        ("port = 0", "key 'port' must be from 1 to 65535, got 0"),
        ("registry_port = 70000", "key 'registry_port' must be from 1 to 65535, got 70000"),
        ("parallel_blobs = 0", "key 'parallel_blobs' must be at least 1, got 0"),
        ("quota_gib = -1", "key 'quota_gib' must be at least 0, got -1"),
        ("lease_seconds = 0", "key 'lease_seconds' must be greater than 0, got 0.0"),
        ('rate_limit = "fast"', "key 'rate_limit' must be a number, got 'fast'"),
        ("run_worker = 1", "key 'run_worker' must be true or false, got 1"),
        ("host = 127", "key 'host' must be a string, got 127"),
        ('admin_token = ""', "key 'admin_token' must not be empty"),
        ('platforms = "linux/amd64"', "key 'platforms' must be a list of non-empty strings"),
        ("platforms = []", "key 'platforms' must list at least one entry"),
        ('regions = ["bj", 2]', "key 'regions' must be a list of non-empty strings"),
        ('mirrors = ["docker.io=m:5000"]', "key 'mirrors' must be a table"),
        (
            'mirrors = { "docker.io" = "m:5000" }',
            "key 'mirrors' entry 'docker.io' must be a list of non-empty strings",
        ),
        ("port = ", "not valid TOML: Invalid value (at line 1, column 8)"),
    ],
)
def test_every_mistake_is_one_line_naming_the_file_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, f"{text}\n")
    with pytest.raises(ConfigError) as refused:
        read_config_file(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as refused:
        from_env({"IMAGEDEPOT_CONFIG": str(absent)})
    assert str(refused.value) == f"{absent}: cannot read the config file: No such file or directory"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "IMAGEDEPOT_PARALLEL_BLOBS",
            "many",
            "IMAGEDEPOT_PARALLEL_BLOBS='many': must be an integer",
        ),
        ("IMAGEDEPOT_RATE_LIMIT", "fast", "IMAGEDEPOT_RATE_LIMIT='fast': must be a number"),
        ("IMAGEDEPOT_PARALLEL_BLOBS", "0", "IMAGEDEPOT_PARALLEL_BLOBS must be at least 1, got 0"),
        ("IMAGEDEPOT_MIRRORS", "docker.io", "IMAGEDEPOT_MIRRORS entry 'docker.io' must be"),
    ],
)
def test_a_bad_variable_is_named(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        from_env({variable: value})
    assert str(refused.value).startswith(expected)


def test_the_environment_is_read_as_it_always_was() -> None:
    environ = {
        "IMAGEDEPOT_DATA_DIR": "/srv/depot",
        "IMAGEDEPOT_DATABASE_URL": "postgresql://x@/y",
        "IMAGEDEPOT_ADMIN_TOKEN": "admin",
        "IMAGEDEPOT_SECRET_KEY": "key-a,key-b",
        "IMAGEDEPOT_PLATFORMS": "linux/amd64, linux/arm64",
        "IMAGEDEPOT_INSECURE_REGISTRIES": "lab:5000",
        "IMAGEDEPOT_MIRRORS": "docker.io=a:5000|b,quay.io=q",
        "IMAGEDEPOT_PARALLEL_BLOBS": "3",
        "IMAGEDEPOT_MAX_RETRIES": "0",
        "IMAGEDEPOT_RETRY_BASE_DELAY": "0.05",
        "IMAGEDEPOT_LEASE_SECONDS": "10",
        "IMAGEDEPOT_RATE_LIMIT": "0",
        "IMAGEDEPOT_RATE_BURST": "6",
        "IMAGEDEPOT_AUTH_FAILURE_RATE": "1",
        "IMAGEDEPOT_AUTH_FAILURE_BURST": "3",
        "IMAGEDEPOT_MAX_BODY_BYTES": "4096",
        "IMAGEDEPOT_QUOTA_CACHES": "1",
        "IMAGEDEPOT_QUOTA_IMAGES": "2",
        "IMAGEDEPOT_QUOTA_GIB": "0",
        "IMAGEDEPOT_MAX_IMAGE_BYTES": "100000",
        "IMAGEDEPOT_TLS_CERT": "c.pem",
        "IMAGEDEPOT_TLS_KEY": "k.pem",
        "IMAGEDEPOT_POLICY_FILE": "policy.json",
        "IMAGEDEPOT_REGIONS": "bj,sh",
        "IMAGEDEPOT_HOST": "0.0.0.0",
        "IMAGEDEPOT_PORT": "9080",
        "IMAGEDEPOT_REGISTRY_PORT": "9050",
        "IMAGEDEPOT_FORWARDED_ALLOW_IPS": "10.0.0.5, 192.168.10.0/24",
    }
    assert from_env(environ) == Settings(
        data_dir=Path("/srv/depot"),
        database_url="postgresql://x@/y",
        admin_token="admin",
        secret_key="key-a,key-b",
        platforms=("linux/amd64", "linux/arm64"),
        insecure_registries=("lab:5000",),
        mirrors={"docker.io": ("a:5000", "b"), "quay.io": ("q",)},
        parallel_blobs=3,
        max_retries=0,
        retry_base_delay=0.05,
        lease_seconds=10.0,
        rate_limit=0.0,
        rate_burst=6,
        auth_failure_rate=1.0,
        auth_failure_burst=3,
        max_body_bytes=4096,
        quota_caches=1,
        quota_images=2,
        quota_gib=0,
        max_image_bytes=100000,
        tls_cert=Path("c.pem"),
        tls_key=Path("k.pem"),
        policy_file=Path("policy.json"),
        regions=("bj", "sh"),
        host="0.0.0.0",
        port=9080,
        registry_port=9050,
        forwarded_allow_ips=("10.0.0.5", "192.168.10.0/24"),
    )
    # Empty variables keep the defaults, as before; an empty platform list means the default.
    empty = {name: "" for name in environ if name != "IMAGEDEPOT_DATA_DIR"}
    assert from_env(empty) == Settings()


def test_the_example_file_loads_as_shipped() -> None:
    assert read_config_file(EXAMPLE) == {"data_dir": Path("/var/lib/imagedepot")}


def test_the_example_file_shows_every_setting_and_its_true_default(tmp_path: Path) -> None:
    lines = EXAMPLE.read_text().splitlines()
    uncommented = [COMMENTED_SETTING.sub(r"\1", line) for line in lines]
    values = read_config_file(write(tmp_path, "\n".join(uncommented) + "\n"))
    defaults = Settings()
    assert set(values) == {each.name for each in dataclasses.fields(Settings)}
    for key, value in values.items():
        default = getattr(defaults, key)
        if key == "data_dir" or default is None or default in ((), {}):
            continue  # the packaged data dir, or an example where there is no default
        assert value == default, key


def test_importing_the_settings_reads_no_file() -> None:
    probe = "import sys, imagedepot.config; print(*{'tomllib', 'difflib'} & set(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_data_dir_commands_take_config_and_refuse_a_bad_one_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("IMAGEDEPOT_DATA_DIR", "IMAGEDEPOT_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    good = write(tmp_path, 'data_dir = "depot"\n', "good.toml")
    ran = CliRunner().invoke(
        main, ["credentials", "create", "--config", str(good), "--project", "p", "--json"]
    )
    assert ran.exit_code == 0, ran.output
    assert (tmp_path / "depot" / "imagedepot.db").exists()

    bad = write(tmp_path, "quota_caches = -3\n", "bad.toml")
    refused = CliRunner().invoke(main, ["gc", "--config", str(bad)])
    assert refused.exit_code == 1
    assert refused.output == f"Error: {bad}: key 'quota_caches' must be at least 0, got -3\n"

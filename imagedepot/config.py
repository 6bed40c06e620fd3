"""Settings from a TOML file, the environment and flags; importing this module does no I/O.

Every knob has an embedded default so that `imagedepot serve` runs on a fresh machine with
SQLite and `./data`. A deployment writes the knobs it changes into a file (`--config FILE` or
`IMAGEDEPOT_CONFIG`), whose keys are the field names of `Settings`; a variable
`IMAGEDEPOT_<FIELD>` overrides the file and a flag overrides both. Each value is checked where
it comes from, so a mistake is reported as one line naming the file and key (or the variable).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

DEFAULT_PLATFORMS = ("linux/amd64",)
CONFIG_FILE_VARIABLE = "IMAGEDEPOT_CONFIG"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8080
    registry_port: int = 5050
    database_url: str | None = None
    admin_token: str | None = None
    secret_key: str | None = None
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS
    insecure_registries: tuple[str, ...] = ()
    """Registries (host[:port]) reached over plain HTTP or with TLS unverified, beyond loopback."""
    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Registry host -> mirror endpoints tried first, e.g. docker.io -> (mirror.internal:5000,)."""
    parallel_blobs: int = 6
    pull_through_streaming: bool = True
    """A registry client pulling a blob still arriving from the upstream follows the download
    (the last byte held until the blob is verified); off, it waits for the verified blob."""
    max_retries: int = 4
    retry_base_delay: float = 0.5
    worker_poll_seconds: float = 1.0
    lease_seconds: float = 30.0
    run_worker: bool = True
    api_processes: int = 1
    """Processes serving the two ports. Above 1, `serve` runs them and the worker as child
    processes of its own (the kernel spreads connections over them; the worker's builds then
    never wait on a request for the GIL); rate limits are kept per process."""
    rate_limit: float = 50.0
    """Requests per second per credential (0 turns the limit off)."""
    rate_burst: int = 100
    auth_failure_rate: float = 0.2
    """Failed authentications forgiven per second per client address (0 turns it off)."""
    auth_failure_burst: int = 20
    """Failed authentications from one address before it is refused outright (429)."""
    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 64 * 1024
    """A request's headers beyond this many bytes are refused (431) and the connection closed."""
    header_timeout_seconds: float = 10.0
    """A request's headers must arrive whole within this (408 and close otherwise)."""
    shutdown_seconds: int = 10
    """On SIGTERM/SIGINT, open requests get this long to finish; a second signal stops now."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """With both, the API and registry ports speak HTTPS (kubectl sends tokens only over TLS)."""
    policy_file: Path | None = None
    """JSON `{"roles": {ROLE: [ACTION PATTERN, …]}}` replacing the default role policy."""
    quota_caches: int = 50
    quota_images: int = 1000
    quota_gib: int = 20000
    """Per project: caches, images across caches, and the sum of cache size budgets (GiB)."""
    max_image_bytes: int = 1 << 40
    """The largest VM image upload accepted (Glance answers 413 past it)."""
    regions: tuple[str, ...] = ("default",)
    """The regions VM images live in (IMAGEDEPOT_REGIONS, comma-separated); the first is where
    new images are made."""
    node_name: str | None = None
    """This machine in lease and upload holder ids (default: its host name). Processes with
    one node name must share a pid space: on it, a holder whose pid is gone is dead at once;
    elsewhere, once it has been silent for a lease."""
    blob_store: str | None = None
    """Where blobs live: None for `DATA_DIR/blobs`, or `s3://BUCKET[/PREFIX]` (endpoint and
    credentials read as AWS tools read them: AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, …)."""
    s3_part_mib: int = 8
    s3_parallel_parts: int = 8
    """A blob streams into S3 in parts of this size, this many in flight: the memory bound."""
    s3_redirect_seconds: int = 0
    """Above 0, registry-port blob GETs answer 307 to a presigned URL valid this long."""
    s3_stale_upload_hours: float = 24.0
    """Multipart uploads and staged objects older than this were left by a dead process."""
    gc_grace_seconds: float = 3600.0
    """A blob unreferenced this long is removed by the next sweep (`gc --grace` overrides)."""
    forwarded_allow_ips: tuple[str, ...] = ()
    """Reverse proxies (addresses or networks, IMAGEDEPOT_FORWARDED_ALLOW_IPS comma-separated)
    whose X-Forwarded-For/-Proto/-Host are believed; from anyone else they are ignored."""

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'imagedepot.db'}"


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line naming where it came from."""


@dataclass(frozen=True)
class _Range:
    low: float
    high: float | None = None
    low_included: bool = True

    def describe(self) -> str:
        if self.high is not None:
            return f"from {self.low:g} to {self.high:g}"
        return f"at least {self.low:g}" if self.low_included else f"greater than {self.low:g}"

    def holds(self, value: float) -> bool:
        above_low = value >= self.low if self.low_included else value > self.low
        return above_low and (self.high is None or value <= self.high)


_PORT = _Range(1, 65535)
_POSITIVE = _Range(0, low_included=False)
_RANGES: dict[str, _Range] = {
    "port": _PORT,
    "registry_port": _PORT,
    "parallel_blobs": _Range(1),
    "api_processes": _Range(1, 64),
    "max_retries": _Range(0),
    "retry_base_delay": _Range(0),
    "worker_poll_seconds": _POSITIVE,
    "lease_seconds": _POSITIVE,
    "rate_limit": _Range(0),
    "rate_burst": _Range(1),
    "auth_failure_rate": _Range(0),
    "auth_failure_burst": _Range(1),
    "max_body_bytes": _Range(1),
    "max_header_bytes": _Range(1024, 16 * 1024 * 1024),
    "header_timeout_seconds": _POSITIVE,
    "shutdown_seconds": _Range(0),
    "quota_caches": _Range(0),
    "quota_images": _Range(0),
    "quota_gib": _Range(0),
    "max_image_bytes": _Range(1),
    "s3_part_mib": _Range(5, 5 * 1024),
    "s3_parallel_parts": _Range(1, 64),
    "s3_redirect_seconds": _Range(0, 7 * 24 * 3600),
    "s3_stale_upload_hours": _POSITIVE,
    "gc_grace_seconds": _Range(0),
}
_NOT_EMPTY = frozenset({"platforms", "regions"})
"""Lists that mean nothing empty (the environment falls back to the default instead)."""


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


def parse_mirrors(value: str | None) -> dict[str, tuple[str, ...]]:
    """`docker.io=mirror.a:5000|mirror.b,quay.io=q.internal` -> {docker.io: (mirror.a:5000, mirror.b), …}."""
    mirrors: dict[str, tuple[str, ...]] = {}
    for entry in _split(value):
        registry, _, endpoints = entry.partition("=")
        if not endpoints:
            raise ConfigError(
                f"IMAGEDEPOT_MIRRORS entry {entry!r} must be REGISTRY=ENDPOINT[|ENDPOINT]"
            )
        mirrors[registry.strip()] = tuple(e.strip() for e in endpoints.split("|") if e.strip())
    return mirrors


def _number(kind: type[int] | type[float], variable: str, text: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(f"{variable}={text!r}: must be {expected}") from None


def _check_range(key: str, value: object, where: str) -> None:
    allowed = _RANGES.get(key)
    if allowed is not None and isinstance(value, int | float) and not allowed.holds(value):
        raise ConfigError(f"{where} must be {allowed.describe()}, got {value!r}")


def from_env(
    environ: Mapping[str, str] | None = None,
    *,
    config_file: str | Path | None = None,
    **overrides: object,
) -> Settings:
    """Settings from, in rising precedence: the defaults, the TOML file `config_file` (else
    the one `IMAGEDEPOT_CONFIG` names, if any), `IMAGEDEPOT_*` variables, and keyword overrides
    (from CLI flags) that are not None. Raises ConfigError naming the bad key or variable."""
    env = os.environ if environ is None else environ
    chosen_file = config_file or env.get(CONFIG_FILE_VARIABLE)
    values: dict[str, object] = read_config_file(Path(chosen_file)) if chosen_file else {}
    from_variables: dict[str, object] = {}
    if "IMAGEDEPOT_DATA_DIR" in env:
        from_variables["data_dir"] = Path(env["IMAGEDEPOT_DATA_DIR"])
    for key, name in (
        ("host", "HOST"),
        ("database_url", "DATABASE_URL"),
        ("admin_token", "ADMIN_TOKEN"),
        ("secret_key", "SECRET_KEY"),
        ("blob_store", "BLOB_STORE"),
        ("node_name", "NODE_NAME"),
    ):
        if env.get(f"IMAGEDEPOT_{name}"):
            from_variables[key] = env[f"IMAGEDEPOT_{name}"]
    if "IMAGEDEPOT_PLATFORMS" in env:
        from_variables["platforms"] = _split(env["IMAGEDEPOT_PLATFORMS"]) or DEFAULT_PLATFORMS
    if "IMAGEDEPOT_INSECURE_REGISTRIES" in env:
        from_variables["insecure_registries"] = _split(env["IMAGEDEPOT_INSECURE_REGISTRIES"])
    if "IMAGEDEPOT_MIRRORS" in env:
        from_variables["mirrors"] = parse_mirrors(env["IMAGEDEPOT_MIRRORS"])
    for key, name, kind in (
        ("port", "PORT", int),
        ("registry_port", "REGISTRY_PORT", int),
        ("parallel_blobs", "PARALLEL_BLOBS", int),
        ("api_processes", "API_PROCESSES", int),
        ("max_retries", "MAX_RETRIES", int),
        ("retry_base_delay", "RETRY_BASE_DELAY", float),
        ("lease_seconds", "LEASE_SECONDS", float),
        ("rate_limit", "RATE_LIMIT", float),
        ("rate_burst", "RATE_BURST", int),
        ("auth_failure_rate", "AUTH_FAILURE_RATE", float),
        ("auth_failure_burst", "AUTH_FAILURE_BURST", int),
        ("max_body_bytes", "MAX_BODY_BYTES", int),
        ("max_header_bytes", "MAX_HEADER_BYTES", int),
        ("header_timeout_seconds", "HEADER_TIMEOUT_SECONDS", float),
        ("shutdown_seconds", "SHUTDOWN_SECONDS", int),
        ("quota_caches", "QUOTA_CACHES", int),
        ("quota_images", "QUOTA_IMAGES", int),
        ("quota_gib", "QUOTA_GIB", int),
        ("max_image_bytes", "MAX_IMAGE_BYTES", int),
        ("s3_part_mib", "S3_PART_MIB", int),
        ("s3_parallel_parts", "S3_PARALLEL_PARTS", int),
        ("s3_redirect_seconds", "S3_REDIRECT_SECONDS", int),
        ("s3_stale_upload_hours", "S3_STALE_UPLOAD_HOURS", float),
        ("gc_grace_seconds", "GC_GRACE_SECONDS", float),
    ):
        if env.get(f"IMAGEDEPOT_{name}"):
            variable = f"IMAGEDEPOT_{name}"
            from_variables[key] = number = _number(kind, variable, env[variable])
            _check_range(key, number, variable)
    for key, name in (("tls_cert", "TLS_CERT"), ("tls_key", "TLS_KEY")):
        if env.get(f"IMAGEDEPOT_{name}"):
            from_variables[key] = Path(env[f"IMAGEDEPOT_{name}"])
    if env.get("IMAGEDEPOT_PULL_THROUGH_STREAMING"):
        from_variables["pull_through_streaming"] = _switch(
            "IMAGEDEPOT_PULL_THROUGH_STREAMING", env["IMAGEDEPOT_PULL_THROUGH_STREAMING"]
        )
    if env.get("IMAGEDEPOT_POLICY_FILE"):
        from_variables["policy_file"] = Path(env["IMAGEDEPOT_POLICY_FILE"])
    if _split(env.get("IMAGEDEPOT_REGIONS")):
        from_variables["regions"] = _split(env.get("IMAGEDEPOT_REGIONS"))
    if "IMAGEDEPOT_FORWARDED_ALLOW_IPS" in env:
        from_variables["forwarded_allow_ips"] = _split(env["IMAGEDEPOT_FORWARDED_ALLOW_IPS"])
    values.update(from_variables)
    for key, value in overrides.items():
        if value is not None:
            values[key] = Path(str(value)) if key == "data_dir" else value
    return Settings(**values)  # type: ignore[arg-type]


def _switch(variable: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{variable} must be true or false, got {text!r}")


def read_config_file(path: Path) -> dict[str, object]:
    """The settings a TOML file sets, keyed by field name and converted to the field's type.
    Relative paths in it are taken from the file's directory, so that its meaning does not
    depend on where a command runs. Raises ConfigError `FILE: key 'KEY' …` on any mistake."""
    import tomllib  # only where a file is given: most commands have none

    try:
        with path.open("rb") as opened:
            document = tomllib.load(opened)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    kinds = setting_types()
    values: dict[str, object] = {}
    for key, raw in document.items():
        where = f"{path}: key {key!r}"
        if key not in kinds:
            raise ConfigError(f"{where} is not a setting{_suggestion(key, kinds)}")
        value = _converted(kinds[key], raw, where, path.parent)
        if key in _NOT_EMPTY and not value:
            raise ConfigError(f"{where} must list at least one entry")
        _check_range(key, value, where)
        values[key] = value
    return values


def setting_types() -> dict[str, Any]:
    """Each Settings field and its type: the keys a config file may set."""
    hints = get_type_hints(Settings)
    return {each.name: hints[each.name] for each in fields(Settings)}


def _suggestion(key: str, known: Mapping[str, object]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else " (the keys are the Settings fields)"


def _converted(kind: Any, raw: object, where: str, base_dir: Path) -> object:
    members = get_args(kind)
    if type(None) in members:  # `X | None`: a file sets X, or leaves the key out
        kind = next(member for member in members if member is not type(None))
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        raise ConfigError(f"{where} must be true or false, got {raw!r}")
    if kind is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise ConfigError(f"{where} must be an integer, got {raw!r}")
    if kind is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        raise ConfigError(f"{where} must be a number, got {raw!r}")
    if kind is str or kind is Path:
        if not isinstance(raw, str):
            raise ConfigError(f"{where} must be a string, got {raw!r}")
        if not raw:
            raise ConfigError(f"{where} must not be empty (leave the key out for the default)")
        return base_dir / raw if kind is Path else raw
    if get_origin(kind) is tuple:
        return _strings(raw, where)
    if get_origin(kind) is Mapping:
        if not isinstance(raw, dict):
            raise ConfigError(f'{where} must be a table such as {{"docker.io" = ["host:5000"]}}')
        return {
            str(name): _strings(entries, f"{where} entry {name!r}") for name, entries in raw.items()
        }
    raise TypeError(f"Settings field of type {kind!r} has no config file form")


def _strings(raw: object, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
        raise ConfigError(f"{where} must be a list of non-empty strings, got {raw!r}")
    return tuple(raw)

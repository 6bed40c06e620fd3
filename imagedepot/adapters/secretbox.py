"""Encryption of registry pull secrets at rest, with Fernet (AES-128-CBC + HMAC-SHA256).

The key comes from IMAGEDEPOT_SECRET_KEY or from `secret.key` in the data directory, made
on first start. Several comma-separated keys, newest first, allow rotation: new data is
sealed with the first, and any of them opens old data. A running server follows the key
file: it re-reads it before sealing anything, and when a ciphertext does not open under the
keys it holds, so `imagedepot secrets rotate-key` needs no restart.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from imagedepot.adapters.processes import fsync_directory
from imagedepot.ports import SecretUndecryptable

if TYPE_CHECKING:
    from imagedepot.ports import SecretBox

KeySource = Callable[[], bytes]
"""Reads the current key(s) again, for a box that follows a key file."""

KEY_FILE: Final = "secret.key"
_GENERATE_HINT: Final = (
    'generate one with: python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"'
)


class SecretKeyError(ValueError):
    """A configured or stored key is not a Fernet key."""


def _split_keys(keys: bytes) -> list[bytes]:
    return [key.strip() for key in keys.split(b",") if key.strip()]


def _fernets(keys: bytes, origin: str) -> list[Fernet]:
    parts = _split_keys(keys)
    if not parts:
        raise SecretKeyError(f"{origin} holds no key; {_GENERATE_HINT}")
    fernets: list[Fernet] = []
    for index, key in enumerate(parts):
        try:
            fernets.append(Fernet(key))
        except ValueError:
            # Never echo the value: it is meant to be secret.
            raise SecretKeyError(
                f"{origin}: key #{index + 1} is not a Fernet key (32 url-safe base64 bytes); "
                + _GENERATE_HINT
            ) from None
    return fernets


class FernetSecretBox:
    """SecretBox over Fernet; `keys` is one key or several, comma-separated, newest first.

    With `reload`, the box re-reads its keys before each encryption (rare: a secret or an
    access key is created) and when a ciphertext does not open, so it follows a rotation
    made by another process while it runs.
    """

    def __init__(self, keys: bytes, reload: KeySource | None = None) -> None:
        self._keys = keys
        self._fernet = MultiFernet(_fernets(keys, "secret key"))
        self._reload = reload
        self._lock = threading.Lock()

    def encrypt(self, plaintext: bytes) -> bytes:
        self._refresh()
        return self._fernet.encrypt(plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        return self._opening(lambda fernet: fernet.decrypt(ciphertext))

    def rotate(self, ciphertext: bytes) -> bytes:
        """Re-seal `ciphertext` under the newest key."""
        return self._opening(lambda fernet: fernet.rotate(ciphertext))

    def _opening(self, use: Callable[[MultiFernet], bytes]) -> bytes:
        for _ in range(2):
            try:
                return use(self._fernet)
            except InvalidToken:
                if not self._refresh():
                    break
        raise SecretUndecryptable("stored secret cannot be decrypted with the configured key(s)")

    def _refresh(self) -> bool:
        """Take the keys `reload` reads now; True when they changed."""
        if self._reload is None:
            return False
        try:
            keys = self._reload()
            fernet = MultiFernet(_fernets(keys, "key file"))
        except (OSError, SecretKeyError):
            return False  # a key file being replaced or damaged: keep what worked
        with self._lock:
            if keys == self._keys:
                return False
            self._keys, self._fernet = keys, fernet
        return True


def key_source(data_dir: Path, env_key: str | None) -> KeySource | None:
    """How a running box re-reads its keys: from the key file, or not at all when the keys
    come from IMAGEDEPOT_SECRET_KEY (an environment cannot change under a process)."""
    if env_key and env_key.strip():
        return None
    path = data_dir / KEY_FILE
    return lambda: path.read_bytes().strip()


def load_or_create_key(data_dir: Path, env_key: str | None) -> bytes:
    """The key(s) to use: `env_key` when given, else `data_dir/secret.key`, made if missing."""
    if env_key and env_key.strip():
        keys = env_key.strip().encode()
        _fernets(keys, "IMAGEDEPOT_SECRET_KEY")
        return keys
    path = data_dir / KEY_FILE
    if not path.exists():
        _create_key_file(path)
    keys = path.read_bytes().strip()
    _fernets(keys, str(path))
    return keys


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, Fernet.generate_key() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # Unlike rename, link never replaces: when two processes start together, both
            # end up reading the one key that won, not each its own.
            os.link(temp, path)
        except FileExistsError:
            pass
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    fsync_directory(path.parent)


def write_key_file(data_dir: Path, keys: bytes) -> None:
    """Replace the key file atomically (temp file, fsync, rename), mode 0600."""
    _fernets(keys, "new key file")
    path = data_dir / KEY_FILE
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, keys + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    fsync_directory(path.parent)


def new_key() -> bytes:
    return Fernet.generate_key()


if TYPE_CHECKING:
    _conforms: type[SecretBox] = FernetSecretBox

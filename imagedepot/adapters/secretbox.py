"""Encryption of registry pull secrets at rest, with Fernet (AES-128-CBC + HMAC-SHA256).

The key comes from IMAGEDEPOT_SECRET_KEY or from `secret.key` in the data directory, made
on first start. Several comma-separated keys, newest first, allow rotation: new data is
sealed with the first, and any of them opens old data.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from imagedepot.processes import fsync_directory

if TYPE_CHECKING:
    from imagedepot.ports import SecretBox

KEY_FILE: Final = "secret.key"
_GENERATE_HINT: Final = (
    'generate one with: python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"'
)


class SecretKeyError(ValueError):
    """A configured or stored key is not a Fernet key."""


class SecretUndecryptable(ValueError):
    """Ciphertext that none of the keys opens: another key, or damaged data."""


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
    """SecretBox over Fernet; `keys` is one key or several, comma-separated, newest first."""

    def __init__(self, keys: bytes) -> None:
        self._fernet = MultiFernet(_fernets(keys, "secret key"))

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        try:
            return self._fernet.decrypt(ciphertext)
        except InvalidToken:
            raise SecretUndecryptable(
                "stored secret cannot be decrypted with the configured key(s)"
            ) from None

    def rotate(self, ciphertext: bytes) -> bytes:
        """Re-seal `ciphertext` under the newest key."""
        try:
            return self._fernet.rotate(ciphertext)
        except InvalidToken:
            raise SecretUndecryptable(
                "stored secret cannot be decrypted with the configured key(s)"
            ) from None


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

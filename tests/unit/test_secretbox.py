"""FernetSecretBox and the key it is given: round trips, key file handling, key rotation."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from imagedepot.adapters.secretbox import (
    KEY_FILE,
    FernetSecretBox,
    SecretKeyError,
    key_source,
    load_or_create_key,
)
from imagedepot.ports import SecretUndecryptable


def test_round_trip() -> None:
    box = FernetSecretBox(Fernet.generate_key())
    for plaintext in (b"", b'{"auths": {}}', bytes(range(256)) * 100):
        sealed = box.encrypt(plaintext)
        assert plaintext not in sealed or not plaintext
        assert box.decrypt(sealed) == plaintext
    assert box.encrypt(b"same") != box.encrypt(b"same")


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet"
    key = load_or_create_key(data_dir, None)
    path = data_dir / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().strip() == key
    assert load_or_create_key(data_dir, None) == key
    assert load_or_create_key(data_dir, "") == key
    assert [p.name for p in data_dir.iterdir()] == [KEY_FILE]

    sealed = FernetSecretBox(key).encrypt(b"secret")
    assert FernetSecretBox(load_or_create_key(data_dir, None)).decrypt(sealed) == b"secret"


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = set(pool.map(lambda _: load_or_create_key(tmp_path, None), range(16)))
    assert len(keys) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]


def test_environment_key_wins(tmp_path: Path) -> None:
    env_key = Fernet.generate_key().decode()
    assert load_or_create_key(tmp_path, f" {env_key}\n") == env_key.encode()
    assert not (tmp_path / KEY_FILE).exists()

    load_or_create_key(tmp_path, None)
    assert load_or_create_key(tmp_path, env_key) == env_key.encode()


def test_invalid_keys_are_refused_without_echoing_them(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyError, match="IMAGEDEPOT_SECRET_KEY") as raised:
        load_or_create_key(tmp_path, "hunter2")
    assert "hunter2" not in str(raised.value)
    (tmp_path / KEY_FILE).write_text("garbage\n")
    with pytest.raises(SecretKeyError, match=KEY_FILE):
        load_or_create_key(tmp_path, None)


def test_a_wrong_key_does_not_decrypt() -> None:
    sealed = FernetSecretBox(Fernet.generate_key()).encrypt(b"secret")
    with pytest.raises(SecretUndecryptable):
        FernetSecretBox(Fernet.generate_key()).decrypt(sealed)
    with pytest.raises(ValueError, match="cannot be decrypted"):
        FernetSecretBox(Fernet.generate_key()).decrypt(b"not a token")


def test_rotation_with_several_keys() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    sealed_old = FernetSecretBox(old).encrypt(b"secret")
    rotating = FernetSecretBox(new + b"," + old)
    assert rotating.decrypt(sealed_old) == b"secret"
    resealed = rotating.rotate(sealed_old)
    assert FernetSecretBox(new).decrypt(resealed) == b"secret"
    assert FernetSecretBox(new).decrypt(rotating.encrypt(b"fresh")) == b"fresh"
    with pytest.raises(SecretUndecryptable):
        FernetSecretBox(old).decrypt(rotating.encrypt(b"fresh"))


def test_a_box_following_the_key_file_picks_up_a_rotation(tmp_path: Path) -> None:
    old, new, foreign = Fernet.generate_key(), Fernet.generate_key(), Fernet.generate_key()
    (tmp_path / KEY_FILE).write_bytes(old + b"\n")
    running = FernetSecretBox(old, reload=key_source(tmp_path, None))
    sealed_before = running.encrypt(b"before")

    # Another process rotates: NEW,OLD while re-sealing, then NEW alone.
    (tmp_path / KEY_FILE).write_bytes(new + b"," + old + b"\n")
    sealed_new = FernetSecretBox(new).encrypt(b"after")
    assert running.decrypt(sealed_new) == b"after"  # re-read because it did not open
    (tmp_path / KEY_FILE).write_bytes(new + b"\n")
    assert FernetSecretBox(new).decrypt(running.encrypt(b"fresh")) == b"fresh"  # sealed under NEW
    with pytest.raises(SecretUndecryptable, match="cannot be decrypted"):
        running.decrypt(sealed_before)  # only OLD opens it, and the file dropped OLD
    with pytest.raises(SecretUndecryptable):
        running.decrypt(FernetSecretBox(foreign).encrypt(b"never ours"))

    # A key file being replaced (or broken) keeps the keys that worked.
    (tmp_path / KEY_FILE).write_text("garbage\n")
    assert running.decrypt(sealed_new) == b"after"
    (tmp_path / KEY_FILE).unlink()
    assert FernetSecretBox(new).decrypt(running.encrypt(b"still")) == b"still"


def test_keys_from_the_environment_are_not_re_read(tmp_path: Path) -> None:
    assert key_source(tmp_path, Fernet.generate_key().decode()) is None
    assert key_source(tmp_path, "  ") is not None

"""The keys dev mode keeps in its data folder when none is configured: the IP-hash key and the
receipt key, each generated once and shared by every process that starts on that folder
(production refuses to start without them: service/core/config.py)."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from service.core.config import MIN_KEY_LENGTH, Settings, check_receipt_key, is_strong_key


def dev_key_path(settings: Settings) -> Path:
    return settings.data_dir / "ip-hash.key"


class DevKeyError(ValueError):
    """A dev key file that holds no usable key (empty, cut short, not a key): said in one line
    naming the file, never used (an empty HMAC key is one anyone can compute). Or a data folder
    this user cannot make or write (`writable_folder`)."""


def writable_folder(folder: Path) -> Path:
    """`folder` (CONSENT_DATA_DIR, or a folder in it), made if need be; DevKeyError in one line
    when this user may not make or write it, where the OSError was a traceback."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise DevKeyError(
            f"CONSENT_DATA_DIR: {folder}: {exc.strerror or exc}: set it to a folder this user "
            "may write (the embedded PostgreSQL and the dev keys live there)"
        ) from None
    return folder


def ensure_dev_key(settings: Settings) -> tuple[SecretStr, bool]:
    """The dev-mode IP-hash key: generated once and kept in the data folder.

    Returns the key and whether it was just created. Only for dev mode: production refuses to start
    without `CONSENT_IP_HASH_SALT`, because a key that lives beside the data protects nothing.
    """

    def check(key: SecretStr) -> None:
        if not is_strong_key(key):
            raise ValueError(f"not a key of at least {MIN_KEY_LENGTH} random characters")

    return _generated_once(dev_key_path(settings), secrets.token_urlsafe(48), check)


def dev_receipt_key_path(settings: Settings) -> Path:
    return settings.data_dir / "receipt.key"


def ensure_dev_receipt_key(settings: Settings) -> tuple[SecretStr, bool]:
    """The dev-mode receipt key, generated once in the data folder (production requires
    CONSENT_RECEIPT_KEY); the key and whether it was just created."""

    # 32 random bytes in base64url: an Ed25519 seed.
    key = secrets.token_urlsafe(32)
    return _generated_once(dev_receipt_key_path(settings), key, check_receipt_key)


def _generated_once(
    path: Path, new_key: str, check: Callable[[SecretStr], None]
) -> tuple[SecretStr, bool]:
    """The key kept at `path`, or `new_key` written there (mode 0600) if there is none yet.

    Made whole before it appears: written to a file of its own, then linked as `path`, which
    fails if another process (a worker starting beside this one) linked its key first; that key
    is then read. A file that was there is checked (DevKeyError naming it); its folder need not
    be writable then (an auditor reading the service's folder)."""
    if not path.exists():
        writable_folder(path.parent)
        descriptor, written = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            _write(descriptor, new_key)  # mkstemp's mode: 0600
            try:
                os.link(written, path)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links (vfat, some network mounts)
                _write(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), new_key)
            return SecretStr(new_key), True
        except FileExistsError:
            pass  # another process made it first: its key is read below
        finally:
            os.unlink(written)
    key = SecretStr(path.read_text().strip())
    try:
        check(key)
    except ValueError as exc:
        raise DevKeyError(
            f"{path} does not hold a key ({exc}): put one there, or delete the file to have one"
            " generated"
        ) from None
    return key, False


def _write(descriptor: int, key: str) -> None:
    """`key` and a newline to the open file `descriptor`, on disk before it is closed. Where hard
    links are not had, the file is `path` itself, and a reader starting at that instant may find
    it still empty (DevKeyError)."""
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
        file.flush()
        os.fsync(file.fileno())

"""The keys dev mode keeps in its data folder (service/core/dev_keys.py): never an empty key,
one key for every process that starts on the folder, and a file that holds none said in one line."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.core.config import Settings
from service.core.dev_keys import DevKeyError, ensure_dev_key, ensure_dev_receipt_key
from service.core.hashing import hasher_from_settings
from service.ledger.receipts import receipt_signer_from_settings


def dev_settings(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # Set and empty, as `CONSENT_IP_HASH_SALT=` in .env.example or a shell: unset, not "".
    monkeypatch.setenv("CONSENT_IP_HASH_SALT", "")
    monkeypatch.setenv("CONSENT_RECEIPT_KEY", "")
    return Settings(env="dev", data_dir=folder)


def test_an_empty_key_setting_is_unset_and_dev_mode_uses_its_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty CONSENT_IP_HASH_SALT was an empty HMAC key: every address hashed under a key
    anyone can compute, and a command run from that shell found nothing `serve` stored."""
    settings = dev_settings(tmp_path, monkeypatch)
    assert (settings.ip_hash_salt, settings.receipt_key) == (None, None)
    hasher = hasher_from_settings(settings)
    stored = (tmp_path / "ip-hash.key").read_text().strip()
    assert hasher.current.secret == stored.encode()
    assert len(stored) >= 32
    assert hasher_from_settings(settings).current == hasher.current  # kept, not made again
    assert stat.S_IMODE((tmp_path / "ip-hash.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("make", [ensure_dev_key, ensure_dev_receipt_key])
def test_processes_starting_at_once_share_one_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: object
) -> None:
    """Workers generate the receipt key as they start: each made its own, and the file kept the
    last written, so receipts some of them signed could never be verified after a restart."""
    for round_ in range(20):
        settings = dev_settings(tmp_path / str(round_), monkeypatch)
        start = threading.Barrier(8)
        keys: list[SecretStr] = []

        def generate() -> None:
            start.wait()
            keys.append(make(settings)[0])  # type: ignore[operator]

        threads = [threading.Thread(target=generate) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({key.get_secret_value() for key in keys}) == 1
        [kept] = list((tmp_path / str(round_)).iterdir())  # no half-written file left beside it
        assert kept.read_text().strip() == keys[0].get_secret_value()


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("ip-hash.key", "", "not a key of at least 32 random characters"),
        ("ip-hash.key", "secret\n", "not a key of at least 32 random characters"),
        ("receipt.key", "garbage\n", "a receipt key is 32 random bytes in base64url (43 characters)"),
    ],
)  # fmt: skip
def test_a_key_file_that_holds_no_key_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, content: str, reason: str
) -> None:
    settings = dev_settings(tmp_path, monkeypatch)
    (tmp_path / name).write_text(content)
    load = hasher_from_settings if name == "ip-hash.key" else receipt_signer_from_settings
    with pytest.raises(DevKeyError) as refused:
        load(settings)
    assert str(refused.value) == (
        f"{tmp_path / name} does not hold a key ({reason}): put one there, or delete the file to"
        " have one generated"
    )


def test_a_file_system_without_hard_links_still_gets_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`os.link` fails on vfat and some network mounts: the key is then created in place,
    exclusively (a traceback before)."""
    settings = dev_settings(tmp_path, monkeypatch)

    def no_links(source: str, target: str) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("os.link", no_links)
    key, created = ensure_dev_receipt_key(settings)
    assert created
    assert (tmp_path / "receipt.key").read_text().strip() == key.get_secret_value()
    assert ensure_dev_receipt_key(settings) == (key, False)
    assert [path.name for path in tmp_path.iterdir()] == ["receipt.key"]


def test_a_data_folder_that_cannot_be_made_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CONSENT_DATA_DIR where this user may not make a folder (here: under a file, which stops
    root too): every command says so in one line and exits 2, where it was a traceback."""
    from typer.testing import CliRunner

    from service.cli import app as cli

    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    folder = blocker / "data"
    env = {
        "CONSENT_DATA_DIR": str(folder),
        "CONSENT_DATABASE_URL": None,
        "CONSENT_IP_HASH_SALT": None,
    }
    for command in (["keys", "list"], ["dsr", "history", "--ip", "192.0.2.1"]):
        result = CliRunner().invoke(cli, command, env=env)
        assert result.exit_code == 2, result.output
        assert result.stderr == (
            f"error: CONSENT_DATA_DIR: {folder}: Not a directory: set it to a folder this user "
            "may write (the embedded PostgreSQL and the dev keys live there)\n"
        )
    with pytest.raises(DevKeyError, match="Not a directory"):
        ensure_dev_key(Settings(data_dir=folder))


def test_a_key_already_made_is_read_from_a_folder_this_user_may_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An auditor's account reading the service's data folder: the key is there, nothing needs
    writing, so the folder is not required to be writable."""
    import service.core.dev_keys as dev_keys

    settings = Settings(data_dir=tmp_path)
    made, _ = ensure_dev_key(settings)

    def not_writable(folder: Path) -> Path:
        raise DevKeyError(f"{folder} is read-only here")

    monkeypatch.setattr(dev_keys, "writable_folder", not_writable)
    again, created = ensure_dev_key(settings)
    assert (again.get_secret_value(), created) == (made.get_secret_value(), False)

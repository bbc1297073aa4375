"""Backend selection from settings and plugin discovery through the `reelhouse.storage` entry points."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from reelhouse.config import Settings
from reelhouse.core.storage import (
    ENTRY_POINT_GROUP,
    Storage,
    StorageError,
    available_backends,
    load_backend,
    open_storage,
)
from reelhouse.core.storage.fs import FsStorage
from reelhouse.core.storage.s3 import S3Storage


def make_settings(tmp_path: Path, **storage: str) -> Settings:
    return Settings(
        server={"DATA_DIR": str(tmp_path / "data"), "PUBLIC_BASE_URL": "https://media.example"},
        security={"MASTER_ENCRYPTION_KEY": ""},
        storage=storage,
    )


async def test_fs_is_the_default_under_data_dir(tmp_path: Path) -> None:
    storage = open_storage(make_settings(tmp_path, SIGNED_URL_TTL="90s"))
    assert isinstance(storage, FsStorage) and isinstance(storage, Storage)
    assert storage.root == (tmp_path / "data" / "objects").resolve()
    await storage.put("a.txt", b"x")
    assert (tmp_path / "data" / "objects" / "a.txt").read_bytes() == b"x"
    assert storage.default_ttl == timedelta(seconds=90)


async def test_fs_signing_secret_comes_from_master_key_or_caller(tmp_path: Path) -> None:
    without_key = open_storage(make_settings(tmp_path))
    with pytest.raises(StorageError, match="MASTER_ENCRYPTION_KEY"):
        await without_key.signed_url("a.txt", 60)

    settings = make_settings(tmp_path)
    settings.security.master_encryption_key = "a-master-key"
    url = await open_storage(settings).signed_url("a.txt", 60)
    assert url.startswith("https://media.example/files/a.txt?exp=")
    again = await open_storage(settings).signed_url("a.txt", 60)
    other = await open_storage(settings, signing_secret=b"explicit").signed_url("a.txt", 60)
    assert url.split("sig=")[1] == again.split("sig=")[1] != other.split("sig=")[1]


def test_s3_is_configured_from_settings(tmp_path: Path) -> None:
    storage = open_storage(
        make_settings(
            tmp_path,
            STORAGE_BACKEND="s3",
            S3_BUCKET="media",
            S3_ENDPOINT="http://127.0.0.1:9",
            S3_REGION="eu-west-3",
            S3_ACCESS_KEY_ID="AKIDEXAMPLE",
            S3_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG",
            S3_MULTIPART_CHUNK_MB="32",
        )
    )
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.endpoint_url, storage.region) == ("media", "http://127.0.0.1:9", "eu-west-3")
    assert storage.part_size == 32 * 1024 * 1024
    assert "wJalrXUtnFEMI" not in repr(storage)


def test_s3_without_bucket_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="S3_BUCKET"):
        open_storage(make_settings(tmp_path, STORAGE_BACKEND="s3"))


async def test_s3_presign_lifetime_is_capped_at_seven_days() -> None:
    storage = S3Storage(bucket="b", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(StorageError, match="7 days"):
        await storage.signed_url("a.mp4", timedelta(days=8))
    await storage.aclose()


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(StorageError) as excinfo:
        load_backend("ftp")
    assert "'ftp'" in str(excinfo.value) and "fs" in str(excinfo.value) and "s3" in str(excinfo.value)


PLUGIN = textwrap.dedent(
    """
    from reelhouse.core.storage.fs import FsStorage

    def make(settings, *, signing_secret=None):
        return FsStorage(settings.server.data_dir / "plugin-objects", signing_secret=signing_secret)

    def not_a_storage(settings, *, signing_secret=None):
        return object()
    """
)


@pytest.fixture
def plugin_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install a real distribution (module + dist-info with entry points) on sys.path."""
    site = tmp_path / "site"
    dist_info = site / "reelhouse_demo_storage-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (site / "reelhouse_demo_storage.py").write_text(PLUGIN)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: reelhouse-demo-storage\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "demo = reelhouse_demo_storage:make\n"
        "bogus = reelhouse_demo_storage:not_a_storage\n"
        "broken = reelhouse_demo_storage:does_not_exist\n"
    )
    monkeypatch.syspath_prepend(str(site))


@pytest.mark.usefixtures("plugin_on_path")
async def test_third_party_backend_is_found_through_entry_points(tmp_path: Path) -> None:
    assert {"demo", "fs", "s3"} <= set(available_backends())
    settings = make_settings(tmp_path)
    settings.storage.storage_backend = "demo"  # type: ignore[assignment]
    storage = open_storage(settings, signing_secret=b"k")
    await storage.put("x.bin", b"plugin")
    assert (tmp_path / "data" / "plugin-objects" / "x.bin").read_bytes() == b"plugin"


@pytest.mark.usefixtures("plugin_on_path")
def test_broken_plugins_are_named(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"'broken'.*does_not_exist"):
        load_backend("broken")
    settings = make_settings(tmp_path)
    settings.storage.storage_backend = "bogus"  # type: ignore[assignment]
    with pytest.raises(StorageError, match="does not implement the Storage protocol"):
        open_storage(settings)

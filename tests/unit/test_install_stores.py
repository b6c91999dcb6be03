"""The installer's image-only stores on the volume: found whole, or not
used; one planted as a link, or made for another image, is never shared
into an installer VM."""

from pathlib import Path

import pytest

from bootc_box.cache_entries import write_manifest
from bootc_box.environment import Environment
from bootc_box.install_stores import (
    GRAPH,
    StoreManifest,
    entry_problem,
    prune_install_stores,
    store_entries,
    store_key,
)

NATIVE = Environment(in_box=False)
IMAGE_ID = "ab" * 32


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg/bootc-box/install-stores"


def made(image_id: str = IMAGE_ID, key: str | None = None) -> Path:
    entry = store_entries(NATIVE).entry(key or store_key(image_id))
    (entry / GRAPH).mkdir(parents=True)
    write_manifest(entry, StoreManifest(image_id, "t"))
    return entry


def test_a_store_is_keyed_by_the_image_id_with_or_without_its_prefix() -> None:
    assert store_key(f"sha256:{IMAGE_ID}") == store_key(IMAGE_ID) == IMAGE_ID


def test_a_whole_store_is_found_and_a_wrong_one_says_why(tmp_path: Path) -> None:
    assert entry_problem(made(), IMAGE_ID) is None
    other = made("cd" * 32, key="ef" * 32)
    assert entry_problem(other, "ef" * 32) == "its manifest is for another image"
    assert entry_problem(store_entries(NATIVE).entry("00" * 32), "00" * 32) == "it is not there"


def test_a_graph_planted_as_a_link_is_not_shared(tmp_path: Path) -> None:
    entry = made()
    (entry / GRAPH).rmdir()
    (tmp_path / "host-secrets").mkdir()
    (entry / GRAPH).symlink_to(tmp_path / "host-secrets")
    assert entry_problem(entry, IMAGE_ID) == f"its {GRAPH} is not a directory"


def test_prune_keeps_the_stores_of_images_still_there(cache: Path) -> None:
    kept, gone = made(), made("cd" * 32)
    assert prune_install_stores(NATIVE, {f"sha256:{IMAGE_ID}"}) == 1
    assert kept.is_dir()
    assert not gone.exists()

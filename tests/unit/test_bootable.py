import pytest

from bootc_box.bootable import BootableImage, ago, human_size, render_bootable, split_name
from bootc_box.cache import CachedImage
from bootc_box.kernel import Kernel


@pytest.mark.parametrize(
    ("name", "columns"),
    [
        ("quay.io/fedora/fedora-bootc:42", ("quay.io/fedora/fedora-bootc", "42")),
        ("localhost:5000/os", ("localhost:5000/os", "<none>")),
        ("localhost:5000/os:v1", ("localhost:5000/os", "v1")),
        ("<none>", ("<none>", "<none>")),
    ],
)
def test_names_split_as_podman_shows_them(name: str, columns: tuple[str, str]) -> None:
    assert split_name(name) == columns


@pytest.mark.parametrize(
    ("age", "text"),
    [(0, "Now"), (59, "Less than a minute ago"), (60, "1 minute ago"), (7200, "2 hours ago"),
     (86400 * 3 + 5, "3 days ago")],
)  # fmt: skip
def test_ages_read_as_podman_writes_them(age: int, text: str) -> None:
    assert ago(1000, 1000 + age) == text


def test_sizes() -> None:
    assert [human_size(n) for n in (512, 297_412_000, 1_530_000_000)] == [
        "512 B", "297 MB", "1.53 GB"
    ]  # fmt: skip


def test_each_name_is_a_row_with_the_kernel() -> None:
    image = CachedImage(("localhost/os:a", "localhost/os:b"), "b6982cc6780a" + "0" * 52,
                        297_000_000, "host", 1000, {"containers.bootc": "1"})  # fmt: skip
    table = render_bootable([BootableImage(image, (Kernel("6.12.0"),))], 1000 + 3600).splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "KERNEL", "STORE", "CREATED",
                                "SIZE"]  # fmt: skip
    assert table[1].split() == ["localhost/os", "a", "b6982cc6780a", "6.12.0", "host", "1", "hour",
                                "ago", "297", "MB"]  # fmt: skip
    assert table[2].split()[1] == "b"
    assert BootableImage(image, ()).labelled

from pathlib import Path

import pytest

from bootc_box.errors import BootcBoxError
from bootc_box.kargs import image_kargs, parse_kargs_file


def image_with(tmp_path: Path, files: dict[str, str]) -> Path:
    directory = tmp_path / "usr/lib/bootc/kargs.d"
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return tmp_path


def test_files_apply_in_name_order_and_only_for_their_architecture(tmp_path: Path) -> None:
    root = image_with(tmp_path, {
        "20-b.toml": 'kargs = ["b=2", "c"]\n',
        "10-a.toml": 'kargs = ["a=1"]\nmatch-architectures = ["x86_64", "aarch64"]\n',
        "15-arm.toml": 'kargs = ["arm"]\nmatch-architectures = ["aarch64"]\n',
        "README": "not a toml file, not read",
    })  # fmt: skip
    assert image_kargs(root, "img") == ("a=1", "b=2", "c")
    assert image_kargs(root, "img", arch="aarch64") == ("a=1", "arm", "b=2", "c")


def test_an_image_without_kargs_d_adds_nothing(tmp_path: Path) -> None:
    assert image_kargs(tmp_path, "img") == ()


def test_a_link_to_an_absolute_path_stays_in_the_image(tmp_path: Path) -> None:
    root = image_with(tmp_path, {})
    (root / "etc").mkdir()
    (root / "etc/k.toml").write_text('kargs = ["from-image"]\n')
    (root / "usr/lib/bootc/kargs.d/10-k.toml").symlink_to("/etc/k.toml")
    assert image_kargs(root, "img") == ("from-image",)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('kargs = "quiet"\n', "kargs must be a list of strings"),
        ('karg = ["quiet"]\n', "unknown key 'karg'"),
        ("match-architectures = ['x86_64']\n", "kargs must be a list of strings"),
        ('kargs = ["a"]\nmatch-architectures = "x86_64"\n', "must be a list of strings"),
        ("kargs = [\n", "Invalid value"),
    ],
)
def test_a_bad_file_is_refused_naming_it(tmp_path: Path, text: str, why: str) -> None:
    root = image_with(tmp_path, {"10-bad.toml": text})
    with pytest.raises(BootcBoxError) as raised:
        image_kargs(root, "localhost/img")
    assert raised.value.message.startswith(
        "localhost/img has a bad /usr/lib/bootc/kargs.d/10-bad.toml ("
    )
    assert why in raised.value.message
    assert raised.value.hint == "fix it in the image: bootc would refuse it too"


def test_parse_keeps_the_order_within_a_file() -> None:
    assert parse_kargs_file('kargs = ["z", "a"]\n', "x86_64") == ("z", "a")

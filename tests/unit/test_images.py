import pytest

from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.images import ImageRef, parse_image_ref, resolve_image


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("quay.io/org/img:1", ImageRef("quay.io/org/img:1")),
        ("localhost/fixture", ImageRef("localhost/fixture")),
        ("oci-archive:/tmp/a.tar", ImageRef("/tmp/a.tar", "oci-archive")),
        ("oci:/srv/layout:v1", ImageRef("/srv/layout:v1", "oci")),
        ("docker-archive:/tmp/d.tar", ImageRef("/tmp/d.tar", "docker-archive")),
    ],
)
def test_parse(text: str, ref: ImageRef) -> None:
    assert parse_image_ref(text) == ref
    assert str(ref) == text


def test_path_of_a_layout_with_a_reference() -> None:
    assert parse_image_ref("oci:/srv/layout:v1").path == "/srv/layout"


@pytest.mark.parametrize("text", ["", "oci-archive:"])
def test_empty_references_are_refused(text: str) -> None:
    with pytest.raises(BootcBoxError):
        parse_image_ref(text)


def test_missing_archive_in_the_box_says_to_mount_it() -> None:
    with pytest.raises(BootcBoxError, match=r"/nonexistent\.tar does not exist") as err:
        resolve_image(parse_image_ref("oci-archive:/nonexistent.tar"), Environment(in_box=True))
    assert err.value.hint == "mount it into the box, e.g. -v /nonexistent.tar:/nonexistent.tar:ro"


def test_missing_image_hint_in_the_box_shows_how_to_share_host_images() -> None:
    assert "-v /var/lib/containers/storage:" in Environment(in_box=True).missing_image_hint
    assert "podman" in Environment(in_box=False).missing_image_hint

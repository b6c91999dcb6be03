from pathlib import Path

import pytest

from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.images import (
    ImageRef,
    PullOptions,
    PullPolicy,
    parse_image_ref,
    pull_argv,
    pull_failure,
    resolve_image,
)


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
        resolve_image(
            parse_image_ref("oci-archive:/nonexistent.tar"), Environment(in_box=True), PullOptions()
        )
    assert err.value.hint == "mount it into the box, e.g. -v /nonexistent.tar:/nonexistent.tar:ro"


def test_missing_image_hint_in_the_box_shows_how_to_share_host_images() -> None:
    assert "-v /var/lib/containers/storage:" in Environment(in_box=True).missing_image_hint
    assert "--pull=missing" in Environment(in_box=False).missing_image_hint


def test_pull_leaves_tls_to_podman_unless_told_and_passes_files_not_secrets() -> None:
    """podman verifies by default; saying so would override a registries.conf
    mirror marked insecure, so --tls-verify goes to podman only when given."""
    ref = parse_image_ref("registry.example:5000/org/img:1")
    assert pull_argv(ref, PullOptions()) == ["pull", "registry.example:5000/org/img:1"]
    assert pull_argv(ref, PullOptions(tls_verify=True))[1] == "--tls-verify=true"
    argv = pull_argv(
        ref, PullOptions(PullPolicy.ALWAYS, False, Path("/certs"), Path("/run/auth.json"))
    )
    assert argv[1:6] == [
        "--tls-verify=false", "--cert-dir", "/certs", "--authfile", "/run/auth.json"
    ]  # fmt: skip


def test_untrusted_certificate_names_both_ways_out() -> None:
    message = (
        "initializing source docker://127.0.0.1:5000/f:latest: pinging container registry "
        '127.0.0.1:5000: Get "https://127.0.0.1:5000/v2/": tls: failed to verify certificate: '
        "x509: certificate signed by unknown authority"
    )
    error = pull_failure(parse_image_ref("127.0.0.1:5000/f:latest"), message)
    assert str(error) == (
        "cannot pull 127.0.0.1:5000/f:latest: the registry's TLS certificate is not trusted "
        "(x509: certificate signed by unknown authority); pass the registry's CA with "
        "--cert-dir DIR (DIR/ca.crt), or --tls-verify=false"
    )


def test_a_registry_wanting_a_login_names_the_authfile() -> None:
    message = (
        "initializing source docker://127.0.0.1:5000/f:latest: reading manifest latest in "
        "127.0.0.1:5000/f: authentication required"
    )
    error = pull_failure(parse_image_ref("127.0.0.1:5000/f:latest"), message)
    assert str(error) == (
        "cannot pull 127.0.0.1:5000/f:latest: the registry wants credentials "
        "(authentication required); log in with podman login and pass --authfile FILE "
        "(or set REGISTRY_AUTH_FILE)"
    )


def test_unknown_pull_failures_keep_podmans_words() -> None:
    error = pull_failure(parse_image_ref("x/y"), "something new")
    assert str(error) == "cannot pull x/y: something new"

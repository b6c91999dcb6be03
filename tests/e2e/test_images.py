"""The images users bring, booted as they are: a UKI-only image (no vmlinuz,
the UKI's own command line naming a root bootc-box must replace); and
guests that cannot come up, which must say why at once."""

import json
import subprocess

import pytest

from tests.e2e.conftest import FIXTURE, UKI, CacheVolume, box_argv, host_state


def test_a_uki_only_image_boots_with_its_command_line_and_our_root(
    cache_volume: CacheVolume,
) -> None:
    script = "cat /proc/cmdline; test ! -e /usr/lib/modules/*/vmlinuz && echo no-vmlinuz; exit 3"
    # --warm never: a state saved for an image booted once is no use here.
    result = subprocess.run(
        box_argv(
            *("run", "--accel", "tcg", "--warm", "never", UKI, "--", "sh", "-c", script),
            volume=cache_volume.name,
            options=("--rm",),
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 3, result.stderr
    cmdline, shown = result.stdout.split()[:-1], result.stdout.split()[-1]
    assert shown == "no-vmlinuz"
    # The UKI's own argument is kept; its root=, rw and console= are not.
    assert "bootc_box.uki_marker=1" in cmdline
    assert "root=virtiofs:rootfs" in cmdline
    assert not {"root=LABEL=not-this-one", "rw", "console=tty0"} & set(cmdline)
    listed = subprocess.run(
        box_argv("images", "--json", volume=cache_volume.name, options=("--rm",)),
        capture_output=True,
        text=True,
        check=True,
    )
    [uki] = [i for i in json.loads(listed.stdout) if UKI in i["names"]]
    assert uki["uki"] is True


@pytest.mark.parametrize(
    ("karg", "message"),
    [
        (
            "systemd.unit=emergency.target",
            "bootc-box: error: the guest stopped in an emergency shell "
            "(console: 'You are in emergency mode.",
        ),
        (
            "systemd.mask=ssh.service",
            "bootc-box: error: the guest finished booting but its sshd did not answer within",
        ),
    ],
    ids=["emergency", "masked-sshd"],
)
def test_a_guest_that_cannot_come_up_says_why_long_before_the_timeout(
    karg: str, message: str, cache_volume: CacheVolume
) -> None:
    before = host_state()
    result = subprocess.run(
        box_argv(
            *("run", "--accel", "tcg", "--warm", "never", "--karg", karg, FIXTURE, "--", "true"),
            volume=cache_volume.name,
            options=("--rm",),
        ),
        capture_output=True,
        text=True,
        check=False,
        # Well inside --timeout's 600 s: waiting it out fails the test.
        timeout=300,
    )
    assert result.returncode == 125
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(message)
    assert "Traceback" not in result.stderr
    assert cache_volume.leftovers() == []
    after = host_state()
    assert after.processes <= before.processes
    assert after.mounts <= before.mounts

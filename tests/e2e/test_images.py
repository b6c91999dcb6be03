"""The images users bring, booted as they are: a UKI-only image (no vmlinuz,
the UKI's own command line naming a root bootc-box must replace); and
guests that cannot come up, which must say why at once."""

import json
import subprocess

import pytest

from tests.e2e.conftest import FIXTURE, UKI, CacheVolume, assert_refused_cleanly, box_argv


def test_a_uki_only_image_without_sshd_runs_commands_over_serial_warm_too(
    cache_volume: CacheVolume,
) -> None:
    """One image that differs from the fixture both ways (tests/fixtures/uki):
    its UKI is cut up and booted with its own kernel arguments but our root,
    and the command runs over virtio-serial: output streamed, exit status
    kept; the second run restores the state the first saved."""

    def run(*args: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(
            box_argv("run", "--accel", "tcg", *args, volume=cache_volume.name, options=("--rm",)),
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )

    script = (
        "cat /proc/cmdline; echo to-stderr >&2; "
        "test ! -e /usr/lib/modules/*/vmlinuz && test ! -e /usr/sbin/sshd && echo no-sshd; exit 3"
    )
    cold = run("--warm", "always", UKI, "--", "sh", "-c", script)
    assert cold.returncode == 3, cold.stderr
    cmdline, shown = cold.stdout.splitlines()
    assert shown == "no-sshd"
    args = cmdline.split()
    # The UKI's own argument is kept; its root=, rw and console= are not.
    assert "bootc_box.uki_marker=1" in args
    assert "root=virtiofs:rootfs" in args
    assert not {"root=LABEL=not-this-one", "rw", "console=tty0"} & set(args)
    assert "systemd.wants=bootc-box-exec.service" in args
    assert "to-stderr" in cold.stderr.splitlines()
    assert "Saved the VM's state for the next runs" in cold.stderr
    warm = run(UKI, "--", "echo restored; exit 4")
    assert warm.returncode == 4, warm.stderr
    assert warm.stdout == "restored\n"
    assert f"Restoring {UKI} from its saved state" in warm.stderr
    assert "booting cold" not in warm.stderr
    # A shell needs a login, which needs sshd: refused before anything boots.
    shell = run(UKI)
    assert shell.returncode == 125
    assert f"error: {UKI} has no sshd: bootc-box can only run a command in it" in shell.stderr
    assert cache_volume.leftovers() == []
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
    argv = box_argv(
        *("run", "--accel", "tcg", "--warm", "never", "--karg", karg, FIXTURE, "--", "true"),
        volume=cache_volume.name,
        options=("--rm",),
    )
    assert_refused_cleanly(argv, message, cache_volume)

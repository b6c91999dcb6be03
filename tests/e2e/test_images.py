"""The images users bring, booted as they are: a UKI-only image (no vmlinuz,
the UKI's own command line naming a root bootc-box must replace)."""

import json
import subprocess

from tests.e2e.conftest import UKI, CacheVolume, box_argv


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

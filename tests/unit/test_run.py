from pathlib import Path

from bootc_box.run import guest_stalled

# What the fixture's 6.12 kernel printed when a TCG vCPU stopped getting ticks.
STALL = b"""[   26.081384] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[   26.082622] rcu: \t1-...!: (0 ticks this GP) idle=bc00/0/0x0 softirq=13/13 fqs=0
"""


def test_a_stalled_guest_is_recognised_from_its_console(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    assert not guest_stalled(console)  # QEMU has not created it yet
    console.write_bytes(b"[    5.58] virtiofs virtio1: virtio_fs_setup_dax: No cache capability\n")
    assert not guest_stalled(console)
    console.write_bytes(STALL)
    assert guest_stalled(console)

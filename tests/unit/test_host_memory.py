"""Whether the host has room for a guest's memory, on /proc and cgroup
files written here."""

from pathlib import Path

from bootc_box.host_memory import MiB, cgroup_headroom, meminfo_available, memory_problem

MEMINFO = "MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:    3072000 kB\n"


def test_available_memory_is_memavailable_not_memfree() -> None:
    assert meminfo_available(MEMINFO) == 3000 * MiB
    assert meminfo_available("MemTotal: 1 kB\n") is None


def test_the_tightest_limit_of_the_cgroup_and_its_ancestors_counts(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    leaf = root / "machine.slice/libpod-abc.scope"
    leaf.mkdir(parents=True)
    (root / "machine.slice/memory.max").write_text(f"{4096 * MiB}\n")
    (root / "machine.slice/memory.current").write_text(f"{1024 * MiB}\n")
    (root / "machine.slice/memory.stat").write_text("anon 1\ninactive_file 0\n")
    (leaf / "memory.max").write_text("max\n")
    (leaf / "memory.current").write_text(f"{512 * MiB}\n")
    assert cgroup_headroom(root, "0::/machine.slice/libpod-abc.scope\n") == 3072 * MiB
    (leaf / "memory.max").write_text(f"{1024 * MiB}\n")
    # Page cache the kernel can take back is not used up.
    (leaf / "memory.stat").write_text(f"anon {256 * MiB}\ninactive_file {128 * MiB}\n")
    assert cgroup_headroom(root, "0::/machine.slice/libpod-abc.scope\n") == 640 * MiB
    for odd in ("0::\n", "0::/../..\n", "", "0::/gone (deleted)\n"):
        assert cgroup_headroom(root, odd) in (None, 3072 * MiB)


def test_no_limit_and_no_cgroup_v2_mean_no_headroom_to_heed(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text("0\n")
    assert cgroup_headroom(tmp_path, "0::/\n") is None
    assert cgroup_headroom(tmp_path, "1:memory:/user.slice\n") is None


def test_a_guest_bigger_than_what_is_free_is_refused_naming_what_is() -> None:
    assert memory_problem(2048, 3000 * MiB, None) is None
    assert memory_problem(4096, 3000 * MiB, None) == (
        "the VM's 4096 MiB of memory is more than this host has free (3000 MiB)"
    )
    assert memory_problem(2048, 3000 * MiB, 1000 * MiB) == (
        "the VM's 2048 MiB of memory is more than the memory limit of this container leaves"
        " free (1000 MiB)"
    )
    assert memory_problem(2048, None, None) is None

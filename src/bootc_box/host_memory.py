"""Whether the host has room for a guest's memory: a guest that grows into
more than the host has free gets a process killed by the OOM killer, which
may be another guest or any other process, long after the run started."""

from pathlib import Path

from bootc_box.errors import BootcBoxError

MiB = 2**20


def meminfo_available(meminfo: str) -> int | None:
    """MemAvailable from /proc/meminfo's text, in bytes."""
    for line in meminfo.splitlines():
        name, _, value = line.partition(":")
        if name == "MemAvailable" and value.split() and value.split()[0].isdigit():
            return int(value.split()[0]) * 1024
    return None


def cgroup_free(directory: Path) -> int | None:
    """What one cgroup's memory.max leaves: memory.current counts the page
    cache, which the kernel takes back before it kills, so its inactive
    files count as free. None without a limit."""
    try:
        limit = (directory / "memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int((directory / "memory.current").read_text())
        stat = dict(
            line.split(maxsplit=1) for line in (directory / "memory.stat").read_text().splitlines()
        )
        reclaimable = int(stat.get("inactive_file", "0"))
        return max(int(limit) - used + reclaimable, 0)
    except (OSError, ValueError):
        return None


def cgroup_headroom(cgroup_root: Path, proc_cgroup: str) -> int | None:
    """How much more memory this process's cgroup and its ancestors let it
    use (the least of memory.max - memory.current), in bytes; None with no
    limit (or no cgroup v2)."""
    path = next((line[3:] for line in proc_cgroup.splitlines() if line.startswith("0::")), None)
    if path is None:
        return None
    headroom = None
    directory = cgroup_root / path.strip().lstrip("/")
    while True:
        left = cgroup_free(directory)
        if left is not None:
            headroom = left if headroom is None else min(headroom, left)
        if directory == cgroup_root or cgroup_root not in directory.parents:
            return headroom
        directory = directory.parent


def memory_problem(memory_mib: int, available: int | None, headroom: int | None) -> str | None:
    """Why a guest of `memory_mib` does not fit, or None when it does."""
    room = min((n for n in (available, headroom) if n is not None), default=None)
    if room is None or memory_mib * MiB <= room:
        return None
    where = "this host has" if room == available else "the memory limit of this container leaves"
    return f"the VM's {memory_mib} MiB of memory is more than {where} free ({room // MiB} MiB)"


def check_host_memory(memory_mib: int) -> None:
    """Refuse a guest whose memory the host cannot give it."""
    try:
        available = meminfo_available(Path("/proc/meminfo").read_text())
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        return
    problem = memory_problem(
        memory_mib, available, cgroup_headroom(Path("/sys/fs/cgroup"), proc_cgroup)
    )
    if problem:
        raise BootcBoxError(problem, "give it less with --memory, or stop other VMs first")

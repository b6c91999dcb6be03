"""Running a command without sshd: choosing the transport, what the guest is
given, the line the host sends, and the host's ends of the ports (real
sockets standing in for QEMU's: the guest side is tests/e2e/test_images.py)."""

import base64
import dataclasses
import io
import shlex
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootc_box.assembly import Prepared, vm_spec
from bootc_box.boot import KernelBoot
from bootc_box.boot_failures import FailureWatch
from bootc_box.credentials import new_login
from bootc_box.errors import BootcBoxError
from bootc_box.qemu import Accel, qemu_argv
from bootc_box.run_spec import ImageSource, RunSpec, Transport
from bootc_box.serial_exec import (
    GUEST_SCRIPT,
    GUEST_UNIT,
    KARG,
    Session,
    StreamEnd,
    choose_transport,
    command_line,
    find_systemd_version,
    guest_credentials,
    image_has_sshd,
    parse_status,
    serial_ports,
    start_output_copies,
    wants_agent,
)
from bootc_box.snapshots import machine_argv
from tests.unit.test_launch import credential_value


def add_sshd(root: Path) -> None:
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/sshd").write_bytes(b"\x7fELF")


def test_an_image_without_sshd_is_run_over_serial_unless_told(tmp_path: Path) -> None:
    assert not image_has_sshd(tmp_path)
    assert choose_transport(Transport.AUTO, tmp_path, "img", needs_login=False) is Transport.SERIAL
    assert choose_transport(Transport.SSH, tmp_path, "img", needs_login=False) is Transport.SSH
    add_sshd(tmp_path)
    assert image_has_sshd(tmp_path)
    assert choose_transport(Transport.AUTO, tmp_path, "img", needs_login=False) is Transport.SSH
    assert choose_transport(Transport.SERIAL, tmp_path, "img", needs_login=False) is (
        Transport.SERIAL
    )


def test_an_sshd_link_is_followed_inside_the_image_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/sbin").mkdir(parents=True)
    add_sshd(tmp_path / "host")  # /usr/sbin/sshd of "the host"
    (root / "usr/sbin/sshd").symlink_to(tmp_path / "host/usr/sbin/sshd")
    assert not image_has_sshd(root)


def test_a_shell_or_a_vm_that_stays_up_without_sshd_is_refused_with_the_way_out(
    tmp_path: Path,
) -> None:
    with pytest.raises(
        BootcBoxError, match=r"^img has no sshd: bootc-box can only run a command"
    ) as refused:
        choose_transport(Transport.AUTO, tmp_path, "img", needs_login=True)
    assert refused.value.hint == (
        "give the command: bootc-box run img -- CMD, or add openssh-server to the image"
    )
    assert RunSpec(ImageSource("img")).needs_login
    assert RunSpec(ImageSource("img"), detach=True, command=("x",)).needs_login
    assert not RunSpec(ImageSource("img"), command=("x",), tty=True).needs_login


def test_the_command_goes_as_ssh_would_pass_it_with_the_hosts_time() -> None:
    command = ("sh", "-c", "echo 'a b' $HOME; exit 3")
    line = command_line(command, 1733380000.7, b"f00d").decode()
    now, token, encoded = line.rstrip("\n").split(" ")
    assert (now, token) == ("1733380000.700", "f00d")
    assert base64.b64decode(encoded).decode() == shlex.join(command)
    # One argument is a command line for the guest's shell, as over ssh.
    one = command_line(("echo a; exit 4",), 0, b"f00d").decode().split(" ")[2]
    assert base64.b64decode(one).decode() == "echo a; exit 4"
    assert command_line(("x",) * 1000, 0, b"f00d").count(b"\n") == 1


@pytest.mark.parametrize(
    ("line", "status"),
    [("exit 0", 0), ("exit 3", 3), ("exit 255", 255), ("exit 256", None), ("exit -1", None),
     ("exit", None), ("ready", None), ("exit 1x", None)],
)  # fmt: skip
def test_the_exit_status_line(line: str, status: int | None) -> None:
    assert parse_status(line) == status


def test_the_guest_gets_its_unit_and_script_as_credentials_and_the_karg(tmp_path: Path) -> None:
    unit, script = guest_credentials(tmp_path)
    assert unit.read_text().startswith(
        "io.systemd.credential.binary:systemd.extra-unit.bootc-box-exec.service="
    )
    assert credential_value(unit).decode() == GUEST_UNIT
    assert credential_value(script).decode() == GUEST_SCRIPT
    assert "ImportCredential=bootc-box.exec" in GUEST_UNIT
    assert KARG == "systemd.wants=bootc-box-exec.service"
    assert oct(unit.stat().st_mode & 0o777) == "0o600"


def serial_machine(tmp_path: Path, workdir: Path) -> list[str]:
    login = new_login(tmp_path)
    boot = KernelBoot(Path("/k/vmlinuz"), Path("/k/initramfs.img"), Path("r.sock"), (KARG,))
    prepared = Prepared(
        login, "qemu", Accel.TCG, boot, transport=Transport.SERIAL,
        exec_credentials=guest_credentials(tmp_path),
    )  # fmt: skip
    spec = RunSpec(ImageSource("img"), command=("true",))
    return qemu_argv(vm_spec(spec, prepared, workdir, 2222), "qemu")


def test_a_serial_machine_has_three_ports_on_sockets_qemu_listens_on(tmp_path: Path) -> None:
    argv = serial_machine(tmp_path, Path("/w"))
    at = argv.index("virtio-serial-pci,id=ports")
    assert argv[at + 1 :][:12] == [
        "-chardev", "socket,id=port0,path=/w/control.sock,server=on,wait=off",
        "-device", "virtserialport,bus=ports.0,chardev=port0,name=org.bootc-box.control",
        "-chardev", "socket,id=port1,path=/w/stdout.sock,server=on,wait=off",
        "-device", "virtserialport,bus=ports.0,chardev=port1,name=org.bootc-box.stdout",
        "-chardev", "socket,id=port2,path=/w/stderr.sock,server=on,wait=off",
        "-device", "virtserialport,bus=ports.0,chardev=port2,name=org.bootc-box.stderr",
    ]  # fmt: skip
    assert sum(a.startswith("type=11,path=") for a in argv) == 4  # login's two, and ours
    assert serial_ports(Path("/w"))[0] == ("org.bootc-box.control", Path("/w/control.sock"))


def test_where_the_ports_live_is_not_part_of_the_saved_state_key(tmp_path: Path) -> None:
    login = new_login(tmp_path)
    boot = KernelBoot(Path("/k/vmlinuz"), Path("/k/initramfs.img"), Path("r.sock"), (KARG,))
    prepared = Prepared(login, "qemu", Accel.TCG, boot, transport=Transport.SERIAL)
    spec = RunSpec(ImageSource("img"), command=("true",))
    a = machine_argv(vm_spec(spec, prepared, Path("/run/a"), 1))
    b = machine_argv(vm_spec(spec, prepared, Path("/run/b"), 2))
    assert a == b
    assert "socket,id=port0,path=org.bootc-box.control.sock,server=on,wait=off" in a


@pytest.fixture
def session() -> Iterator[tuple[Session, list[socket.socket]]]:
    """The host's ends, and the far ends that stand in for QEMU's."""
    pairs = [socket.socketpair() for _ in range(3)]
    ours = Session(*(a for a, _ in pairs))
    yield ours, [b for _, b in pairs]
    for a, b in pairs:
        a.close()
        b.close()


def test_control_lines_come_whole_whatever_the_pieces(
    session: tuple[Session, list[socket.socket]],
) -> None:
    ours, (control, _, _) = session
    assert ours.line(0.05) is None
    control.sendall(b"rea")
    assert ours.line(0.05) is None
    control.sendall(b"dy\nstarted\nexit 3\n")
    assert [ours.line(1), ours.line(1), ours.line(1)] == ["ready", "started", "exit 3"]
    control.sendall(b"x" * 5000)
    with pytest.raises(BootcBoxError, match="longer than 4096 bytes"):
        ours.line(1)
    ours.pending = b""
    control.sendall(b"started\nready\n")
    assert not ours.said("ready", 1)
    assert ours.said("ready", 1)
    control.close()
    with pytest.raises(EOFError):
        ours.line(1)
    assert not ours.said("ready", 1)  # QEMU's exit is for the caller to see


TOKEN = b"0123456789abcdef"


@pytest.mark.parametrize("pieces", [1, 7, 4096])
def test_a_stream_ends_at_its_token_whatever_the_pieces(pieces: int) -> None:
    data = b"out" * 1000 + b"0123456789abcdeX" + b"tail" + TOKEN + b"after"
    end, passed = StreamEnd(TOKEN), b""
    for at in range(0, len(data), pieces):
        passed += end.feed(data[at : at + pieces])
    assert end.ended
    assert passed == b"out" * 1000 + b"0123456789abcdeX" + b"tail"
    assert end.feed(b"more") == b""


def test_output_that_cannot_begin_the_token_is_passed_on_at_once() -> None:
    """A long-running command's first line shows as it is written, not
    once 31 more bytes came; only what the token could go on from waits."""
    end = StreamEnd(TOKEN)
    assert end.feed(b"command-started\n") == b"command-started\n"
    assert end.feed(b"next " + TOKEN[:5]) == b"next "
    assert end.feed(TOKEN[5:9] + b"!") == TOKEN[:9] + b"!"
    assert not end.ended


def test_output_is_copied_whole_up_to_the_token(
    session: tuple[Session, list[socket.socket]],
) -> None:
    ours, (_, stdout, stderr) = session
    out, err = io.BytesIO(), io.BytesIO()
    big = bytes(range(256)) * 4096
    with start_output_copies(ours, out, err, TOKEN) as copies:
        writer = threading.Thread(target=stdout.sendall, args=(big + TOKEN,))
        writer.start()
        stderr.sendall(b"warning\n")
        assert not copies.wait(0.05)  # stderr has not ended
        stderr.sendall(TOKEN)
        writer.join()
        assert copies.wait(10)
    assert out.getvalue() == big
    assert err.getvalue() == b"warning\n"


def test_output_ends_when_qemu_closes_the_ports(
    session: tuple[Session, list[socket.socket]],
) -> None:
    ours, (_, stdout, stderr) = session
    out = io.BytesIO()
    with start_output_copies(ours, out, io.BytesIO(), TOKEN) as copies:
        stdout.sendall(b"cut short")
        stdout.close()
        stderr.close()
        assert copies.wait(10)
    assert out.getvalue() == b"cut short"


def test_output_copies_ended_early_do_not_wait_for_qemu(
    session: tuple[Session, list[socket.socket]],
) -> None:
    ours, (_, stdout, _) = session
    out = io.BytesIO()

    def interrupted() -> None:
        with start_output_copies(ours, out, io.BytesIO(), TOKEN):
            stdout.sendall(b"partial")
            raise KeyboardInterrupt  # QEMU still runs: its ends stay open

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert out.getvalue() in (b"", b"partial")


def test_a_guest_that_boots_but_never_starts_our_unit_says_what_it_needs(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_bytes(b"[  21.9] systemd[1]: Startup finished in 21.8s.\n")
    watch = FailureWatch(console, grace=10, serial=True)
    assert watch.failure(0) is None
    failure = watch.failure(10)
    assert failure is not None
    assert failure.message == (
        "the guest finished booting but bootc-box's command unit did not start within 10 s"
    )
    assert "systemd must be 256 or later" in str(failure.hint)
    console.write_bytes(
        b"systemd[1]: Failed to add dependency on bootc-box-exec.service, ignoring: Unit "
        b"bootc-box-exec.service not found.\n"
    )
    old = FailureWatch(console, serial=True).failure(0)
    assert old is not None
    assert old.message.startswith("the guest's systemd did not take bootc-box's command unit")
    # Over SSH, the same line means nothing.
    assert FailureWatch(console).failure(0) is None


def add_systemd(root: Path, place: str, name: str) -> None:
    (root / place).mkdir(parents=True)
    (root / place / name).write_bytes(b"")


@pytest.mark.parametrize(
    ("place", "name", "version"),
    [
        ("usr/lib/x86_64-linux-gnu/systemd", "libsystemd-shared-257.so", 257),  # Debian
        ("usr/lib64/systemd", "libsystemd-shared-256.11-1.fc41.so", 256),  # Fedora
        ("usr/lib/systemd", "libsystemd-shared-252-46.el9.so", 252),  # RHEL 9
        ("usr/lib/systemd", "libsystemd-shared-x.so", None),
        ("usr/share/systemd", "libsystemd-shared-257.so", None),  # not where it lives
        # Digits that str.isdigit takes and int() does not, or reads otherwise.
        ("usr/lib/systemd", "libsystemd-shared-\u00b2.so", None),
        ("usr/lib/systemd", "libsystemd-shared-\u0662\u0665\u0669.so", None),
        ("usr/lib/systemd", "libsystemd-shared-99999.so", None),
    ],
)
def test_the_images_systemd_version_comes_from_its_librarys_name(
    tmp_path: Path, place: str, name: str, version: int | None
) -> None:
    add_systemd(tmp_path, place, name)
    assert find_systemd_version(tmp_path) == version


def test_a_library_directory_linked_out_of_the_image_is_looked_for_inside_it(
    tmp_path: Path,
) -> None:
    host = tmp_path / "host"
    add_systemd(host, "usr/lib/systemd", "libsystemd-shared-999.so")
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/systemd").symlink_to(host / "usr/lib/systemd")
    assert find_systemd_version(root) is None


@pytest.mark.parametrize(
    ("transport", "may_save", "library", "agent"),
    [
        (Transport.SSH, True, "libsystemd-shared-256.so", True),
        (Transport.SSH, True, "libsystemd-shared-255.so", False),  # no extra-unit credentials
        (Transport.SSH, False, "libsystemd-shared-257.so", False),  # no state to serve
        (Transport.SERIAL, True, "libsystemd-shared-257.so", False),  # the unit is the transport
    ],
)
def test_an_sshd_image_gets_the_agent_when_a_saved_state_could_use_it(
    tmp_path: Path, transport: Transport, may_save: bool, library: str, agent: bool
) -> None:
    add_systemd(tmp_path, "usr/lib/systemd", library)
    assert wants_agent(transport, tmp_path, may_save=may_save) is agent


def test_an_agents_machine_has_the_ports_and_the_unit_as_a_serial_one_does(
    tmp_path: Path,
) -> None:
    login = new_login(tmp_path)
    boot = KernelBoot(Path("/k/vmlinuz"), Path("/k/initramfs.img"), Path("r.sock"), (KARG,))
    spec = RunSpec(ImageSource("img"), command=("true",))
    credentials = guest_credentials(tmp_path)

    def machine(transport: Transport, agent: bool) -> list[str]:
        prepared = Prepared(
            login, "qemu", Accel.TCG, boot, transport=transport,
            exec_credentials=credentials, agent=agent,
        )  # fmt: skip
        return machine_argv(vm_spec(spec, prepared, Path("/run/a"), 1))

    assert machine(Transport.SSH, True) == machine(Transport.SERIAL, False)
    assert "virtio-serial-pci,id=ports" not in machine(Transport.SSH, False)


@pytest.mark.parametrize(
    ("changes", "needs_no_login"),
    [
        ({}, True),
        ({"tty": True}, False),
        ({"no_input": False}, False),  # podman run -i: the command may read it
        ({"command": ()}, False),  # a shell, or a VM that stays up
        ({"detach": True}, False),
        ({"exec_transport": Transport.SSH}, False),  # asked for by name
    ],
)
def test_only_a_command_with_no_terminal_and_no_input_may_skip_the_login(
    changes: dict[str, object], needs_no_login: bool
) -> None:
    spec = RunSpec(ImageSource("img"), command=("true",), no_input=True)
    assert dataclasses.replace(spec, **changes).needs_no_login is needs_no_login  # type: ignore[arg-type]

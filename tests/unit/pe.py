"""A minimal PE32+ file with named sections, enough for a PE reader to find
them: the unit tests' stand-in for a UKI that ukify built (the e2e tests
boot a real one, tests/fixtures/uki)."""

import struct

FILE_ALIGNMENT = 0x200
SECTION_ALIGNMENT = 0x1000


def align(size: int, to: int) -> int:
    return (size + to - 1) // to * to


def make_pe(sections: list[tuple[str, bytes]]) -> bytes:
    header_size = align(0x40 + 4 + 20 + 240 + 40 * len(sections), FILE_ALIGNMENT)
    table, body = b"", b""
    offset, address = header_size, SECTION_ALIGNMENT
    for name, data in sections:
        raw = align(len(data), FILE_ALIGNMENT)
        table += struct.pack(
            "<8sIIIIIIHHI", name.encode(), len(data), address, raw, offset, 0, 0, 0, 0, 0x40000040
        )
        body += data.ljust(raw, b"\0")
        offset += raw
        address += align(len(data) or 1, SECTION_ALIGNMENT)
    dos = b"MZ".ljust(0x3C, b"\0") + struct.pack("<I", 0x40)
    coff = struct.pack("<HHIIIHH", 0x8664, len(sections), 0, 0, 0, 240, 0x0022)
    optional = struct.pack(
        "<HBBIIIIIQIIHHHHHHIIIIHHQQQQII",
        0x20B, 0, 0, 0, 0, 0, 0, 0, 0x140000000, SECTION_ALIGNMENT, FILE_ALIGNMENT,
        0, 0, 0, 0, 0, 0, 0, address, header_size, 0, 10, 0, 0, 0, 0, 0, 0, 16,
    ) + b"\0" * 128  # fmt: skip
    headers = (dos + b"PE\0\0" + coff + optional + table).ljust(header_size, b"\0")
    return headers + body

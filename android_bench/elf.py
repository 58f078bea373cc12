"""Which CPU an executable was built for, from its ELF header.

Used to refuse pushing e.g. an x86_64 `benchmark_model` to an arm64 phone
before anything is copied.

>>> ELF_MACHINE_TO_ABI[183]
'arm64-v8a'
"""

from __future__ import annotations

import os
import struct

# e_machine values from the ELF spec / <elf.h>, mapped to Android ABI names.
ELF_MACHINE_TO_ABI = {
    3: "x86",  # EM_386
    40: "armeabi-v7a",  # EM_ARM
    62: "x86_64",  # EM_X86_64
    183: "arm64-v8a",  # EM_AARCH64
    243: "riscv64",  # EM_RISCV
}
# `uname -m` spellings of the same architectures (for Linux boards over ssh).
ABI_TO_UNAME = {"x86": "i686", "armeabi-v7a": "armv7l", "x86_64": "x86_64", "arm64-v8a": "aarch64", "riscv64": "riscv64"}


def elf_abi(path: str | os.PathLike) -> str:
    """Android ABI name of an ELF executable; ValueError if it is not ELF.

    Reads e_ident (16 bytes: magic, class, data/endianness) and e_machine
    (2 bytes at offset 18, in the file's own byte order).
    """
    path = os.fspath(path)
    with open(path, "rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF executable (no \\x7fELF magic)")
    byte_order = {1: "<", 2: ">"}.get(header[5])
    if byte_order is None:
        raise ValueError(f"{path}: unknown ELF byte order {header[5]}")
    (machine,) = struct.unpack(byte_order + "H", header[18:20])
    if machine not in ELF_MACHINE_TO_ABI:
        raise ValueError(f"{path}: unsupported ELF machine type {machine}")
    return ELF_MACHINE_TO_ABI[machine]

"""zipl's structures on a SCSI dump disk: scsi_mbr with boot_info (block 0), program
table, component script, bootmap header, and the SCSI dump superblock (formats.md §2-§6).
All big-endian."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import DiskRefused

ZIPL_MAGIC = b"zIPL"
SCSI_MBR_SIZE = 0x98
DISK_LAYOUT_ID = 1
BOOT_INFO_VERSION = 1
BP_TYPE_DUMP = 1
DEV_TYPE_SCSI = 2
BOOT_INFO_FLAGS_ARCH = 0x01
COMPONENT_TYPE_DUMP = 0x01
ENTRY_EXECUTE = 0x01
ENTRY_LOAD = 0x02
SUPERBLOCK_MAGIC = 0x5A46435044554D50  # "ZFCPDUMP"
SUPERBLOCK_SIZE = 72
SUPERBLOCK_VERSION = 1
CSUM_SIZE = 4096
CSUM_SEED = 0x12345678
BOOTMAP_HEADER_TEXT = b"zSeries bootmap file\ncreated by zIPL\n"
BUSY_MARKER = b"zfcpdump busy\0"
PROGRAM_TABLE_SIZE = 512


@dataclass(frozen=True)
class BlockPtr:
    """linear_blockptr (§2.1): a block number from the start of the whole disk."""

    blockno: int
    size: int
    blockct: int = 0

    def to_bytes(self) -> bytes:
        return struct.pack(">QHHI", self.blockno, self.size, self.blockct, 0)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "BlockPtr":
        blockno, size, blockct, _ = struct.unpack_from(">QHHI", raw)
        return cls(blockno, size, blockct)


@dataclass(frozen=True)
class ScsiMbr:
    """Bytes 0x00-0x97 of block 0 (§2)."""

    program_table: BlockPtr
    superblock_offset: int  # byte offset from the start of the whole disk
    magic: bytes = ZIPL_MAGIC
    boot_magic: bytes = ZIPL_MAGIC
    boot_version: int = BOOT_INFO_VERSION
    bp_type: int = BP_TYPE_DUMP
    dev_type: int = DEV_TYPE_SCSI
    flags: int = BOOT_INFO_FLAGS_ARCH

    def to_bytes(self) -> bytes:
        out = bytearray(SCSI_MBR_SIZE)
        out[0:4] = self.magic
        struct.pack_into(">I", out, 4, DISK_LAYOUT_ID)
        out[0x10:0x20] = self.program_table.to_bytes()
        out[0x70:0x74] = self.boot_magic
        out[0x74:0x78] = bytes([self.boot_version, self.bp_type, self.dev_type, self.flags])
        struct.pack_into(">Q", out, 0x78, self.superblock_offset)
        return bytes(out)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "ScsiMbr":
        if len(raw) < SCSI_MBR_SIZE:
            raise DiskRefused("Cannot read MBR")
        return cls(
            program_table=BlockPtr.from_bytes(raw[0x10:0x20]),
            superblock_offset=struct.unpack_from(">Q", raw, 0x78)[0],
            magic=bytes(raw[0:4]),
            boot_magic=bytes(raw[0x70:0x74]),
            boot_version=raw[0x74],
            bp_type=raw[0x75],
            dev_type=raw[0x76],
            flags=raw[0x77],
        )

    def check_dump_boot_info(self) -> None:
        """zfcpdump's checks of boot_info, in its order and words (behaviour.md §2.2)."""
        if self.boot_magic != ZIPL_MAGIC:
            raise DiskRefused("Boot_Info wrong magic")
        if self.dev_type != DEV_TYPE_SCSI:
            raise DiskRefused(f"Boot_Info wrong dev type: {self.dev_type}")
        if self.bp_type != BP_TYPE_DUMP:
            raise DiskRefused(f"Boot_Info wrong bp type: {self.bp_type}")
        if self.boot_version != BOOT_INFO_VERSION:
            raise DiskRefused(f"Boot_Info wrong version: {self.boot_version}")


@dataclass(frozen=True)
class Superblock:
    """struct scsi_dump_sb (§6): 9 big-endian u64."""

    part_start: int
    part_size: int
    dump_size: int
    csum: int = CSUM_SEED
    dump_offset: int = 0
    csum_offset: int = 0
    csum_size: int = CSUM_SIZE
    magic: int = SUPERBLOCK_MAGIC
    version: int = SUPERBLOCK_VERSION

    def to_bytes(self) -> bytes:
        return struct.pack(
            ">9Q", self.magic, self.version, self.part_start, self.part_size,
            self.dump_offset, self.dump_size, self.csum_offset, self.csum_size, self.csum,
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Superblock":
        if len(raw) < SUPERBLOCK_SIZE:
            raise DiskRefused("Cannot read superblock")
        (magic, version, part_start, part_size, dump_offset, dump_size, csum_offset,
         csum_size, csum) = struct.unpack_from(">9Q", raw)
        return cls(part_start, part_size, dump_size, csum & 0xFFFFFFFF, dump_offset,
                   csum_offset, csum_size, magic, version)

    def with_csum(self, csum: int) -> "Superblock":
        return Superblock(self.part_start, self.part_size, self.dump_size, csum,
                          self.dump_offset, self.csum_offset, self.csum_size,
                          self.magic, self.version)


def bootmap_header(block_size: int) -> bytes:
    out = bytearray(block_size)
    out[: len(BOOTMAP_HEADER_TEXT)] = BOOTMAP_HEADER_TEXT
    struct.pack_into(">QQ", out, 48, 1, 0)
    return bytes(out)


def component_script(entries: list[tuple[int, bytes, int]], block_size: int) -> bytes:
    """A DUMP component script: header, then (type, data[:16] blockptr, address) entries."""
    out = bytearray(block_size)
    out[0:4] = ZIPL_MAGIC
    out[4] = COMPONENT_TYPE_DUMP
    for i, (etype, data, address) in enumerate(entries):
        base = 32 * (i + 1)
        out[base : base + len(data)] = data
        out[base + 0x17] = etype
        struct.pack_into(">Q", out, base + 0x18, address)
    return bytes(out)


def program_table(script: BlockPtr, block_size: int) -> bytes:
    out = bytearray(block_size)
    out[0:4] = ZIPL_MAGIC
    out[0x10:0x20] = script.to_bytes()
    return bytes(out)


def find_dump_script(table: bytes, read_block) -> bool:
    """zgetdump -d's program-table walk: entry 0 holds the magic; any entry i >= 1 that
    points to a component header with magic zIPL and type DUMP accepts the disk."""
    if table[:4] != ZIPL_MAGIC:
        return False
    for i in range(1, len(table) // 16):
        ptr = BlockPtr.from_bytes(table[16 * i : 16 * i + 16])
        if ptr.blockno == 0:
            break
        header = read_block(ptr.blockno)
        if header[:4] == ZIPL_MAGIC and header[4] == COMPONENT_TYPE_DUMP:
            return True
    return False

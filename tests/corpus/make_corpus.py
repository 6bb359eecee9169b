"""Regenerate the seed corpus (tests/corpus/<target>/seed-*) for the fuzz targets in
tests/faults/fuzz_targets.py. Run from the repository root:
    python tests/corpus/make_corpus.py
Seeds are small valid (or nearly valid) inputs; the fuzzers mutate them."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


def put(target: str, name: str, data: bytes) -> None:
    d = HERE / target
    d.mkdir(exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def main() -> int:
    from zfcpdump.cli.main import main as cli
    from zfcpdump.disk.image import create_mbr_image
    from zfcpdump.formats import s390_dump as S
    from zfcpdump.readers.elf import parse_elf_core
    from zfcpdump.synth import SynthSpec, write_vmcore

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        vm = t / "v.elf"
        write_vmcore(str(vm), SynthSpec(ranges=[(0, 16 << 10), (64 << 10, 8 << 10)], cpus=2))
        elf = vm.read_bytes()
        put("elf", "synth-2cpu", elf)
        put("open_dump", "elf", elf)
        fd = os.open(vm, os.O_RDONLY)
        core = parse_elf_core(fd, len(elf))
        os.close(fd)
        for ph in core.note_headers:
            put("notes", "synth-be", b"\x01" + elf[ph.offset : ph.offset + ph.filesz])
        img = t / "d.img"
        create_mbr_image(str(img), 192 << 10, [(32 << 10, 128 << 10)])
        put("partitions", "mbr", img.read_bytes()[:64 << 10])
        assert cli(["prepare", str(img), "-p", "1", "--metadata-only"]) == 0
        raw = img.read_bytes()
        put("locate", "prepared-192k", raw)
        sb_off = struct.unpack_from(">Q", raw, 0x78)[0]
        put("zipl", "mbr-superblock", raw[:152] + raw[sb_off : sb_off + 72])
        gpt = t / "g.img"
        with open(gpt, "wb") as f:
            f.truncate(256 << 10)
        try:
            subprocess.run(["sfdisk", "-q", str(gpt)], input="label: gpt\nstart=64, size=256\n",
                           text=True, check=True, capture_output=True)
            put("partitions", "gpt", gpt.read_bytes()[:64 << 10])
        except (OSError, subprocess.CalledProcessError):
            pass
        mem = bytes(range(256)) * 64  # 16 KiB
        hdr = S.S390Header(mem_size=len(mem), mem_end=len(mem), num_pages=len(mem) // 4096,
                           tod=0xD000000000000000, cpu_cnt=0)
        put("open_dump", "s390", hdr.to_bytes() + mem + S.end_marker(0xD000000000000001))
        kd = bytearray(8192)
        kd[0:8] = b"KDUMP   "
        struct.pack_into("<iiI", kd, 8, 6, 4096, 0)
        put("open_dump", "kdump-header", bytes(kd))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`dump --compress`: kdump-compressed captures (formats.md §13) with zfcpdump's protocol.

Read back with our reader (readers/kdump.py), libkdumpfile 0.5.1 and makedumpfile 1.7.2
(x86_64 inputs only: makedumpfile reads its own architecture, interop.md §4); both
engines byte-identical; interrupted and too-small captures never leave a valid dump.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest
from conftest import MIB, sha256_file, superblock_of
from oracles.kdumpfile import needs_libkdumpfile, probe

from zfcpdump import _core
from zfcpdump.cli.main import main
from zfcpdump.disk.cksm import cksm
from zfcpdump.disk.image import create_mbr_image
from zfcpdump.disk.zipl import ScsiMbr
from zfcpdump.formats import kdump_layout as K
from zfcpdump.readers import open_dump
from zfcpdump.readers.elf import read_elf
from zfcpdump.synth import cpu_regs

ENGINES = ["rust", "python"]
PAGE = 4096
BUSY = b"zfcpdump busy\0"


def _have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


HAVE_ZSTANDARD = _have("zstandard")
needs_zstandard = pytest.mark.skipif(not HAVE_ZSTANDARD, reason="needs the zstandard module")
needs_makedumpfile = pytest.mark.skipif(shutil.which("makedumpfile") is None,
                                        reason="needs makedumpfile (apt-get install makedumpfile)")


# ---- helpers ----------------------------------------------------------------------
def prepared_image(tmp_path, part_size, name="disk.img"):
    disk = tmp_path / name
    create_mbr_image(str(disk), part_size + 2 * MIB, [(MIB, part_size)])
    assert main(["prepare", str(disk), "--partition", "1", "--metadata-only"]) == 0
    return disk


def mib_above(size: int) -> int:
    """A partition size that holds `size` bytes and a spare MiB, MiB aligned."""
    return (size // MIB + 2) * MIB


def dump_bytes(disk) -> bytes:
    """The kdump file as written into the partition (up to the end of its data)."""
    sb = superblock_of(disk)
    with open(disk, "rb") as f:
        f.seek(sb.part_start + sb.dump_offset)
        area = f.read(sb.dump_size)
    return area[: kdump_file_size(area)]


def kdump_file_size(area: bytes) -> int:
    """End of the last page's data, from the descriptors (formats.md §13.4)."""
    be = struct.unpack_from("<i", area, 8)[0] != 6
    e = ">" if be else "<"
    bs, sub, bmb = struct.unpack_from(e + "iii", area, 428)
    ndesc = sum(bin(b).count("1") for b in area[(1 + sub + bmb // 2) * bs : (1 + sub + bmb) * bs])
    desc_off = (1 + sub + bmb) * bs
    end = desc_off + K.DESC_SIZE * ndesc
    for i in range(ndesc):
        off, size, _f, _p = struct.unpack_from(e + "QIIQ", area, desc_off + K.DESC_SIZE * i)
        end = max(end, off + size)
    return end


def capture(disk, vmcore, *args, engine="rust") -> int:
    return main(["dump", "-i", str(vmcore), "--engine", engine, "--progress-interval", "100",
                 *args, str(disk)])


def assert_checksum_matches(disk):
    sb = superblock_of(disk)
    with open(disk, "rb") as f:
        f.seek(sb.part_start + sb.csum_offset)
        assert cksm(f.read(sb.csum_size)) == sb.csum


def assert_same_memory(dump, vmcore):
    fd = os.open(vmcore, os.O_RDONLY)
    try:
        src = read_elf(fd, os.fstat(fd).st_size)
        lo = src.chunks[0].start
        hi = src.chunks[-1].start + src.chunks[-1].size
        for a in range(lo - lo % MIB, hi, MIB):
            assert dump.read_phys(a, MIB) == src.read_phys(a, MIB), hex(a)
    finally:
        os.close(fd)


def write_x86_core(path, ranges, content) -> int:
    """A little-endian EM_X86_64 core: one PT_NOTE (one PRSTATUS), page-aligned PT_LOADs,
    no VMCOREINFO (makedumpfile -d 0/1 needs none, interop.md §4)."""
    note = struct.pack("<III", 5, 336, 1) + b"CORE\0\0\0\0" + bytes(336)
    phnum = 1 + len(ranges)
    ph = [struct.pack("<IIQQQQQQ", 4, 0, PAGE, 0, 0, len(note), len(note), 0)]
    off = 2 * PAGE
    for paddr, size in ranges:
        ph.append(struct.pack("<IIQQQQQQ", 1, 7, off, 0xFFFF888000000000 + paddr, paddr,
                              size, size, PAGE))
        off += size
    eh = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
          + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0))
    with open(path, "wb") as f:
        hdr = eh + b"".join(ph)
        f.write(hdr + bytes(PAGE - len(hdr)) + note + bytes(PAGE - len(note)))
        for paddr, size in ranges:
            for p in range(paddr, paddr + size, PAGE):
                f.write(content(p))
    return off


def x86_page(p: int) -> bytes:
    kind = (p // PAGE) % 3
    if kind == 0:
        return bytes(PAGE)
    if kind == 1:
        return ((b"x86 page %016x lorem ipsum dolor sit amet\n" % p) * 100)[:PAGE]
    return random.Random(p).randbytes(PAGE)


# ---- capture and read back --------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("compress", ["none", "zlib", "zstd", "snappy"])
def test_compressed_capture_reads_back(tmp_path, make_vmcore, capsys, engine, compress):
    if compress == "zstd" and not HAVE_ZSTANDARD:
        pytest.skip("needs zstandard (python engine and reader)")
    if compress == "snappy" and not (_have("snappy") or _have("cramjam")):
        pytest.skip("needs python-snappy or cramjam (python engine and reader)")
    vmcore, size = make_vmcore(ranges=[(0, 8 * MIB), (12 * MIB, 4 * MIB + 100)], cpus=2,
                               kernel_image=(MIB, 2 * MIB))
    disk = prepared_image(tmp_path, size + MIB)
    capsys.readouterr()
    assert capture(disk, vmcore, "--compress", compress, engine=engine) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "Dump successful"
    assert "kdump-compressed" in out and "zero pages elided" in out
    raw = dump_bytes(disk)
    assert raw[:8] == b"KDUMP   " and raw[8:12] == b"\0\0\0\x06"  # big-endian, version 6
    assert struct.unpack_from(">I", raw, 424)[0] == K.FLAGS[compress]
    assert_checksum_matches(disk)
    with open_dump(f"{disk}:1") as d:
        assert d.format == "kdump" and d.arch == "s390x" and d.byteorder == "big"
        assert len(d.cpus) == 2
        assert d.vmcoreinfo.startswith(b"OSRELEASE=6.1.0-synthetic")
        assert d.attrs.utsname["sysname"] == "Linux" and d.attrs.utsname["machine"] == "s390x"
        assert_same_memory(d, vmcore)
    if compress != "none":
        assert len(raw) < size * 0.8


@pytest.mark.parametrize("engine", ENGINES)
def test_check_validates_a_compressed_dump(tmp_path, make_vmcore, capsys, engine):
    """`check` accepts a kdump-compressed dump whose every page descriptor points inside
    the dump area, and refuses one whose descriptor points past it; nothing is
    written."""
    vmcore, size = make_vmcore(ranges=[(0, 4 * MIB)], cpus=2)
    disk = prepared_image(tmp_path, size + MIB)
    assert capture(disk, vmcore, "--compress", "zlib", engine=engine) == 0
    capsys.readouterr()
    assert main(["check", str(disk)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"dump\.\.\.\.\.: kdump-compressed, 1024 page descriptors, \d+ notes, "
                     r"dump level 1, \d+ bytes \(all inside dump_size", out), out
    raw = dump_bytes(disk)
    bs, sub, bitmaps = struct.unpack_from(">iiI", raw, 428)
    desc = (1 + sub + bitmaps) * bs + 24 * 700  # the 701st page's descriptor
    sb = superblock_of(disk)
    bad = tmp_path / "bad.img"
    shutil.copyfile(disk, bad)
    with open(bad, "r+b") as f:
        f.seek(sb.part_start + sb.dump_offset + desc)
        f.write(struct.pack(">Q", 1 << 40))
    before = sha256_file(bad)
    capsys.readouterr()
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "ERROR: Invalid dump: kdump page descriptor 700 points at 0x10000000000" in err, err
    assert sha256_file(bad) == before


def test_zero_pages_share_one_descriptor_and_compression_only_when_smaller(tmp_path, make_vmcore):
    vmcore, size = make_vmcore(ranges=[(0, 3 * MIB)], cpus=1)
    disk = prepared_image(tmp_path, size + MIB)
    assert capture(disk, vmcore, "--compress", "zlib") == 0
    raw = dump_bytes(disk)
    bs, sub, bmb = struct.unpack_from(">iii", raw, 428)
    desc_off = (1 + sub + bmb) * bs
    data_off = desc_off + 24 * 768
    assert raw[data_off : data_off + PAGE] == bytes(PAGE)  # the shared zero page first
    descs = [struct.unpack_from(">QIIQ", raw, desc_off + 24 * i) for i in range(768)]
    for pfn, (off, size_, flags, _pf) in enumerate(descs):
        kind = pfn % 3  # synth.page_content: zero / text / random
        if kind == 0 and pfn:
            assert (off, size_, flags) == (data_off, PAGE, 0)
        elif kind == 1:
            assert flags == K.FLAG_ZLIB and size_ < PAGE
        elif kind == 2:
            assert (size_, flags) == (PAGE, 0)  # random: stored raw


# ---- engines byte-identical -------------------------------------------------------
@pytest.mark.parametrize("compress", ["none", "zlib", "zstd"])
def test_engines_write_identical_partitions(tmp_path, make_vmcore, compress):
    if compress == "zstd" and not HAVE_ZSTANDARD:
        pytest.skip("needs zstandard")
    vmcore, size = make_vmcore(ranges=[(0, 6 * MIB + 512), (8 * MIB, 3 * MIB)], cpus=4)
    images = []
    for engine in ENGINES:
        disk = prepared_image(tmp_path, size + 3 * MIB, name=f"{engine}.img")
        assert capture(disk, vmcore, "--compress", compress, engine=engine) == 0
        images.append(disk)
    zlib_version, zstd_version = _core.kdump_library_versions()
    same_lib = True
    if compress == "zlib":
        import zlib
        same_lib = zlib_version == zlib.ZLIB_RUNTIME_VERSION
    if compress == "zstd":
        import zstandard
        same_lib = ".".join(map(str, zstandard.ZSTD_VERSION)) == (
            f"{zstd_version // 10000}.{zstd_version // 100 % 100}.{zstd_version % 100}")
    if same_lib:
        assert sha256_file(images[0]) == sha256_file(images[1])
    else:  # different library builds: the same memory, maybe other compressed bytes
        with open_dump(f"{images[0]}:1") as a, open_dump(f"{images[1]}:1") as b:
            for addr in range(0, 11 * MIB, MIB):
                assert a.read_phys(addr, MIB) == b.read_phys(addr, MIB)


# ---- oracles ----------------------------------------------------------------------
@needs_libkdumpfile
@pytest.mark.parametrize("compress", ["zstd", "zlib", "snappy", "none"])
def test_libkdumpfile_reads_our_s390x_dump(tmp_path, make_vmcore, compress):
    ranges = [(0, 8 * MIB), (12 * MIB, 4 * MIB + 100)]
    vmcore, size = make_vmcore(ranges=ranges, cpus=3)
    disk = prepared_image(tmp_path, size + MIB)
    assert capture(disk, vmcore, "--compress", compress) == 0
    path = tmp_path / "dump.kdump"
    path.write_bytes(dump_bytes(disk))
    reads = [(a, n - n % PAGE) for a, n in ranges]
    got = probe(path, reads)
    assert "error" not in got, got
    assert got["format"] == "diskdump" and got["arch"] == "s390x" and got["byte_order"] == 0
    assert got["uts"]["release"] == "6.1.0-synthetic" and got["uts"]["sysname"] == "Linux"
    assert got["attrs"]["linux.vmcoreinfo.lines.OSRELEASE"] == "6.1.0-synthetic"
    assert got["attrs"]["linux.vmcoreinfo.lines.CRASHTIME"] == "1735689600"
    assert got["cpu_count"] == 3
    for i, cpu in enumerate(got["cpus"]):
        regs = cpu_regs(i)
        assert cpu["reg"]["pswa"] == regs.psw_addr and cpu["reg"]["r15"] == regs.gprs[15]
    fd = os.open(vmcore, os.O_RDONLY)
    try:
        src = read_elf(fd, os.fstat(fd).st_size)
        import hashlib
        for r, (a, n) in zip(got["reads"], reads):
            assert r.get("sha256") == hashlib.sha256(src.read_phys(a, n)).hexdigest(), r
    finally:
        os.close(fd)


@needs_makedumpfile
@pytest.mark.parametrize("compress,flags", [("none", []), ("zlib", ["-c"])])
def test_identical_to_makedumpfile_on_x86_64(tmp_path, compress, flags):
    """makedumpfile 1.7.2 -d 1 on the same x86_64 core writes the same file, byte for
    byte, except utsname and timestamp (it has no VMCOREINFO to fill them from)."""
    vmcore = tmp_path / "x86.elf"
    size = write_x86_core(vmcore, [(0, MIB), (4 * MIB, 8 * MIB + 3 * PAGE)], x86_page)
    ref = tmp_path / "md.kdump"
    subprocess.run(["makedumpfile", *flags, "-d", "1", str(vmcore), str(ref)], check=True,
                   capture_output=True)
    disk = prepared_image(tmp_path, size + MIB)
    assert capture(disk, vmcore, "--compress", compress) == 0
    ours = dump_bytes(disk)
    theirs = ref.read_bytes()
    assert len(ours) == len(theirs)
    assert ours[:12] == theirs[:12]
    assert ours[424:] == theirs[424:]
    assert ours[12:17] == b"Linux" and ours[12 + 65 * 4 : 12 + 65 * 4 + 7] == b"x86_64\0"


@needs_libkdumpfile
def test_libkdumpfile_reads_our_x86_64_dump(tmp_path):
    vmcore = tmp_path / "x86.elf"
    size = write_x86_core(vmcore, [(0, MIB), (4 * MIB, 2 * MIB)], x86_page)
    disk = prepared_image(tmp_path, size + MIB)
    assert capture(disk, vmcore, "--compress", "zstd") == 0
    path = tmp_path / "dump.kdump"
    path.write_bytes(dump_bytes(disk))
    got = probe(path, [(4 * MIB, 2 * MIB)])
    assert got["format"] == "diskdump" and got["arch"] == "x86_64" and got["byte_order"] == 1
    import hashlib
    want = b"".join(x86_page(p) for p in range(4 * MIB, 6 * MIB, PAGE))
    assert got["reads"][0]["sha256"] == hashlib.sha256(want).hexdigest()


@pytest.mark.skipif(not _have("lzo"), reason="needs python-lzo (python engine's LZO1X-1)")
def test_lzo_with_the_python_engine(tmp_path, make_vmcore):
    """LZO1X-1 pages (python-lzo) read back by our reader and, if present, libkdumpfile."""
    vmcore, size = make_vmcore(ranges=[(0, 4 * MIB)], cpus=1)
    disk = prepared_image(tmp_path, size + MIB)
    assert capture(disk, vmcore, "--compress", "lzo", engine="python") == 0
    raw = dump_bytes(disk)
    assert struct.unpack_from(">I", raw, 424)[0] == K.FLAG_LZO
    with open_dump(f"{disk}:1") as d:
        assert_same_memory(d, vmcore)
    from oracles.kdumpfile import kdumpfile_available
    if kdumpfile_available():
        import hashlib
        path = tmp_path / "dump.kdump"
        path.write_bytes(raw)
        fd = os.open(vmcore, os.O_RDONLY)
        try:
            want = hashlib.sha256(read_elf(fd, os.fstat(fd).st_size).read_phys(0, 4 * MIB)).hexdigest()
        finally:
            os.close(fd)
        assert probe(path, [(0, 4 * MIB)])["reads"][0]["sha256"] == want


def test_lzo_with_the_rust_engine_is_a_usage_error(tmp_path, make_vmcore, capsys):
    vmcore, size = make_vmcore(ranges=[(0, MIB)])
    disk = prepared_image(tmp_path, size + MIB)
    capsys.readouterr()
    assert capture(disk, vmcore, "--compress", "lzo") == 2
    assert "--engine python only" in capsys.readouterr().err


# ---- refusals and failures --------------------------------------------------------
def test_lz4_is_refused_with_an_explanation(tmp_path, make_vmcore, capsys):
    vmcore, size = make_vmcore(ranges=[(0, MIB)])
    disk = prepared_image(tmp_path, size + MIB)
    before = sha256_file(disk)
    capsys.readouterr()
    assert capture(disk, vmcore, "--compress", "lz4") == 2
    err = capsys.readouterr().err
    assert "no LZ4 page flag" in err and "use zstd" in err
    assert sha256_file(disk) == before


def test_dump_level_bits_beyond_zero_pages_are_reported(tmp_path, make_vmcore, capsys):
    vmcore, size = make_vmcore(ranges=[(0, 2 * MIB)])
    disk = prepared_image(tmp_path, size + MIB)
    capsys.readouterr()
    assert capture(disk, vmcore, "--compress", "zstd", "--dump-level", "31") == 0
    err = capsys.readouterr().err
    assert "WARNING: --dump-level 31" in err and "only zero pages are excluded" in err
    raw = dump_bytes(disk)
    assert struct.unpack_from(">I", raw, PAGE + 8)[0] == 1  # dump level recorded


def test_metadata_too_big_refused_before_writing(tmp_path, make_vmcore, capsys):
    # 64 GiB of address space with two pages of memory: the bitmaps alone need 4 MiB
    vmcore, size = make_vmcore(ranges=[(0, PAGE), (64 << 30, PAGE)])
    disk = prepared_image(tmp_path, 2 * MIB)
    before = sha256_file(disk)
    capsys.readouterr()
    assert capture(disk, vmcore, "--compress", "zstd") == 1
    assert "Disk too small: dump metadata=" in capsys.readouterr().err
    assert sha256_file(disk) == before


@pytest.mark.parametrize("engine", ENGINES)
def test_disk_too_small_fails_cleanly_within_dump_size(tmp_path, engine, capsys):
    """Random memory does not compress: the dump outgrows the partition. The writer stops
    before dump_size, the dump stays invalid, the bootmap area behind it is untouched."""
    vmcore = tmp_path / "x86.elf"
    write_x86_core(vmcore, [(0, 4 * MIB)], lambda p: random.Random(p).randbytes(PAGE))
    disk = prepared_image(tmp_path, 2 * MIB)
    sb = superblock_of(disk)

    def tail():  # the bootmap area behind the dump area, but the superblock (checksum)
        with open(disk, "rb") as f:
            sb_off = ScsiMbr.from_bytes(f.read(152)).superblock_offset
            f.seek(sb.part_start + sb.dump_size)
            data = bytearray(f.read())
        rel = sb_off - (sb.part_start + sb.dump_size)
        data[rel : rel + 72] = bytes(72)
        return bytes(data)

    tail_before = tail()
    capsys.readouterr()
    assert capture(disk, vmcore, "--compress", "zlib", engine=engine) == 1
    err = capsys.readouterr().err
    assert "ERROR: Disk too small: the compressed dump does not fit" in err
    with open(disk, "rb") as f:
        f.seek(sb.part_start)
        assert f.read(len(BUSY)) == BUSY
    assert tail() == tail_before
    assert_checksum_matches(disk)
    with pytest.raises(Exception, match="No valid dump"):
        open_dump(f"{disk}:1")


@pytest.mark.parametrize("extra", [["--no-mmap"], ["--mmap"]], ids=["read", "mmap"])
def test_hsa_pages_first_then_released(tmp_path, make_vmcore, extra):
    vmcore, size = make_vmcore(ranges=[(0, 8 * MIB), (16 * MIB, 4 * MIB)])
    disk = prepared_image(tmp_path, size + MIB)
    zcore = tmp_path / "zcore"
    zcore.mkdir()
    (zcore / "hsa").write_text("2ffff0\n")
    assert capture(disk, vmcore, "--compress", "zstd", "--zcore-dir", str(zcore), *extra) == 0
    assert (zcore / "hsa").read_text() == "0"
    with open_dump(f"{disk}:1") as d:
        assert_same_memory(d, vmcore)


@pytest.mark.parametrize("compress", ["snappy", "zstd"])
def test_adaptive_capture_reads_back(tmp_path, make_vmcore, capsys, compress):
    """--adaptive: however many batches went out raw, the same memory reads back, and
    never more pages are compressed than without it."""
    vmcore, size = make_vmcore(ranges=[(0, 8 * MIB), (16 * MIB, 3 * MIB)], cpus=2)
    counts = []
    for extra in ([], ["--adaptive"]):
        disk = prepared_image(tmp_path, size + 2 * MIB, name=f"a{len(counts)}.img")
        capsys.readouterr()
        assert capture(disk, vmcore, "--compress", compress, *extra) == 0
        out = capsys.readouterr().out
        assert (f"kdump-compressed, {compress}, adaptive, dump level 1" in out) == bool(extra)
        counts.append(int(re.search(r"(\d+) of \d+ pages compressed", out).group(1)))
        raw = re.search(r"^ adaptive\.: (\d+) of (\d+) pages stored raw", out, re.M)
        assert bool(raw) == bool(extra)
        if raw:
            # every page is zero, compressed, stored raw by choice, or did not shrink
            zero = int(re.search(r"(\d+) zero pages elided", out).group(1))
            assert int(raw[1]) + counts[-1] + zero <= int(raw[2])
        with open_dump(f"{disk}:1") as d:
            assert_same_memory(d, vmcore)
    assert counts[1] <= counts[0]


def test_adaptive_without_compress_is_a_usage_error(tmp_path, make_vmcore, capsys):
    vmcore, size = make_vmcore(ranges=[(0, MIB)])
    disk = prepared_image(tmp_path, size + MIB)
    capsys.readouterr()
    assert capture(disk, vmcore, "--adaptive") == 2
    assert "ERROR: --adaptive needs --compress" in capsys.readouterr().err


def test_mmap_reader_writes_the_same_partition(tmp_path, make_vmcore, capsys):
    # pages past the HSA through mmap windows (the compressors read them there, no
    # copy), the rest with pread: the same bytes as the pread-only reader and as the
    # Python twin (all but block 0, whose header holds the time of the capture when
    # the vmcore has no CRASHTIME)
    vmcore, size = make_vmcore(ranges=[(0, 6 * MIB + 4096), (8 * MIB, 3 * MIB)], cpus=2)

    def dump_body(disk):
        sb = superblock_of(disk)
        with open(disk, "rb") as f:
            f.seek(sb.part_start + sb.dump_offset + PAGE)
            return hashlib.sha256(f.read(sb.dump_size - PAGE)).hexdigest()

    images = []
    for engine, extra in [("rust", ["--no-mmap"]), ("rust", ["--mmap"]), ("python", ["--mmap"])]:
        disk = prepared_image(tmp_path, size + 2 * MIB, name=f"d{len(images)}.img")
        zcore = tmp_path / f"zcore{len(images)}"
        zcore.mkdir()
        (zcore / "hsa").write_text("100000\n")
        capsys.readouterr()
        assert capture(disk, vmcore, "--compress", "snappy", "--zcore-dir", str(zcore),
                       *extra, engine=engine) == 0
        mapped = re.search(r"reads\.\.\.\.: mmap windows, no copy: (\d+) of (\d+) pages",
                           capsys.readouterr().out)
        if (engine, extra) == ("rust", ["--mmap"]):
            # all but the 256 pages below the HSA's end (1 MiB)
            assert mapped and int(mapped[1]) == int(mapped[2]) - 256, mapped
        else:
            assert mapped is None
        images.append(dump_body(disk))
        with open_dump(f"{disk}:1") as d:
            assert_same_memory(d, vmcore)
    assert len(set(images)) == 1


CHILD = """
import sys
from zfcpdump.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_sigterm_leaves_no_valid_dump(tmp_path, make_vmcore, engine):
    # Large enough that the capture is still running when the signal arrives.
    vmcore, size = make_vmcore(ranges=[(0, 160 * MIB)], cpus=1)
    disk = prepared_image(tmp_path, size + MIB)
    args = ["dump", "-i", str(vmcore), "--engine", engine, "--compress", "zlib",
            "--threads", "1", "--progress-interval", "100", str(disk)]
    p = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("Writing dump:"):
            break
    time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, (out, err)
    assert "Dump failed" in out
    sb = superblock_of(disk)
    with open(disk, "rb") as f:
        f.seek(sb.part_start)
        first = f.read(PAGE)
    assert first.startswith(BUSY) and not first.startswith(b"KDUMP")
    assert_checksum_matches(disk)
    with pytest.raises(Exception, match="No valid dump"):
        open_dump(f"{disk}:1")

"""Page-class filtering (`dump --compress ... --dump-level 2..31`, pagefilter/).

A synthetic x86_64 kernel (tests/kernelmem.py: real page tables, mem_section, struct
pages of every class at known pfns) is filtered at every level and captured; the Rust
and Python classifiers are compared on random struct pages; the real s390x sample
(Linux 6.1) is filtered and compared with the s390x makedumpfile under qemu-user. The
comparison with makedumpfile on a real x86_64 Linux 6.1 vmcore is in
test_e2e_x86_64.py.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernelmem import (ANON_MAPPING, BUDDY, FILE_MAPPING, HEAD_MASK, NPFN, OFFLINE, PAGE, PG,
                       KernelCore, vmcoreinfo)
from conftest import sha256_file
from test_kdump_capture import capture, dump_bytes, mib_above, prepared_image
from oracles.kdumpfile import needs_libkdumpfile, probe
from oracles.makedumpfile_s390x import needs_makedumpfile_s390x, run_makedumpfile
from oracles.sample import needs_sample, sample_elf_path

from zfcpdump import _core
from zfcpdump.model import vmcoreinfo_fields
from zfcpdump.pagefilter import CLASSES, FilterUnavailable, filter_pages, ram_bitmap
from zfcpdump.pagefilter.classify import exclude_pages as py_exclude_pages
from zfcpdump.pagefilter.errors import TranslationError
from zfcpdump.pagefilter.page_struct import PageStruct
from zfcpdump.pagefilter.s390x import S390xPageTables
from zfcpdump.pagefilter.x86_64 import X86_64PageTables
from zfcpdump.readers import open_dump

ENGINES = ["rust", "python"]


def excluded_pfns(bitmap: bytes, npfn: int = NPFN) -> set:
    return {p for p in range(npfn) if not bitmap[p >> 3] & (1 << (p & 7))}


def run_filter(core: KernelCore, level: int, engine: str = "rust", info: bytes | None = None,
               arch: str = "x86_64"):
    fields = vmcoreinfo_fields(vmcoreinfo() if info is None else info)
    return filter_pages(lambda a, n: bytes(core.mem[a : a + n]), fields, arch=arch,
                        big_endian=False, page_size=PAGE, ram=[(0, NPFN)], dump_level=level,
                        engine=engine)


@pytest.fixture(scope="module")
def kernel() -> KernelCore:
    return KernelCore.build()


# ---- the walk ---------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("level", [2, 4, 8, 16, 31, 30])
def test_every_class_found_at_every_level(kernel, engine, level):
    res = run_filter(kernel, level, engine)
    want = kernel.excluded(level)
    assert excluded_pfns(res.dumpable) == want
    by_class = {c: sum(1 for p in want if kernel.classes[p] == c) for c in CLASSES}
    assert res.excluded == by_class
    assert (res.sections, res.sections_skipped) == (2, 0)


def test_unreadable_section_keeps_its_pages():
    core = KernelCore.build(unmapped_section=1)
    res = run_filter(core, 31)
    assert res.sections_skipped == 1
    assert excluded_pfns(res.dumpable) == core.excluded(31)
    # the hugetlb page and the free block of section 1 are kept
    assert not {4608, 4609, 6000} & excluded_pfns(res.dumpable)


def test_linux_6_3_folio_fields_give_the_compound_order(kernel):
    """Linux 6.3-6.5 export the order and destructor as folio fields (offsets from the
    head page): the same pages are left out as with 6.1's page fields."""
    info = vmcoreinfo(release="6.4.0", drop=("OFFSET(page.compound_order)",
                                              "OFFSET(page.compound_dtor)"))
    info += b"OFFSET(folio._folio_order)=81\nOFFSET(folio._folio_dtor)=80\n"
    ps = PageStruct.from_vmcoreinfo(vmcoreinfo_fields(info), False, 31)
    assert (ps.compound_order, ps.compound_dtor) == (17, 16)
    for engine in ("rust", "python"):
        res = run_filter(kernel, 31, engine=engine, info=info)
        assert excluded_pfns(res.dumpable) == kernel.excluded(31)


def test_missing_fields_are_named(kernel):
    info = vmcoreinfo(drop=("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)", "OFFSET(page.private)"))
    with pytest.raises(FilterUnavailable, match=r"no OFFSET\(page.private\), "
                                                r"NUMBER\(PAGE_BUDDY_MAPCOUNT_VALUE\)"):
        run_filter(kernel, 16, info=info)
    # levels that do not need them still work
    assert excluded_pfns(run_filter(kernel, 2, info=info).dumpable) == kernel.excluded(2)


def test_slab_as_a_page_type_replaces_pg_slab():
    """Linux 6.10 dropped NUMBER(PG_slab) for NUMBER(PAGE_SLAB_MAPCOUNT_VALUE); one
    of the two is needed."""
    fields = vmcoreinfo_fields(vmcoreinfo(drop=("NUMBER(PG_slab)",)))
    with pytest.raises(FilterUnavailable, match=r"no NUMBER\(PAGE_SLAB_MAPCOUNT_VALUE\)"):
        PageStruct.from_vmcoreinfo(fields, False, 31)
    fields["NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)"] = "-184549376"
    fields["NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)"] = "-201326592"
    ps = PageStruct.from_vmcoreinfo(fields, False, 31)
    assert (ps.pg_slab, ps.slab_type, ps.hugetlb_type) == (None, 0xF5000000, 0xF4000000)


@pytest.mark.parametrize("release,arch,message", [
    ("7.4.0-1-amd64", "x86_64", "verified for x86_64 Linux 4.16 to 7.3, the dump is from 7.4"),
    ("7.3.0", "s390x", "verified for s390x Linux 4.16 to 7.2, the dump is from 7.3.0"),
    ("4.15.0", "x86_64", "the dump is from 4.15.0"),
    ("6.1.0", "aarch64", "x86_64 and s390x page tables only, the dump is aarch64"),
])
def test_unverified_kernels_and_other_arches_are_refused(kernel, release, arch, message):
    with pytest.raises(FilterUnavailable, match=message):
        run_filter(kernel, 31, info=vmcoreinfo(release=release), arch=arch)


def test_page_tables_translate_like_the_cpu(kernel):
    from kernelmem import DIRECT_MAP, MEMMAP_PHYS, PGD, START_KERNEL_MAP, UNMAPPED, VMEMMAP

    read = lambda a, n: bytes(kernel.mem[a : a + n])  # noqa: E731
    mmu = X86_64PageTables.from_vmcoreinfo(read, vmcoreinfo_fields(vmcoreinfo()))
    assert mmu.root == PGD and mmu.levels == 4
    # 2 MiB page: the span runs to its end
    assert mmu.translate(DIRECT_MAP + 0x345678) == (0x345678, 0x400000 - 0x345678)
    # 4 KiB page with NX set: the NX bit is not part of the address
    assert mmu.translate(VMEMMAP + 0x1010) == (MEMMAP_PHYS + 0x1010, 0x1000 - 0x10)
    assert mmu.read(VMEMMAP + 0xFF0, 0x20) == kernel.mem[MEMMAP_PHYS + 0xFF0 : MEMMAP_PHYS + 0x1010]
    with pytest.raises(TranslationError, match="not mapped"):
        mmu.translate(UNMAPPED)
    # phys_base moves the root
    f = vmcoreinfo_fields(vmcoreinfo())
    f["NUMBER(phys_base)"] = str(-0x1000)
    f["NUMBER(pgtable_l5_enabled)"] = "1"
    mmu = X86_64PageTables.from_vmcoreinfo(read, f)
    assert (mmu.root, mmu.levels) == (PGD - 0x1000, 5)
    assert START_KERNEL_MAP - 0x1000 + PGD == (int(f["SYMBOL(init_top_pgt)"], 16) - 0x1000)


def test_five_level_tables():
    """PML5 -> P4D -> PUD -> PMD -> PTE: the index of each level from its own bits."""
    mem = bytearray(6 * PAGE)
    va = (0x1FF << 48) | (0x12 << 39) | (0x34 << 30) | (0x56 << 21) | (0x78 << 12) | 0xABC
    va |= 0xFF << 57  # sign extension
    for level, index in enumerate((0x1FF, 0x12, 0x34, 0x56)):
        struct.pack_into("<Q", mem, level * PAGE + 8 * index, (level + 1) * PAGE | 1)
    struct.pack_into("<Q", mem, 4 * PAGE + 8 * 0x78, 0x5000 | 1)
    mmu = X86_64PageTables(lambda a, n: bytes(mem[a : a + n]), 0, 5)
    assert mmu.translate(va) == (0x5ABC, 0x1000 - 0xABC)
    with pytest.raises(TranslationError):
        X86_64PageTables(lambda a, n: bytes(mem[a : a + n]), 0, 4).translate(va)


def test_one_gib_pages():
    mem = bytearray(5 * PAGE)
    struct.pack_into("<Q", mem, 8 * 273, PAGE | 3)  # PGD -> PUD
    struct.pack_into("<Q", mem, PAGE + 8 * 1, (3 << 30) | 0x83 | (1 << 12))  # 1 GiB, PAT
    mmu = X86_64PageTables(lambda a, n: bytes(mem[a : a + n]), 0, 4)
    va = 0xFFFF_8880_0000_0000 + (1 << 30) + 0x1234
    assert mmu.translate(va) == ((3 << 30) + 0x1234, (1 << 30) - 0x1234)


def test_s390x_dat_tables():
    """Region-third top table -> segment table -> page table, a 1 MiB segment and a
    2 GiB region-third large page; the top level is read from the entries' type bits."""
    mem = bytearray(0x40000)
    r3, sgt, pt = 0x10000, 0x20000, 0x30000
    put = lambda tbl, i, e: struct.pack_into(">Q", mem, tbl + 8 * i, e)  # noqa: E731
    for i in range(2048):
        put(r3, i, 0x20 | 0x04)  # invalid region-third entries
        put(sgt, i, 0x20)
    put(r3, 5, sgt | 0x04 | 0x03)  # region-third, valid -> segment table
    put(r3, 6, (6 << 31) | 0x400 | 0x04)  # 2 GiB large page at 12 GiB
    put(sgt, 1, pt)  # segment 1 -> page table
    put(sgt, 2, (7 << 20) | 0x400)  # 1 MiB large page
    for i in range(256):
        struct.pack_into(">Q", mem, pt + 8 * i, 0x400)
    struct.pack_into(">Q", mem, pt + 8 * 3, 0x123000)
    read = lambda a, n: bytes(mem[a : a + n]) if a + n <= len(mem) else bytes(n)  # noqa: E731
    mmu = S390xPageTables.from_vmcoreinfo(read, {"SYMBOL(swapper_pg_dir)": f"{r3:x}"})
    assert mmu.top_level == 1
    base = 5 << 31
    assert mmu.translate(base + (1 << 20) + 3 * 4096 + 5) == (0x123005, 4096 - 5)
    assert mmu.translate(base + (2 << 20) + 0x100) == ((7 << 20) + 0x100, (1 << 20) - 0x100)
    assert mmu.translate((6 << 31) + 0x10) == ((6 << 31) + 0x10, (1 << 31) - 0x10)
    for va in (base + (1 << 20) + 4 * 4096, base + (3 << 20), 7 << 31, 1 << 42):
        with pytest.raises(TranslationError):
            mmu.translate(va)
    # an all-zero entry is no table at physical 0 (it would read the lowcore)
    put(sgt, 9, 0)
    struct.pack_into(">Q", mem, pt + 8 * 4, 0)
    mmu = S390xPageTables.from_vmcoreinfo(read, {"SYMBOL(swapper_pg_dir)": f"{r3:x}"})
    with pytest.raises(TranslationError, match="no table"):
        mmu.translate(base + (9 << 20))
    with pytest.raises(TranslationError):
        mmu.translate(base + (1 << 20) + 4 * 4096)
    mem[r3 : r3 + 16] = struct.pack(">QQ", 0x08, 0x04)  # mixed types: no table
    with pytest.raises(FilterUnavailable, match="no DAT table"):
        S390xPageTables.from_vmcoreinfo(read, {"SYMBOL(swapper_pg_dir)": f"{r3:x}"})


def test_s390x_root_of_a_relocated_kernel_image():
    """From Linux 6.10 swapper_pg_dir's address is in the kernel image's virtual mapping
    (KERNELOFFSET) and the table is at KERNELOFFPHYS plus the same offset: the walk
    starts there (the numbers of Debian 13's 6.12 kernel, as QEMU ran it)."""
    mem = bytearray(0x2050000)
    root = 0x3FFF_FF40_000 - 0x3FFF_E7F_8000 + 0x8F_8000
    assert root == 0x204_0000
    for i in range(2048):
        struct.pack_into(">Q", mem, root + 8 * i, 0x20 | 0x04)
    struct.pack_into(">Q", mem, root, (1 << 31) | 0x400 | 0x04)  # 2 GiB large page
    read = lambda a, n: bytes(mem[a : a + n])  # noqa: E731
    fields = {"SYMBOL(swapper_pg_dir)": "3fffff40000", "KERNELOFFSET": "3fffe7f8000",
              "KERNELOFFPHYS": "8f8000"}
    mmu = S390xPageTables.from_vmcoreinfo(read, fields)
    assert (mmu.root, mmu.top_level) == (root, 1)
    assert mmu.translate(0x1234) == ((1 << 31) + 0x1234, (1 << 31) - 0x1234)
    # up to 6.9 (no KERNELOFFPHYS) the symbol is the physical address itself
    asked = []
    with pytest.raises(FilterUnavailable, match="no DAT table"):
        S390xPageTables.from_vmcoreinfo(lambda a, n: asked.append(a) or bytes(n),
                                        {k: v for k, v in fields.items() if k != "KERNELOFFPHYS"})
    assert asked == [0x3FFF_FF40_000]
    del fields["KERNELOFFSET"]
    with pytest.raises(FilterUnavailable, match=r"VMCOREINFO has no KERNELOFFSET"):
        S390xPageTables.from_vmcoreinfo(read, fields)
    fields["KERNELOFFSET"] = "3ffffffffff"
    with pytest.raises(FilterUnavailable, match="below the kernel image"):
        S390xPageTables.from_vmcoreinfo(read, fields)
    fields["KERNELOFFSET"] = "zz"
    with pytest.raises(FilterUnavailable, match="KERNELOFFSET='zz' is not a hex number"):
        S390xPageTables.from_vmcoreinfo(read, fields)


@pytest.fixture(scope="module")
def s390x_core(tmp_path_factory):
    """The real s390x sample with its VMCOREINFO (found in memory) as an ELF note, as a
    kernel's /proc/vmcore has it: `zfcpdump copy` writes that."""
    from zfcpdump.cli.main import main

    out = tmp_path_factory.mktemp("s390x") / "sample-with-vmcoreinfo.elf"
    assert main(["copy", str(sample_elf_path()), str(out)]) == 0
    return out


@needs_sample
@needs_makedumpfile_s390x
@pytest.mark.parametrize("level", [2, 8, 16, 31])
def test_s390x_sample_same_dump_as_makedumpfile(tmp_path, s390x_core, level):
    """On the real s390x Linux 6.1 dump, `dump --compress zlib --dump-level N` writes the
    file the s390x makedumpfile 1.7.2 writes with `-c -d N`, byte for byte after the
    utsname and timestamp (which it leaves empty without VMCOREINFO's help)."""
    ref = tmp_path / "md.kdump"
    p = run_makedumpfile("-c", "-d", str(level), s390x_core, ref)
    assert p.returncode == 0, p.stdout + p.stderr
    disk = prepared_image(tmp_path, mib_above(s390x_core.stat().st_size))
    assert capture(disk, s390x_core, "--compress", "zlib", "--dump-level", str(level)) == 0
    ours, theirs = dump_bytes(disk), ref.read_bytes()
    assert len(ours) == len(theirs)
    assert ours[:12] == theirs[:12] and ours[424:] == theirs[424:]


# ---- the two classifiers ----------------------------------------------------------
LAYOUT = PageStruct.from_vmcoreinfo(vmcoreinfo_fields(vmcoreinfo()), False, 31)

#: buddy, offline, hugetlb and slab in Linux 6.12's page_type (type << 24)
PAGE_TYPES_6_12 = (0xF0000000, 0xF1000000, 0xF4000000, 0xF5000000)
page_flags = st.builds(
    lambda bits, other: sum(1 << b for b in bits) | other,
    st.sets(st.sampled_from([PG["lru"], PG["slab"], PG["swapcache"], PG["private"],
                             PG["swapbacked"], PG["hwpoison"], 16])),
    # the low byte: a folio order where the next page's flags hold it (Linux 6.6+)
    st.sampled_from([0, 0, 1 << 40, 0xFF << 56, 1, 2, 9]))
struct_page = st.tuples(
    page_flags,
    st.sampled_from([0, 0x400, FILE_MAPPING, ANON_MAPPING]),
    st.sampled_from([0xFFFFFFFF, BUDDY, OFFLINE, 0, 5, *PAGE_TYPES_6_12, 0xF5000003,
                     0xFFFFEFFA, 0xFFFFF7FF]),
    st.one_of(st.integers(0, 12), st.sampled_from([40, 1 << 40])),
    st.sampled_from([0, 0, 0xFFFF_EA00_0000_1001]),
    st.integers(0, 12),
    st.sampled_from([0, 1, 2]),
)


def pack_memmap(pages, big_endian: bool) -> bytes:
    e = ">" if big_endian else "<"
    out = bytearray()
    for flags, mapping, mapcount, private, head, order, dtor in pages:
        p = bytearray(64)
        struct.pack_into(e + "QQ", p, 0, flags, head)
        p[16], p[17] = dtor, order
        struct.pack_into(e + "Q", p, 24, mapping)
        struct.pack_into(e + "Q", p, 40, private)
        struct.pack_into(e + "I", p, 48, mapcount)
        out += p
    return bytes(out)


#: fields VMCOREINFO may lack (None) and the numbers that vary between kernels
layouts = st.fixed_dictionaries({
    "mapcount": st.sampled_from([48, None]), "private": st.sampled_from([40, None]),
    "compound_head": st.sampled_from([8, None]), "compound_order": st.sampled_from([17, None]),
    "compound_dtor": st.sampled_from([16, None]), "pg_swapbacked": st.sampled_from([19, None]),
    "pg_hwpoison": st.sampled_from([23, None]),
    "buddy_mapcount": st.sampled_from([BUDDY, 0xF0000000, None]),
    "offline_mapcount": st.sampled_from([OFFLINE, 0xF1000000, None]),
    "hugetlb_dtor": st.sampled_from([2, None]), "max_order": st.integers(1, 64),
    # Linux 6.6-6.12: hugetlb as a flag or a page type, slab as a page type (either
    # encoding: a cleared bit before 6.12, the top byte from 6.12)
    "pg_hugetlb": st.sampled_from([None, 20]),
    "hugetlb_type": st.sampled_from([None, 0xF4000000, 0xFFFFF7FF]),
    "pg_slab": st.sampled_from([PG["slab"], None]),
    "slab_type": st.sampled_from([None, 0xF5000000, 0xFFFFEFFF]),
    "pg_head_mask": st.sampled_from([HEAD_MASK, 0])})


@settings(max_examples=800, deadline=None)
@given(pages=st.lists(struct_page, min_size=1, max_size=200), holes=st.binary(max_size=32),
       first_pfn=st.sampled_from([0, 8, 13, 512, 4096]), level=st.integers(0, 31),
       big_endian=st.booleans(), layout=layouts, spare=st.sampled_from([0, 3, 600]),
       npages=st.one_of(st.none(), st.integers(0, 200)))
def test_rust_and_python_classifiers_agree(pages, holes, first_pfn, level, big_endian, layout,
                                            spare, npages):
    layout = dict(LAYOUT.as_dict(), big_endian=big_endian, **layout)
    memmap = pack_memmap(pages, big_endian)
    # the bitmap may end inside the pages or well past them (bits past it: not RAM)
    nbytes = (first_pfn + len(pages) * (spare > 0) + spare) // 8 + 1
    ram = bytearray(b"\xff" * nbytes)
    for i, b in enumerate(holes):
        ram[((first_pfn >> 3) + i % max(1, len(pages) >> 3)) % nbytes] &= b | 0x0F
    a, b = bytearray(ram), bytearray(ram)
    counts_rust = list(_core.exclude_pages(memmap, first_pfn, layout, level, a, npages))
    counts_py = py_exclude_pages(memmap, first_pfn, layout, level, b, npages)
    assert a == b
    assert counts_rust == counts_py
    assert sum(counts_rust) == sum(bin(x).count("1") for x in ram) - sum(bin(x).count("1") for x in a)


@pytest.mark.parametrize("field,value,message", [
    ("mapping", 60, "page.mapping"), ("size", 4096, r"SIZE\(page\)"),
    ("max_order", 65, r"LENGTH\(zone.free_area\)"), ("max_order", 0, "free_area")])
def test_bad_page_struct_is_refused_by_both(field, value, message):
    bad = dict(LAYOUT.as_dict(), **{field: value})
    with pytest.raises(ValueError, match=message):
        _core.exclude_pages(bytes(64), 0, bad, 31, bytearray(1))
    with pytest.raises(FilterUnavailable, match=message):
        PageStruct(**bad).validate()


@pytest.mark.parametrize("key,value", [
    ("NUMBER(PG_head_mask)", "-65536"), ("LENGTH(zone.free_area)", "-1"),
    ("NUMBER(HUGETLB_PAGE_DTOR)", "-2"), ("NUMBER(MAX_PHYSMEM_BITS)", str(10**19)),
    ("SIZE(page)", "100000"), ("LENGTH(mem_section)", "0"), ("SIZE(mem_section)", "0"),
    ("NUMBER(SECTION_SIZE_BITS)", "2")])
def test_impossible_vmcoreinfo_values_are_unavailable_not_a_crash(kernel, key, value):
    f = vmcoreinfo_fields(vmcoreinfo())
    f[key] = value
    with pytest.raises(FilterUnavailable):
        filter_pages(lambda a, n: bytes(kernel.mem[a : a + n]), f, arch="x86_64",
                     big_endian=False, page_size=PAGE, ram=[(0, NPFN)], dump_level=31)


def test_sparsemem_numbers_default_for_older_kernels(kernel):
    """Kernels before 5.9/5.14 export no SECTION_SIZE_BITS/MAX_PHYSMEM_BITS: the
    architecture's are used, and checked against LENGTH(mem_section)."""
    info = vmcoreinfo(drop=("NUMBER(SECTION_SIZE_BITS)", "NUMBER(MAX_PHYSMEM_BITS)"))
    # kernelmem's own numbers (24, 40) are not x86_64's (27, 46): refused, not misread
    with pytest.raises(FilterUnavailable, match="SPARSEMEM_EXTREME"):
        run_filter(kernel, 31, info=info)
    f = vmcoreinfo_fields(info)
    f["NUMBER(SECTION_SIZE_BITS)"] = "24"  # only x86_64's 46 physmem bits defaulted,
    f["LENGTH(mem_section)"] = str((1 << (46 - 24)) // 128)  # with roots to match
    res = filter_pages(lambda a, n: bytes(kernel.mem[a : a + n]), f, arch="x86_64",
                       big_endian=False, page_size=PAGE, ram=[(0, NPFN)], dump_level=31)
    assert excluded_pfns(res.dumpable) == kernel.excluded(31)


def test_ram_bitmap():
    bm = ram_bitmap([(1, 3), (8, 16), (30, 1)], 31)
    assert excluded_pfns(bm, 31) == {0, 4, 5, 6, 7} | set(range(24, 30))


# ---- captures ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def kernel_core(tmp_path_factory, kernel):
    path = tmp_path_factory.mktemp("kcore") / "vmcore.elf"
    size = kernel.write(path)
    return path, size


@pytest.mark.parametrize("engine", ENGINES)
def test_filtered_capture_keeps_exactly_the_other_pages(tmp_path, kernel, kernel_core, capsys,
                                                         engine):
    vmcore, size = kernel_core
    disk = prepared_image(tmp_path, size + (1 << 20))
    capsys.readouterr()
    assert capture(disk, vmcore, "--compress", "zstd", "--dump-level", "31", engine=engine) == 0
    out = capsys.readouterr()
    assert "WARNING" not in out.err
    assert " filter...: 25 free, 11 cache, 5 cache private, 1044 user, 1 hwpoison, 1 offline " \
           "pages excluded (4 MB), 2 sections walked" in out.out
    assert "dump level 31" in out.out
    raw = dump_bytes(disk)
    assert struct.unpack_from("<I", raw, PAGE + 8)[0] == 31  # sub header dump_level
    excluded = kernel.excluded(31)
    # `info` says the dump is filtered, and how much was left out
    from zfcpdump.info import info_lines

    with open_dump(f"{disk}:1") as d:
        info = info_lines(d)
    assert "  Dump level.........: 31" in info, info
    assert (f"  Excluded pages.....: {len(excluded)} (4 MB, filtered at capture; they read "
            "as zeroes)") in info, info
    with open_dump(f"{disk}:1") as d:
        for pfn in range(NPFN):
            got = d.read_phys(pfn * PAGE, PAGE)
            want = bytes(PAGE) if pfn in excluded else bytes(kernel.mem[pfn * PAGE : (pfn + 1) * PAGE])
            assert got == want, pfn


def test_elf_copy_of_an_x86_64_kdump_has_the_kernels_virtual_addresses(tmp_path, kernel,
                                                                       kernel_core):
    """A kdump file keeps no virtual addresses; `copy` to ELF gives the PT_LOADs those of
    /proc/vmcore (direct map, and the kernel image from _stext over the same bytes), found
    in the kernel's page tables, so that vmcore-dmesg-like readers find symbols."""
    from kernelmem import DIRECT_MAP, RAM, STEXT, STEXT_PHYS
    from zfcpdump.cli.main import main

    vmcore, size = kernel_core
    disk = prepared_image(tmp_path, mib_above(size))
    assert capture(disk, vmcore, "--compress", "zstd", "--dump-level", "31") == 0
    out = tmp_path / "copy.elf"
    assert main(["copy", f"{disk}:1", str(out)]) == 0
    raw = out.read_bytes()
    phnum = struct.unpack_from("<H", raw, 0x38)[0]
    loads = [struct.unpack_from("<IIQQQQQQ", raw, 64 + 56 * i) for i in range(phnum)]
    loads = [p for p in loads if p[0] == 1]
    ram = [p for p in loads if p[3] < STEXT]
    text = [p for p in loads if p[3] >= STEXT]
    assert ram and all(v == DIRECT_MAP + pa for _t, _f, _o, v, pa, *_ in ram)
    assert sum(p[6] for p in ram) == RAM
    # the image: from _stext, physically contiguous, aliasing the RAM's file bytes
    assert text[0][3:5] == (STEXT, STEXT_PHYS)
    for _t, _f, off, vaddr, paddr, filesz, memsz, _a in text:
        assert vaddr - STEXT == paddr - STEXT_PHYS
        if filesz:
            assert raw[off : off + 64] == bytes(kernel.mem[paddr : paddr + 64])
    assert text[-1][4] + text[-1][6] == RAM  # up to the end of memory (below 1 GiB)


@pytest.mark.parametrize("image_mib", [5, 9])
def test_elf_copy_reads_back_with_the_sources_chunks(tmp_path, kernel, image_mib):
    """The kernel-image PT_LOADs of an ELF copy alias the RAM's bytes: read back, the copy
    has the source's chunks, not chunks cut where the image happens to end (KASLR puts it
    anywhere; the end-to-end test met a cut at 652 MiB)."""
    from kernelmem import STEXT, STEXT_PHYS, vmcoreinfo
    from zfcpdump.cli.main import main

    image = STEXT_PHYS + (image_mib << 20) + 3 * PAGE  # KERNEL_IMAGE_SIZE counts from 0
    src = tmp_path / "vmcore.elf"
    kernel.write(src, vmcoreinfo() + f"NUMBER(KERNEL_IMAGE_SIZE)={image}\n".encode())
    out = tmp_path / "copy.elf"
    assert main(["copy", str(src), str(out)]) == 0
    raw = out.read_bytes()
    phnum = struct.unpack_from("<H", raw, 0x38)[0]
    loads = [struct.unpack_from("<IIQQQQQQ", raw, 64 + 56 * i) for i in range(phnum)]
    text = [p for p in loads if p[0] == 1 and p[3] >= STEXT]
    assert [(p[4], p[6]) for p in text] == [(STEXT_PHYS, (image_mib << 20) + 3 * PAGE)]
    with open_dump(str(src)) as a, open_dump(str(out)) as b:
        assert [(c.start, c.size) for c in b.chunks] == [(c.start, c.size) for c in a.chunks]
        assert b.read_phys(0, len(kernel.mem)) == bytes(kernel.mem)


def test_a_load_with_bytes_of_its_own_is_no_alias():
    """/proc/vmcore's kernel-image PT_LOAD repeats physical memory from bytes of its own:
    merge_chunks decides there (zgetdump's rule); only a LOAD over the same file bytes,
    or over zeroes where the other has zeroes too, is an alias."""
    from zfcpdump.readers.elf import ProgramHeader, alias_loads

    def load(i, offset, paddr, filesz, memsz):
        return ProgramHeader(i, 1, 7, offset, 0, paddr, filesz, memsz, PAGE)

    ram = load(0, 0x1000, 0, 0x100000, 0x200000)  # 1 MiB of bytes, 1 MiB of zeroes
    assert alias_loads([ram, load(1, 0x1000 + 0x8000, 0x8000, 0x4000, 0x4000)]) == {1}
    assert alias_loads([ram, load(1, 0x1000 + 0x8000, 0x8000, 0x4000, 0x4000)][::-1]) == {1}
    assert alias_loads([ram, load(1, 0x300000, 0x8000, 0x4000, 0x4000)]) == set()  # own bytes
    assert alias_loads([ram, load(1, 0, 0x180000, 0, 0x1000)]) == {1}  # zeroes over zeroes
    assert alias_loads([ram, load(1, 0, 0xFF000, 0, 0x2000)]) == set()  # zeroes over bytes
    # bytes running into zeroes where the other does too; and past the other's end
    assert alias_loads([ram, load(1, 0x1000 + 0xFF000, 0xFF000, 0x1000, 0x3000)]) == {1}
    assert alias_loads([ram, load(1, 0x1000 + 0xFF000, 0xFF000, 0x1000, 0x200000)]) == set()
    twin = load(1, 0x1000, 0, 0x100000, 0x200000)  # identical LOADs: the second is the alias
    assert alias_loads([ram, twin]) == {1}
    # an alias over a range where a third LOAD has bytes of its own is none: dropping
    # it would hand that range to the third (the later start wins in merge_chunks)
    own = load(2, 0x500000, 0x1000, 0x2000, 0x2000)
    assert alias_loads([ram, load(1, 0x1000 + 0x2000, 0x2000, 0x1000, 0x1000), own]) == set()
    assert alias_loads([ram, load(1, 0x1000 + 0x4000, 0x4000, 0x1000, 0x1000), own]) == {1}


def test_an_elf_copy_keeps_the_kernel_images_virtual_addresses(tmp_path, kernel):
    """Read back, the aliasing kernel-image PT_LOADs of our x86_64 ELF copy still
    translate kernel virtual addresses (the utsname of a capture from such a copy)."""
    from kernelmem import STEXT, STEXT_PHYS
    from zfcpdump.cli.main import main
    from zfcpdump.readers.enrich import virt_to_phys

    src = tmp_path / "vmcore.elf"
    kernel.write(src)
    out = tmp_path / "copy.elf"
    assert main(["copy", str(src), str(out)]) == 0
    with open_dump(str(out)) as d:
        assert d.virt_aliases and d.virt_aliases[0][:2] == (STEXT, STEXT_PHYS)
        assert virt_to_phys(d, STEXT + 0x1234) == STEXT_PHYS + 0x1234


def test_engines_write_identical_filtered_partitions(tmp_path, kernel_core):
    vmcore, size = kernel_core
    parts = []
    for engine in ENGINES:
        disk = prepared_image(tmp_path, size + (1 << 20), name=f"{engine}.img")
        assert capture(disk, vmcore, "--compress", "zlib", "--dump-level", "31",
                       engine=engine) == 0
        parts.append(dump_bytes(disk))
    assert parts[0] == parts[1]


@needs_libkdumpfile
def test_libkdumpfile_reads_a_filtered_dump(tmp_path, kernel, kernel_core):
    vmcore, size = kernel_core
    disk = prepared_image(tmp_path, size + (1 << 20))
    assert capture(disk, vmcore, "--compress", "zstd", "--dump-level", "31") == 0
    path = tmp_path / "dump.kdump"
    path.write_bytes(dump_bytes(disk))
    got = probe(path, [(1500 * PAGE, 500 * PAGE)])  # a run of kept pages
    import hashlib
    assert got["format"] == "diskdump"
    want = bytes(kernel.mem[1500 * PAGE : 2000 * PAGE])
    assert got["reads"][0]["sha256"] == hashlib.sha256(want).hexdigest()


def test_unverified_kernel_captures_with_zero_pages_only(tmp_path, kernel, capsys):
    vmcore = tmp_path / "vmcore.elf"
    size = kernel.write(vmcore, vmcoreinfo(release="7.4.0-1-amd64"))
    disk = prepared_image(tmp_path, size + (1 << 20))
    capsys.readouterr()
    assert capture(disk, vmcore, "--compress", "zstd", "--dump-level", "31") == 0
    err = capsys.readouterr().err
    assert ("WARNING: --dump-level 31: excluding cache, cache private, user, free pages is not "
            "possible (the page rules are verified for x86_64 Linux 4.16 to 7.3, the dump is from "
            "7.4.0-1-amd64); only zero pages are excluded (dump level 1)") in err
    assert struct.unpack_from("<I", dump_bytes(disk), PAGE + 8)[0] == 1
    with open_dump(f"{disk}:1") as d:
        assert d.read_phys(1200 * PAGE, PAGE) == bytes(kernel.mem[1200 * PAGE : 1201 * PAGE])


def test_filter_does_not_apply_to_raw_captures(tmp_path, kernel_core, capsys):
    """--dump-level belongs to --compress: without it the command is refused (a raw
    copy keeps every byte), nothing written."""
    vmcore, size = kernel_core
    disk = prepared_image(tmp_path, size + (1 << 20))
    capsys.readouterr()
    before = sha256_file(disk)
    rc = capture(disk, vmcore, "--dump-level", "31")
    err = capsys.readouterr().err
    assert rc == 2 and "ERROR: --dump-level needs --compress" in err, err
    assert sha256_file(disk) == before

"""Faults with real kernel errors (issue #5): a FUSE file system (tests/faults/faultfs.py)
serves the disk image and the vmcore and fails chosen writes, O_DIRECT writes, fsyncs
and reads with EIO/ENOSPC — used directly and behind a loop device. Every capture that
meets a fault must fail loudly (ERROR: line naming the operation, offset and errno text,
"Dump failed", exit 1) and leave no valid-looking dump: the busy marker, with a
consistent checksum, so the next capture is allowed and succeeds.

Also here: the power-loss order (page 0 after everything else is durable), proven from
the write/fsync log of the same file system, and --verify against a silently flipped
byte.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import MIB, dump_state, sha256_file
from faults.harness import FaultMount, Loop, copy_sparse, fuse_available

from zfcpdump.cli.main import main
from zfcpdump.disk.cksm import cksm
from zfcpdump.disk.image import create_mbr_image
from zfcpdump.disk.zipl import BUSY_MARKER, ScsiMbr

pytestmark = pytest.mark.skipif(fuse_available() is not None, reason=str(fuse_available()))

PART = MIB  # the dump partition starts here; the dump area starts at the partition
ERRTEXT = {"EIO": "Input/output error", "ENOSPC": "No space left on device"}
STATS = {"faults": 0, "survived": 0}


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    root = tmp_path_factory.mktemp("faultfs")
    m = FaultMount(root)
    yield m
    m.close()


@pytest.fixture(scope="module")
def setup(fs, tmp_path_factory):
    """A prepared template image and a vmcore, both in the backing directory."""
    from zfcpdump.synth import SynthSpec, write_vmcore

    vm = fs.backing / "vmcore.elf"
    size = write_vmcore(str(vm), SynthSpec(ranges=[(0, 6 * MIB), (8 * MIB, 2 * MIB + 4096)], cpus=2))
    tpl = fs.root / "template.img"
    create_mbr_image(str(tpl), 24 * MIB, [(PART, 20 * MIB)])
    assert main(["prepare", str(tpl), "-p", "1", "--metadata-only"]) == 0
    with open(tpl, "rb") as f:
        sb_off = ScsiMbr.from_bytes(f.read(152)).superblock_offset
    return {"vmcore": vm, "size": size, "template": tpl, "sb_off": sb_off}


def assert_no_valid_dump(image, capsys=None):
    first, sb = dump_state(image)
    assert not first.startswith(b"\x7fELF"), "a failed capture left a valid-looking dump"
    assert first.startswith(b"zfcpdump busy\0")
    assert sb.csum == cksm(first), "checksum inconsistent: the next capture would be refused"
    assert main(["check", str(image)]) == 1


def assert_failed_with_eio_at(res, at: int) -> str:
    """A capture that failed loudly on an EIO at offset `at` (of the vmcore for a read,
    of the partition for a write): exit 1, "Dump failed", an ERROR: line whose
    offset/bytes cover `at`, the errno text. Returns that line."""
    err = res.stderr
    assert res.returncode == 1, (res.stdout, err)
    assert res.stdout.splitlines()[-1] == "Dump failed"
    assert "Traceback" not in err
    first = next(line for line in err.splitlines() if line.startswith("ERROR: "))
    assert ERRTEXT["EIO"] in err, err
    m = re.search(r"offset=0x([0-9a-f]{16}) bytes=0x([0-9a-f]{16})", first)
    assert m, err
    off, n = int(m.group(1), 16), int(m.group(2), 16)
    assert off <= at < off + n, (first, hex(at))
    return first


def run_dump(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "zfcpdump", "dump", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def fault_rules(point, errno_name, setup, vm_name="vmcore.elf", disk_name="disk.img"):
    size, sb_off = setup["size"], setup["sb_off"]
    page0 = {"file": disk_name, "start": PART, "end": PART + 4096, "data": "7f454c46"}
    mid = PART + (size // 2) // 4096 * 4096 + 100
    if point == "first-range":
        return [{"op": "write", "file": disk_name, "start": PART + 12288 + 100,
                 "end": PART + 12289 + 100, "errno": errno_name}], PART + 12288 + 100
    if point == "middle":
        return [{"op": "write", "file": disk_name, "start": mid, "end": mid + 1,
                 "errno": errno_name}], mid
    if point == "page0":
        return [{"op": "write", "errno": errno_name, **page0}], PART
    if point == "checksum":  # the superblock write that goes with page 0
        return [{"op": "write", "file": disk_name, "start": sb_off, "end": sb_off + 72,
                 "errno": errno_name, "times": 1, "armed_by": page0}], sb_off
    if point == "fsync-data":  # the flush before page 0
        return [{"op": "fsync", "file": disk_name, "errno": errno_name, "times": 1,
                 "armed_by": {"start": PART + size - 4096, "end": PART + size}}], None
    if point == "fsync-final":  # the flush after page 0 and its checksum
        return [{"op": "fsync", "file": disk_name, "errno": errno_name, "times": 1,
                 "armed_by": page0}], None
    if point == "read":
        return [{"op": "read", "file": vm_name, "start": size // 2 + 7, "end": size // 2 + 8,
                 "errno": errno_name}], size // 2 + 7
    raise AssertionError(point)


POINTS = [("first-range", "EIO"), ("first-range", "ENOSPC"), ("middle", "EIO"),
          ("middle", "ENOSPC"), ("page0", "EIO"), ("page0", "ENOSPC"), ("checksum", "EIO"),
          ("checksum", "ENOSPC"), ("fsync-data", "EIO"), ("fsync-final", "EIO"), ("read", "EIO")]
TARGETS = [("rust", "file", "off"), ("rust", "file", "on"), ("rust", "loop", "off"),
           ("rust", "loop", "on"), ("python", "file", "off"), ("python", "loop", "off")]


@pytest.mark.parametrize("engine,target,direct", TARGETS, ids=["-".join(t) for t in TARGETS])
@pytest.mark.parametrize("point,errno_name", POINTS, ids=[f"{p}-{e}" for p, e in POINTS])
def test_fault_fails_loudly_and_leaves_no_valid_dump(fs, setup, engine, target, direct,
                                                      point, errno_name):
    name = f"d-{engine}-{target}-{direct}-{point}-{errno_name}.img"
    image = fs.backing / name
    copy_sparse(setup["template"], image)
    rules, fault_at = fault_rules(point, errno_name, setup, disk_name=name)
    loop = Loop(fs.mnt / name) if target == "loop" else None
    if loop:  # a disk fails a whole request; the loop driver mishandles short writes
        rules = [dict(r, short=False) for r in rules]
    try:
        fs.set_rules(rules)
        disk = loop.dev if loop else fs.mnt / name
        res = run_dump("-i", fs.mnt / "vmcore.elf", "--engine", engine, "--direct", direct,
                       "--buffer-size", "256k", disk)
    finally:
        fs.set_rules([])
        if loop:
            loop.detach()
    STATS["faults"] += 1
    err = res.stderr
    assert res.returncode == 1, (res.stdout, err)
    assert res.stdout.splitlines()[-1] == "Dump failed"
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("ERROR: ")]
    assert errors, err
    first = errors[0]
    lines = err.splitlines()
    following = lines[lines.index(first) + 1] if lines.index(first) + 1 < len(lines) else ""
    # Under a loop device the block layer reports a failed writeback as EIO, whatever
    # the backing file said.
    texts = {ERRTEXT[errno_name]} | ({ERRTEXT["EIO"]} if target == "loop" else set())
    assert any(t in following or t in first for t in texts), err
    if point == "read":
        assert first.startswith(f"ERROR: Read from {fs.mnt / 'vmcore.elf'} failed: offset=0x"), err
    elif point.startswith("fsync") or (target == "loop" and (direct == "off" or point in ("page0", "checksum"))):
        # buffered writes to a block device fail at the flush: the kernel says no more
        assert re.match(r"ERROR: (Flush of partition failed|Write .* failed: offset=0x)", first), err
    else:
        assert re.match(r"ERROR: Write (to partition|of superblock) failed: offset=0x[0-9a-f]{16} "
                        r"bytes=0x[0-9a-f]{16}$", first), err
    m = re.search(r"offset=0x([0-9a-f]{16}) bytes=0x([0-9a-f]{16})", first)
    if m and fault_at is not None and point in ("first-range", "middle", "read"):
        off, n = int(m.group(1), 16), int(m.group(2), 16)
        rel = fault_at - (0 if point == "read" else PART)
        assert off <= rel < off + max(n, 1), (first, hex(rel))
    assert "Checksum update after failure failed" not in err
    assert_no_valid_dump(image)
    # ... and the next capture (no fault now) is allowed and verifies.
    assert main(["dump", "-i", str(setup["vmcore"]), "--verify", str(image)]) == 0
    assert main(["check", str(image)]) == 0
    STATS["survived"] += 1


@pytest.mark.parametrize("engine", ["rust", "python"])
@pytest.mark.parametrize("pair", ["busy", "commit"])
def test_sigkill_cannot_part_a_first_block_from_its_checksum(fs, setup, engine, pair):
    """SIGKILL while the first block of the dump area goes out (the busy marker at the
    start, page 0 at the end; here the file system holds that write 2 s): its checksum
    is written all the same (fileio.pwrite_together writes the pair in a child
    process), so the next capture is allowed. Written one after the other by the dump
    process, the kill left the block without its checksum: the next capture refused."""
    name = f"kill-{engine}-{pair}.img"
    image = fs.backing / name
    copy_sparse(setup["template"], image)
    marker = (BUSY_MARKER if pair == "busy" else b"\x7fELF")[:4].hex()
    fs.clear_log()
    fs.set_rules([{"op": "stall", "file": name, "start": PART, "end": PART + 4096,
                   "data": marker, "seconds": 2, "times": 1}])
    try:
        proc = subprocess.Popen([sys.executable, "-m", "zfcpdump", "dump", "-i",
                                 str(fs.mnt / "vmcore.elf"), "--engine", engine,
                                 str(fs.mnt / name)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not any(e[:1] == ["STALL"] for e in fs.log_entries()):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the write was not held: {proc.communicate()}")
            time.sleep(0.02)
        proc.kill()
        proc.communicate(timeout=60)
        # The held write ends after 2 s; then its checksum must follow (the superblock
        # written after the STALL line), although the dump process is gone.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            log = fs.log_entries()
            stall = next(i for i, e in enumerate(log) if e[:1] == ["STALL"])
            if any(e[:3] == ["write", name, str(setup["sb_off"])] for e in log[stall:]):
                break
            time.sleep(0.1)
        first, sb = dump_state(image)
    finally:
        fs.set_rules([])
    assert proc.returncode == -signal.SIGKILL
    assert sb.csum == cksm(first), "the first block went out without its checksum"
    if pair == "busy":
        assert first.startswith(BUSY_MARKER)
        assert main(["check", str(image)]) == 1
    else:  # page 0 is written last: the dump is complete
        assert first.startswith(b"\x7fELF")
        assert sha256_file(image, PART, setup["size"]) == sha256_file(setup["vmcore"])
        assert main(["check", str(image)]) == 0
    assert main(["dump", "-i", str(setup["vmcore"]), "--verify", str(image)]) == 0


@pytest.mark.parametrize("engine,threads", [("rust", "1"), ("rust", "2"), ("python", "1")])
def test_compressed_capture_read_fault_fails_loudly(fs, setup, engine, threads):
    """A read fault in the vmcore during a compressed capture (the Rust engine's
    compressors read their own batches, in parallel): the capture stops with the read
    error and its offset, nothing valid-looking is left, and the next capture succeeds."""
    name = f"kr-{engine}-{threads}.img"
    image = fs.backing / name
    copy_sparse(setup["template"], image)
    rules, fault_at = fault_rules("read", "EIO", setup, disk_name=name)
    fs.set_rules(rules)
    try:
        res = run_dump("-i", fs.mnt / "vmcore.elf", "--engine", engine, "--threads", threads,
                       "--compress", "zstd", "--dump-level", "0", fs.mnt / name)
    finally:
        fs.set_rules([])
    first = assert_failed_with_eio_at(res, fault_at)
    assert first.startswith(f"ERROR: Read from {fs.mnt / 'vmcore.elf'} failed: offset=0x")
    assert_no_valid_dump(image)
    assert main(["dump", "-i", str(setup["vmcore"]), "--compress", "zstd", str(image)]) == 0
    assert main(["check", str(image)]) == 0


@pytest.mark.parametrize("engine,direct", [("rust", "on"), ("rust", "off"), ("python", "off")])
def test_compressed_capture_fault_fails_loudly(fs, setup, engine, direct):
    """A write fault in the page data of a compressed capture (with O_DIRECT the data
    stream's later buffers go out behind, through Linux AIO): the error is reported
    with its offset, nothing valid-looking is left, and the next capture succeeds."""
    name = f"k-{engine}-{direct}.img"
    image = fs.backing / name
    copy_sparse(setup["template"], image)
    # dump level 0 keeps every page, and none stores compressed: ~8 MiB of page data,
    # so 6 MiB into the partition is in its second 4 MiB data buffer
    fault_at = PART + 6 * MIB + 100
    fs.set_rules([{"op": "write", "file": name, "start": fault_at, "end": fault_at + 1,
                   "errno": "EIO"}])
    try:
        res = run_dump("-i", fs.mnt / "vmcore.elf", "--engine", engine, "--direct", direct,
                       "--compress", "none", "--dump-level", "0", fs.mnt / name)
    finally:
        fs.set_rules([])
    assert_failed_with_eio_at(res, fault_at - PART)
    assert_no_valid_dump(image)
    assert main(["dump", "-i", str(setup["vmcore"]), "--compress", "zstd", str(image)]) == 0
    assert main(["check", str(image)]) == 0


@pytest.mark.parametrize("engine", ["rust", "python"])
def test_persistent_superblock_fault_still_no_valid_dump(fs, setup, engine):
    """The superblock can never be written again after page 0: the busy page goes back
    exactly as it was, so the old (busy) checksum matches it."""
    name = f"sbdead-{engine}.img"
    image = fs.backing / name
    copy_sparse(setup["template"], image)
    rules, _ = fault_rules("checksum", "EIO", setup, disk_name=name)
    rules[0]["times"] = -1
    fs.set_rules(rules)
    try:
        res = run_dump("-i", fs.mnt / "vmcore.elf", "--engine", engine, fs.mnt / name)
    finally:
        fs.set_rules([])
    STATS["faults"] += 1
    assert res.returncode == 1 and "Input/output error" in res.stderr
    assert res.stdout.splitlines()[-1] == "Dump failed"
    assert_no_valid_dump(image)
    STATS["survived"] += 1


def _order_checks(entries, size, sb_off, disk_name):
    """Page 0 (ELF) is written after a flush that follows every other data write, and
    is followed by its checksum and a flush; nothing else is written after it."""
    writes = [(i, int(e[2]), int(e[3]), e[4] if len(e) > 4 else "") for i, e in enumerate(entries)
              if e[0] == "write" and e[1] == disk_name]
    fsyncs = [i for i, e in enumerate(entries) if e[0] == "fsync" and e[1] == disk_name]
    page0 = [w for w in writes if w[1] == PART and w[3].startswith("7f454c46")]
    assert len(page0) == 1, writes
    p = page0[0][0]
    data = [w for w in writes if PART + 4096 <= w[1] < PART + size
            or (w[1] < PART + 4096 < w[1] + w[2] and w[1] >= PART)]
    assert data, "no data writes logged"
    last_data = max(w[0] for w in data)
    assert last_data < p
    assert any(last_data < f < p for f in fsyncs), "no flush between the data and page 0"
    busy = [w for w in writes if w[1] == PART and w[3].startswith("7a66637064756d70")]
    assert busy and busy[0][0] < min(w[0] for w in data), "busy marker not first"
    assert any(busy[0][0] < f < min(w[0] for w in data) for f in fsyncs), "busy marker not flushed first"
    after = [w for w in writes if w[0] > p]
    assert all(w[1] <= sb_off < w[1] + w[2] for w in after), f"written after page 0: {after}"
    assert after, "checksum not updated after page 0"
    assert any(f > max(w[0] for w in after) for f in fsyncs), "no flush after page 0 and checksum"


@pytest.mark.parametrize("engine,target,direct",
                         [("rust", "file", "off"), ("rust", "file", "on"), ("rust", "loop", "off"),
                          ("rust", "loop", "on"), ("python", "file", "off"), ("python", "loop", "off")])
def test_power_loss_order(fs, setup, engine, target, direct):
    name = f"order-{engine}-{target}-{direct}.img"
    image = fs.backing / name
    copy_sparse(setup["template"], image)
    loop = Loop(fs.mnt / name) if target == "loop" else None
    try:
        fs.clear_log()
        res = run_dump("-i", setup["vmcore"], "--engine", engine, "--direct", direct,
                       loop.dev if loop else fs.mnt / name)
        entries = fs.log_entries()
    finally:
        if loop:
            loop.detach()
    assert res.returncode == 0, res.stderr
    _order_checks(entries, setup["size"], setup["sb_off"], name)


@pytest.mark.parametrize("engine", ["rust", "python"])
@pytest.mark.parametrize("where", ["page0", "first", "middle", "last"])
def test_verify_catches_a_flipped_byte(fs, setup, engine, where, tmp_path):
    """The file system stores one byte inverted: --verify must fail the capture, and the
    partition must not look valid afterwards."""
    name = f"flip-{engine}-{where}.img"
    image = fs.backing / name
    copy_sparse(setup["template"], image)
    size = setup["size"]
    at = PART + {"page0": 100, "first": 4096, "middle": size // 2 + 3, "last": size - 1}[where]
    # (the busy marker is 14 bytes at PART: only page 0 itself touches PART + 100)
    fs.set_rules([{"op": "flip", "file": name, "start": at, "end": at + 1, "times": 1}])
    try:
        res = run_dump("-i", setup["vmcore"], "--engine", engine, "--verify", fs.mnt / name)
    finally:
        fs.set_rules([])
    assert res.returncode == 1, res.stdout + res.stderr
    assert "ERROR: Verification failed: partition bytes" in res.stderr
    assert res.stdout.splitlines()[-1] == "Dump failed"
    assert_no_valid_dump(image)


@pytest.mark.parametrize("engine", ["rust", "python"])
def test_verify_catches_data_the_loop_driver_dropped(fs, setup, engine):
    """Found while building this suite: when the loop driver's backing file takes only
    part of a write (a short write), the kernel's loop driver reports the request as
    complete and the rest of it is silently lost (drivers/block/loop.c treats a short
    write as success). Nothing in the capture can see that; --verify does."""
    name = f"shortloop-{engine}.img"
    image = fs.backing / name
    copy_sparse(setup["template"], image)
    at = PART + 3 * MIB + 100
    loop = Loop(fs.mnt / name)
    try:
        fs.set_rules([{"op": "write", "file": name, "start": at, "end": at + 1, "errno": "ENOSPC",
                       "times": 1}])
        res = run_dump("-i", setup["vmcore"], "--engine", engine, "--direct", "off", "--verify",
                       loop.dev)
    finally:
        fs.set_rules([])
        loop.detach()
    STATS["faults"] += 1
    if res.returncode == 0:  # a kernel that reports the short write: then the dump is right
        assert sha256_file(image, PART, setup["size"]) == sha256_file(setup["vmcore"])
    else:
        assert "ERROR: Verification failed" in res.stderr or "ERROR: Flush" in res.stderr \
            or "ERROR: Write" in res.stderr, res.stderr
        assert res.stdout.splitlines()[-1] == "Dump failed"
        assert_no_valid_dump(image)
    STATS["survived"] += 1


def test_report_fault_counts():
    print(f"\nfaults injected: {STATS['faults']}, survived: {STATS['survived']}")

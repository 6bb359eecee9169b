"""Measure a disk the way zfcpdump uses it (issue #4; performance.md §1, §4).

One implementation for ``benches/`` and ``zfcpdump bench``. In one run, on the same
device and for the same byte count, it times:

* ``capture-rust`` / ``capture-python``: ``zfcpdump dump`` (in a child process, timed
  around the command itself, interpreter start-up excluded) into a prepared disk, or,
  on a raw partition, the engine's ``copy_ranges`` with the capture's options;
  ``capture-rust-aio``: the same with ``--io-engine aio`` (native AIO, one thread,
  writes in order); ``capture-rust-mmap``: with ``--mmap`` (reads through mmap windows,
  the default for /proc/vmcore but not for the bench's file; from a file in tmpfs the
  O_DIRECT writes go straight from the mapping, which /proc/vmcore does not allow);
* ``ref-dd-64k``: s390-tools zfcpdump's I/O pattern, 64 KiB buffered reads and writes
  then one fsync (``dd bs=64k conv=fsync`` from the same vmcore);
* ``ref-fio-64k``: the same pattern by fio (performance.md §1 anchor, writes fio's data);
* ``limit-dd-4m``: ``dd if=/dev/zero bs=4M oflag=direct`` (O_DIRECT, queue depth 1);
* ``limit-fio``: ``fio --direct=1 --bs=<our buffer> --iodepth=<our depth>
  --ioengine=libaio --end_fsync=1`` (the device's own limit for our request shape);

and for the read-back side (dump area -> ELF file): ``copy-rust``, ``copy-python``
(engine ``copy_ranges`` with ``sync=True``) against ``copy-dd-4m`` (``dd bs=4M
conv=fsync``).

Every measurement runs in a child process, so its wall time, user+sys CPU and peak RSS
come from ``wait4``. As root the page cache is dropped (``sync; echo 3 >
/proc/sys/vm/drop_caches``) before every single measurement; the report says whether it
was. The order of the methods is rotated from run to run, and each ratio is taken
between the two methods of the same run, then summarised (median, min, max).

Benchmark inputs come from :func:`write_fast_vmcore`: a kernel-style s390x ELF core
(notes, two PT_LOADs), fully written (no holes), a third each zero pages, text pages and
random pages, every non-zero page stamped with its physical address.
"""

from .common import GIB, MIB, PAGE, Log, drop_caches, fmt_size, is_root, parse_size, _fs_type
from .generate import write_fast_vmcore
from .measure import Method, Sample, capture_methods, copy_methods, main_worker, run_child_rusage, run_fio
from .report import (BenchConfig, Row, Section, bench, environment, format_section,
                     ratio_values, run_series, section_dict, summary)
from .targets import Target, image_target, loop_target, raw_target

__all__ = [
    "GIB", "MIB", "PAGE", "Log", "drop_caches", "fmt_size", "is_root", "parse_size", "_fs_type",
    "write_fast_vmcore", "Method", "Sample", "capture_methods", "copy_methods", "main_worker",
    "run_child_rusage", "run_fio", "BenchConfig", "Row", "Section", "bench", "environment",
    "format_section", "ratio_values", "run_series", "section_dict", "summary", "Target",
    "image_target", "loop_target", "raw_target",
]

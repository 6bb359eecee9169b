"""Coverage-guided fuzzing of the readers with atheris (libFuzzer for Python).

    python tests/faults/fuzz_atheris.py TARGET [libFuzzer options, e.g. -runs=20000]

TARGET is one of tests/faults/fuzz_targets.TARGETS; the seed corpus is
tests/corpus/TARGET (read only: new inputs go to a scratch directory given with
ZFCPDUMP_FUZZ_WORKDIR, if set). A crash (any exception that is not a ZfcpdumpError)
leaves crash-<sha1> in the current directory and exits non-zero: add it to the corpus
and write a test. -timeout catches hangs; memory blow-ups are caught by an address-space
limit (ZFCPDUMP_FUZZ_AS_MB, default 3072): an allocation beyond it raises MemoryError,
which is a crash. (libFuzzer's -rss_limit_mb reads ru_maxrss, which a process started
from a big pytest process inherits across fork and exec, so it is not usable here.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

import resource  # noqa: E402

_AS_BYTES = int(os.environ.get("ZFCPDUMP_FUZZ_AS_MB", "3072")) << 20
resource.setrlimit(resource.RLIMIT_AS, (_AS_BYTES, _AS_BYTES))

import atheris  # noqa: E402

with atheris.instrument_imports():
    import zfcpdump.capture  # noqa: F401,E402
    import zfcpdump.disk.partitions  # noqa: F401,E402
    import zfcpdump.disk.zipl  # noqa: F401,E402
    import zfcpdump.formats.elf_notes  # noqa: F401,E402
    import zfcpdump.readers  # noqa: F401,E402
    import zfcpdump.readers.elf  # noqa: F401,E402
    from faults.fuzz_targets import TARGETS, run_one  # noqa: E402


def main() -> int:
    target = sys.argv[1]
    fn = TARGETS[target]  # noqa: F841 - fail early on a bad name

    def one(data: bytes) -> None:
        run_one(target, data)

    corpus = [str(HERE.parent / "corpus" / target)]
    work = os.environ.get("ZFCPDUMP_FUZZ_WORKDIR")
    if work:
        os.makedirs(work, exist_ok=True)
        corpus.insert(0, work)
    atheris.Setup([sys.argv[0], *sys.argv[2:], *corpus], one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())

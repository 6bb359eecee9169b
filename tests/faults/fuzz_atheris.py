"""Coverage-guided fuzzing of the readers with atheris (libFuzzer for Python).

    python tests/faults/fuzz_atheris.py TARGET [libFuzzer options, e.g. -runs=20000]

TARGET is one of tests/faults/fuzz_targets.TARGETS; the seed corpus is
tests/corpus/TARGET (read only: new inputs go to a scratch directory given with
ZFCPDUMP_FUZZ_WORKDIR, if set). A crash (any exception that is not a ZfcpdumpError)
leaves crash-<sha1> in the current directory and exits non-zero: add it to the corpus
and write a test. libFuzzer's -rss_limit_mb and -timeout catch memory blow-ups and hangs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

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

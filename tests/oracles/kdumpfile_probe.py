#!/usr/bin/python3
"""Open a dump with libkdumpfile (Debian python3-libkdumpfile 0.5.1) and print JSON.

Usage: /usr/bin/python3 kdumpfile_probe.py FILE [REQUEST_JSON]

Must run under Debian's own interpreter: the ``kdumpfile`` module imports only there
(interop.md §3). Self-contained on purpose: standard library + kdumpfile only.

REQUEST_JSON is either a list of physical reads ``[[addr, size], ...]`` or an object
``{"reads": [[addr, size], ...]}``; ``@PATH`` reads the JSON from a file. Each read is
``k.read(KDUMP_MACHPHYSADDR, addr, size)`` (done in chunks of at most 16 MiB and
hashed as one stream).

Output (one JSON object on stdout, exit status 0 also when the dump cannot be opened):
  format, description, arch, byte_order, page_size, ptr_size, max_pfn,
  cpu_count, cpus: [{"pid": .., "reg": {"pswm": .., "r0": .., ...}}, ...],
  uts: {"sysname": .., ...} or {}, vmcoreinfo_raw: str or null,
  attrs: {every scalar attribute, dotted key -> int/str},
  reads: [{"addr", "size", "sha256"} or {"addr", "size", "error", "error_class"}]
On open failure: {"error": message, "error_class": exception class name, "file": FILE}.
"""

import hashlib
import json
import os
import sys

# This script lives next to the harness module ``kdumpfile.py``; drop its directory from
# sys.path so that ``import kdumpfile`` finds libkdumpfile's bindings, not the harness.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

CHUNK = 16 << 20


def _get(attr, key, default=None):
    try:
        return attr[key]
    except Exception:  # NoKeyException, NoDataException, KeyError, ...
        return default


def _scalar(v):
    if isinstance(v, (int, str, float, bool)) or v is None:
        return v
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    return None


def _flatten(d, prefix, out):
    try:
        keys = list(d.keys())
    except Exception:
        return
    for key in keys:
        try:
            v = d[key]
        except Exception:
            continue
        if hasattr(v, "keys"):
            _flatten(v, prefix + key + ".", out)
        else:
            s = _scalar(v)
            if s is not None:
                out[prefix + key] = s


def _read_hash(k, kdumpfile, addr, size):
    h = hashlib.sha256()
    pos, left = addr, size
    while left:
        n = min(left, CHUNK)
        data = k.read(kdumpfile.KDUMP_MACHPHYSADDR, pos, n)
        if len(data) != n:
            raise EOFError("short read: %d of %d bytes at 0x%x" % (len(data), n, pos))
        h.update(data)
        pos += n
        left -= n
    return h.hexdigest()


def main(argv):
    if len(argv) < 2 or len(argv) > 3:
        sys.stderr.write(__doc__)
        return 2
    path = argv[1]
    request = argv[2] if len(argv) == 3 else "[]"
    if request.startswith("@"):
        with open(request[1:]) as f:
            request = f.read()
    request = json.loads(request) if request.strip() else []
    reads = request.get("reads", []) if isinstance(request, dict) else request

    import kdumpfile

    try:
        k = kdumpfile.kdumpfile(path)
    except Exception as e:
        json.dump({"file": path, "error": str(e), "error_class": type(e).__name__},
                  sys.stdout)
        sys.stdout.write("\n")
        return 0

    a = k.attr
    out = {
        "file": path,
        "format": _get(a, "file.format"),
        "description": _get(a, "file.description"),
        "arch": _get(a, "arch.name"),
        "byte_order": _get(a, "arch.byte_order"),
        "page_size": _get(a, "arch.page_size"),
        "ptr_size": _get(a, "arch.ptr_size"),
        "max_pfn": _get(a, "max_pfn"),
        "cpu_count": _get(a, "cpu.number"),
    }

    cpus = []
    for n in range(out["cpu_count"] or 0):
        cpu = {"pid": _get(a, "cpu.%d.pid" % n), "reg": {}}
        regs = _get(a, "cpu.%d.reg" % n)
        if regs is not None and hasattr(regs, "keys"):
            for name in regs.keys():
                v = _get(regs, name)
                if isinstance(v, int):
                    cpu["reg"][name] = v
        cpus.append(cpu)
    out["cpus"] = cpus

    uts = {}
    u = _get(a, "linux.uts")
    if u is not None and hasattr(u, "keys"):
        for name in u.keys():
            v = _scalar(_get(u, name))
            if v is not None:
                uts[name] = v
    out["uts"] = uts
    out["vmcoreinfo_raw"] = _scalar(_get(a, "linux.vmcoreinfo.raw"))

    attrs = {}
    _flatten(a, "", attrs)
    out["attrs"] = attrs

    results = []
    for addr, size in reads:
        r = {"addr": addr, "size": size}
        try:
            r["sha256"] = _read_hash(k, kdumpfile, addr, size)
        except Exception as e:
            r["error"] = str(e)
            r["error_class"] = type(e).__name__
        results.append(r)
    out["reads"] = results

    json.dump(out, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

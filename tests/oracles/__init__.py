"""Independent readers ("oracles") for the interoperability tests.

See shared/spec/interop.md. Install them with ``.ci/install-oracles.sh``.

* :mod:`oracles.zgetdump`: s390-tools 2.16 zgetdump (s390x) under qemu-user.
* :mod:`oracles.kdumpfile`: libkdumpfile 0.5.1 through Debian's /usr/bin/python3.
* :mod:`oracles.sample`: the shared real s390x sample dump, raw and fixed up.

Each module exposes an ``*_available()`` function and a ``needs_*`` pytest skip marker.
"""

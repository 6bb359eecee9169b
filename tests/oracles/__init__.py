"""Independent readers ("oracles") for the interoperability tests.

See shared/spec/interop.md. Install them with ``.ci/install-oracles.sh``.

* :mod:`oracles.zgetdump`: s390-tools 2.16 zgetdump (s390x) under qemu-user.
* :mod:`oracles.kdumpfile`: libkdumpfile 0.5.1 through Debian's /usr/bin/python3.
* :mod:`oracles.makedumpfile_s390x`: makedumpfile 1.7.2 (s390x) under qemu-user.
* :mod:`oracles.makedumpfile_sid`: makedumpfile from Debian sid (x86_64, 1.7.8) through
  its own root's dynamic loader, for Linux 6.12 dumps.
* :mod:`oracles.sample`: the shared real s390x sample dump, raw and fixed up.

Each module tells whether its oracle runs here: an ``*_available()`` function and a
``needs_*`` pytest skip marker, or (makedumpfile_sid, stdlib only for the install
script) ``probe()``.
"""

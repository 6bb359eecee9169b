"""Command-line front ends: `zfcpdump` (subcommands) and `zgetdump` (s390-tools syntax)."""

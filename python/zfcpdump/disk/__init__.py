"""On-disk structures of a SCSI dump disk (formats.md §1-§8) and target discovery."""

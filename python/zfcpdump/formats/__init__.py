"""Byte layouts shared by readers and writers (zgetdump's df_*.h)."""

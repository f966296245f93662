"""report of aiida-nmcml."""

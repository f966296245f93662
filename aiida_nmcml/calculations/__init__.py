"""calculations of aiida-nmcml."""

"""analysis of aiida-nmcml."""

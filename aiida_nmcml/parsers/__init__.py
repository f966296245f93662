"""parsers of aiida-nmcml."""

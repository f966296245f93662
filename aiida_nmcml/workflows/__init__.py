"""Work chains of aiida-nmcml; each has a protocol YAML in ``protocols/``."""

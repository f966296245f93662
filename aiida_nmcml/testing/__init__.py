"""Test doubles, kept out of the runtime package's import paths on purpose.

Nothing in ``aiida_nmcml`` outside this subpackage may import from it: the toy model (Morse-pair frames and a tiny MACE
trained on them in seconds) exists so fast unit tests need no foundation model, never to produce a result. The
offline foundation model for the demo and for real campaigns is the one distilled from a universal potential
(``nmcml.distill``, docs/foundation.md).
"""

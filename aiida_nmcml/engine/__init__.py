"""Code that runs inside calculation jobs on the compute node.

Nothing in this package imports AiiDA: a job on a GPU node needs only torch, mace-torch and ase. Each subcommand of
the ``aiida-nmcml-engine`` console script reads one input file and writes its results to files in the working
directory, which the CalcJob retrieves and its parser reads.
"""

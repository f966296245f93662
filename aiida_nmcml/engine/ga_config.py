"""The settings of ``aiida-nmcml-engine ga``: one declaration, read by the engine and by ``nmcml.ga`` before submission.

Pure Python (no ASE, torch or AiiDA import). Why: a misspelt ``populaton_size`` or ``max_evalutions`` used to run
silently with the default; a negative budget or ``agree`` larger than ``islands`` would never converge. The defaults
here are the engine's bare defaults; ``ga.yaml`` levels only change what they list.
"""

from __future__ import annotations

from ..common.schema import Field, Section

FITNESSES = ('mace', 'pair', 'random_pair')  # pair / random_pair: test doubles (the calcjob refuses them)


def _islands(section) -> str | None:
    islands, agree = section.get('islands', 4), section.get('agree', 2)
    if isinstance(islands, int) and isinstance(agree, int) and agree > islands:
        return f'agree ({agree}) exceeds islands ({islands}): the islands could never agree'
    size, elitism = section.get('population_size', 8), section.get('elitism', 2)
    if isinstance(size, int) and isinstance(elitism, int) and elitism >= size:
        return f'elitism ({elitism}) must be smaller than population_size ({size})'
    return None


SCHEMA = Section(
    {
        'lattice': Field(str, default='lattice.extxyz', help='lattice file (extxyz, X = vacancy, sublattice array)'),
        'fitness': Field(str, default='mace', choices=FITNESSES, help='mace: committee mean; others: test doubles'),
        'models': Field(list, default=None, nullable=True, items=(str, dict), help='the committee (mace)'),
        'device': Field(str, default='auto', help='torch device'),
        'dtype': Field(str, default='float64', choices=('float32', 'float64'), help='model dtype'),
        'relax': Section(
            {
                'steps': Field(int, default=0, min=0, help='FIRE steps per candidate at fixed cell (0: rigid)'),
                'fmax': Field(float, default=0.05, min=0.0, min_exclusive=True, unit='eV/Å', help='FIRE stop'),
            },
            help='short relaxation of every candidate',
        ),
        'pair': Section({}, open=True, nullable=True, help='settings of the pair test double'),
        'islands': Field(int, default=4, min=1, help='independent sub-populations'),
        'agree': Field(int, default=2, min=1, help='islands that must hold the same best ordering to converge'),
        'population_size': Field(int, default=8, min=2, help='per island'),
        'generations': Field(int, default=100000, min=1, help='cap on generations; max_evaluations is the budget'),
        'elitism': Field(int, default=2, min=0, help='best orderings kept per island and generation'),
        'tournament_size': Field(int, default=3, min=1, help='tournament selection'),
        'crossover_rate': Field(float, default=0.8, min=0.0, max=1.0, help='probability of cut-and-splice'),
        'mutation_rate': Field(float, default=0.3, min=0.0, max=1.0, help='probability of a swap mutation'),
        'max_swaps': Field(int, default=2, min=1, help='swaps per mutation, at most'),
        'patience': Field(int, default=8, min=1, help='generations without improvement before an island is stalled'),
        'patience_per_ln_class': Field(
            float, default=60.0, min=0.0, help='evaluations without improvement per ln(symmetry classes) to converge'
        ),
        'tolerance_eV': Field(float, default=1e-6, min=0.0, unit='eV', help='smaller changes are no improvement'),
        'top_k': Field(int, default=5, min=1, help='lowest distinct orderings returned'),
        'spanning_k': Field(int, default=0, min=0, help='orderings spread over the energy range, for DFT checks'),
        'seed': Field(int, default=0, min=0, help='random streams of the islands'),
        'max_evaluations': Field(int, default=20000, min=1, nullable=True, help='budget (reaching it: not converged)'),
        'target_energy': Field(
            float, default=None, nullable=True, unit='eV', help='benchmarks only: stop when reached'
        ),
        'require_convergence': Field(bool, default=False, help='not converged -> exit 720 (candidates still output)'),
    },
    check=_islands,
)

DEFAULTS = SCHEMA.defaults()

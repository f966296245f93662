"""``nmcml.ga``: genetic search over orderings on a fixed NMC lattice (``aiida-nmcml-engine ga``).

The lattice and its compositions come from the ``lattice`` Dict (supercell, x_li, composition, antisite_fraction,
seed), built here with :mod:`aiida_nmcml.structures` and written as ``lattice.extxyz`` (vacancies as ``X``), so the
search space is a function of input nodes only.
"""

from __future__ import annotations

from aiida import orm

from ..common import exit_codes
from ..engine import ga as ga_engine
from .base import EngineCalculation, models_missing_elements

LATTICE_FILENAME = 'lattice.extxyz'
LATTICE_KEYS = ('supercell', 'x_li', 'composition', 'antisite_fraction', 'seed', 'tm_order')


def build_lattice_atoms(spec: dict):
    """Lattice-file Atoms (all sites, ``X`` for vacancies, ``sublattice`` array) of a ``lattice`` Dict."""
    from ..engine.ga_lattice import Lattice
    from ..structures import NmcLattice

    nmc = NmcLattice.from_supercell(spec.get('supercell', (1, 1, 1)))
    occupancy = nmc.default_occupancy(
        x_li=spec.get('x_li', 1.0),
        composition=spec.get('composition'),
        seed=spec.get('seed', 0),
        tm_order=spec.get('tm_order'),
        antisite_fraction=spec.get('antisite_fraction', 0.0),
    )
    return Lattice.from_nmc(nmc, occupancy).lattice_atoms(occupancy)


def validate_inputs(inputs, _):
    params = inputs['parameters'].get_dict() if 'parameters' in inputs else {}
    for key in ('lattice', 'models', 'device'):
        if key in params:
            return f'parameters may not set `{key}`: it comes from the input nodes'
    from ..engine import ga_config

    errors = ga_config.SCHEMA.errors(params, 'parameters')
    if errors:
        return '; '.join(errors)
    fitness = params.get('fitness', 'mace')
    if fitness != 'mace':
        return (
            f'fitness {fitness!r} is refused by nmcml.ga: only `mace` (the committee energy) feeds results. The pair '
            'energies are test doubles: use them through aiida_nmcml.engine.ga in tests and benchmarks'
        )
    if not inputs.get('models'):
        return 'the mace fitness needs a model in the `models` namespace'
    if 'lattice' not in inputs:
        return None  # exposed without the lattice (nmcml.search sets it per Li content)
    unknown = sorted(set(inputs['lattice'].get_dict()) - set(LATTICE_KEYS))
    if unknown:
        return f'unknown key(s) {unknown} in `lattice`; allowed: {LATTICE_KEYS}'
    try:
        atoms = build_lattice_atoms(inputs['lattice'].get_dict())
    except (ValueError, TypeError) as exc:
        return f'invalid `lattice`: {exc}'
    return models_missing_elements(inputs.get('models'), set(atoms.get_chemical_symbols()) - {'X'})


class GaCalculation(EngineCalculation):
    """One GA search; protocols and restarts: ``nmcml.ga.base`` (:mod:`aiida_nmcml.workflows.ga_base`)."""

    _subcommand = 'ga'
    _retrieve = (ga_engine.RESULTS, ga_engine.TOP_CANDIDATES, ga_engine.HISTORY)

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input(
            'lattice',
            valid_type=orm.Dict,
            help='Search space: supercell, x_li, composition, antisite_fraction, seed (of the start).',
        )
        spec.inputs.validator = validate_inputs
        spec.output_namespace(
            'candidates',
            valid_type=orm.StructureData,
            dynamic=True,
            required=False,
            help='Top-K distinct orderings, rank_0 lowest in energy, DFT-ready initial moments.',
        )
        spec.output_namespace(
            'spanning',
            valid_type=orm.StructureData,
            dynamic=True,
            required=False,
            help='`spanning_k` orderings spread over the energy range seen (span_0 the lowest), for DFT checks.',
        )
        spec.output(
            'output_parameters',
            valid_type=orm.Dict,
            required=False,
            help='Energies (committee mean, spread) of the top-K and spanning sets, evaluations, convergence, history.',
        )
        spec.output('history', valid_type=orm.ArrayData, required=False, help='Best/mean energy per generation.')
        exit_codes.declare(spec, 'ERROR_GA_NOT_CONVERGED')  # 7xx: the candidates are attached

    def write_inputs(self, folder, config: dict) -> dict:
        from ase.io import write

        atoms = build_lattice_atoms(self.inputs.lattice.get_dict())
        with folder.open(LATTICE_FILENAME, 'w') as handle:
            write(handle, atoms, format='extxyz')
        config['lattice'] = LATTICE_FILENAME
        return config

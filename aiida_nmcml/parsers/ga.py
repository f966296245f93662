"""Parser of ``nmcml.ga``: top-K candidate structures (with DFT-ready initial moments), energies, history."""

from __future__ import annotations

import io

import numpy as np
from aiida import orm

from ..engine import ga as ga_engine
from .base import EngineParser


def dft_ready(atoms):
    """Oxidation states and spin-only initial moments from the sublattice labels, so DFT starts magnetic."""
    from ..structures import assign_oxidation_states, initial_magnetic_moments

    try:
        states = assign_oxidation_states(atoms.get_chemical_symbols(), atoms.arrays.get('sublattice'), rng=0)
    except ValueError:
        return atoms  # a composition with no charge-balanced assignment keeps zero moments
    atoms.arrays['oxidation_state'] = states
    atoms.set_initial_magnetic_moments(initial_magnetic_moments(atoms.get_chemical_symbols(), states))
    return atoms


class GaParser(EngineParser):
    status_to_exit_code = {'ga_not_converged': 'ERROR_GA_NOT_CONVERGED'}
    keep_outputs_on = ('ga_not_converged',)

    def parse_outputs(self, status: dict):
        from ase.io import read

        from ..structures import to_structure_data

        missing = [n for n in (ga_engine.RESULTS, ga_engine.TOP_CANDIDATES) if not self.has_file(n)]
        if missing:
            return self.exit_codes.ERROR_MISSING_OUTPUT_FILES.format(files=', '.join(missing))
        summary = self.read_json(ga_engine.RESULTS)
        text = self.retrieved.base.repository.get_object_content(ga_engine.TOP_CANDIDATES, mode='r')
        for rank, atoms in enumerate(read(io.StringIO(text), ':', format='extxyz')):
            entry = summary['top'][rank]  # keys come from JSON: extxyz would turn a digits-only hash into a number
            structure = to_structure_data(dft_ready(atoms))
            structure.base.attributes.set('nmcml_ga_energy', float(entry['energy']))
            structure.base.attributes.set('nmcml_canonical_key', entry['canonical_key'])
            self.out(f'candidates.rank_{rank}', structure)
        history = orm.ArrayData()
        for key in ('generation', 'best_energy', 'mean_energy', 'evaluations'):
            history.set_array(key, np.array([row[key] for row in summary['history']]))
        self.out('history', history)
        self.out('output_parameters', orm.Dict(summary))
        return None

"""Parser of ``nmcml.ga``: top-K candidate structures (with DFT-ready initial moments), energies, history."""

from __future__ import annotations

import io

import numpy as np
from aiida import orm

from ..engine import ga as ga_engine
from ..structures import dft_ready
from .base import EngineParser


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
        frames = read(io.StringIO(text), ':', format='extxyz')
        top, spanning = summary['top'], summary.get('spanning', [])  # same order as the frames: top, then spanning
        for index, atoms in enumerate(frames):
            spans = index >= len(top)
            entry = spanning[index - len(top)] if spans else top[index]  # keys from JSON: extxyz may turn them to int
            structure = to_structure_data(dft_ready(atoms))
            structure.base.attributes.set('nmcml_ga_energy', float(entry['energy']))
            structure.base.attributes.set('nmcml_canonical_key', entry['canonical_key'])
            if entry.get('spread') is not None:
                structure.base.attributes.set('nmcml_ga_spread', float(entry['spread']))
                structure.base.attributes.set('nmcml_ga_member_energies', [float(e) for e in entry['member_energies']])
            self.out(f'spanning.span_{entry["rank"]}' if spans else f'candidates.rank_{entry["rank"]}', structure)
        history = orm.ArrayData()
        for key in ('generation', 'best_energy', 'mean_energy', 'evaluations'):
            history.set_array(key, np.array([row[key] for row in summary['history']]))
        self.out('history', history)
        self.out('output_parameters', orm.Dict(summary))
        return None

"""GaParser on outputs recorded from real engine runs (tests/parsers/fixtures/record_engine_outputs.py, pair fitness).

data_regression keeps the parsed candidates, energies and history: a format or parser change shows as a diff.
"""

from __future__ import annotations

import pytest

from aiida_nmcml.calculations.ga import GaCalculation
from aiida_nmcml.parsers.ga import GaParser


def summarise(results: dict) -> dict:
    out = {'outputs': sorted(results)}
    candidates = results.get('candidates', {})
    out['candidates'] = {
        rank: {
            'formula': node.get_formula(),
            'energy': round(node.base.attributes.get('nmcml_ga_energy'), 8),
            'kinds': sorted(kind.name for kind in node.kinds),
        }
        for rank, node in sorted(candidates.items())
    }
    if 'history' in results:
        history = results['history']
        out['history'] = {name: list(history.get_array(name).shape) for name in sorted(history.get_arraynames())}
    summary = results['output_parameters'].get_dict()
    out['converged'] = summary.get('converged')
    out['top_energies'] = [round(t['energy'], 8) for t in summary['top']]
    return out


@pytest.mark.parametrize(('case', 'exit_label'), [('finished', None), ('not_converged', 'ERROR_GA_NOT_CONVERGED')])
def test_recorded_runs(case, exit_label, generate_calc_job_node, data_regression):
    node = generate_calc_job_node('nmcml.ga', case=case)
    results, calcfunction = GaParser.parse_from_node(node, store_provenance=False)
    expected = GaCalculation.exit_codes[exit_label].status if exit_label else 0
    assert calcfunction.exit_status == expected, calcfunction.exit_message
    assert 'candidates' in results  # not converged: still usable (7xx)
    data_regression.check(summarise(results))


def test_candidates_are_sorted_and_distinct(generate_calc_job_node):
    node = generate_calc_job_node('nmcml.ga', case='finished')
    results, _ = GaParser.parse_from_node(node, store_provenance=False)
    ranks = sorted(results['candidates'], key=lambda k: int(k.split('_')[1]))
    energies = [results['candidates'][r].base.attributes.get('nmcml_ga_energy') for r in ranks]
    keys = {results['candidates'][r].base.attributes.get('nmcml_canonical_key') for r in ranks}
    assert energies == sorted(energies) and len(keys) == len(ranks)

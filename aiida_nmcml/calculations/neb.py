"""``nmcml.neb``: climbing-image NEB of one hop with a MACE model and its committee (``aiida-nmcml-engine neb``).

The end points come as StructureData (e.g. from :func:`aiida_nmcml.hops.build_hop` through
:func:`aiida_nmcml.structures.to_structure_data`, so the starting magnetic moments travel along the path to the DFT
single points). All physics is in :mod:`aiida_nmcml.engine.neb`; the parameters are checked against its
:data:`~aiida_nmcml.engine.neb.SCHEMA` before submission. A NEB that does not converge keeps its images and
energies and exits with ``ERROR_NEB_NOT_CONVERGED`` (740).
"""

from __future__ import annotations

from aiida import orm

from ..common import exit_codes
from ..engine import neb as neb_engine
from .base import EngineCalculation, models_missing_elements

INITIAL_FILENAME = 'initial.extxyz'
FINAL_FILENAME = 'final.extxyz'
VIA_FILENAME = 'via.extxyz'
FROM_NODES = ('initial', 'final', 'via', 'models', 'device')


def _symbols(structure) -> list[str]:
    return [structure.get_kind(site.kind_name).symbol for site in structure.sites]


def validate_inputs(inputs, _):
    """Refuse before submission what the engine would refuse: schema errors (closest key named), keys that come from
    input nodes, end points with other atoms or another cell, and models lacking an element of the structure."""
    if not inputs.get('models'):
        return 'give at least one model in the `models` namespace (two or more for the committee spread)'
    params = inputs['parameters'].get_dict() if 'parameters' in inputs else {}
    for key in FROM_NODES:
        if key in params:
            return f'parameters may not set `{key}`: it comes from the input nodes'
    errors = neb_engine.SCHEMA.errors(params, 'parameters')
    if errors:
        return '\n'.join(errors)
    if 'initial_structure' in inputs and 'final_structure' in inputs:
        initial = inputs['initial_structure']
        for name in ('final_structure', 'via_structure'):
            other = inputs.get(name)
            if other is None:
                continue
            if _symbols(other) != _symbols(initial):
                return f'`{name}` has other atoms (or another order) than `initial_structure`: NEB maps atom to atom'
            if any(abs(a - b) > 1e-6 for ra, rb in zip(other.cell, initial.cell) for a, b in zip(ra, rb)):
                return f'`{name}` has another cell than `initial_structure`'
        return models_missing_elements(inputs.get('models'), set(initial.get_symbols_set()))
    return None


class NebCalculation(EngineCalculation):
    _subcommand = 'neb'
    _retrieve = (neb_engine.IMAGES_FILENAME, neb_engine.INITIAL_PATH_FILENAME, neb_engine.SUMMARY_FILENAME)

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('initial_structure', valid_type=orm.StructureData, help='Initial end point of the hop.')
        spec.input('final_structure', valid_type=orm.StructureData, help='Final end point: same atoms, same order.')
        spec.input(
            'via_structure',
            valid_type=orm.StructureData,
            required=False,
            help='Structure the starting path passes through (tetrahedral-site hop: Li in the tetrahedral site).',
        )
        spec.inputs.validator = validate_inputs
        spec.output(
            'images',
            valid_type=orm.TrajectoryData,
            required=False,
            help='Final images (positions, cells) with arrays energies and max_force_deviation.',
        )
        spec.output_namespace(
            'image_structures',
            valid_type=orm.StructureData,
            dynamic=True,
            required=False,
            help="Every final image (image_00 ... the end points included) with the initial structure's starting "
            'moments and sublattice labels: what the DFT single points on the model path start from.',
        )
        spec.output(
            'transition_state',
            valid_type=orm.StructureData,
            required=False,
            help="The climbing (highest) image, with the initial structure's starting moments.",
        )
        spec.output(
            'output_parameters',
            valid_type=orm.Dict,
            required=False,
            help='Barriers (forward/reverse), energies, convergence, end-point relaxation, committee barriers.',
        )
        spec.default_output_node = 'output_parameters'
        exit_codes.declare(spec, 'ERROR_NEB_NOT_CONVERGED')

    def write_inputs(self, folder, config: dict) -> dict:
        from ase.io import write

        from ..structures import from_structure_data

        files = [('initial_structure', INITIAL_FILENAME, 'initial'), ('final_structure', FINAL_FILENAME, 'final')]
        if 'via_structure' in self.inputs:
            files.append(('via_structure', VIA_FILENAME, 'via'))
        for port, filename, key in files:
            with folder.open(filename, 'w') as handle:
                write(handle, from_structure_data(self.inputs[port]), format='extxyz')
            config[key] = filename
        return config

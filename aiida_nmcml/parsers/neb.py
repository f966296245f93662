"""Parser of ``nmcml.neb``: images, transition state and barriers from ``retrieved`` only.

A NEB that did not converge (engine status ``neb_not_converged``) still gets its outputs, then exit code 740.
"""

from __future__ import annotations

import io

import numpy as np
from aiida import orm

from ..engine.neb import IMAGES_FILENAME, SUMMARY_FILENAME
from .base import EngineParser


def image_key(index: int) -> str:
    """Link label of image ``index`` in the ``image_structures`` namespace (``image_00``: the initial end point)."""
    return f'image_{index:02d}'


class NebParser(EngineParser):
    keep_outputs_on = ('neb_not_converged',)

    def parse_outputs(self, status: dict):
        from ase.io import read

        from ..structures import to_structure_data

        missing = [name for name in (IMAGES_FILENAME, SUMMARY_FILENAME) if not self.has_file(name)]
        if missing:
            return self.exit_codes.ERROR_MISSING_OUTPUT_FILES.format(files=', '.join(missing))
        summary = self.read_json(SUMMARY_FILENAME)
        text = self.retrieved.base.repository.get_object_content(IMAGES_FILENAME)
        images = read(io.StringIO(text), index=':', format='extxyz')
        trajectory = orm.TrajectoryData()
        trajectory.set_trajectory(
            symbols=images[0].get_chemical_symbols(),
            positions=np.array([image.positions for image in images]),
            cells=np.array([image.cell.array for image in images]),
        )
        trajectory.set_array('energies', np.array([image.info['neb_energy'] for image in images], dtype=float))
        committee = summary.get('committee', {})
        if committee.get('max_force_deviation'):
            trajectory.set_array('max_force_deviation', np.array(committee['max_force_deviation'], dtype=float))
            trajectory.set_array('member_energies', np.array(committee['member_energies'], dtype=float))
        self.out('images', trajectory)
        for index, image in enumerate(images):  # the starting moments and sublattice labels travel with each image
            self.out(f'image_structures.{image_key(index)}', to_structure_data(image))
        top = summary.get('climbing_image') or summary.get('highest_image')
        if top is not None:
            self.out('transition_state', to_structure_data(images[int(top)]))
        self.out('output_parameters', orm.Dict(summary))
        return None

"""``nmcml.md``: MACE MD with on-the-fly committee uncertainty (``aiida-nmcml-engine md``).

A run stopped by a rule (uncertainty above the hard limit, atoms too close, temperature runaway) still outputs every
frame it wrote, with its own exit code (710-712), so active learning can harvest it. A killed run continues: pass its
``remote_folder`` as ``parent_folder`` (trajectory, logs and checkpoint are copied; the engine cuts records newer than
the checkpoint and continues to ``steps``), or only its ``checkpoint`` output (a fresh trajectory starts there).
"""

from __future__ import annotations

from aiida import orm

from ..common import exit_codes
from ..data.trainingset import TrainingSet
from ..engine import md_config, md_io
from .base import EngineCalculation, models_missing_elements

STRUCTURE_FILENAME = 'structure.extxyz'
STOP_EXIT_LABELS = ('ERROR_UNCERTAINTY_EXCEEDED', 'ERROR_ATOMS_TOO_CLOSE', 'ERROR_TEMPERATURE_RUNAWAY')
PARENT_FILES = (md_io.TRAJECTORY, md_io.CANDIDATES, md_io.THERMO, md_io.UNCERTAINTY, md_io.CHECKPOINT)


def validate_inputs(inputs, _):
    """Refuse before submission what the engine would refuse (or worse, run): the engine's own :data:`SCHEMA`
    (unknown keys name the closest valid one; physical ranges), plus the keys that come from input nodes."""
    if not inputs.get('models'):
        return 'give at least one model in the `models` namespace (two or more for committee uncertainty)'
    if 'parent_folder' in inputs and 'checkpoint' in inputs:
        return 'give either `parent_folder` or `checkpoint` to restart from, not both'
    params = inputs['parameters'].get_dict() if 'parameters' in inputs else {}
    for key in ('structure', 'models', 'device', 'restart_from'):
        if key in params:
            return f'parameters may not set `{key}`: it comes from the input nodes'
    errors = md_config.SCHEMA.errors(params, 'parameters')
    if errors:
        return '\n'.join(errors)
    if 'structure' in inputs:
        return models_missing_elements(inputs.get('models'), set(inputs['structure'].get_symbols_set()))
    return None


class MdCalculation(EngineCalculation):
    """One MD run; protocols and restarts: ``nmcml.md.base`` (:mod:`aiida_nmcml.workflows.md_base`)."""

    _subcommand = 'md'
    _retrieve = (
        md_io.TRAJECTORY,
        md_io.CANDIDATES,
        md_io.THERMO,
        md_io.UNCERTAINTY,
        md_io.CHECKPOINT,
        md_io.STOP_FRAME,
        md_io.SUMMARY,
    )

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('structure', valid_type=orm.StructureData, help='Starting structure.')
        spec.input(
            'parent_folder',
            valid_type=orm.RemoteData,
            required=False,
            help='Work directory of an earlier (killed or finished) run to continue.',
        )
        spec.input(
            'checkpoint',
            valid_type=orm.SinglefileData,
            required=False,
            help='`checkpoint` output of an earlier run to continue from.',
        )
        spec.inputs.validator = validate_inputs
        spec.output(
            'trajectory',
            valid_type=orm.SinglefileData,
            required=False,
            help='extxyz: wrapped positions, `unwrapped` array, info step/time_fs/energy/temperature.',
        )
        spec.output(
            'uncertainty',
            valid_type=orm.ArrayData,
            required=False,
            help='Committee deviation time series (one array per column of uncertainty.dat).',
        )
        spec.output('thermo', valid_type=orm.ArrayData, required=False, help='Thermodynamic log.')
        spec.output(
            'candidates',
            valid_type=TrainingSet,
            required=False,
            help='TrainingSet of unlabelled frames with deviation between the trust levels.',
        )
        spec.output('checkpoint', valid_type=orm.SinglefileData, required=False, help='Restart file.')
        spec.output(
            'stop_structure', valid_type=orm.StructureData, required=False, help='The frame at which a stop rule fired.'
        )
        spec.output('output_parameters', valid_type=orm.Dict, required=False, help='Run summary.')
        spec.default_output_node = 'output_parameters'  # `verdi calcjob res` shows the run summary
        # Stop rules: 7xx, the outputs written so far are attached (docs/dev/exit_codes.md).
        exit_codes.declare(spec, *STOP_EXIT_LABELS, 'ERROR_NON_FINITE', 'ERROR_RESTART_FILES_MISSING')

    def write_inputs(self, folder, config: dict) -> dict:
        """The structure with its ``nmcml_*`` site data as per-atom arrays (initial moments, sublattice labels), so the
        engine's frames carry them on to labelling; a restart names the checkpoint, so that its absence is refused
        (``ERROR_RESTART_FILES_MISSING``) instead of silently starting again at step 0."""
        from ase.io import write

        from ..structures import from_structure_data

        with folder.open(STRUCTURE_FILENAME, 'w') as handle:
            write(handle, from_structure_data(self.inputs.structure), format='extxyz')
        config['structure'] = STRUCTURE_FILENAME
        restarting = 'parent_folder' in self.inputs or 'checkpoint' in self.inputs
        # 'auto' (fresh run): a job the scheduler re-queues in its directory continues from its own checkpoint
        config['restart_from'] = md_io.CHECKPOINT if restarting else 'auto'
        return config

    def prepare_for_submission(self, folder):
        calcinfo = super().prepare_for_submission(folder)
        if 'checkpoint' in self.inputs:
            node = self.inputs.checkpoint
            calcinfo.local_copy_list.append((node.uuid, node.filename, md_io.CHECKPOINT))
        if 'parent_folder' in self.inputs:
            parent = self.inputs.parent_folder
            calcinfo.remote_copy_list = [
                (parent.computer.uuid, f'{parent.get_remote_path()}/{name}', name) for name in PARENT_FILES
            ]
        return calcinfo

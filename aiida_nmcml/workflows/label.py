"""``nmcml.label``: DFT labels (energy, forces, stress, moments) for many structures at once, QE or VASP.

The active-learning loop calls this every iteration with tens of structures, so:

* every structure gets its own restartable child (``PwBaseWorkChain`` / ``VaspWorkChain``) and all are submitted in
  one step: the daemon runs them concurrently and the scheduler queues them;
* one failing frame does not sink the batch: it is left out of ``labelled`` and listed in ``failures`` with its
  reason; only a success fraction below ``min_success_fraction`` fails the work chain (its own exit code);
* the children are plain CalcJobs of the DFT plugins, so AiiDA caching reuses a label computed before with the same
  structure and settings;
* frames are built by a calcfunction from the calculations' outputs, so the labelled set is linked to them.
"""

from __future__ import annotations

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain
from aiida.orm.nodes.data.base import to_aiida_type

from aiida_nmcml.data.trainingset import TrainingSet
from aiida_nmcml.dft.common import ENGINES, LabelInputError, check_structure
from aiida_nmcml.dft.frames import collect_labelled_frames, frames_to_structures
from aiida_nmcml.workflows.protocols.utils import ProtocolMixin

ENGINE_PLUGINS = {'qe': 'quantumespresso.pw', 'vasp': 'vasp.vasp'}


def validate_engine(value, _):
    if value is not None and value.value not in ENGINES:
        return f'unknown engine {value.value!r}: choose one of {", ".join(ENGINES)}.'
    return None


def validate_inputs(inputs, _):
    """Refuse at submission what would fail later in every child: no structures, a bad cell, missing pseudos."""
    structures = dict(inputs.get('structures', {}) or {})
    if not structures and 'frames' not in inputs:
        return 'nothing to label: pass `structures` (a namespace of StructureData) or `frames` (a TrainingSet).'
    settings = inputs['settings'].get_dict()
    engine = inputs['engine'].value
    if engine not in settings:
        return f'settings hold no {engine!r} section: build the inputs with LabelWorkChain.get_builder_from_protocol.'
    try:
        for key, structure in structures.items():
            check_structure(key, structure)
        if engine == 'qe':
            from aiida_nmcml.dft.qe_inputs import check_pseudos, load_pseudo_family

            family = load_pseudo_family(settings['qe']['pseudo_family'])
            for key, structure in structures.items():
                check_pseudos(key, structure, family)
        else:
            from aiida_nmcml.dft.vasp_inputs import check_potentials

            for key, structure in structures.items():
                check_potentials(key, structure, settings['vasp'])
    except LabelInputError as exception:
        return str(exception)
    plugin = ENGINE_PLUGINS[engine]
    code = inputs['code']
    if code.default_calc_job_plugin not in (None, plugin):
        return (
            f'code {code.full_label!r} runs {code.default_calc_job_plugin!r}, but engine {engine!r} needs {plugin!r}.'
        )
    return None


class LabelWorkChain(ProtocolMixin, WorkChain):
    """Label structures with DFT+U (QE or VASP) concurrently; keep what converged, report what did not."""

    _protocol_filename = 'label.yaml'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input_namespace(
            'structures', valid_type=orm.StructureData, dynamic=True, required=False,
            help='Structures to label, by key; the key names the frame in `failures` and `info["label_key"]`.',
        )  # fmt: skip
        spec.input('frames', valid_type=TrainingSet, required=False, help='Unlabelled frames (e.g. an MD output).')
        spec.input('engine', valid_type=orm.Str, serializer=to_aiida_type, validator=validate_engine)
        spec.input('code', valid_type=orm.AbstractCode, help='pw.x (quantumespresso.pw) or VASP (vasp.vasp) code.')
        spec.input(
            'settings', valid_type=orm.Dict, serializer=to_aiida_type,
            help='The resolved protocol (see protocols/label.yaml); build it with get_builder_from_protocol.',
        )  # fmt: skip
        spec.input(
            'min_success_fraction', valid_type=orm.Float, serializer=to_aiida_type, default=lambda: orm.Float(0.5),
            help='Below this fraction of successful frames the work chain fails (exit 320).',
        )  # fmt: skip
        spec.inputs.validator = validate_inputs
        spec.outline(cls.setup, cls.run_calculations, cls.inspect_calculations, cls.results)
        spec.output('labelled', valid_type=TrainingSet, required=False, help='The frames that were labelled.')
        spec.output('failures', valid_type=orm.Dict, help='Frame key → reason, exit status, process uuid.')
        spec.exit_code(310, 'ERROR_NO_STRUCTURES', message='the `frames` input holds no frames to label.')
        spec.exit_code(
            320, 'ERROR_TOO_FEW_LABELLED',
            message='only {succeeded} of {total} frames were labelled (< {fraction:.0%}); see the `failures` output '
            'and the children\'s reports, fix the protocol (mixing, walltime, cutoffs) and relabel.',
        )  # fmt: skip

    @classmethod
    def get_builder_from_protocol(
        cls,
        code,
        structures=None,
        *,
        engine: str = 'qe',
        protocol: str | None = None,
        overrides: dict | None = None,
        frames: TrainingSet | None = None,
    ):
        """A builder with the resolved protocol; ``structures`` is a list or dict of StructureData.

        ``overrides`` follow the YAML layout, e.g. ``{'hubbard_u': {}, 'qe': {'kpoints_distance': 0.3}}``; they
        merge into the protocol, except ``hubbard_u``, which replaces it (``{}`` switches U off).
        """
        if engine not in ENGINES:
            raise LabelInputError(f'unknown engine {engine!r}: choose one of {", ".join(ENGINES)}.')
        if isinstance(code, str):
            code = orm.load_code(code)
        inputs = cls.get_protocol_inputs(protocol, overrides)
        if overrides and 'hubbard_u' in overrides:  # replaced, not merged: {} must mean plain DFT
            inputs['hubbard_u'] = dict(overrides['hubbard_u'])
        settings = {
            'functional': inputs[engine].get('functional', inputs['functional']),
            'hubbard_u': inputs['hubbard_u'],
            'magmoms': inputs['magmoms'],
            engine: inputs[engine],
        }
        builder = cls.get_builder()
        builder.code = code
        builder.engine = orm.Str(engine)
        builder.settings = orm.Dict(settings)
        builder.min_success_fraction = orm.Float(inputs['min_success_fraction'])
        if structures is not None:
            if not isinstance(structures, dict):
                structures = {f'frame_{i}': s for i, s in enumerate(structures)}
            for key, structure in structures.items():
                check_structure(key, structure)
            builder.structures = dict(structures)
        if frames is not None:
            builder.frames = frames
        return builder

    def setup(self):
        self.ctx.engine = self.inputs.engine.value
        self.ctx.settings = self.inputs.settings.get_dict()
        structures = dict(self.inputs.get('structures', {}))
        if 'frames' in self.inputs:
            if self.inputs.frames.num_frames == 0 and not structures:
                return self.exit_codes.ERROR_NO_STRUCTURES
            structures.update(frames_to_structures(self.inputs.frames))
        self.ctx.structures = {key: structures[key] for key in sorted(structures)}
        return None

    def _child_builder(self, structure):
        settings = self.ctx.settings
        if self.ctx.engine == 'qe':
            from aiida_nmcml.dft.qe_inputs import pw_base_inputs

            return pw_base_inputs(
                self.inputs.code, structure, settings['qe'], settings['hubbard_u'], settings['magmoms']
            )
        from aiida_nmcml.dft.vasp_inputs import vasp_inputs

        return vasp_inputs(self.inputs.code, structure, settings['vasp'], settings['hubbard_u'], settings['magmoms'])

    def run_calculations(self):
        """Submit every child in this one step, so the daemon runs them all concurrently."""
        children = {}
        for index, (key, structure) in enumerate(self.ctx.structures.items()):
            builder = self._child_builder(structure)
            builder.metadata.call_link_label = f'label_{index}'
            node = self.submit(builder)
            self.report(f'submitted {node.process_label}<{node.pk}> for frame {key!r} ({structure.get_formula()})')
            children[f'child_{index}'] = node
        return ToContext(**children)

    def inspect_calculations(self):
        self.ctx.succeeded = {}
        self.ctx.failures = {}
        for index, key in enumerate(self.ctx.structures):
            child = self.ctx[f'child_{index}']
            mismatch = self._hubbard_mismatch(child) if child.is_finished_ok else None
            if mismatch:
                self.ctx.failures[key] = {
                    'reason': mismatch,
                    'exit_status': 0,
                    'calculation_exit_status': 0,
                    'process_uuid': child.uuid,
                }
                self.report(f'frame {key!r}: REJECTED, {mismatch}')
            elif child.is_finished_ok:
                self.ctx.succeeded[index] = (key, child)
                self.report(f'frame {key!r}: labelled by {child.process_label}<{child.pk}>')
            else:
                self.ctx.failures[key] = self._failure_reason(child)
                self.report(f'frame {key!r}: FAILED, {self.ctx.failures[key]["reason"]}')

    def _hubbard_mismatch(self, child) -> str | None:
        """A label computed without the U it asked for would poison the set: check pw.x's own record."""
        if self.ctx.engine != 'qe':
            return None
        from aiida_nmcml.dft.qe_outputs import hubbard_mismatch

        calcs = [n for n in child.called if isinstance(n, orm.CalcJobNode) and n.is_finished_ok]
        return hubbard_mismatch(max(calcs, key=lambda n: n.ctime)) if calcs else None

    @staticmethod
    def _failure_reason(child) -> dict:
        """The child's exit plus the exit of its last calculation, which names the physical cause."""
        calcs = [n for n in child.called_descendants if isinstance(n, orm.CalcJobNode)]
        last = max(calcs, key=lambda n: n.ctime) if calcs else None
        reason = f'{child.process_label} exit {child.exit_status}: {child.exit_message or child.process_state.value}'
        if last is not None and not last.is_finished_ok:
            reason += f'; last {last.process_label} exit {last.exit_status}: {last.exit_message}'
        return {
            'reason': reason,
            'exit_status': child.exit_status,
            'calculation_exit_status': None if last is None else last.exit_status,
            'process_uuid': child.uuid,
        }

    def results(self):
        engine = self.ctx.engine
        total = len(self.ctx.structures)
        if self.ctx.succeeded:
            self.out('labelled', self._collect())
        self.out('failures', orm.Dict(self.ctx.failures).store())
        fraction = len(self.ctx.succeeded) / total
        self.report(f'{len(self.ctx.succeeded)}/{total} frames labelled with {engine}')
        if fraction < self.inputs.min_success_fraction.value:
            return self.exit_codes.ERROR_TOO_FEW_LABELLED.format(
                succeeded=len(self.ctx.succeeded), total=total, fraction=self.inputs.min_success_fraction.value
            )
        return None

    def _collect(self) -> TrainingSet:
        settings = self.ctx.settings
        if self.ctx.engine == 'qe':
            from aiida_nmcml.dft.qe_inputs import qe_fingerprint

            fingerprint = qe_fingerprint(settings['qe'], settings['hubbard_u'], settings['functional'])
        else:
            from aiida_nmcml.dft.vasp_inputs import vasp_fingerprint

            fingerprint = vasp_fingerprint(settings['vasp'], settings['hubbard_u'], settings['functional'])
        outputs = AttributeDict()
        keys = {}
        for index, (key, child) in self.ctx.succeeded.items():
            keys[str(index)] = key
            outputs[f'structure_{index}'] = self.ctx.structures[key]
            if self.ctx.engine == 'qe':
                outputs[f'parameters_{index}'] = child.outputs.output_parameters
                outputs[f'trajectory_{index}'] = child.outputs.output_trajectory
                outputs[f'retrieved_{index}'] = child.outputs.retrieved
            else:
                outputs[f'misc_{index}'] = child.outputs.misc
        labelled = collect_labelled_frames(
            settings=orm.Dict({**fingerprint, 'keys': keys}),
            metadata={'call_link_label': 'collect_labelled_frames'},
            **outputs,
        )
        return labelled

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
from aiida.engine import ToContext, WorkChain, calcfunction
from aiida.orm.nodes.data.base import to_aiida_type

from aiida_nmcml.common import exit_codes
from aiida_nmcml.data.trainingset import TrainingSet
from aiida_nmcml.dft.adapter import DftAdapter, get_adapter
from aiida_nmcml.dft.common import ENGINES, LabelInputError, check_structure
from aiida_nmcml.dft.frames import (
    collect_labelled_frames,
    derive_starting_moments,
    frames_to_structures,
    needs_starting_moments,
)
from aiida_nmcml.protocols import ProtocolMixin

ENGINE_PLUGINS = {'qe': 'quantumespresso.pw', 'vasp': 'vasp.vasp'}
HUBBARD_REJECTED = exit_codes.TABLE['ERROR_HUBBARD_U_NOT_APPLIED'].status


@calcfunction
def collect_failures(**records: orm.Dict) -> orm.Dict:
    """``failures`` of one labelling run: frame key → reason, exit status, process uuid (one record per frame).

    A calcfunction so that the output has a creator in the provenance graph, as every other output of the plugin:
    work chains return data, they do not create it.
    """
    return orm.Dict(
        {record['key']: {k: v for k, v in record.get_dict().items() if k != 'key'} for record in records.values()}
    )


def validate_engine(value, _):
    if value is not None and value.value not in ENGINES:
        return f'unknown engine {value.value!r}: choose one of {", ".join(ENGINES)}.'
    return None


def validate_inputs(inputs, ctx=None):
    """Refuse at submission what would fail later in every child: no structures, a bad cell, missing pseudos.

    Wrapper-safe (aiida-qe's idiom): a work chain that exposes these inputs without ``structures``/``frames`` (it
    supplies them itself, e.g. ``nmcml.search``) still gets every other check; only the "nothing to label" check
    needs those ports to be there.
    """
    structures = dict(inputs.get('structures', {}) or {})
    if ctx is None or ('structures' in ctx and 'frames' in ctx):
        if not structures and 'frames' not in inputs:
            return 'nothing to label: pass `structures` (a namespace of StructureData) or `frames` (a TrainingSet).'
    if any(key not in inputs for key in ('settings', 'engine', 'code')):
        return None  # the required ports report what is missing
    settings = inputs['settings'].get_dict()
    engine = inputs['engine'].value
    from aiida_nmcml.dft.settings import check_resolved_settings

    message = check_resolved_settings(settings, engine)
    if message:
        return message
    try:
        adapter = get_adapter(settings, engine)
        for key, structure in structures.items():
            check_structure(key, structure)
        check_starting_moments(structures, inputs.get('frames'), settings)
        for key, structure in structures.items():
            adapter.check(key, structure)
    except LabelInputError as exception:
        return str(exception)
    return adapter.check_code(inputs['code'])


def check_starting_moments(structures: dict, frames, settings: dict) -> None:
    """Refuse frames that would start spin-polarised DFT from all-zero moments (they converge non-magnetic).

    Why: pw.x accepts explicit zero ``starting_magnetization`` with nspin=2 and converges to the non-magnetic state,
    eV per Ni away from the magnetic labels. Structures and frames are first given the builder's moments where they
    have sublattice labels (exactly what :meth:`LabelWorkChain.setup` will do), then checked. A deliberately
    non-magnetic run needs ``allow_nonmagnetic_start: true`` in the settings.
    """
    from aiida_nmcml.dft.common import kind_magmoms
    from aiida_nmcml.dft.frames import atoms_to_structure, starting_atoms
    from aiida_nmcml.structures import from_structure_data

    if settings.get('allow_nonmagnetic_start'):
        return
    candidates = {}
    for key, structure in structures.items():
        if needs_starting_moments(structure):
            structure = atoms_to_structure(starting_atoms(from_structure_data(structure)))
        candidates[key] = structure
    if frames is not None:
        for index, atoms in enumerate(frames.get_frames()):
            candidates[f'frames[{index}]'] = atoms_to_structure(starting_atoms(atoms))
    zero = [
        key
        for key, structure in candidates.items()
        if not any(abs(m) > 1e-8 for m in kind_magmoms(structure, settings.get('magmoms', {})).values())
    ]
    if zero:
        raise LabelInputError(
            f'{len(zero)} frame(s) would start spin-polarised DFT with all initial moments zero and converge '
            f'non-magnetic: {", ".join(zero[:5])}{" ..." if len(zero) > 5 else ""}. Give them sublattice labels '
            "(arrays['sublattice'], as structures.build_nmc writes) or non-zero initial moments, or set "
            "overrides={'allow_nonmagnetic_start': True} if a non-magnetic run is intended."
        )


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
            help='Below this fraction of successful frames the work chain fails (exit 530, ERROR_TOO_FEW_LABELLED).',
        )  # fmt: skip
        spec.inputs.validator = validate_inputs
        spec.outline(cls.setup, cls.run_calculations, cls.inspect_calculations, cls.results)
        spec.output('labelled', valid_type=TrainingSet, required=False, help='The frames that were labelled.')
        spec.output('failures', valid_type=orm.Dict, help='Frame key → reason, exit status, process uuid.')
        exit_codes.declare(spec, 'ERROR_NO_STRUCTURES', 'ERROR_TOO_FEW_LABELLED')  # docs/dev/exit_codes.md

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
        merge into the protocol, except ``hubbard_u``, which replaces it (``{}`` switches U off). Unknown keys and
        out-of-range values raise :class:`LabelInputError` naming the closest valid key (schema:
        ``aiida_nmcml.dft.settings``).
        """
        if engine not in ENGINES:
            raise LabelInputError(f'unknown engine {engine!r}: choose one of {", ".join(ENGINES)}.')
        if isinstance(code, str):
            code = orm.load_code(code)
        from aiida_nmcml.protocols import UnknownOverrideError

        try:
            inputs = cls.get_protocol_inputs(protocol, overrides)
        except UnknownOverrideError as exception:  # one error type for every refused label setting
            raise LabelInputError(f'invalid label settings:\n{exception}') from exception
        if not ((overrides or {}).get('qe') or {}).get('pseudo_family'):
            from aiida_nmcml.setup import configured_family

            inputs['qe']['pseudo_family'] = configured_family() or inputs['qe']['pseudo_family']  # setup --family
        if overrides and 'hubbard_u' in overrides:  # replaced, not merged: {} must mean plain DFT
            inputs['hubbard_u'] = dict(overrides['hubbard_u'] or {})
        from aiida_nmcml.dft.settings import check_label_inputs

        check_label_inputs(inputs, 'overrides' if overrides else 'protocol')
        settings = {
            'hubbard_u': inputs['hubbard_u'],
            'magmoms': inputs['magmoms'],
            'allow_nonmagnetic_start': bool(inputs.get('allow_nonmagnetic_start', False)),
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

    @property
    def adapter(self) -> DftAdapter:
        """The engine's adapter, built once per process instance from the ``settings`` input (not stored in ctx)."""
        if getattr(self, '_adapter', None) is None:
            self._adapter = get_adapter(self.inputs.settings.get_dict(), self.inputs.engine.value)
        return self._adapter

    def setup(self):
        self.ctx.engine = self.inputs.engine.value
        structures = {
            key: derive_starting_moments(structure) if needs_starting_moments(structure) else structure
            for key, structure in dict(self.inputs.get('structures', {})).items()
        }
        if 'frames' in self.inputs:
            if self.inputs.frames.num_frames == 0 and not structures:
                return self.exit_codes.ERROR_NO_STRUCTURES
            structures.update(frames_to_structures(self.inputs.frames))
        self.ctx.structures = {key: structures[key] for key in sorted(structures)}
        return None

    def run_calculations(self):
        """Submit every child in this one step, so the daemon runs them all concurrently."""
        children = {}
        for index, (key, structure) in enumerate(self.ctx.structures.items()):
            builder = self.adapter.builder(self.inputs.code, structure)
            builder.metadata.call_link_label = f'label_{index}'
            node = self.submit(builder)
            self.report(f'submitted {node.process_label}<{node.pk}> for frame {key!r} ({structure.get_formula()})')
            children[f'child_{index}'] = node
        return ToContext(**children)

    def inspect_calculations(self):
        """Sort the children into labelled and failed; a child's own sanity handler refuses a label without its U."""
        self.ctx.succeeded = {}
        self.ctx.failures = {}
        for index, key in enumerate(self.ctx.structures):
            child = self.ctx[f'child_{index}']
            if child.is_finished_ok:
                self.ctx.succeeded[index] = (key, child)
                self.report(f'frame {key!r}: labelled by {child.process_label}<{child.pk}>')
                continue
            self.ctx.failures[key] = self._failure_reason(child)
            verdict = 'REJECTED' if child.exit_status == HUBBARD_REJECTED else 'FAILED'
            self.report(f'frame {key!r}: {verdict}, {self.ctx.failures[key]["reason"]}')

    @staticmethod
    def _failure_reason(child) -> dict:
        """The child's exit plus the exit of its last calculation, which names the physical cause."""
        calcs = [n for n in child.called_descendants if isinstance(n, orm.CalcJobNode)]
        last = max(calcs, key=lambda n: n.ctime) if calcs else None
        state = child.process_state.value if child.process_state else 'unknown'
        reason = f'{child.process_label} exit {child.exit_status}: {child.exit_message or state}'
        if last is not None and not last.is_finished_ok:
            reason += f'; last {last.process_label} exit {last.exit_status}: {last.exit_message}'
        return {
            'reason': reason,
            'exit_status': child.exit_status,
            'calculation_exit_status': None if last is None else last.exit_status,
            'process_uuid': child.uuid,
        }

    def results(self):
        total = len(self.ctx.structures)
        if self.ctx.succeeded:
            self.out('labelled', self._collect())
        records = {
            f'frame_{i}': orm.Dict({'key': key, **record}) for i, (key, record) in enumerate(self.ctx.failures.items())
        }
        self.out('failures', collect_failures(**records, metadata={'call_link_label': 'collect_failures'}))
        fraction = len(self.ctx.succeeded) / total
        self.report(f'{len(self.ctx.succeeded)}/{total} frames labelled with {self.ctx.engine}')
        if fraction < self.inputs.min_success_fraction.value:
            return self.exit_codes.ERROR_TOO_FEW_LABELLED.format(
                succeeded=len(self.ctx.succeeded), total=total, fraction=self.inputs.min_success_fraction.value
            )
        return None

    def _collect(self) -> TrainingSet:
        outputs = AttributeDict()
        keys = {}
        for index, (key, child) in self.ctx.succeeded.items():
            keys[str(index)] = key
            outputs[f'structure_{index}'] = self.ctx.structures[key]
            for name, node in self.adapter.frame_outputs(child).items():
                outputs[f'{name}_{index}'] = node
        return collect_labelled_frames(
            settings=orm.Dict({**self.adapter.fingerprint(), 'keys': keys}),
            metadata={'call_link_label': 'collect_labelled_frames'},
            **outputs,
        )

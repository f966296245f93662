"""``nmcml.active_learning``: explore with the committee, label what it is unsure of, retrain, until converged.

One iteration (each step a set of child processes; every piece of data made by a calcfunction):

1. **explore**: one ``nmcml.md.base`` per condition (seed structure x temperature), all submitted together, with the
   current committee monitoring its spread. MD steps grow by ``steps_growth`` per iteration. A run ended by a stop
   rule (710-712) or the non-finite guard (440) still gives its frames: ``nmcml.md.base`` exposes them.
2. **select** (:func:`select_explored_frames`, wrapping :mod:`aiida_nmcml.analysis.selection`): every monitored frame
   classified by the trust band (given levels, else the committee's calibration), counts per condition,
   farthest-point sampling on MACE descriptors among the candidates with a minimum step gap, capped per iteration
   and by the DFT budget left. The first iteration of a fresh loop also draws the fixed held-out frames here
   (evenly spaced snapshots per condition, never candidates, labelled once, never trained on).
3. **label**: ``nmcml.label`` on the selected frames (and, once, on the held-out frames, concurrently). Starting
   moments are the builder's (the MD frames carry their sublattice labels; ``nmcml.label`` applies
   ``structures.dft_ready``). :func:`check_new_labels` compares each label's Ni moments with the composition's
   oxidation states and rejects (or only flags) spin local minima.
4. **retrain**: ``nmcml.finetune`` on the accumulated dataset, from the foundation model or from the previous
   committee (``retrain_from``); its calibration (on its own held-out split of the accumulated data, which contains
   the new labels) gives the next iteration's trust levels when they are not fixed.
5. **evaluate**: ``nmcml.evaluate`` of the new committee on the fixed held-out set (the learning curve).

Stopping rules (the report names the rule; ``outputs.convergence['rule']``): ``accurate_fraction`` (at least that
fraction of the monitored frames below the lower trust level at every condition: exit 0), ``held_out_targets``
(every target met on the held-out set: exit 0), ``max_iterations`` (760) and ``max_dft_labels`` (761), both with
every output attached. A negligible committee spread refuses selection (730); an empty trust band with the accuracy
rule unmet stops with 762.

Continuation (:meth:`ActiveLearningWorkChain.get_builder_restart`): every finished iteration leaves an
``iteration_metrics.iter_NN`` output made by :func:`iteration_metrics`, whose inputs are that iteration's committee,
dataset, held-out set and calibration. A new run built from a finished or killed run starts from the last such
iteration: its iteration numbers, DFT count and learning curve continue, the held-out set is not relabelled and no
finished iteration is repeated. An iteration killed half-way is redone; its DFT labels are then reused through AiiDA
caching, which ``aiida-nmcml setup`` enables for the DFT calcjobs (same structure, same settings, same node hash).
"""

from __future__ import annotations

import io

import numpy as np
from aiida import orm
from aiida.engine import ToContext, WorkChain, calcfunction, if_, while_
from aiida.orm.nodes.data.base import to_aiida_type

from ..analysis import active_learning as rules
from ..calculations.evaluate import EvaluateCalculation
from ..calculations.md import MdCalculation
from ..common import exit_codes
from ..common.schema import port_validator
from ..data.model import MaceModel
from ..data.trainingset import TrainingSet, merge_trainingsets
from ..protocols import ProtocolMixin, load_protocol_inputs
from .finetune import FinetuneWorkChain
from .label import LabelWorkChain
from .md_base import MdBaseWorkChain

#: info keys the loop writes on its frames (and keeps on the labelled ones)
FRAME_INFO = ('al_condition', 'al_iteration', 'al_step', 'max_force_dev', 'al_x', 'al_temperature_K')
#: MD child statuses whose frames are still harvested: stop rules and the non-finite guard (md_base.py)
MD_USABLE = {
    exit_codes.TABLE[label].status
    for label in (
        'ERROR_UNCERTAINTY_EXCEEDED',
        'ERROR_ATOMS_TOO_CLOSE',
        'ERROR_TEMPERATURE_RUNAWAY',
        'ERROR_NON_FINITE',
    )
}


def iteration_key(iteration: int) -> str:
    return f'iter_{iteration:02d}'


def _read_extxyz(node) -> list:
    from ase.io import read

    content = node.get_content(mode='r')
    return read(io.StringIO(content), index=':', format='extxyz') if content.strip() else []


def _clean_frame(atoms, info: dict):
    """A frame for labelling: positions, cell, the carried arrays (sublattice, initial moments) and the loop's info."""
    from ase import Atoms

    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    for key in ('sublattice', 'initial_magmoms'):
        if key in atoms.arrays:
            frame.arrays[key] = atoms.arrays[key].copy()
    frame.info.update(info)
    return frame


@calcfunction
def select_explored_frames(parameters, **inputs):
    """Classify every monitored MD frame by the trust band, count per condition, choose the frames to label.

    ``parameters``: ``conditions`` (trajectory key -> condition, x, temperature), the selection settings of the
    loop, ``max_selected`` (already capped by the DFT budget), ``held_out_per_condition`` (0 unless the held-out set
    is still to be drawn), ``iteration``. ``inputs``: ``traj_<i>`` (the MD trajectories), optionally ``calibration``
    (trust levels when not given) and ``descriptor_model`` (MACE descriptors for FPS).

    Outputs: ``summary`` (always; ``refused`` holds the reason when the spread is negligible), ``selected`` and
    ``held_out`` (unlabelled TrainingSets) when not empty.
    """
    import numpy as np

    from ..analysis import selection

    settings = parameters.get_dict()
    calibration = inputs.get('calibration')
    calibration = calibration.get_dict() if calibration is not None else None
    iteration = int(settings['iteration'])
    frames, deviation, steps, trajectory, conditions = [], [], [], [], []
    held_out_index: list[int] = []
    for key in sorted(settings['conditions']):
        meta = settings['conditions'][key]
        monitored = [a for a in _read_extxyz(inputs[key]) if 'max_force_dev' in a.info]
        start = len(frames)
        for atoms in monitored:
            info = {
                'al_condition': meta['condition'],
                'al_iteration': iteration,
                'al_step': int(atoms.info.get('step', 0)),
                'max_force_dev': float(atoms.info['max_force_dev']),
                'al_x': float(meta['x']),
                'al_temperature_K': float(meta['temperature_K']),
            }
            frames.append(_clean_frame(atoms, info))
            deviation.append(info['max_force_dev'])
            steps.append(info['al_step'])
            trajectory.append(key)
            conditions.append(meta['condition'])
        n_held = min(int(settings.get('held_out_per_condition', 0)), len(monitored))
        if n_held:  # evenly spaced, never the starting frame
            picks = np.linspace(0, len(monitored) - 1, n_held + 2)[1:-1] if len(monitored) > n_held else range(n_held)
            held_out_index.extend(start + round(p) for p in picks)
    summary = {'iteration': iteration, 'n_frames': len(frames), 'held_out': len(set(held_out_index))}
    if not frames:
        summary['refused'] = 'no monitored frames in any trajectory'
        return {'summary': orm.Dict(summary)}
    try:
        band = selection.trust_band(
            calibration, lower=settings.get('trust_lower'), upper=settings.get('trust_upper'),
            upper_factor=settings.get('trust_upper_factor'),
        )  # fmt: skip
    except selection.NegligibleSpreadError as exception:
        summary['refused'] = str(exception)
        return {'summary': orm.Dict(summary)}
    descriptors = None
    if settings.get('descriptors') == 'mace' and 'descriptor_model' in inputs:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = inputs['descriptor_model'].copy_to(tmp)
            descriptors = selection.mace_frame_descriptors(path, frames)
    held = np.zeros(len(frames), dtype=bool)
    held[held_out_index] = True
    pool = np.flatnonzero(~held)  # held-out frames are never candidates
    try:
        result = selection.select_frames(
            np.asarray(deviation)[pool], band,
            descriptors=None if descriptors is None else descriptors[pool],
            max_selected=int(settings['max_selected']), min_step_gap=int(settings.get('min_step_gap', 0)),
            steps=np.asarray(steps)[pool], trajectories=[trajectory[i] for i in pool],
            conditions=[conditions[i] for i in pool], min_spread=float(settings['min_spread']),
        )  # fmt: skip
    except selection.NegligibleSpreadError as exception:
        summary['refused'] = str(exception)
        return {'summary': orm.Dict(summary)}
    chosen = [int(pool[i]) for i in result.selected]
    summary.update(
        {
            'trust_band': band.as_dict(),
            'median_deviation': result.median_deviation,
            'counts': result.counts,
            'counts_per_condition': result.counts_per_condition,
            'selected': [{'condition': conditions[i], 'step': steps[i], 'max_force_dev': deviation[i]} for i in chosen],
            'descriptors': 'mace' if descriptors is not None else 'none',
        }
    )
    outputs = {'summary': orm.Dict(summary)}
    if chosen:
        outputs['selected'] = TrainingSet.from_frames([_with_type(frames[i], 'al_selected') for i in chosen])
    if held_out_index:
        outputs['held_out'] = TrainingSet.from_frames(
            [_with_type(frames[i], 'al_held_out') for i in sorted(set(held_out_index))]
        )
    return outputs


def _with_type(atoms, config_type: str):
    atoms = atoms.copy()
    atoms.info['config_type'] = config_type
    return atoms


@calcfunction
def check_new_labels(labelled, unlabelled, parameters):
    """New DFT labels with the loop's info copied from the frames they came from, and the Ni moment check.

    ``labelled`` frames carry ``label_key = frame_<i>``, the index in ``unlabelled``. A label whose Ni moment pattern
    does not match the composition's oxidation states (:func:`aiida_nmcml.analysis.active_learning.ni_moment_pattern`)
    is a spin local minimum: ``magnetic_check: reject`` leaves it out of ``accepted``, ``flag`` keeps it with
    ``info['al_spin_mismatch'] = True``; both list it in ``report``.
    """
    settings = parameters.get_dict()
    mode = settings.get('magnetic_check', 'reject')
    sources = unlabelled.get_frames()
    accepted, report = [], {'checked': 0, 'mismatch': [], 'mode': mode, 'labelled': 0}
    for atoms in labelled.get_frames():
        key = str(atoms.info.get('label_key', ''))
        index = int(key.rsplit('_', maxsplit=1)[-1]) if key.startswith('frame_') else None
        if index is not None and index < len(sources):
            for name in FRAME_INFO:
                if name in sources[index].info:
                    atoms.info[name] = sources[index].info[name]
        report['labelled'] += 1
        if mode != 'off' and 'REF_magmoms' in atoms.arrays:
            pattern = rules.ni_moment_pattern(
                atoms.get_chemical_symbols(), atoms.arrays['REF_magmoms'], int(settings.get('magnetic_tolerance', 0))
            )
            report['checked'] += 1
            if pattern['match'] is False:
                report['mismatch'].append({'label_key': key, **pattern})
                atoms.info['al_spin_mismatch'] = True
                if mode == 'reject':
                    continue
        accepted.append(atoms)
    report['accepted'] = len(accepted)
    outputs = {'report': orm.Dict(report)}
    if accepted:
        outputs['accepted'] = TrainingSet.from_frames(accepted)
    return outputs


@calcfunction
def iteration_metrics(info, **inputs):
    """One iteration's record, linked to its data: selection counts, labels, DFT count, committee metrics,
    calibration, held-out errors; ``inputs`` hold that iteration's committee (``model_*``), ``training_set``,
    ``held_out_set`` and ``calibration`` so that a continuation finds them from this node."""
    record = dict(info.get_dict())
    for name in ('selection', 'label_report', 'held_out_label_report', 'finetune_metrics', 'calibration'):
        if name in inputs:
            record[name] = inputs[name].get_dict()
    for name in ('held_out_metrics', 'held_out_initial_metrics'):
        if name in inputs:
            metrics = inputs[name].get_dict()
            record[name] = {'summary': metrics.get('summary'), 'n_frames': metrics.get('n_frames')}
    if 'training_set' in inputs:
        record['n_training_frames'] = inputs['training_set'].num_frames
    if 'held_out_set' in inputs:
        record['n_held_out_frames'] = inputs['held_out_set'].num_frames
    record['committee'] = sorted(key[len('model_') :] for key in inputs if key.startswith('model_'))
    return orm.Dict(record)


@calcfunction
def learning_curve(**metrics):
    """Held-out error against the number of DFT labels, one point per committee (the starting one first)."""
    points = []
    for key in sorted(metrics):
        record = metrics[key].get_dict()
        initial = (record.get('held_out_initial_metrics') or {}).get('summary')
        if initial:
            points.append((record.get('n_dft_labels_before', 0), record.get('n_training_frames_before'), 0, initial))
        final = (record.get('held_out_metrics') or {}).get('summary')
        if final:
            points.append((record['n_dft_labels'], record.get('n_training_frames'), record['iteration'], final))
    curve = {'iteration': [], 'n_dft_labels': [], 'n_training_frames': [], 'forces_rmse_meV_per_A': [],
             'energy_rmse_meV_per_atom': [], 'stress_rmse_GPa': []}  # fmt: skip
    for n_dft, n_train, iteration, summary in points:
        curve['iteration'].append(iteration)
        curve['n_dft_labels'].append(n_dft)
        curve['n_training_frames'].append(n_train)
        for name in ('forces_rmse_meV_per_A', 'energy_rmse_meV_per_atom', 'stress_rmse_GPa'):
            curve[name].append(summary.get(name))
    return orm.Dict(curve)


@calcfunction
def model_lattice_check(model, parameters, **structures):
    """a and c of each structure after a relaxation with ``model`` (positions and cell), against the DFT reference.

    Why a calcfunction: the relaxed lattice parameters are data derived from the model and the structures, so they
    are linked to both. It runs the engine's relaxation (:func:`aiida_nmcml.engine.lattice.model_lattice_parameters`,
    ASE FIRE on a cell filter) in the daemon, as the descriptors of the selection do: seconds to a minute per 80-atom
    cell on a CPU with a small MACE; a large model or many cells belong in an engine calcjob (not written yet).
    """
    from ..engine.lattice import model_lattice_parameters
    from ..structures import from_structure_data

    settings = rules.LATTICE_CHECK.with_defaults(parameters.get_dict())
    atoms = {key: from_structure_data(node) for key, node in structures.items()}
    with model.calculator() as calculator:
        values = model_lattice_parameters(
            calculator, atoms, fmax=settings['fmax'], steps=settings['max_steps'], mode=settings['mode']
        )
    result = rules.compare_lattice(values, settings['reference'], settings['tolerance_percent'])
    result['model'] = values
    result['settings'] = {k: settings[k] for k in ('fmax', 'max_steps', 'mode', 'member')}
    return orm.Dict(result)


@calcfunction
def convergence_record(info):
    """The rule that ended the loop, the last iteration, the DFT count (a copy: data made in a calcfunction)."""
    return orm.Dict(info.get_dict())


def exploration_structures(spec: dict) -> dict:
    """The protocol's seed cells: ``cells`` is a list of ``{atoms, x: [...], antisite_fraction?, strain: [ea, ec]?}``
    (exact NMC811 on multiples of 10 TM sites, structures.build_nmc), ``seed`` fixes the orderings.

    Keys name the cell: ``n80_x0_500``, ``n160_x0_250_antisite``, ``n80_x1_000_strain_ap2_cm2`` (a +2 %, c -2 %).
    """
    from ..structures import build_nmc, to_structure_data

    result = {}
    for cell in spec['cells']:
        strain = cell.get('strain')
        antisite = float(cell.get('antisite_fraction', 0.0))
        for x in cell['x']:
            atoms = build_nmc(
                int(cell['atoms']), x_li=float(x), seed=int(spec.get('seed', 0)), antisite_fraction=antisite
            )
            key = f'n{cell["atoms"]}_x{float(x):.3f}'.replace('.', '_')
            if antisite:
                key += '_antisite'
            if strain:
                ea, ec = (float(v) for v in strain)
                cellv = atoms.cell.array.copy()
                # in-plane components scaled by 1 + ea, the component along the layer normal by 1 + ec
                normal = np.cross(cellv[0], cellv[1])
                normal /= np.linalg.norm(normal)
                deform = np.eye(3) * (1 + ea) + np.outer(normal, normal) * (ec - ea)
                atoms.set_cell(cellv @ deform.T, scale_atoms=True)
                key += '_strain_a{}{}_c{}{}'.format(
                    'p' if ea >= 0 else 'm', round(abs(ea) * 100), 'p' if ec >= 0 else 'm', round(abs(ec) * 100)
                )
            result[key] = to_structure_data(atoms)
    return result


def _apply_options(target, metadata: dict) -> None:
    """Copy the children's ``metadata.options`` of a previous run into ``target``, one option at a time."""
    for key, value in metadata.items():
        if key == 'metadata':
            for name, option in (value.get('options') or {}).items():
                if 'options' in target.metadata:
                    target.metadata.options[name] = option
        elif isinstance(value, dict) and key in target:
            _apply_options(target[key], value)


def validate_inputs(inputs, _):
    if 'parameters' not in inputs:
        return None
    parameters = rules.PARAMETERS.with_defaults(inputs['parameters'].get_dict())
    if len(inputs.get('committee', {}) or {}) < 2:
        return 'committee: give at least two models (a committee of one has no spread to select on)'
    if parameters['trust_lower'] is None and 'calibration' not in inputs:
        return 'parameters.trust_lower is null and no calibration is given: the trust band has no lower level'
    if parameters['retrain_from'] == 'foundation' and 'foundation_model' not in inputs:
        return "retrain_from 'foundation' needs the foundation_model input"
    if parameters['held_out_per_condition'] == 0 and 'held_out_set' not in inputs:
        return 'no held_out_set and held_out_per_condition is 0: the loop would have no held-out set'
    return validate_lattice_check(inputs)


def validate_lattice_check(inputs) -> str | None:
    """lattice_check and lattice_structures come together, with the same keys; the member exists."""
    check, structures = inputs.get('lattice_check'), dict(inputs.get('lattice_structures', {}) or {})
    if check is None and structures:
        return 'lattice_structures without lattice_check: give the DFT reference to compare with'
    if check is None:
        return None
    settings = rules.LATTICE_CHECK.with_defaults(check.get_dict())
    if set(settings['reference']) != set(structures):
        return (
            f'lattice_check.reference keys {sorted(settings["reference"])} differ from the lattice_structures keys '
            f'{sorted(structures)}'
        )
    if settings['member'] >= len(inputs.get('committee', {}) or {}):
        return f'lattice_check.member {settings["member"]} is not a member of the committee'
    return None


class ActiveLearningWorkChain(ProtocolMixin, WorkChain):
    """Explore -> select -> label -> retrain -> evaluate, until a stopping rule fires (module docstring)."""

    _protocol_filename = 'active_learning.yaml'

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input_namespace(
            'structures', valid_type=orm.StructureData, dynamic=True,
            help='Seed cells of the exploration (DFT-sized, exact NMC811: 80 or 160 atoms), by key; each is run at '
            'every temperature. Their sublattice labels carry to the frames, so DFT starts from the builder moments.',
        )  # fmt: skip
        spec.input_namespace(
            'committee', valid_type=MaceModel, dynamic=True,
            help='The starting committee (>= 2 models; sorted keys, the first drives the MD).',
        )  # fmt: skip
        spec.input(
            'training_set', valid_type=TrainingSet, required=False,
            help='Labelled frames the starting committee knows (same DFT settings as the loop labels); without it the '
            'dataset starts with the first selected frames.',
        )  # fmt: skip
        spec.input(
            'calibration', valid_type=orm.Dict, required=False,
            help="The starting committee's calibration (nmcml.finetune / nmcml.evaluate): trust levels when the "
            'parameters leave them null.',
        )  # fmt: skip
        spec.input(
            'foundation_model', valid_type=MaceModel, required=False,
            help="What each retraining starts from with retrain_from 'foundation'.",
        )  # fmt: skip
        spec.input(
            'held_out_set', valid_type=TrainingSet, required=False,
            help='A labelled held-out set; without it one is drawn from the first exploration and labelled once.',
        )  # fmt: skip
        spec.input(
            'parameters', valid_type=orm.Dict, serializer=to_aiida_type,
            validator=port_validator(rules.PARAMETERS, 'parameters'),
            help='Loop settings (aiida_nmcml/analysis/active_learning.py PARAMETERS; docs/active_learning.md).',
        )  # fmt: skip
        spec.input(
            'group_label', valid_type=orm.Str, required=False, serializer=to_aiida_type,
            help='Campaign name C: each iteration\'s nodes go to the group C/active_learning/iter_NN.',
        )  # fmt: skip
        spec.input(
            'lattice_check', valid_type=orm.Dict, required=False, serializer=to_aiida_type,
            validator=port_validator(rules.LATTICE_CHECK, 'lattice_check'),
            help='Optional a(x), c(x) check at the end: the lattice_structures are relaxed with the final '
            "committee's member and a, c compared with the DFT reference (docs/active_learning.md).",
        )  # fmt: skip
        spec.input_namespace(
            'lattice_structures', valid_type=orm.StructureData, dynamic=True, required=False,
            help='Layered cells (ab in the layer plane) for lattice_check, by the keys of its reference.',
        )  # fmt: skip
        spec.input_namespace(
            'previous_iterations', valid_type=orm.Dict, dynamic=True, required=False,
            help='iteration_metrics of the run this one continues (get_builder_restart fills it).',
        )  # fmt: skip
        spec.expose_inputs(MdCalculation, namespace='md', exclude=('structure', 'models'))
        spec.inputs['md'].validator = None
        spec.expose_inputs(LabelWorkChain, namespace='label', exclude=('structures', 'frames'))
        spec.inputs['label'].validator = None
        spec.expose_inputs(
            FinetuneWorkChain, namespace='finetune', exclude=('training_set', 'validation_set', 'foundation_model')
        )
        spec.inputs['finetune'].validator = None
        spec.expose_inputs(
            EvaluateCalculation, namespace='evaluate', exclude=('models', 'frames', 'universal_potential')
        )
        spec.inputs['evaluate'].validator = None  # it demands models and frames, which the loop supplies
        spec.inputs.validator = validate_inputs

        spec.outline(
            cls.setup,
            while_(cls.should_iterate)(
                cls.run_exploration,
                cls.inspect_exploration,
                cls.select,
                if_(cls.has_frames_to_label)(
                    cls.run_labelling,
                    cls.inspect_labelling,
                    cls.run_retraining,
                    cls.inspect_retraining,
                    cls.run_held_out_evaluation,
                    cls.inspect_held_out_evaluation,
                ),
                cls.finish_iteration,
            ),
            cls.results,
        )
        spec.output_namespace('committee', valid_type=MaceModel, dynamic=True, help='The final committee (m0, m1 ...).')
        spec.output('training_set', valid_type=TrainingSet, required=False, help='The accumulated labelled dataset.')
        spec.output('held_out_set', valid_type=TrainingSet, required=False, help='The fixed held-out set.')
        spec.output('calibration', valid_type=orm.Dict, required=False, help="The final committee's calibration.")
        spec.output(
            'learning_curve', valid_type=orm.Dict, required=False,
            help='Held-out force / energy / stress RMSE against the number of DFT labels (and training frames).',
        )  # fmt: skip
        spec.output_namespace(
            'iteration_metrics', valid_type=orm.Dict, dynamic=True,
            help='iter_NN: counts per condition, selected frames, labels and spin mismatches, DFT count, committee '
            'metrics, calibration, held-out errors. Attached as each iteration ends (a killed run keeps them).',
        )  # fmt: skip
        spec.output(
            'lattice_check', valid_type=orm.Dict, required=False,
            help='With the lattice_check input: per structure the model a, c after relaxation, the DFT values, the '
            'errors in %, within tolerance; all_within.',
        )  # fmt: skip
        spec.output(
            'convergence', valid_type=orm.Dict,
            help='rule (accurate_fraction | held_out_targets | max_iterations | max_dft_labels | ...), iteration, '
            'message.',
        )  # fmt: skip
        exit_codes.declare(
            spec, 'ERROR_AL_EXPLORATION_FAILED', 'ERROR_AL_LABELLING_FAILED', 'ERROR_AL_TRAINING_FAILED',
            'ERROR_AL_EVALUATION_FAILED', 'ERROR_NEGLIGIBLE_SPREAD', 'ERROR_AL_MAX_ITERATIONS', 'ERROR_AL_DFT_BUDGET',
            'ERROR_AL_NO_CANDIDATES',
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------------ builders
    @classmethod
    def get_builder_from_protocol(
        cls,
        *,
        engine_code,
        dft_code,
        train_code,
        committee,
        training_set=None,
        structures=None,
        foundation_model=None,
        calibration=None,
        held_out_set=None,
        dft_engine: str = 'qe',
        protocol: str | None = None,
        overrides: dict | None = None,
    ):
        """A ready builder. ``overrides`` follow active_learning.yaml: ``parameters`` (the loop), and per child
        ``md`` / ``label`` / ``finetune`` (merged into the child protocol named by ``md_protocol``, ``label_protocol``,
        ``finetune_protocol``), ``evaluate`` ({parameters, metadata}); ``device`` for MD, training and evaluation.

        ``structures``: list or dict of StructureData; None builds the protocol's ``exploration.cells``
        (:func:`exploration_structures`). ``committee``: list or dict of MaceModel.
        """
        overrides = dict(overrides or {})
        child = {name: overrides.pop(name, None) for name in ('md', 'label', 'finetune')}
        inputs = cls.get_protocol_inputs(protocol, overrides)
        device = inputs['device']
        builder = cls.get_builder()
        if structures is None:
            structures = exploration_structures(inputs['exploration'])
        elif not isinstance(structures, dict):
            structures = {f's{i}': s for i, s in enumerate(structures)}
        builder.structures = structures
        committee = committee if isinstance(committee, dict) else {f'm{i}': m for i, m in enumerate(committee)}
        builder.committee = committee
        if training_set is not None:
            builder.training_set = training_set
        if foundation_model is not None:
            builder.foundation_model = foundation_model
        if calibration is not None:
            builder.calibration = calibration
        if held_out_set is not None:
            builder.held_out_set = held_out_set
        builder.parameters = orm.Dict(rules.PARAMETERS.with_defaults(inputs['parameters']))

        md = load_protocol_inputs('md.yaml', inputs['md_protocol'], child['md'], owner='nmcml.md.base')
        builder.md.code = engine_code
        builder.md.parameters = orm.Dict(md['parameters'])
        builder.md.device = orm.Str(device)
        builder.md.metadata.options.update(md.get('metadata', {}).get('options', {}))

        label = LabelWorkChain.get_builder_from_protocol(
            dft_code, engine=dft_engine, protocol=inputs['label_protocol'], overrides=child['label']
        )
        for key in ('code', 'engine', 'settings', 'min_success_fraction'):
            builder.label[key] = label[key]

        finetune = FinetuneWorkChain.get_builder_from_protocol(
            train_code, training_set if training_set is not None else TrainingSet.from_frames([]),
            foundation_model=foundation_model, evaluate_code=engine_code, device=device,
            protocol=inputs['finetune_protocol'], overrides=child['finetune'],
        )  # fmt: skip
        for key in ('committee_size', 'base_seed', 'valid_fraction', 'diversity'):
            builder.finetune[key] = finetune[key]
        for key in ('code', 'parameters', 'device'):
            builder.finetune.train[key] = finetune.train[key]
        builder.finetune.train.metadata.options = dict(finetune.train.metadata.options)
        for key in ('code', 'parameters', 'device'):
            builder.finetune.evaluate[key] = finetune.evaluate[key]
        builder.finetune.evaluate.metadata.options = dict(finetune.evaluate.metadata.options)

        builder.evaluate.code = engine_code
        builder.evaluate.device = orm.Str(device)
        builder.evaluate.parameters = orm.Dict(inputs['evaluate']['parameters'])
        builder.evaluate.metadata.options = inputs['evaluate']['metadata']['options']
        return builder

    @classmethod
    def get_builder_restart(cls, node, parameters: dict | None = None):
        """A builder that continues ``node`` (finished or killed) after its last finished iteration.

        Same inputs as ``node``, except: the committee, dataset, held-out set and calibration of its last
        ``iteration_metrics`` output, the previous metrics (iteration numbering, DFT count, learning curve), and
        ``parameters`` merged over its parameters (e.g. a larger ``max_iterations``).
        """
        from aiida.common.links import LinkType

        # not node.get_builder_restart(): it sets each child's metadata.options as a whole dict, which the port
        # refuses when the stored options are partial (e.g. no `resources` in a namespace that got them by default)
        builder = cls.get_builder()
        builder._update(node.base.links.get_incoming(link_type=LinkType.INPUT_WORK).nested())
        _apply_options(builder, node.get_metadata_inputs() or {})
        previous = dict(node.inputs.previous_iterations) if 'previous_iterations' in node.inputs else {}
        if 'iteration_metrics' in node.outputs:
            previous.update(dict(node.outputs.iteration_metrics))
        if parameters:
            builder.parameters = orm.Dict({**node.inputs.parameters.get_dict(), **parameters})
        if not previous:
            return builder
        builder.previous_iterations = previous
        last = previous[sorted(previous)[-1]]
        sources = last.creator.inputs
        builder.committee = {key[len('model_') :]: sources[key] for key in sources if key.startswith('model_')}
        if 'training_set' in sources:
            builder.training_set = sources['training_set']
        if 'held_out_set' in sources:
            builder.held_out_set = sources['held_out_set']
        if 'calibration' in sources:
            builder.calibration = sources['calibration']
        return builder

    # ---------------------------------------------------------------------------------------------------- steps
    def setup(self):
        self.ctx.parameters = rules.PARAMETERS.with_defaults(self.inputs.parameters.get_dict())
        self.ctx.committee = dict(self.inputs.committee)
        self.ctx.calibration = self.inputs.get('calibration')
        self.ctx.dataset = self.inputs.get('training_set')
        self.ctx.held_out = self.inputs.get('held_out_set')
        previous = dict(self.inputs.get('previous_iterations', {}) or {})
        self.ctx.metrics = dict(previous)
        records = [previous[key].get_dict() for key in sorted(previous)]
        self.ctx.iteration = max((r['iteration'] for r in records), default=0)
        self.ctx.n_dft = max((r['n_dft_labels'] for r in records), default=0)
        self.ctx.stop = None  # (rule, exit code or None, message)
        self.ctx.held_out_initial_done = bool(records)
        if records:  # the state after the last finished iteration: its record's inputs (see get_builder_restart)
            sources = previous[sorted(previous)[-1]].creator.inputs
            models = {key[len('model_') :]: sources[key] for key in sources if key.startswith('model_')}
            self.ctx.committee = models or self.ctx.committee
            self.ctx.dataset = sources['training_set'] if 'training_set' in sources else self.ctx.dataset
            self.ctx.held_out = sources['held_out_set'] if 'held_out_set' in sources else self.ctx.held_out
            self.ctx.calibration = sources['calibration'] if 'calibration' in sources else self.ctx.calibration
            self.report(
                f'continuing after iteration {self.ctx.iteration} ({self.ctx.n_dft} DFT labels so far): finished '
                'iterations are not repeated'
            )

    def should_iterate(self):
        if self.ctx.stop is not None:
            return False
        p = self.ctx.parameters
        if self.ctx.iteration >= p['max_iterations']:
            self.stop(rules.RULE_MAX_ITERATIONS, 'ERROR_AL_MAX_ITERATIONS',
                      f'{self.ctx.iteration} iterations done, max_iterations is {p["max_iterations"]}')  # fmt: skip
            return False
        if self.ctx.n_dft >= p['max_dft_labels']:
            self.stop(rules.RULE_DFT_BUDGET, 'ERROR_AL_DFT_BUDGET',
                      f'{self.ctx.n_dft} DFT labels spent, max_dft_labels is {p["max_dft_labels"]}')  # fmt: skip
            return False
        self.ctx.iteration += 1
        self.ctx.n_dft_before = self.ctx.n_dft
        self.ctx.n_training_before = 0 if self.ctx.dataset is None else self.ctx.dataset.num_frames
        for key in ('selection', 'selected', 'label_report', 'held_out_label_report', 'finetune', 'evaluation',
                    'evaluation_initial', 'new_held_out', 'n_added'):  # fmt: skip
            self.ctx.pop(key, None)
        return True

    def stop(self, rule: str, label: str | None, message: str):
        self.ctx.stop = (rule, label, message)
        self.report(f'stopping rule {rule!r} ends the loop at iteration {self.ctx.iteration}: {message}')

    def conditions(self) -> dict:
        """Trajectory key -> condition: every seed structure at every temperature."""
        result = {}
        for s_key in sorted(self.inputs.structures):
            structure = self.inputs.structures[s_key]
            x = rules.li_content(structure.get_ase().get_chemical_symbols())
            for temperature in self.ctx.parameters['temperatures_K']:
                condition = rules.condition_key(s_key, temperature)
                result[f'traj_{len(result)}'] = {
                    'condition': condition, 'structure': s_key, 'temperature_K': float(temperature), 'x': x,
                }  # fmt: skip
        return result

    def run_exploration(self):
        """One nmcml.md.base per condition, all at once; longer runs as the iterations go on."""
        p = self.ctx.parameters
        self.ctx.conditions = self.conditions()
        base = self.exposed_inputs(MdCalculation, namespace='md')
        md_parameters = base['parameters'].get_dict()
        steps = round(int(md_parameters.get('steps', 1000)) * p['steps_growth'] ** (self.ctx.iteration - 1))
        models = {key: self.ctx.committee[key] for key in sorted(self.ctx.committee)}
        futures = {}
        for index, (key, meta) in enumerate(self.ctx.conditions.items()):
            inputs = dict(base)
            inputs['structure'] = self.inputs.structures[meta['structure']]
            inputs['models'] = models
            inputs['parameters'] = orm.Dict({
                **md_parameters, 'temperature_K': meta['temperature_K'], 'steps': steps,
                'seed': p['seed'] + 1000 * self.ctx.iteration + index,
            })  # fmt: skip
            metadata = {'call_link_label': f'md_{iteration_key(self.ctx.iteration)}_{index}'}
            futures[f'md_{key}'] = self.submit(MdBaseWorkChain, md=inputs, metadata=metadata)
        self.report(
            f'iteration {self.ctx.iteration}: exploring {len(futures)} conditions '
            f'({", ".join(m["condition"] for m in self.ctx.conditions.values())}), {steps} MD steps each'
        )
        return ToContext(**futures)

    def inspect_exploration(self):
        """Frames of every MD that produced a trajectory (stopped runs included); fail only when none did."""
        self.ctx.trajectories = {}
        failed = []
        for key, meta in self.ctx.conditions.items():
            node = self.ctx[f'md_{key}']
            usable = node.is_finished_ok or node.exit_status in MD_USABLE
            if usable and 'trajectory' in node.outputs:
                self.ctx.trajectories[key] = node.outputs.trajectory
                if not node.is_finished_ok:
                    self.report(f'{meta["condition"]}: MD stopped early ({node.exit_status}); its frames are used')
            else:
                failed.append(f'{meta["condition"]}: {node.exit_status} {node.exit_message or ""}'.strip())
        if failed:
            self.report(f'no frames from {len(failed)} condition(s): {"; ".join(failed)}')
        if not self.ctx.trajectories:
            return self.exit_codes.ERROR_AL_EXPLORATION_FAILED.format(
                iteration=self.ctx.iteration, message='; '.join(failed)
            )
        return None

    def select(self):
        p = self.ctx.parameters
        need_held_out = self.ctx.held_out is None
        held_per_condition = p['held_out_per_condition'] if need_held_out else 0
        n_held = held_per_condition * len(self.ctx.trajectories)
        budget = p['max_dft_labels'] - self.ctx.n_dft - n_held
        settings = {
            key: p[key]
            for key in ('trust_lower', 'trust_upper', 'trust_upper_factor', 'min_spread', 'min_step_gap', 'descriptors')
        }
        settings.update({
            'iteration': self.ctx.iteration,
            'max_selected': max(0, min(p['max_selected'], budget)),
            'held_out_per_condition': held_per_condition,
            'conditions': {key: self.ctx.conditions[key] for key in self.ctx.trajectories},
        })  # fmt: skip
        inputs = dict(self.ctx.trajectories)
        if self.ctx.calibration is not None:
            inputs['calibration'] = self.ctx.calibration
        if p['descriptors'] == 'mace':
            inputs['descriptor_model'] = self.ctx.committee[sorted(self.ctx.committee)[0]]
        outputs = select_explored_frames(
            orm.Dict(settings), **inputs,
            metadata={'call_link_label': f'select_{iteration_key(self.ctx.iteration)}'},
        )  # fmt: skip
        summary = outputs['summary'].get_dict()
        self.ctx.selection = outputs['summary']
        self.ctx.selected = outputs.get('selected')
        self.ctx.new_held_out = outputs.get('held_out')
        if 'refused' in summary:  # the outputs so far are attached (results), nothing is labelled
            self.stop('negligible_spread', 'ERROR_NEGLIGIBLE_SPREAD', summary['refused'])
            self.ctx.selected = self.ctx.new_held_out = None
            return None
        for condition, counts in summary['counts_per_condition'].items():
            self.report(
                f'{condition}: {counts["accurate"]} accurate, {counts["candidate"]} candidates, '
                f'{counts["discarded"]} discarded, {counts["selected"]} selected'
            )
        band = summary['trust_band']
        self.report(f'trust band [{band["lower"]:.3g}, {band["upper"]:.3g}] eV/Å ({band["source"]})')
        met, fractions = rules.accuracy_rule(summary['counts_per_condition'], p['accurate_fraction'])
        if met:
            self.stop(rules.RULE_ACCURATE, None,
                      f'at least {p["accurate_fraction"]:.0%} of the monitored frames below trust_lower at every '
                      f'condition ({", ".join(f"{k} {v:.0%}" for k, v in fractions.items())})')  # fmt: skip
            self.ctx.selected = None  # converged: nothing is labelled
            if self.ctx.new_held_out is None:
                return None
        elif self.ctx.selected is None:
            if budget <= 0:
                self.stop(rules.RULE_DFT_BUDGET, 'ERROR_AL_DFT_BUDGET',
                          f'no DFT labels left ({self.ctx.n_dft} spent, {n_held} held-out needed)')  # fmt: skip
            else:
                self.stop('no_candidates', 'ERROR_AL_NO_CANDIDATES',
                          f'iteration {self.ctx.iteration}: no frame in the trust band')  # fmt: skip
        return None

    def has_frames_to_label(self):
        return self.ctx.selected is not None or self.ctx.new_held_out is not None

    def run_labelling(self):
        base = self.exposed_inputs(LabelWorkChain, namespace='label')
        futures = {}
        tag = iteration_key(self.ctx.iteration)
        if self.ctx.selected is not None:
            futures['label'] = self.submit_label(base, self.ctx.selected, f'label_{tag}')
            self.ctx.n_dft += self.ctx.selected.num_frames
        if self.ctx.new_held_out is not None:
            futures['label_held_out'] = self.submit_label(base, self.ctx.new_held_out, 'label_held_out')
            self.ctx.n_dft += self.ctx.new_held_out.num_frames
        self.report(f'labelling: {", ".join(f"{k}<{v.pk}>" for k, v in futures.items())}')
        return ToContext(**futures)

    def submit_label(self, base: dict, frames, link_label: str):
        inputs = {**base, 'frames': frames}
        inputs['metadata'] = {**base.get('metadata', {}), 'call_link_label': link_label}
        return self.submit(LabelWorkChain, **inputs)

    def inspect_labelling(self):
        check = orm.Dict({k: self.ctx.parameters[k] for k in ('magnetic_check', 'magnetic_tolerance')})
        tag = iteration_key(self.ctx.iteration)
        for name, source, target in (('label_held_out', self.ctx.new_held_out, 'held_out'),
                                     ('label', self.ctx.selected, 'selected')):  # fmt: skip
            if name not in self.ctx:
                continue
            node = self.ctx[name]
            if not node.is_finished_ok or 'labelled' not in node.outputs:
                return self.exit_codes.ERROR_AL_LABELLING_FAILED.format(
                    iteration=self.ctx.iteration, status=node.exit_status, message=node.exit_message or ''
                )
            outputs = check_new_labels(
                node.outputs.labelled, source, check, metadata={'call_link_label': f'check_{name}_{tag}'}
            )
            report = outputs['report'].get_dict()
            for entry in report['mismatch']:
                self.report(
                    f'{target} label {entry["label_key"]}: Ni moments {entry["found"]} against {entry["expected"]} '
                    f'from the oxidation states (spin local minimum); {report["mode"]}'
                )
            if target == 'held_out':
                self.ctx.held_out_label_report = outputs['report']
                if 'accepted' not in outputs:
                    return self.exit_codes.ERROR_AL_LABELLING_FAILED.format(
                        iteration=self.ctx.iteration, status=0, message='no held-out frame survived the spin check'
                    )
                self.ctx.held_out = outputs['accepted']
            else:
                self.ctx.label_report = outputs['report']
                self.ctx.n_added = report['accepted']
                if 'accepted' in outputs and self.ctx.dataset is None:
                    self.ctx.dataset = outputs['accepted']
                elif 'accepted' in outputs:
                    self.ctx.dataset = merge_trainingsets(
                        a_previous=self.ctx.dataset, b_new=outputs['accepted'],
                        metadata={'call_link_label': f'merge_{tag}'},
                    )  # fmt: skip
                size = 0 if self.ctx.dataset is None else self.ctx.dataset.num_frames
                self.report(f'{report["labelled"]} labelled, {report["accepted"]} added: the dataset has {size} frames')
        return None

    def run_retraining(self):
        futures = {}
        if self.ctx.get('n_added'):  # new training labels: a new committee (none if every label was rejected)
            inputs = self.exposed_inputs(FinetuneWorkChain, namespace='finetune')
            inputs['training_set'] = self.ctx.dataset
            if self.ctx.parameters['retrain_from'] == 'previous':
                inputs['foundation_model'] = self.ctx.committee[sorted(self.ctx.committee)[0]]
            else:
                inputs['foundation_model'] = self.inputs.foundation_model
            inputs['metadata'] = {'call_link_label': f'finetune_{iteration_key(self.ctx.iteration)}'}
            futures['finetune'] = self.submit(FinetuneWorkChain, **inputs)
        if not self.ctx.held_out_initial_done and self.ctx.held_out is not None:
            # the starting committee on the held-out set: the first point of the learning curve
            futures['evaluation_initial'] = self.submit_evaluation('evaluate_initial_committee')
            self.ctx.held_out_initial_done = True
        return ToContext(**futures)

    def submit_evaluation(self, label: str):
        inputs = self.exposed_inputs(EvaluateCalculation, namespace='evaluate')
        inputs['models'] = {key: self.ctx.committee[key] for key in sorted(self.ctx.committee)}
        inputs['frames'] = self.ctx.held_out
        inputs['metadata'] = {**inputs.get('metadata', {}), 'call_link_label': label}
        return self.submit(EvaluateCalculation, **inputs)

    def inspect_retraining(self):
        if 'finetune' not in self.ctx:
            return None
        node = self.ctx.finetune
        negligible = node.exit_status == exit_codes.TABLE['ERROR_NEGLIGIBLE_SPREAD'].status
        if negligible:  # the new committee cannot select: stop with it recorded, keep the previous one
            self.stop('negligible_spread', 'ERROR_NEGLIGIBLE_SPREAD', node.exit_message or '')
            return None
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_AL_TRAINING_FAILED.format(
                iteration=self.ctx.iteration, status=node.exit_status, message=node.exit_message or ''
            )
        self.ctx.committee = {f'm{key.split("_")[-1]}': model for key, model in node.outputs.models.items()}
        if 'calibration' in node.outputs:
            self.ctx.calibration = node.outputs.calibration
            cal = self.ctx.calibration
            self.report(
                f'recalibrated: trust_lower {cal.get("trust_lower")}, trust_upper {cal.get("trust_upper")} eV/Å, '
                f'Spearman {cal.get("spearman")}'
            )
        return None

    def run_held_out_evaluation(self):
        if 'finetune' not in self.ctx or self.ctx.held_out is None or not self.ctx.finetune.is_finished_ok:
            return None
        return ToContext(evaluation=self.submit_evaluation(f'evaluate_{iteration_key(self.ctx.iteration)}'))

    def inspect_held_out_evaluation(self):
        negligible = exit_codes.TABLE['ERROR_NEGLIGIBLE_SPREAD'].status
        for name in ('evaluation_initial', 'evaluation'):
            if name not in self.ctx:
                continue
            node = self.ctx[name]
            # a negligible spread on the held-out set refuses the calibration, not the parity metrics
            if not (node.is_finished_ok or node.exit_status == negligible) or 'metrics' not in node.outputs:
                return self.exit_codes.ERROR_AL_EVALUATION_FAILED.format(
                    iteration=self.ctx.iteration, status=node.exit_status, message=node.exit_message or ''
                )
            summary = node.outputs.metrics.get('summary') or {}
            self.report(
                f'held-out ({"starting" if name == "evaluation_initial" else "new"} committee): forces '
                f'{summary.get("forces_rmse_meV_per_A")} meV/Å, energy {summary.get("energy_rmse_meV_per_atom")} '
                f'meV/atom, stress {summary.get("stress_rmse_GPa")} GPa'
            )
        if 'evaluation' in self.ctx:
            targets = self.ctx.parameters['targets']
            met, checked = rules.targets_rule(self.ctx.evaluation.outputs.metrics.get('summary'), targets)
            if met and self.ctx.stop is None:
                self.stop(rules.RULE_TARGETS, None,
                          'held-out targets met: ' + ', '.join(f'{k} {v["value"]:.3g} <= {v["target"]}'
                                                                for k, v in checked.items()))  # fmt: skip
        return None

    def finish_iteration(self):
        """The iteration's record (a calcfunction linked to its data), its group, the report."""
        tag = iteration_key(self.ctx.iteration)
        info = {
            'iteration': self.ctx.iteration,
            'n_dft_labels': self.ctx.n_dft,
            'n_dft_labels_before': self.ctx.n_dft_before,
            'n_training_frames_before': self.ctx.n_training_before,
            'n_selected': 0 if self.ctx.get('selected') is None else self.ctx.selected.num_frames,
            'stop_rule': self.ctx.stop[0] if self.ctx.stop else None,
        }
        inputs = {'selection': self.ctx.selection}
        if self.ctx.dataset is not None:
            inputs['training_set'] = self.ctx.dataset
        inputs.update({f'model_{key}': model for key, model in self.ctx.committee.items()})
        if self.ctx.held_out is not None:
            inputs['held_out_set'] = self.ctx.held_out
        if self.ctx.calibration is not None:
            inputs['calibration'] = self.ctx.calibration
        for name in ('label_report', 'held_out_label_report'):
            if self.ctx.get(name) is not None:
                inputs[name] = self.ctx[name]
        if 'finetune' in self.ctx and 'metrics' in self.ctx.finetune.outputs:
            inputs['finetune_metrics'] = self.ctx.finetune.outputs.metrics
        if 'evaluation' in self.ctx:
            inputs['held_out_metrics'] = self.ctx.evaluation.outputs.metrics
        if 'evaluation_initial' in self.ctx:
            inputs['held_out_initial_metrics'] = self.ctx.evaluation_initial.outputs.metrics
        record = iteration_metrics(orm.Dict(info), **inputs, metadata={'call_link_label': f'metrics_{tag}'})
        self.ctx.metrics[tag] = record
        self.out(f'iteration_metrics.{tag}', record)
        if 'group_label' in self.inputs:
            nodes = [record, *inputs.values()]
            for name in ('selected', 'new_held_out'):
                if self.ctx.get(name) is not None:
                    nodes.append(self.ctx[name])
            for name in ('label', 'label_held_out', 'finetune', 'evaluation', 'evaluation_initial'):
                if name in self.ctx:
                    nodes.append(self.ctx[name])
            group_name = f'{self.inputs.group_label.value}/active_learning/{tag}'
            group, _ = orm.Group.collection.get_or_create(group_name)
            group.add_nodes([n for n in nodes if n.is_stored])
            self.report(f'iteration {self.ctx.iteration} recorded in group {group_name!r}')
        for key in ('label', 'label_held_out', 'finetune', 'evaluation', 'evaluation_initial'):
            self.ctx.pop(key, None)

    def check_lattice(self):
        """a, c of the lattice_structures relaxed with the final committee's member, against DFT (output, report)."""
        settings = rules.LATTICE_CHECK.with_defaults(self.inputs.lattice_check.get_dict())
        key = sorted(self.ctx.committee)[settings['member']]
        record = model_lattice_check(
            self.ctx.committee[key], self.inputs.lattice_check, **self.inputs.lattice_structures,
            metadata={'call_link_label': 'lattice_check'},
        )  # fmt: skip
        self.out('lattice_check', record)
        result = record.get_dict()
        for name, entry in result['per_structure'].items():
            x = f' (x = {entry["x_li"]:.3g})' if 'x_li' in entry else ''
            self.report(
                f'lattice {name}{x}, member {key}: a {entry["a"]:.4f} Å (DFT {entry["a_dft"]:.4f}, '
                f'{entry["a_error_percent"]:+.2f} %), c {entry["c"]:.4f} Å (DFT {entry["c_dft"]:.4f}, '
                f'{entry["c_error_percent"]:+.2f} %){"" if entry["converged"] else ", relaxation not converged"}'
            )
        self.report(
            f'lattice check: {"all" if result["all_within"] else "not all"} within '
            f'{result["tolerance_percent"]:g} % of DFT'
        )

    def results(self):
        for key, model in sorted(self.ctx.committee.items()):
            self.out(f'committee.{key}', model)
        if self.ctx.dataset is not None:
            self.out('training_set', self.ctx.dataset)
        if self.ctx.held_out is not None:
            self.out('held_out_set', self.ctx.held_out)
        if self.ctx.calibration is not None:
            self.out('calibration', self.ctx.calibration)
        if self.ctx.metrics:
            self.out('learning_curve', learning_curve(**self.ctx.metrics))
        if 'lattice_check' in self.inputs:
            self.check_lattice()
        rule, label, message = self.ctx.stop or ('unknown', None, '')
        info = {'rule': rule, 'iteration': self.ctx.iteration, 'message': message, 'n_dft_labels': self.ctx.n_dft}
        self.out('convergence', convergence_record(orm.Dict(info), metadata={'call_link_label': 'convergence'}))
        self.report(f'active learning ended by rule {rule!r} after iteration {self.ctx.iteration}: {message}')
        if label is not None:
            return getattr(self.exit_codes, label).format(message=message)
        return None

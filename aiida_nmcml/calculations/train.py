"""``nmcml.mace.train``: ``mace_run_train`` on a computer, every input file a node.

Three modes follow from which inputs are given (no mode flag that could disagree with the inputs):

* no ``foundation_model``: training from scratch;
* ``foundation_model`` only: naive fine-tuning (``multiheads_finetuning: false``);
* ``foundation_model`` + ``replay_set``: multihead fine-tuning, the replay data given as a local ``pt_train_file``,
  so mace-torch never tries to download Materials Project data at run time (compute nodes are often offline).

Energy references: with a foundation model the E0 dictionary is an input (``e0s``, a Dict made by the calcfunction
``aiida_nmcml.workflows.finetune.compute_e0s``, which ``nmcml.finetune`` runs once per committee) and reaches
``mace_run_train`` explicitly as ``E0s: '{z: eV, ...}'`` for every element of the foundation model. mace-torch's own
``estimated`` pads the elements absent from the data with 0.0, and multihead fine-tuning gave the new head the
foundation's E0s (science review B2, B3; see ``aiida_nmcml/analysis/e0s.py``).

Everything a user can get wrong about the data (empty set, NaN labels, elements the foundation model lacks) is
checked when the process is built, before anything is submitted: nothing is lost and the message says what to fix.
GPUs: ``device='cuda'`` plus scheduler directives in ``metadata.options.custom_scheduler_commands`` (AiiDA's job
resources have no GPU field); see docs/finetuning.md, "GPU jobs".
"""

from __future__ import annotations

import pathlib
import shlex

import numpy as np
import yaml
from aiida import orm
from aiida.common import datastructures
from aiida.engine import CalcJob

from ..common import exit_codes
from ..data.model import MaceModel
from ..data.trainingset import TrainingSet
from ..engine import model_metadata

MODEL_NAME = 'nmcml'
CONFIG_FILENAME = 'config.yaml'
TRAIN_FILENAME = 'train.xyz'
VALID_FILENAME = 'valid.xyz'
REPLAY_FILENAME = 'replay.xyz'
FOUNDATION_FILENAME = 'foundation.model'
STDOUT_FILENAME = 'mace_train.out'
STDERR_FILENAME = 'mace_train.err'
HASH_CHECK_FILENAME = 'hash_check.err'
METADATA_FILENAME = model_metadata.FILENAME  # model_metadata.json, written after training
METADATA_SCRIPT = model_metadata.SCRIPT_FILENAME
CHECKPOINTS_DIR = 'checkpoints'  # mace_run_train's default checkpoints_dir (reserved key)

TRAIN_EXIT_LABELS = (
    'ERROR_MISSING_OUTPUT_FILES',
    'ERROR_NAN_LOSS',
    'ERROR_OUT_OF_MEMORY',
    'ERROR_FOUNDATION_MISSING_ELEMENTS',
    'ERROR_EMPTY_DATASET',
    'ERROR_DEVICE_UNAVAILABLE',
    'ERROR_MODEL_HASH_MISMATCH',
    'ERROR_TRAINING_FAILED',
)

# The keys of the data contract (docs/dev/contracts.md): fixed, not hyperparameters.
DATA_KEYS = {'energy_key': 'REF_energy', 'forces_key': 'REF_forces', 'stress_key': 'REF_stress'}

# Set from input nodes or by the plugin itself; a user value would silently disagree with the provenance.
RESERVED_KEYS = frozenset(
    {
        'name',
        'seed',
        'device',
        'config',
        'train_file',
        'valid_file',
        'test_file',
        'test_dir',
        'foundation_model',
        'pt_train_file',
        'pt_valid_file',
        'multiheads_finetuning',
        'work_dir',
        'log_dir',
        'model_dir',
        'checkpoints_dir',
        'results_dir',
        'downloads_dir',
        'wandb',
        'distributed',
        'restart_latest',  # set from the parent_folder input
        *DATA_KEYS,
    }
)

# Defaults every mode shares; hyperparameters (model size, epochs, lr) come from the protocol / user parameters.
DEFAULT_PARAMETERS = {
    'default_dtype': 'float64',
    'batch_size': 4,
    'valid_batch_size': 8,
    'max_num_epochs': 50,
    'eval_interval': 1,
    'save_cpu': True,
    'error_table': 'PerAtomRMSEstressvirials',
    'loss': 'stress',  # energy + forces + stress (frames without REF_stress get zero stress weight)
    'valid_fraction': 0.1,
}


def check_trainingset(node: TrainingSet, role: str) -> str | None:
    """Why ``node`` cannot be trained on, or None. Reads the frames: NaN would only show up as a NaN loss later."""
    if not node.num_frames:
        return f'{role} is empty (0 frames): label some structures first'
    if node.num_labelled == 0:
        return f'{role} has no frame with REF_energy: it holds unlabelled structures'
    for index, atoms in enumerate(node.get_frames()):
        values = [atoms.positions]
        for key in ('REF_energy', 'REF_stress'):
            if key in atoms.info:
                values.append(np.asarray(atoms.info[key], dtype=float))
        if 'REF_forces' in atoms.arrays:
            values.append(atoms.arrays['REF_forces'])
        if not all(np.all(np.isfinite(v)) for v in values):
            return f'{role} frame {index} has non-finite positions or labels: drop or relabel it before training'
    return None


def effective_batch_size(training_set: TrainingSet, config: dict) -> int:
    """The batch size capped at the number of training frames.

    mace-torch drops the last incomplete training batch, so a set smaller than ``batch_size`` (the first iteration
    of active learning, the demo) would train on zero batches and crash in the neighbour statistics.
    """
    n_train = training_set.num_labelled
    if 'valid_file' not in config:
        n_train = int(n_train * (1.0 - float(config.get('valid_fraction', 0.1))))
    return max(1, min(int(config['batch_size']), n_train))


def validate_inputs(inputs, ctx):
    """Refuse, at build time, inputs that would make ``mace_run_train`` fail or train on garbage."""
    if 'training_set' not in ctx:  # exposed in a work chain that supplies the data later
        return None
    parameters = inputs['parameters'].get_dict() if 'parameters' in inputs else {}
    reserved = sorted(RESERVED_KEYS.intersection(parameters))
    if reserved:
        return f'parameters may not set {reserved}: they are set from the input nodes (training_set, seed, device ...)'
    device = inputs['device'].value if 'device' in inputs else 'cpu'
    if device not in {'cpu', 'cuda'} and not device.startswith('cuda:'):
        return f'device must be cpu or cuda, not {device!r}'
    roles = {'training_set': 'training set', 'validation_set': 'validation set', 'replay_set': 'replay set'}
    for key, role in roles.items():
        if key in inputs:
            message = check_trainingset(inputs[key], role)
            if message:
                return message
    foundation = inputs.get('foundation_model')
    if 'replay_set' in inputs and foundation is None:
        return 'a replay_set is only meaningful for multihead fine-tuning: give a foundation_model too'
    if foundation is not None:
        needed = set(inputs['training_set'].elements)
        if 'validation_set' in inputs:
            needed |= set(inputs['validation_set'].elements)
        missing = foundation.missing_elements(needed)
        if missing:
            return (
                f'the foundation model (elements {foundation.elements}) lacks {missing} present in the data: pick a '
                'foundation model that covers them or train from scratch'
            )
        if 'e0s' not in inputs:
            return (
                'fine-tuning needs the `e0s` input (mace-torch would pad elements absent from the data with E0 = 0): '
                'compute it with aiida_nmcml.workflows.finetune.compute_e0s(foundation_model, training_set), as '
                'nmcml.finetune does'
            )
    if 'e0s' in inputs:
        if 'E0s' in parameters:
            return 'parameters may not set E0s when the `e0s` input is given: it is set from that Dict'
        message = check_e0s(inputs['e0s'].get_dict(), foundation)
        if message:
            return message
        if foundation is not None and 'replay_set' not in inputs:
            message = check_foundation_carries_e0s(foundation, inputs['e0s'].get_dict()['e0s'])
            if message:
                return message
    return None


def check_foundation_carries_e0s(foundation, e0s: dict) -> str | None:
    """Naive fine-tuning: mace-torch 0.3.16 copies the foundation's E0 buffer over the ``E0s`` argument.

    (``load_foundations_elements`` copies every tensor of matching shape.) The E0s therefore only reach the model if
    the foundation file already carries them: ``workflows.finetune.prepare_member_model`` writes such a copy.
    """
    recorded = foundation.e0s
    differs = recorded is None or any(abs(recorded.get(k, np.inf) - float(v)) > 1e-8 for k, v in e0s.items())
    if differs:
        return (
            'naive fine-tuning: the foundation model does not carry the E0s of the `e0s` input, and mace-torch '
            "would replace them by the foundation's own: fine-tune from "
            'aiida_nmcml.workflows.finetune.prepare_member_model(foundation_model, seed, diversity, e0s), as '
            'nmcml.finetune does'
        )
    return None


def check_e0s(content: dict, foundation) -> str | None:
    """Why an ``e0s`` Dict cannot be used, or None: every foundation element needs a finite E0."""
    e0s = content.get('e0s')
    if not isinstance(e0s, dict) or not e0s:
        return 'the e0s Dict needs an `e0s` entry {symbol: eV} (see aiida_nmcml.workflows.finetune.compute_e0s)'
    bad = sorted(k for k, v in e0s.items() if not isinstance(v, int | float) or not np.isfinite(v))
    if bad:
        return f'the E0s of {bad} are not finite numbers'
    if foundation is not None:
        missing = sorted(set(foundation.elements) - set(e0s))
        if missing:
            return f'the e0s Dict has no E0 for {missing} of the foundation model: recompute it for this model'
    return None


class MaceTrainCalculation(CalcJob):
    """Train (or fine-tune) one MACE model with ``mace_run_train``."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('training_set', valid_type=TrainingSet, help='Frames to train on (REF_* labels).')
        spec.input(
            'validation_set',
            valid_type=TrainingSet,
            required=False,
            help='Validation frames; without it mace_run_train holds out `valid_fraction` of training_set.',
        )
        spec.input(
            'foundation_model',
            valid_type=MaceModel,
            required=False,
            help='Model to fine-tune from; absent: train from scratch.',
        )
        spec.input(
            'replay_set',
            valid_type=TrainingSet,
            required=False,
            help='Replay (pre-training) frames: switches on multihead fine-tuning.',
        )
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            required=False,
            help='mace_run_train options (hyperparameters) merged over the plugin defaults.',
        )
        spec.input(
            'e0s',
            valid_type=orm.Dict,
            required=False,
            help='Atomic reference energies of the fitted head, `{"e0s": {symbol: eV}}` covering every foundation '
            'element (made by workflows.finetune.compute_e0s); required with a foundation_model.',
        )
        spec.input('seed', valid_type=orm.Int, default=lambda: orm.Int(1), help='Random seed of the training.')
        spec.input(
            'parent_folder',
            valid_type=orm.RemoteData,
            required=False,
            help='Work directory of an earlier run of the same training (killed by the walltime): its mace '
            'checkpoints are copied and the training continues from the latest one (restart_latest). Set by '
            'nmcml.mace.train.base.',
        )
        spec.input(
            'device',
            valid_type=orm.Str,
            default=lambda: orm.Str('cpu'),
            help='cpu or cuda; for cuda also request a GPU from the scheduler (docs: GPU jobs).',
        )
        spec.inputs.validator = validate_inputs
        spec.inputs['metadata']['options']['resources'].default = {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
        spec.inputs['metadata']['options']['withmpi'].default = False
        spec.inputs['metadata']['options']['parser_name'].default = 'nmcml.mace.train'

        spec.output('model', valid_type=MaceModel, help='The trained model (the .model file, a pickle).')
        spec.output(
            'compiled_model',
            valid_type=orm.SinglefileData,
            required=False,
            help='TorchScript export; fast for inference, cannot be a foundation model.',
        )
        spec.output(
            'metrics',
            valid_type=orm.Dict,
            help='Final RMSE (train, valid) and MAE (valid) of energy per atom, forces, stress, in eV units.',
        )
        spec.output(
            'learning_curve', valid_type=orm.ArrayData, required=False, help='Per-epoch validation loss and errors.'
        )
        spec.default_output_node = 'metrics'

        # Numbers from the plugin's one exit-code table (docs/dev/exit_codes.md); messages of the train family.
        exit_codes.declare(spec, *TRAIN_EXIT_LABELS, family='train')

    def build_config(self) -> dict:
        """The ``--config`` YAML: plugin defaults < user parameters < values fixed by the input nodes."""
        parameters = self.inputs.parameters.get_dict() if 'parameters' in self.inputs else {}
        config = {**DEFAULT_PARAMETERS}
        if 'e0s' in self.inputs:
            # Explicit, for every foundation element (analysis/e0s.py). In multihead mode this is the fine-tuning
            # head's reference; mace-torch gives the replay head (pt_head) the foundation's own E0s.
            from ..analysis.e0s import mace_e0s_argument

            config['E0s'] = mace_e0s_argument(self.inputs.e0s.get_dict()['e0s'])
        else:
            config['E0s'] = 'average'  # from scratch (fine-tuning without e0s is refused by the validator)
        if 'foundation_model' in self.inputs:
            # Keep every element of the foundation model: a model fine-tuned on LiNiO2 frames must still run on
            # NMC811 cells with Mn and Co (mace-torch otherwise shrinks the model to the elements of the data).
            config['foundation_model_elements'] = True
        config.update(parameters)
        config.update(DATA_KEYS)
        config.update(
            {
                'name': MODEL_NAME,
                'seed': int(self.inputs.seed.value),
                'device': self.inputs.device.value,
                'train_file': TRAIN_FILENAME,
            }
        )
        if 'validation_set' in self.inputs:
            config['valid_file'] = VALID_FILENAME
            config.pop('valid_fraction', None)
        if 'foundation_model' in self.inputs:
            config['foundation_model'] = FOUNDATION_FILENAME
            config['multiheads_finetuning'] = 'replay_set' in self.inputs
            if 'replay_set' in self.inputs:
                config['pt_train_file'] = REPLAY_FILENAME
        config['batch_size'] = effective_batch_size(self.inputs.training_set, config)
        if 'parent_folder' in self.inputs:
            config['restart_latest'] = True  # the parent's checkpoints/ is copied in (see prepare_for_submission)
        return config

    def prepare_for_submission(self, folder):
        config = self.build_config()
        with folder.open(CONFIG_FILENAME, 'w') as handle:
            yaml.safe_dump(config, handle, sort_keys=True)

        local_copy_list = [(self.inputs.training_set.uuid, self.inputs.training_set.filename, TRAIN_FILENAME)]
        if 'validation_set' in self.inputs:
            node = self.inputs.validation_set
            local_copy_list.append((node.uuid, node.filename, VALID_FILENAME))
        if 'replay_set' in self.inputs:
            node = self.inputs.replay_set
            local_copy_list.append((node.uuid, node.filename, REPLAY_FILENAME))

        calcinfo = datastructures.CalcInfo()
        if 'foundation_model' in self.inputs:
            node = self.inputs.foundation_model
            local_copy_list.append((node.uuid, node.filename, FOUNDATION_FILENAME))
            # mace_run_train unpickles the foundation model: check the bytes on the compute node first.
            calcinfo.prepend_text = (
                f'echo "{node.sha256}  {FOUNDATION_FILENAME}" | sha256sum --check --quiet - '
                f'|| {{ echo "{FOUNDATION_FILENAME} does not match sha256 {node.sha256}" > {HASH_CHECK_FILENAME}; '
                'exit 3; }'
            )

        # After training, the job summarises the model in a JSON with the Python that ran mace_run_train (its
        # shebang), so the daemon never unpickles the file (engine/model_metadata.py says why); without the JSON the
        # parser falls back to reading the model itself.
        with folder.open(METADATA_SCRIPT, 'w') as handle:
            handle.write(pathlib.Path(model_metadata.__file__).read_text())
        executable = shlex.quote(str(self.inputs.code.get_executable()))
        calcinfo.append_text = (
            f'if [ -f {MODEL_NAME}.model ]; then '
            f'PY=$(sed -n "1s/^#! *//p" "$(command -v {executable})"); '
            f'${{PY:-python3}} {METADATA_SCRIPT} {MODEL_NAME}.model {METADATA_FILENAME} 2> {METADATA_SCRIPT}.err '
            '|| true; fi'
        )

        codeinfo = datastructures.CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = [f'--config={CONFIG_FILENAME}']
        codeinfo.stdout_name = STDOUT_FILENAME
        codeinfo.stderr_name = STDERR_FILENAME

        seed = int(self.inputs.seed.value)
        calcinfo.codes_info = [codeinfo]
        calcinfo.local_copy_list = local_copy_list
        if 'parent_folder' in self.inputs:
            # A missing checkpoints/ is skipped by AiiDA with a warning, and mace then starts from epoch 0.
            parent = self.inputs.parent_folder
            calcinfo.remote_copy_list = [
                (parent.computer.uuid, f'{parent.get_remote_path()}/{CHECKPOINTS_DIR}', CHECKPOINTS_DIR)
            ]
        calcinfo.retrieve_list = [
            STDOUT_FILENAME,
            STDERR_FILENAME,
            HASH_CHECK_FILENAME,
            METADATA_FILENAME,
            CONFIG_FILENAME,
            f'{MODEL_NAME}.model',
            f'{MODEL_NAME}_compiled.model',
            f'results/{MODEL_NAME}_run-{seed}_train.txt',
            f'logs/{MODEL_NAME}_run-{seed}.log',
        ]
        return calcinfo

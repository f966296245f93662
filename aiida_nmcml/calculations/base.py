"""Base CalcJob for everything that runs ``aiida-nmcml-engine``: thin by design.

It writes ``input.json`` (the subcommand's settings plus the model files' names and hashes), copies every model from
its node into the sandbox, and retrieves ``engine_status.json`` plus what the subclass declares. All physics lives in
``aiida_nmcml.engine``; all interpretation in the parser.
"""

from __future__ import annotations

import json

from aiida import orm
from aiida.common import datastructures
from aiida.engine import CalcJob

from ..common import exit_codes
from ..data.model import MaceModel
from ..engine.common import STATUS_FILENAME

INPUT_FILENAME = 'input.json'

# Exit codes every engine calcjob can return (subclasses declare their own extra ones, e.g. the MD stop rules).
ENGINE_EXIT_LABELS = (
    'ERROR_INVALID_INPUT',
    'ERROR_DEVICE_UNAVAILABLE',
    'ERROR_MISSING_STATUS_FILE',
    'ERROR_MISSING_OUTPUT_FILES',
    'ERROR_MODEL_HASH_MISMATCH',
    'ERROR_MODEL_CORRUPT',
    'ERROR_ENGINE_INTERNAL',
    'ERROR_OUT_OF_MEMORY',
    'ERROR_NAN_FORCES',
)


def models_missing_elements(models: dict, elements) -> str | None:
    """Why the committee cannot evaluate ``elements``, or None: refused before submission, not as a crash later."""
    for key, model in sorted((models or {}).items()):
        missing = model.missing_elements(elements)
        if missing:
            return (
                f'model `{key}` (elements {model.elements}) cannot evaluate {missing} present in the structure: '
                'fine-tune from a foundation model that covers them (aiida-nmcml keeps all foundation elements)'
            )
    return None


class EngineCalculation(CalcJob):
    """Subclasses set ``_subcommand`` and ``_retrieve`` and implement :meth:`write_inputs`."""

    _subcommand: str = ''
    _retrieve: tuple[str, ...] = ()

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input_namespace(
            'models',
            valid_type=MaceModel,
            dynamic=True,
            required=False,
            help='MACE model(s); more than one forms a committee whose spread is the uncertainty.',
        )
        spec.input(
            'parameters',
            valid_type=orm.Dict,
            required=False,
            help='Settings of the engine subcommand (merged over the subclass defaults).',
        )
        spec.input(
            'device', valid_type=orm.Str, default=lambda: orm.Str('auto'), help='cpu, cuda or auto (cuda when present).'
        )
        spec.inputs['metadata']['options']['resources'].default = {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
        spec.inputs['metadata']['options']['withmpi'].default = False
        spec.inputs['metadata']['options']['parser_name'].default = (
            f'nmcml.{cls._subcommand}' if cls._subcommand else ''
        )
        spec.output('engine_status', valid_type=orm.Dict, required=False, help='Status written by the engine.')

        # Numbers and messages from the plugin's one exit-code table (docs/dev/exit_codes.md).
        exit_codes.declare(spec, *ENGINE_EXIT_LABELS)

    @classmethod
    def builder_from_protocol_inputs(cls, code, inputs: dict, models=None):
        """A builder carrying what every engine protocol has: code, models, ``parameters``, ``device``, options.

        ``models`` is a dict of MaceModel nodes or a list (keyed ``m0``, ``m1`` ...; member 0 drives MD).
        """
        builder = cls.get_builder()
        builder.code = code
        if models:
            builder.models = models if isinstance(models, dict) else {f'm{i}': m for i, m in enumerate(models)}
        builder.parameters = orm.Dict(inputs['parameters'])
        builder.device = orm.Str(inputs['device'])
        builder.metadata.options.update(inputs.get('metadata', {}).get('options', {}))
        return builder

    def model_entries(self) -> list[dict]:
        """Model file names in the sandbox with their hashes, in a stable (sorted key) order."""
        entries = []
        for key in sorted(self.inputs.get('models', {})):
            node = self.inputs.models[key]
            entries.append({'key': key, 'path': f'model_{key}.model', 'sha256': node.base.attributes.get('sha256')})
        return entries

    def write_inputs(self, folder, config: dict) -> dict:
        """Hook: write extra files into ``folder`` and return the (possibly extended) engine config."""
        return config

    def prepare_for_submission(self, folder):
        config = dict(self.inputs.parameters.get_dict()) if 'parameters' in self.inputs else {}
        config['device'] = self.inputs.device.value
        config['models'] = [{'path': e['path'], 'sha256': e['sha256']} for e in self.model_entries()]
        config = self.write_inputs(folder, config)
        with folder.open(INPUT_FILENAME, 'w') as handle:
            json.dump(config, handle, indent=1)

        local_copy_list = []
        for entry in self.model_entries():
            node = self.inputs.models[entry['key']]
            local_copy_list.append((node.uuid, node.base.attributes.get('filename'), entry['path']))

        codeinfo = datastructures.CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = [self._subcommand, INPUT_FILENAME]
        codeinfo.stdout_name = f'{self._subcommand}.log'

        calcinfo = datastructures.CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.local_copy_list = local_copy_list
        calcinfo.retrieve_list = [STATUS_FILENAME, codeinfo.stdout_name, *self._retrieve]
        return calcinfo

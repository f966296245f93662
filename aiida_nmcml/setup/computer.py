"""Computers: ``localhost`` (core.local + core.direct) of the embedded default, and SLURM over SSH from a template."""

from __future__ import annotations

import pathlib

LOCALHOST = 'localhost'
PREPEND = (
    '# OpenMPI refuses to run as root without these (containers, CI); harmless otherwise.\n'
    'export OMPI_ALLOW_RUN_AS_ROOT=1\n'
    'export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1\n'
    'export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}\n'
    '# Concurrent jobs on one machine: OpenMPI would pin every 1-rank job to core 0, and OpenBLAS would spawn a\n'
    '# thread per core in each job; both serialise the concurrent labelling the daemon sets up.\n'
    'export OMPI_MCA_hwloc_base_binding_policy=${OMPI_MCA_hwloc_base_binding_policy:-none}\n'
    'export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}\n'
)


def default_workdir() -> pathlib.Path:
    from aiida.manage.configuration import get_config, get_profile

    return pathlib.Path(get_config().dirpath) / 'scratch' / get_profile().name


def ensure_localhost(label: str = LOCALHOST, workdir: str | None = None):
    """Reuse ``label`` if it exists (e.g. made by ``verdi presto``), else create and configure it.

    Returns ``(computer, created)``.
    """
    from aiida import orm
    from aiida.common.exceptions import NotExistent

    try:
        computer = orm.load_computer(label)
        created = False
    except NotExistent:
        workdir = pathlib.Path(workdir or default_workdir())
        workdir.mkdir(parents=True, exist_ok=True)
        computer = orm.Computer(
            label=label,
            hostname='localhost',
            description='this machine (aiida-nmcml setup)',
            transport_type='core.local',
            scheduler_type='core.direct',
            workdir=str(workdir),
        ).store()
        computer.set_mpirun_command(['mpirun', '-np', '{tot_num_mpiprocs}'])
        computer.set_default_mpiprocs_per_machine(1)
        created = True
    if not computer.is_user_configured(orm.User.collection.get_default()):
        computer.configure(safe_interval=0.0)
    return computer, created


# ---- SLURM over SSH (clusters; the one-node test cluster of scripts/start_hpc_services.sh) ------------------------

TEMPLATES = {'slurm-gpu': 'computer_slurm_gpu.yaml'}
TEMPLATE_KEYS = (
    'label',
    'description',
    'hostname',
    'port',
    'username',
    'key_filename',
    'proxy_jump',
    'safe_interval',
    'workdir',
    'partition',
    'account',
    'qos',
    'gpu_directive',
    'default_mpiprocs_per_machine',
    'mpirun_command',
    'prepend_text',
    'append_text',
    'executables',
)
_NOT_EXPANDED = ('workdir', 'prepend_text', 'append_text', 'gpu_directive')
HPC_PROPERTY = 'nmcml_hpc'  # computer metadata key holding partition/account/qos/gpu_directive


def load_computer_template(template: str | pathlib.Path) -> dict:
    """The template as a dict: ``template`` is a built-in name (``slurm-gpu``) or a path to a YAML file.

    Why a schema: a misspelt key (``partiton``) would otherwise be ignored and jobs would land in the default queue
    without a word; unknown keys are refused, naming the closest valid one.
    """
    import os

    import yaml

    from ..common.schema import closest_key

    if str(template) in TEMPLATES:
        path = pathlib.Path(__file__).parent / 'resources' / TEMPLATES[str(template)]
    else:
        path = pathlib.Path(template).expanduser()
        if not path.is_file():
            raise ValueError(f'computer template {template!r}: neither a built-in ({", ".join(TEMPLATES)}) nor a file')
    data = yaml.safe_load(path.read_text()) or {}
    for key in data:
        if key not in TEMPLATE_KEYS:
            hint = closest_key(key, TEMPLATE_KEYS)
            raise ValueError(
                f'computer template {path.name}: unknown key {key!r}'
                + (f' (did you mean {hint!r}?)' if hint else f'; valid keys: {", ".join(TEMPLATE_KEYS)}')
            )
    if not data.get('hostname'):
        raise ValueError(f'computer template {path.name}: `hostname` is required')
    unknown_codes = set(data.get('executables') or {}) - {'pw', 'neb', 'mace_train', 'engine'}
    if unknown_codes:
        raise ValueError(f'computer template {path.name}: unknown executables {sorted(unknown_codes)}')
    for key, value in data.items():
        if isinstance(value, str) and key not in _NOT_EXPANDED:
            data[key] = os.path.expanduser(os.path.expandvars(value))
    data['executables'] = {
        k: os.path.expanduser(os.path.expandvars(v)) for k, v in (data.get('executables') or {}).items() if v
    }
    if data.get('username') in (None, '', '$USER'):
        import getpass

        data['username'] = getpass.getuser()
    return data


def ensure_slurm_computer(template: str | pathlib.Path = 'slurm-gpu', label: str | None = None):
    """A ``core.slurm`` over ``core.ssh`` computer from a template, with the aiida-nmcml codes on it.

    Reused as it is when the label exists (like :func:`ensure_localhost`); the cluster's partition, account, qos and
    GPU directive are kept on the computer (property ``nmcml_hpc``) and turned into ``metadata.options`` by
    :func:`scheduler_options`. Returns ``(computer, created)``.
    """
    from dataclasses import replace

    from aiida import orm
    from aiida.common.exceptions import NotExistent

    from .codes import code_specs, ensure_code

    spec = load_computer_template(template)
    label = label or spec.get('label') or 'slurm-gpu'
    try:
        computer = orm.load_computer(label)
        created = False
    except NotExistent:
        computer = orm.Computer(
            label=label,
            hostname=spec['hostname'],
            description=spec.get('description') or f'SLURM over SSH ({spec["hostname"]})',
            transport_type='core.ssh',
            scheduler_type='core.slurm',
            workdir=spec.get('workdir') or '/tmp/aiida-nmcml/{username}',
        ).store()
        computer.set_mpirun_command(str(spec.get('mpirun_command') or 'mpirun -np {tot_num_mpiprocs}').split())
        computer.set_default_mpiprocs_per_machine(int(spec.get('default_mpiprocs_per_machine') or 1))
        computer.set_prepend_text(spec.get('prepend_text') or '')
        computer.set_append_text(spec.get('append_text') or '')
        computer.set_property(
            HPC_PROPERTY, {key: spec.get(key) for key in ('partition', 'account', 'qos', 'gpu_directive')}
        )
        created = True
    if not computer.is_user_configured(orm.User.collection.get_default()):
        auth = {
            'username': spec['username'],
            'port': int(spec.get('port') or 22),
            'look_for_keys': not spec.get('key_filename'),
            'key_filename': spec.get('key_filename') or '',
            'load_system_host_keys': True,
            'key_policy': 'RejectPolicy',
            'safe_interval': float(spec.get('safe_interval') or 0.0),
        }
        if spec.get('proxy_jump'):
            auth['proxy_jump'] = spec['proxy_jump']
        computer.configure(**auth)
    overrides = spec.get('executables') or {}
    for code_spec in code_specs():
        if code_spec.key in overrides:
            code_spec = replace(code_spec, executable=overrides[code_spec.key])
        ensure_code(code_spec, computer)
    return computer, created


def scheduler_options(computer, gpu: bool = False) -> dict:
    """``metadata.options`` for a job on ``computer``: partition, account, qos and (``gpu=True``) the GPU directive.

    Why here and not in each builder: the form of a GPU request differs between clusters (``--gres=gpu:1`` vs
    ``--gpus=1``); it is written once in the computer template. Empty for computers made without a template.
    """
    hpc = computer.get_property(HPC_PROPERTY, None) or {}
    options = {}
    for key, option in (('partition', 'queue_name'), ('account', 'account'), ('qos', 'qos')):
        if hpc.get(key):
            options[option] = hpc[key]
    if gpu and hpc.get('gpu_directive'):
        options['custom_scheduler_commands'] = hpc['gpu_directive']
    return options


def job_options(code, options: dict, *, gpu: bool, default_gpu_options: dict | None = None, gpu_options=None) -> dict:
    """``metadata.options`` of a job of ``code``, as the protocol builders set them.

    ``options`` (the protocol's, with the user's overrides) win over the computer template's partition, account and
    qos. A GPU job (``gpu``) gets the GPU request of, in this order: ``gpu_options`` given explicitly by the user,
    the computer template's ``gpu_directive`` (the site knows whether it wants ``--gres=gpu:1`` or ``--gpus=1``), the
    protocol's generic ``default_gpu_options``. A GPU directive is added to ``custom_scheduler_commands`` already in
    ``options`` (e.g. a ``--mem`` line), not put in its place.
    """
    from ..protocols import recursive_merge

    computer = getattr(code, 'computer', None)
    site = scheduler_options(computer, gpu=gpu) if computer is not None else {}
    directive = site.pop('custom_scheduler_commands', None)
    merged = recursive_merge(site, options or {})
    if not gpu:
        return merged
    if gpu_options is not None:
        chosen = dict(gpu_options)
    elif directive:
        chosen = {'custom_scheduler_commands': directive}
    else:
        chosen = dict(default_gpu_options or {})
    lines = [line for line in str(merged.get('custom_scheduler_commands') or '').splitlines() if line.strip()]
    for line in str(chosen.pop('custom_scheduler_commands', '') or '').splitlines():
        if line.strip() and line not in lines:
            lines.append(line)
    merged = recursive_merge(merged, chosen)
    if lines:
        merged['custom_scheduler_commands'] = '\n'.join(lines)
    return merged

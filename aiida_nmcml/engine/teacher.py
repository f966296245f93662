"""``aiida-nmcml-engine label``: label frames with a universal potential whose weights ship inside its wheel.

Why a teacher: MACE foundation weights cannot be downloaded on an air-gapped machine, but CHGNet (``chgnet==0.4.2``,
weights in ``chgnet/pretrained/0.3.0``) and SevenNet-0 (``sevenn==0.10.4``, optional, GPL) work offline. A small MACE
distilled from one (``nmcml.distill``) is a physically grounded foundation model; its labels are *not* DFT.

Every labelled frame records who labelled it: ``teacher`` (name), ``teacher_version`` (package and model version) and
``teacher_weights_sha256`` (the weights file that was loaded, hashed before loading), plus ``engine='teacher'`` and
``functional='<name>@<sha12>'`` so that :func:`aiida_nmcml.data.trainingset.check_consistent_settings` refuses to mix
teacher labels with DFT labels (CHGNet energies carry Materials Project corrections: never compare them with QE's
absolute energies).

Input::

    frames: frames.xyz          # extxyz; frames with info['md_seed'] = True also seed teacher MD
    teacher: chgnet | sevennet-0
    device: auto | cpu | cuda
    md: {temperatures_K: [...], steps: N, interval: k, timestep_fs: 1.0, friction: 0.02, seed: 0}
    max_force: 50.0             # eV/Å; frames the teacher gives larger forces are dropped (listed in the summary)
    models: [{path, sha256}]    # optional, one: the student, which then runs `explore` from every input frame
    explore: {temperatures_K: [...], steps: N, interval: k, max_volume_change: 0.3, ...}   # teacher_explore.py

Outputs: ``labelled.xyz`` (the labelled frames, sampled ones first, then MD snapshots), ``teacher.json`` (the
teacher's identity) and ``label_summary.json`` (counts, dropped frames, timings, and with a student the exploration
runs: volumes, stop reasons, the student's errors against the teacher on its own frames).

The module also holds the sampler of Li–Ni–Mn–Co–O configurations (:func:`sample_configurations`): pure Python on
:mod:`aiida_nmcml.structures`, so the work chain runs it in a calcfunction and the engine never needs AiiDA.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import time
import warnings

import numpy as np

from ..common.schema import Field, Section
from .common import EngineError, select_device, sha256sum, write_json
from .teacher_explore import EXPLORE_SCHEMA, exploration_summary, explore_requested, student_explore

LABELLED_FILENAME = 'labelled.xyz'
IDENTITY_FILENAME = 'teacher.json'
SUMMARY_FILENAME = 'label_summary.json'
TEACHERS = ('chgnet', 'sevennet-0')
ELEMENTS = ('Li', 'Ni', 'Mn', 'Co', 'O')

MD_SCHEMA = Section(
    {
        'temperatures_K': Field(list, default=[], items=Field(float, min=1.0, max=3000.0), help='NVT temperatures'),
        'steps': Field(int, default=0, min=0, max=1_000_000, help='MD steps per seed frame and temperature'),
        'interval': Field(int, default=10, min=1, help='a snapshot every `interval` steps'),
        'timestep_fs': Field(float, default=1.0, min=0.1, max=5.0, unit='fs'),
        'friction': Field(float, default=0.02, min=0.0, max=1.0, unit='1/fs', help='Langevin friction'),
        'seed': Field(int, default=0, min=0),
    },
    help='teacher MD that adds thermal snapshots',
)
LABEL_SCHEMA = Section(
    {
        'frames': Field(str, default='frames.xyz'),
        'teacher': Field(str, default='chgnet', choices=TEACHERS),
        'device': Field(str, default='auto'),
        'models': Field(list, default=[], max_length=1, help='none, or the student that drives `explore`'),
        'max_force': Field(float, default=50.0, min=0.0, min_exclusive=True, unit='eV/Å'),
        'md': MD_SCHEMA,
        'explore': EXPLORE_SCHEMA,
    }
)


# ------------------------------------------------------------------------------------------------------- teachers
def chgnet_weights_path(model_name: str = '0.3.0') -> pathlib.Path:
    """The weights file ``CHGNet.load(model_name)`` reads, inside the installed wheel."""
    import chgnet

    names = {'0.3.0': 'pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar'}
    return pathlib.Path(chgnet.__file__).parent / names[model_name]


def sevennet_weights_path() -> pathlib.Path:
    """SevenNet-0's checkpoint inside the installed ``sevenn`` wheel (not exercised here: sevenn is optional)."""
    import sevenn

    try:
        from sevenn.util import pretrained_name_to_path

        return pathlib.Path(pretrained_name_to_path('7net-0'))
    except (ImportError, ValueError):
        found = sorted(pathlib.Path(sevenn.__file__).parent.glob('pretrained_potentials/SevenNet_0*/checkpoint_*.pth'))
        if not found:
            raise EngineError('teacher_unavailable', 'sevenn is installed but ships no SevenNet-0 checkpoint') from None
        return found[-1]


def load_teacher(name: str = 'chgnet', device: str = 'auto'):
    """Return ``(ase_calculator, identity)``; the weights are hashed before they are loaded.

    Raises :class:`EngineError` ``teacher_unavailable`` when the package is not installed.
    """
    device = select_device(device)
    if name == 'chgnet':
        try:
            from chgnet.model import CHGNet
            from chgnet.model.dynamics import CHGNetCalculator
        except ImportError as exc:
            raise EngineError(
                'teacher_unavailable', f'chgnet is not installed ({exc}): pip install chgnet==0.4.2'
            ) from exc
        path = chgnet_weights_path('0.3.0')
        digest = sha256sum(path)
        model = CHGNet.load(model_name='0.3.0', use_device=device, verbose=False)
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # it prints the device on every construction
            calc = CHGNetCalculator(model=model, use_device=device)
        identity = {
            'name': 'chgnet',
            'package': 'chgnet',
            'package_version': importlib.metadata.version('chgnet'),
            'model_version': str(model.version),
            'weights_file': f'chgnet/{path.relative_to(path.parents[2])}',
            'weights_sha256': digest,
            'training_data': 'MPtrj (PBE/PBE+U, Materials Project 2020 energy corrections included)',
            'energies': 'MP-corrected: never compare absolute energies with another code; differences only',
        }
        return calc, identity
    if name == 'sevennet-0':
        try:
            import sevenn
        except ImportError as exc:
            raise EngineError(
                'teacher_unavailable',
                f'sevenn is not installed ({exc}): pip install "aiida-nmcml[sevennet]" (sevenn==0.10.4, GPL-3.0)',
            ) from exc
        try:  # the module was renamed across sevenn releases
            from sevenn.calculator import SevenNetCalculator
        except ImportError:
            from sevenn.sevennet_calculator import SevenNetCalculator
        path = sevennet_weights_path()
        digest = sha256sum(path)
        calc = SevenNetCalculator(str(path), device=device)
        identity = {
            'name': 'sevennet-0',
            'package': 'sevenn',
            'package_version': getattr(sevenn, '__version__', importlib.metadata.version('sevenn')),
            'model_version': '7net-0',
            'weights_file': f'sevenn/{path.name}',
            'weights_sha256': digest,
            'training_data': 'MPtrj (PBE/PBE+U, Materials Project 2020 energy corrections included)',
            'energies': 'MP-corrected: never compare absolute energies with another code; differences only',
        }
        return calc, identity
    raise EngineError('invalid_input', f'unknown teacher {name!r}: choose one of {", ".join(TEACHERS)}')


def teacher_available(name: str) -> bool:
    """Whether the package of ``name`` is importable here (SevenNet is optional)."""
    package = {'chgnet': 'chgnet', 'sevennet-0': 'sevenn'}.get(name)
    if package is None:
        return False
    try:
        importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def frame_identity_info(identity: dict) -> dict:
    """The ``atoms.info`` keys that tie a frame to its teacher (and keep it apart from DFT frames)."""
    return {
        'teacher': identity['name'],
        'teacher_version': f'{identity["package"]}=={identity["package_version"]} model {identity["model_version"]}',
        'teacher_weights_sha256': identity['weights_sha256'],
        'engine': 'teacher',
        'functional': f'{identity["name"]}@{identity["weights_sha256"][:12]}',
    }


def label_atoms(atoms, calc, identity: dict):
    """A copy of ``atoms`` with REF_energy/REF_forces/REF_stress (ASE Voigt, eV/Å^3)/REF_magmoms from ``calc``."""
    out = atoms.copy()
    out.calc = None
    for key in ('REF_energy', 'REF_stress'):
        out.info.pop(key, None)
    work = atoms.copy()
    work.calc = calc
    energy = float(work.get_potential_energy())
    forces = np.asarray(work.get_forces(), dtype=float)
    out.info['REF_energy'] = energy
    out.arrays['REF_forces'] = forces
    if work.pbc.all():
        out.info['REF_stress'] = np.asarray(work.get_stress(voigt=True), dtype=float)
    magmoms = calc.results.get('magmoms')
    if magmoms is not None and np.size(magmoms) == len(out):
        out.arrays['REF_magmoms'] = np.abs(np.asarray(magmoms, dtype=float).reshape(-1))
    out.info.update(frame_identity_info(identity))
    return out


def finite_labels(atoms) -> bool:
    values = [atoms.info['REF_energy'], atoms.arrays['REF_forces'], atoms.info.get('REF_stress', 0.0)]
    return all(np.all(np.isfinite(v)) for v in values)


# ---------------------------------------------------------------------------------------------------- teacher MD
def teacher_md(seed_frames, calc, identity: dict, md: dict) -> list:
    """Langevin NVT with the teacher from every seed frame at every temperature; labelled snapshots.

    The snapshot's labels are the teacher's forces at that very step (no second evaluation). Thermal snapshots
    teach the student the anharmonic region that rattles alone miss; 1200 K keeps it stable at 1000 K.
    """
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    snapshots = []
    if not md['steps'] or not md['temperatures_K']:
        return snapshots
    rng = np.random.default_rng(md['seed'])
    for index, seed in enumerate(seed_frames):
        for temperature in md['temperatures_K']:
            atoms = seed.copy()
            atoms.calc = calc
            MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
            Stationary(atoms)
            dyn = Langevin(
                atoms,
                timestep=md['timestep_fs'] * units.fs,
                temperature_K=temperature,
                friction=md['friction'] / units.fs,
                rng=rng,
            )

            def snapshot(atoms=atoms, temperature=temperature, index=index, dyn=dyn):
                if dyn.nsteps == 0:  # ASE calls observers before the first step: that is the seed, labelled already
                    return
                frame = label_atoms(atoms, calc, identity)
                frame.set_velocities(np.zeros((len(frame), 3)))
                frame.info['config_type'] = 'teacher_md'
                frame.info['md_temperature_K'] = float(temperature)
                frame.info['md_seed_index'] = index
                frame.info['md_kinetic_temperature_K'] = float(atoms.get_temperature())
                frame.info.pop('md_seed', None)
                snapshots.append(frame)

            dyn.attach(snapshot, interval=md['interval'])
            dyn.run(md['steps'])
    return snapshots


# ------------------------------------------------------------------------------------------------------- sampler
SAMPLE_SCHEMA = Section(
    {
        'seed': Field(int, default=0, min=0),
        'x_li': Field(list, default=[1.0, 0.75, 0.5, 0.25], items=Field(float, min=0.0, max=1.0), min_length=1),
        'cell_atoms': Field(list, default=[16, 24], items=Field(int, min=4, max=400), min_length=1),
        'frames_per_x': Field(int, default=12, min=0, max=10_000, help='rattled + strained NMC811 frames per x'),
        'antisite_frames': Field(int, default=4, min=0, max=10_000, help='frames with Li/Ni antisites (x = 1)'),
        'antisite_fraction': Field(float, default=0.125, min=0.0, max=0.5),
        'end_member_frames': Field(int, default=3, min=0, max=1000, help='per end member / binary'),
        'rattle_A': Field(float, default=0.06, min=0.0, max=0.5, unit='Å', help='Gaussian rattle stdev'),
        'strain': Field(float, default=0.03, min=0.0, max=0.2, help='max |strain| component'),
        'md_seeds': Field(int, default=1, min=0, max=100, help='frames per x marked as teacher-MD seeds'),
        'md_seed_atoms': Field(int, default=24, min=4, max=400),
    }
)


def _end_members() -> dict:
    """End members and binaries: without them the per-element energies are rank-deficient (only NMC811 ratios)."""
    from ase.build import bulk, make_supercell

    from ..structures import layered_parent

    parent = make_supercell(layered_parent(), np.diag([1, 1, 2]))  # 8 atoms, layered R-3m
    members = {}
    for metal in ('Ni', 'Co', 'Mn'):  # LiMnO2 here is the layered (not orthorhombic) polymorph: an O3-type end member
        atoms = parent.copy()
        atoms.set_chemical_symbols([metal if s == 'Ni' else s for s in atoms.get_chemical_symbols()])
        members[f'Li{metal}O2'] = atoms
    members['NiO'] = bulk('NiO', 'rocksalt', a=4.17, cubic=True)
    members['Li2O'] = bulk('OLi2', 'fluorite', a=4.61, cubic=True)
    return members


def _perturb(atoms, rng, rattle: float, strain: float):
    atoms = atoms.copy()
    if strain:
        eps = rng.uniform(-strain, strain, (3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    if rattle:
        atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
    return atoms


def _clean(atoms, **info):
    """Keep positions, numbers, cell, pbc and flat info only: small files, nothing extxyz cannot round-trip."""
    from ase import Atoms

    out = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=True)
    out.info.update(info)
    return out


def sample_configurations(parameters: dict | None = None) -> list:
    """Unlabelled Li–Ni–Mn–Co–O frames: NMC811 across x (rattled, ±strain), Li/Ni antisites, end members, MD seeds.

    Deterministic in ``parameters['seed']``. Frames carry ``config_type`` (``nmc``, ``antisite``, ``end_member``),
    ``x_li`` and, for teacher-MD seeds, ``md_seed=True`` (unrattled, unstrained cells the engine heats up).
    """
    from ..structures import build_nmc

    parameters = SAMPLE_SCHEMA.with_defaults(parameters)
    SAMPLE_SCHEMA.check_value(parameters)
    rng = np.random.default_rng(parameters['seed'])
    rattle, strain = parameters['rattle_A'], parameters['strain']
    frames = []
    sizes = parameters['cell_atoms']
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # small cells round the NMC811 composition; recorded in x_li/formula
        for x in parameters['x_li']:
            for i in range(parameters['frames_per_x']):
                base = build_nmc(sizes[i % len(sizes)], x_li=x, seed=int(rng.integers(1 << 30)), magnetic=False)
                scale = (i % 3 + 1) / 3.0  # small, medium and large displacements
                frames.append(_clean(_perturb(base, rng, rattle * scale, strain), config_type='nmc', x_li=float(x)))
            for _ in range(parameters['md_seeds']):
                base = build_nmc(parameters['md_seed_atoms'], x_li=x, seed=int(rng.integers(1 << 30)), magnetic=False)
                frames.append(_clean(base, config_type='md_seed', x_li=float(x), md_seed=True))
        for i in range(parameters['antisite_frames']):
            base = build_nmc(
                sizes[i % len(sizes)],
                x_li=1.0,
                seed=int(rng.integers(1 << 30)),
                antisite_fraction=parameters['antisite_fraction'],
                magnetic=False,
            )
            frames.append(_clean(_perturb(base, rng, rattle, strain), config_type='antisite', x_li=1.0))
    for name, member in _end_members().items():
        for i in range(parameters['end_member_frames']):
            scale = (i % 3 + 1) / 3.0
            frames.append(_clean(_perturb(member, rng, rattle * scale, strain), config_type='end_member', member=name))
    return frames


# ------------------------------------------------------------------------------------------------------- command
def run(config: dict) -> None:
    from ase.io import read, write

    errors = LABEL_SCHEMA.errors(config, 'input')
    if errors:
        raise EngineError('invalid_input', '; '.join(errors))
    config = LABEL_SCHEMA.with_defaults(config)
    if explore_requested(config['explore']) and not config['models']:
        raise EngineError('invalid_input', 'explore needs the student: give one model')
    try:
        frames = read(config['frames'], index=':', format='extxyz')
    except FileNotFoundError as exc:
        raise EngineError('invalid_input', f'frames file {config["frames"]} is missing') from exc
    if not frames:
        raise EngineError('invalid_input', f'frames file {config["frames"]} holds no frames')
    unknown = sorted({s for a in frames for s in a.get_chemical_symbols()} - set(ELEMENTS) - {'H'})
    if unknown:
        raise EngineError('invalid_input', f'frames hold {unknown}; the distillation covers {ELEMENTS} only')

    start = time.time()
    calc, identity = load_teacher(config['teacher'], config['device'])
    load_s = time.time() - start
    labelled, dropped = [], []
    t0 = time.time()
    for index, atoms in enumerate(frames):
        frame = label_atoms(atoms, calc, identity)
        frame.info['source_index'] = index
        reason = _reject(frame, config['max_force'])
        if reason:
            dropped.append({'index': index, 'reason': reason})
            continue
        labelled.append(frame)
    label_s = time.time() - t0
    seeds = [a for a in frames if a.info.get('md_seed')]
    t0 = time.time()
    snapshots = teacher_md(seeds, calc, identity, config['md'])
    md_s = time.time() - t0
    kept_snapshots = _keep(snapshots, config['max_force'], dropped, 'teacher MD snapshot')
    explored, runs, t0 = [], [], time.time()
    if config['models']:
        from .common import make_calculator

        student = make_calculator(config['models'], config['device'])
        explored, runs = student_explore(frames, student, calc, identity, config['explore'])
    explore_s = time.time() - t0
    kept_explored = _keep(explored, config['max_force'], dropped, 'student MD frame')
    everything = labelled + kept_snapshots + kept_explored
    if not everything:
        raise EngineError('invalid_input', f'no frame survived labelling: {dropped[:5]}')
    write(LABELLED_FILENAME, everything, format='extxyz')
    write_json(IDENTITY_FILENAME, identity)
    atoms_evaluated = sum(len(a) for a in labelled) + sum(len(a) for a in snapshots)
    write_json(
        SUMMARY_FILENAME,
        {
            'n_input': len(frames),
            'n_labelled': len(labelled),
            'n_md_snapshots': len(kept_snapshots),
            'n_explore_frames': len(kept_explored),
            'n_dropped': len(dropped),
            'dropped': dropped,
            'teacher_load_s': load_s,
            'label_s': label_s,
            'md_s': md_s,
            'explore_s': explore_s,
            'explore_runs': runs,
            'exploration': exploration_summary(runs) if runs else None,
            'md_steps_total': len(seeds) * len(config['md']['temperatures_K']) * config['md']['steps'],
            'atoms_evaluated_labelling': sum(len(a) for a in labelled),
            'atoms_evaluated_total': atoms_evaluated + sum(len(a) for a in explored),
        },
    )


def _keep(frames, max_force: float, dropped: list, what: str) -> list:
    """The frames that pass :func:`_reject`; the others are listed in ``dropped`` with the reason."""
    kept = []
    for frame in frames:
        reason = _reject(frame, max_force)
        if reason:
            dropped.append({'index': None, 'reason': f'{what}: {reason}'})
        else:
            kept.append(frame)
    return kept


def _reject(frame, max_force: float) -> str | None:
    if not finite_labels(frame):
        return 'non-finite teacher labels'
    fmax = float(np.max(np.linalg.norm(frame.arrays['REF_forces'], axis=1)))
    if fmax > max_force:
        return f'max force {fmax:.1f} eV/Å > max_force {max_force}'
    return None

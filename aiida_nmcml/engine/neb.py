"""``aiida-nmcml-engine neb``: climbing-image NEB of one Li hop with a MACE model, and the committee along the path.

Input (JSON/YAML; keys, ranges and defaults in :data:`SCHEMA`; unknown keys and out-of-range values are refused with
``invalid_input``, naming the closest valid key)::

    initial: initial.extxyz      # end points: same atoms, same order, same cell
    final: final.extxyz
    via: null                    # optional structure the starting path passes through (TSH: Li in the tetrahedral site)
    models: [{path, sha256}, ...]   # member 0 drives the NEB; all members evaluate the converged path
    n_images: 5                  # intermediate images
    fmax: 0.05                   # eV/A on the NEB forces (science review 8.3: <= 0.03-0.05)

Why this way:

* End points are relaxed first (positions, fixed cell) with the same model, after a small random displacement
  (``rattle_A``, the same for both ends): a barrier measured from an unrelaxed or symmetry-trapped end point is a
  number about the builder, not the hop. An image that ends below the end points is reported in ``warnings``
  (found with CHGNet on LiNiO2 before the rattle existed: images 0.2 eV below unrattled end points).
* The starting path is IDPP (image-dependent pair potential), which avoids the atom clashes of a straight line; with
  ``via`` it is built in two halves through that structure, because a straight path of a tetrahedral-site hop would
  cross the O-O edge (the other mechanism).
* With ``relax_cell`` ('c' or 'full') the cell of the initial end point is relaxed first (positions and cell, the
  model's stress) and the final end point and ``via`` follow it in fractional coordinates: the tetrahedral-site
  barrier follows the Li slab spacing, so c must be the model's at this Li content, not the builder's default.
* Relaxation runs plain NEB down to ``4 * fmax`` (at most half of ``max_steps``) and then climbing-image NEB to
  ``fmax``: climbing from a raw interpolation can push the wrong image up. The climbing image then sits at the
  saddle; the barrier is its energy minus the initial end point's.
* Each image has its own thin calculator over *one* loaded model (:class:`ImageCalculator`): ASE caches results per
  calculator, so one shared calculator would recompute every image on every call (measured: 2-3x slower), while one
  model per image would multiply the memory.
* The committee (all models) evaluates the converged images: the spread of the barrier between members is the model
  uncertainty of the barrier, and the per-image force deviation says which images the model is unsure about
  (candidates for DFT).

Outputs: ``neb_images.extxyz`` (the final images: ``info`` image/energy/climbing, ``arrays`` forces and the initial
magnetic moments carried from the initial structure, so DFT single points start all images alike),
``neb_initial_path.extxyz`` (the IDPP path), ``neb_summary.json`` (energies, barriers, convergence, committee).
A NEB that does not reach ``fmax`` in ``max_steps`` writes everything and ends with status ``neb_not_converged``.
"""

from __future__ import annotations

import itertools

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ..common.schema import Field, Section
from .common import EngineError, check_finite_forces, make_calculator, write_json

IMAGES_FILENAME = 'neb_images.extxyz'
INITIAL_PATH_FILENAME = 'neb_initial_path.extxyz'
SUMMARY_FILENAME = 'neb_summary.json'

SCHEMA = Section(
    {
        'initial': Field(str, default='initial.extxyz', help='initial end point (extxyz)'),
        'final': Field(str, default='final.extxyz', help='final end point (extxyz), same atoms in the same order'),
        'via': Field(str, default=None, nullable=True, help='optional structure the starting path passes through'),
        'models': Field(list, default=None, nullable=True, items=(str, dict), help='member 0 drives the NEB'),
        'device': Field(str, default='auto', help='auto, cpu or cuda'),
        'dtype': Field(str, default='float64', choices=('float32', 'float64'), help='precision of the models'),
        'n_images': Field(int, default=5, min=1, max=31, help='intermediate images'),
        'interpolation': Field(str, default='idpp', choices=('idpp', 'linear'), help='starting path'),
        'climb': Field(bool, default=True, help='climbing image in the final stage'),
        'method': Field(
            str, default='improvedtangent', choices=('improvedtangent', 'aseneb', 'eb'), help='NEB tangent / force'
        ),
        'spring_constant': Field(float, default=0.1, min=0.0, min_exclusive=True, max=10.0, unit='eV/Å²'),
        'fmax': Field(float, default=0.05, min=0.0, min_exclusive=True, max=1.0, unit='eV/Å', help='NEB convergence'),
        'max_steps': Field(int, default=500, min=1, help='optimiser steps of the NEB (both stages)'),
        'optimizer': Field(str, default='fire', choices=('fire', 'bfgs', 'mdmin'), help='NEB optimiser'),
        'relax_endpoints': Field(bool, default=True, help='relax both end points first (positions, fixed cell)'),
        'endpoint_fmax': Field(float, default=0.02, min=0.0, min_exclusive=True, max=1.0, unit='eV/Å'),
        'endpoint_max_steps': Field(int, default=500, min=1),
        'rattle_A': Field(
            float,
            default=0.02,
            min=0.0,
            max=0.2,
            unit='Å',
            help='random displacement (the same for both end points) before relaxing: breaks the lattice symmetry',
        ),
        'seed': Field(int, default=0, min=0, help='seed of the rattle'),
        'relax_cell': Field(
            str,
            default='none',
            choices=('none', 'c', 'full'),
            help='relax the cell of the initial end point first (c only, or all of it); the others follow',
        ),
        'cell_fmax': Field(float, default=0.05, min=0.0, min_exclusive=True, max=1.0, unit='eV/Å'),
        'cell_max_steps': Field(int, default=300, min=1),
    }
)
DEFAULTS = SCHEMA.with_defaults({})


class ImageCalculator(Calculator):
    """One image's calculator that delegates to a shared model calculator and keeps its own results.

    ASE NEB asks each image for energy and forces; with its own ``results`` cache per image, nothing is computed
    twice, and the model's weights are loaded once for all images.
    """

    implemented_properties = ('energy', 'free_energy', 'forces')

    def __init__(self, model_calculator, with_stress: bool = False):
        super().__init__()
        self.model = model_calculator
        self.evaluations = 0
        self.with_stress = with_stress  # a cell relaxation needs it; NEB (fixed cell) does not
        if with_stress:
            self.implemented_properties = (*self.implemented_properties, 'stress')

    def calculate(self, atoms=None, properties=('energy',), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        probe = self.atoms.copy()
        probe.calc = None
        self.model.calculate(probe, ['energy', 'forces', *(['stress'] if self.with_stress else [])], all_changes)
        self.evaluations += 1
        energy = float(np.asarray(self.model.results['energy']).reshape(-1)[0])
        forces = np.array(self.model.results['forces'], dtype=float)
        check_finite_forces(forces, where='on a NEB image')
        self.results = {'energy': energy, 'free_energy': energy, 'forces': forces}
        if self.with_stress:
            self.results['stress'] = np.asarray(self.model.results['stress'], dtype=float)


def merged_config(config: dict) -> dict:
    errors = SCHEMA.errors(config, 'neb')
    if errors:
        raise EngineError('invalid_input', '; '.join(errors))
    return SCHEMA.with_defaults(config)


def read_structure(path: str):
    from ase.io import read

    try:
        return read(path, format='extxyz')
    except FileNotFoundError as exc:
        raise EngineError('invalid_input', f'structure file {path} is missing') from exc
    except Exception as exc:
        raise EngineError('invalid_input', f'structure file {path} is not readable extxyz: {exc}') from exc


def check_end_points(initial, final, via=None) -> None:
    """Same atoms in the same order and the same cell: NEB interpolates atom by atom."""
    for name, other in (('final', final), ('via', via)):
        if other is None:
            continue
        if len(other) != len(initial) or list(other.numbers) != list(initial.numbers):
            raise EngineError(
                'invalid_input', f'the {name} structure has other atoms (or another order) than the initial one'
            )
        if not np.allclose(other.cell.array, initial.cell.array, atol=1e-6):
            raise EngineError('invalid_input', f'the {name} structure has another cell than the initial one')


def _optimizer(name: str):
    from ase.optimize import BFGS, FIRE, MDMin

    return {'fire': FIRE, 'bfgs': BFGS, 'mdmin': MDMin}[name]


def relax(atoms, calculator, fmax: float, steps: int, optimizer: str = 'fire', logfile=None) -> dict:
    """Relax positions (fixed cell) in place; returns energy, steps and convergence."""
    atoms.calc = ImageCalculator(calculator)
    opt = _optimizer(optimizer)(atoms, logfile=logfile)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    forces = atoms.get_forces()
    return {
        'energy': float(atoms.get_potential_energy()),
        'steps': int(opt.nsteps),
        'converged': converged,
        'fmax': float(np.max(np.linalg.norm(forces, axis=1))),
    }


CELL_MASKS = {'c': [0, 0, 1, 0, 0, 0], 'full': [1, 1, 1, 1, 1, 1]}


def relax_cell(atoms, calculator, mode: str = 'full', fmax: float = 0.05, steps: int = 300, optimizer: str = 'fire'):
    """Relax positions and cell (``mode`` 'c': only the c axis, the layer stacking; 'full': all six components).

    Why here: the tetrahedral-site barrier follows the Li slab spacing, so c must be the model's at this Li content
    (science review 8.3), and relaxing inside the NEB run needs no extra calcjob. Returns (relaxed copy, record).
    """
    from ase.filters import FrechetCellFilter

    relaxed = atoms.copy()
    before = relaxed.cell.cellpar()
    relaxed.calc = ImageCalculator(calculator, with_stress=True)
    opt = _optimizer(optimizer)(FrechetCellFilter(relaxed, mask=CELL_MASKS[mode]), logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    stress = relaxed.get_stress()
    record = {
        'mode': mode,
        'cellpar_before': [float(v) for v in before],
        'cellpar_after': [float(v) for v in relaxed.cell.cellpar()],
        'energy': float(relaxed.get_potential_energy()),
        'max_stress_GPa': float(np.max(np.abs(stress)) * 160.21766208),
        'steps': int(opt.nsteps),
        'converged': converged,
    }
    relaxed.calc = None
    return relaxed, record


def follow_cell(reference_old, reference_new, other):
    """``other`` (same atoms as ``reference_old``) moved onto the relaxed ``reference_new``: the relaxed positions plus
    the displacement from ``reference_old`` to ``other`` in fractional coordinates (so the hop keeps its geometry)."""
    out = reference_new.copy()
    shift = other.get_scaled_positions(wrap=False) - reference_old.get_scaled_positions(wrap=False)
    shift -= np.round(shift)
    out.positions = reference_new.positions + shift @ reference_new.cell.array
    out.info = dict(other.info)
    return out


def initial_path(initial, final, n_images: int, interpolation: str = 'idpp', via=None) -> list:
    """End points plus ``n_images`` interpolated images (IDPP or linear, minimum image), through ``via`` if given."""
    from ase.mep import NEB

    def segment(start, end, inner):
        images = [start.copy()] + [start.copy() for _ in range(inner)] + [end.copy()]
        NEB(images, method='improvedtangent').interpolate(method=interpolation, mic=True, apply_constraint=False)
        return images

    if via is None:
        return segment(initial, final, n_images)
    if n_images < 3:
        raise EngineError('invalid_input', 'a path through `via` needs n_images >= 3 (one is `via` itself)')
    first = (n_images - 1) // 2
    left = segment(initial, via, first)
    right = segment(via, final, n_images - 1 - first)
    return left + right[1:]


def run_neb(initial, final, calculator, settings: dict, via=None, logfile=None) -> tuple[list, dict]:
    """Relax end points, build the path, run NEB then CI-NEB. Returns (images, summary). No files written.

    ``calculator``: any ASE calculator (one model); each image gets an :class:`ImageCalculator` over it.
    ``logfile``: the ASE optimisers' log (``'-'``: stdout), so a long run on a slow machine shows its progress.
    """
    from ase.mep import NEB

    cfg = {**DEFAULTS, **settings}
    initial, final = initial.copy(), final.copy()
    check_end_points(initial, final, via)
    summary: dict = {'settings': {k: v for k, v in cfg.items() if k not in ('models',)}}
    if cfg['relax_cell'] != 'none':
        relaxed, summary['cell_relaxation'] = relax_cell(
            initial, calculator, cfg['relax_cell'], cfg['cell_fmax'], cfg['cell_max_steps'], cfg['optimizer']
        )
        final = follow_cell(initial, relaxed, final)
        via = None if via is None else follow_cell(initial, relaxed, via)
        initial = relaxed
    if cfg['relax_endpoints'] and cfg['rattle_A'] > 0:
        # A vacancy in an ideal lattice is a symmetric stationary point that a relaxation cannot leave (the forces
        # that would break the symmetry are zero); LiNiO2 even has a Jahn-Teller distortion to fall into. One shared
        # random displacement (the hop maps atom to atom, so both ends get the same) lets both ends reach the minimum.
        shift = np.random.default_rng(cfg['seed']).normal(0.0, cfg['rattle_A'], size=initial.positions.shape)
        initial.positions += shift
        final.positions += shift
    if cfg['relax_endpoints']:
        summary['endpoints'] = {
            name: relax(atoms, calculator, cfg['endpoint_fmax'], cfg['endpoint_max_steps'], cfg['optimizer'], logfile)
            for name, atoms in (('initial', initial), ('final', final))
        }
    moved = np.linalg.norm(final.positions - initial.positions, axis=1)
    summary['max_displacement_between_end_points_A'] = float(moved.max())
    if moved.max() < 0.3:
        raise EngineError(
            'invalid_input',
            'after relaxation the two end points are the same structure (no atom moved > 0.3 Å): the final state is '
            'not a minimum of this model (the hopping atom fell back); check the end points',
        )
    images = initial_path(initial, final, cfg['n_images'], cfg['interpolation'], via)
    path0 = [image.copy() for image in images]
    for image in images:
        image.calc = ImageCalculator(calculator)
    neb = NEB(images, k=cfg['spring_constant'], climb=False, method=cfg['method'])
    opt_class = _optimizer(cfg['optimizer'])
    stage1 = opt_class(neb, logfile=logfile)
    stage1.run(fmax=4 * cfg['fmax'], steps=max(1, cfg['max_steps'] // 2))  # at most half the budget
    steps_left = max(1, cfg['max_steps'] - stage1.nsteps)
    neb.climb = bool(cfg['climb'])
    stage2 = opt_class(neb, logfile=logfile)
    converged = bool(stage2.run(fmax=cfg['fmax'], steps=steps_left))
    neb_forces = neb.get_forces().reshape(len(images) - 2, -1, 3)
    energies = np.array([image.get_potential_energy() for image in images])
    imax = int(1 + np.argmax(energies[1:-1]))
    coordinate = np.concatenate(
        [[0.0], np.cumsum([np.linalg.norm(b.positions - a.positions) for a, b in itertools.pairwise(images)])]
    )
    summary.update(
        {
            'converged': converged,
            'steps': int(stage1.nsteps + stage2.nsteps),
            'fmax_final': float(np.max(np.linalg.norm(neb_forces, axis=-1))),
            'energies': energies.tolist(),
            'energies_relative': (energies - energies[0]).tolist(),
            'reaction_coordinate_A': coordinate.tolist(),
            'climbing_image': imax if cfg['climb'] else None,
            'highest_image': imax,
            'barrier_forward': float(energies.max() - energies[0]),
            'barrier_reverse': float(energies.max() - energies[-1]),
            'reaction_energy': float(energies[-1] - energies[0]),
            'model_evaluations': int(sum(img.calc.evaluations for img in images)),
            'warnings': [],
        }
    )
    dip = float(min(energies[0], energies[-1]) - energies[1:-1].min())
    if dip > 0.01:
        summary['warnings'].append(
            f'an intermediate image lies {dip:.3f} eV below the lower end point: the end points are not the minima of '
            'this model (symmetric start, Jahn-Teller distortion, or a relaxation of the surroundings); the barrier is '
            'not meaningful. Raise rattle_A, relax the end points further, or rebuild them.'
        )
    cell = summary.get('cell_relaxation')
    if cell is not None and not cell['converged']:
        summary['warnings'].append(
            f'the cell relaxation stopped after {cell["steps"]} steps with |stress| up to {cell["max_stress_GPa"]:.2f} '
            'GPa: c is not the relaxed one of this model; raise cell_max_steps'
        )
    return images, {**summary, '_path0': path0}


def committee_along_path(images, committee) -> dict:
    """Energies of every member on every image, each member's barrier on this path, per-image force deviation."""
    from .metrics import atomic_force_deviation

    member_energies, deviation = [], []
    for image in images:
        probe = image.copy()
        probe.calc = None
        committee.calculate(probe, ['energy', 'forces'], all_changes)
        results = committee.results
        member_energies.append(np.atleast_1d(results.get('energy_comm', results['energy'])).astype(float))
        forces = np.asarray(results.get('forces_comm', np.asarray(results['forces'])[None]), dtype=float)
        deviation.append(float(np.max(atomic_force_deviation(forces))) if forces.shape[0] > 1 else 0.0)
    energies = np.array(member_energies).T  # (n_members, n_images)
    barriers = energies.max(axis=1) - energies[:, 0]
    return {
        'n_members': int(energies.shape[0]),
        'member_energies': energies.tolist(),
        'member_barriers': barriers.tolist(),
        'barrier_mean': float(barriers.mean()),
        'barrier_std': float(barriers.std(ddof=1)) if barriers.size > 1 else 0.0,
        'max_force_deviation': deviation,
    }


def write_images(path: str, images, summary: dict) -> None:
    from ase.io import write

    frames = []
    for index, image in enumerate(images):
        frame = image.copy()
        frame.calc = None
        frame.info = {
            'image': index,
            'neb_energy': float(summary['energies'][index]),
            'climbing': index == summary.get('climbing_image'),
        }
        if 'max_force_deviation' in summary.get('committee', {}):
            frame.info['max_force_deviation'] = summary['committee']['max_force_deviation'][index]
        frame.arrays['neb_forces'] = np.array(image.get_forces(apply_constraint=False))
        frames.append(frame)
    write(path, frames, format='extxyz')


def run(config: dict) -> dict:
    cfg = merged_config(config)
    if not cfg.get('models'):
        raise EngineError('invalid_input', 'no models given: pass at least one MACE model')
    initial, final = read_structure(cfg['initial']), read_structure(cfg['final'])
    via = read_structure(cfg['via']) if cfg.get('via') else None
    check_end_points(initial, final, via)
    moments = initial.get_initial_magnetic_moments()
    driver = make_calculator(cfg['models'][:1], cfg['device'], cfg['dtype'])
    images, summary = run_neb(initial, final, driver, cfg, via)
    path0 = summary.pop('_path0')
    for image in images:
        image.set_initial_magnetic_moments(moments)
    committee = driver if len(cfg['models']) == 1 else make_calculator(cfg['models'], cfg['device'], cfg['dtype'])
    summary['committee'] = committee_along_path(images, committee)
    from ase.io import write

    write(INITIAL_PATH_FILENAME, path0, format='extxyz')
    write_images(IMAGES_FILENAME, images, summary)
    write_json(SUMMARY_FILENAME, summary)
    if not summary['converged']:
        raise EngineError(
            'neb_not_converged',
            f'NEB forces {summary["fmax_final"]:.3f} eV/Å > fmax {cfg["fmax"]} after {summary["steps"]} steps; the '
            'images so far are kept. Raise max_steps, add images, or check the end points.',
        )
    return summary

"""DFT outputs → labelled frames (the keys of the frames contract), inside provenance.

Both engines end here, so the learning loop cannot tell which code labelled a frame: energies in eV, forces in eV/Å,
stress as the ASE Voigt 6-vector in eV/Å^3 with ASE's sign (minus the stress QE and VASP print), moments in
µB. The conversions are calcfunctions, so every labelled set has links back to the calculation outputs it
was read from and ``info['source_uuid']`` names the calculation itself.
"""

from __future__ import annotations

import json

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from aiida_nmcml.data.trainingset import (
    ENERGY_KEY,
    FORCES_KEY,
    MAGMOMS_KEY,
    STRESS_KEY,
    TrainingSet,
)

GPA_TO_EV_PER_A3 = 1.0 / 160.21766208
KBAR_TO_EV_PER_A3 = 0.1 * GPA_TO_EV_PER_A3


def voigt_from_tensor(tensor) -> np.ndarray:
    """ASE's Voigt order (xx, yy, zz, yz, xz, xy), by ASE's own conversion."""
    from ase.stress import full_3x3_to_voigt_6_stress

    return full_3x3_to_voigt_6_stress(np.asarray(tensor, dtype=float).reshape(3, 3))


def _structure_atoms(structure: orm.StructureData):
    atoms = structure.get_ase()
    moments = structure.base.attributes.get('nmcml_magmoms', None)
    if moments is not None and len(moments) == len(atoms):
        atoms.set_initial_magnetic_moments(moments)
    atoms.info.pop('nmcml', None)
    return atoms


def qe_frame(structure: orm.StructureData, parameters: orm.Dict, trajectory: orm.TrajectoryData, retrieved=None):
    """One labelled frame from a PwCalculation's scf outputs (aiida-quantumespresso units: eV, eV/Å, GPa)."""
    from .qe_outputs import match_hubbard_u, qe_version, requested_hubbard_u, xml_hubbard_u

    atoms = _structure_atoms(structure)
    atoms.info[ENERGY_KEY] = float(parameters['energy'])
    atoms.arrays[FORCES_KEY] = np.asarray(trajectory.get_array('forces')[-1], dtype=float)
    # QE reports stress with the opposite sign to ASE/MACE (ase.io.espresso negates it too).
    atoms.info[STRESS_KEY] = -voigt_from_tensor(trajectory.get_array('stress')[-1]) * GPA_TO_EV_PER_A3
    if 'atomic_magnetic_moments' in trajectory.get_arraynames():
        atoms.arrays[MAGMOMS_KEY] = np.asarray(trajectory.get_array('atomic_magnetic_moments')[-1], dtype=float)
    atoms.info['source_uuid'] = trajectory.creator.uuid
    atoms.info['dft_total_magnetization'] = float(parameters.get('total_magnetization', 0.0) or 0.0)
    if retrieved is not None:  # what pw.x applied, read from its XML (the parser's own flag is wrong for 6.7)
        unit, applied = match_hubbard_u(requested_hubbard_u(trajectory.creator), xml_hubbard_u(retrieved))
        atoms.info['dft_hubbard_u_applied'] = json.dumps(applied, sort_keys=True)
        atoms.info['dft_hubbard_u_xml_unit'] = unit or 'mismatch'
        atoms.info['dft_code_version'] = f'pw.x {qe_version(retrieved) or "unknown"}'
    return atoms


def vasp_frame(structure: orm.StructureData, misc: orm.Dict):
    """One labelled frame from a VaspCalculation's ``misc`` output (aiida-vasp units: eV, eV/Å, kbar)."""
    atoms = _structure_atoms(structure)
    energies = misc['total_energies']
    # the free energy (TOTEN): the forces are its derivatives; the sigma->0 extrapolation is not (with ISMEAR 0)
    energy = energies.get('energy_free', energies.get('energy_free_electronic'))
    if energy is None:
        raise ValueError(
            f'VASP output {misc.creator.uuid} has no free energy (TOTEN) in misc.total_energies {sorted(energies)}: '
            "include 'energy_free' in the parser settings."
        )
    atoms.info[ENERGY_KEY] = float(energy)
    forces = np.asarray(misc['forces'], dtype=float)
    atoms.arrays[FORCES_KEY] = forces[-1] if forces.ndim == 3 else forces
    stress = np.asarray(misc['stress'], dtype=float)
    stress = stress[-1] if stress.ndim == 3 else stress
    # VASP prints the stress with pressure positive, as QE does: negate for ASE's convention.
    atoms.info[STRESS_KEY] = -voigt_from_tensor(stress) * KBAR_TO_EV_PER_A3
    site = misc.get('site_magnetization', {}) or {}
    total = (site.get('sphere', {}) or {}).get('x', {}).get('site_moment', {})
    if total and len(total) == len(atoms):
        atoms.arrays[MAGMOMS_KEY] = np.array([float(total[str(i + 1)]['tot']) for i in range(len(atoms))])
    atoms.info['source_uuid'] = misc.creator.uuid
    atoms.info['dft_total_magnetization'] = float((misc.get('magnetization') or [0.0])[-1] or 0.0)
    return atoms


@calcfunction
def collect_labelled_frames(settings: orm.Dict, **outputs) -> TrainingSet:
    """Frames from all successful calculations of one labelling run, in the order of their keys.

    ``outputs`` holds, per frame ``i``: ``structure_i`` plus the outputs the engine's adapter names
    (:meth:`aiida_nmcml.dft.adapter.DftAdapter.frame_outputs`, e.g. ``parameters_i``, ``trajectory_i``,
    ``retrieved_i`` for QE, ``misc_i`` for VASP); ``settings`` the per-frame fingerprint (with ``engine``, which
    picks the adapter's frame reader) and ``keys`` (frame index → the user's key).
    """
    from .adapter import adapter_class

    settings = settings.get_dict()
    keys = settings.pop('keys')
    frame = adapter_class(settings['engine']).frame
    frames = []
    for index in sorted(keys, key=int):
        suffix = f'_{index}'
        named = {k[: -len(suffix)]: v for k, v in outputs.items() if k.endswith(suffix)}
        structure = named.pop('structure')
        atoms = frame(structure, **named)
        atoms.info.update(settings)
        atoms.info['config_type'] = structure.base.attributes.get('nmcml_config_type', None) or 'label'
        atoms.info['label_key'] = keys[index]
        frames.append(atoms)
    return TrainingSet.from_frames(frames)


def starting_atoms(atoms):
    """A copy of ``atoms`` with the initial moments DFT should start from.

    Why: MD and GA frames carry the sublattice labels but often no moments, or zeros (an MD engine that did not carry
    them, an extxyz written without them). pw.x accepts explicit zero moments and converges non-magnetic, a different
    potential-energy surface from the builder's magnetic labels. So a frame with ``arrays['sublattice']`` and no
    non-zero moment gets the builder's rule (:func:`aiida_nmcml.structures.dft_ready`); a frame with non-zero moments
    keeps them (they came from the builder or the user).
    """
    from aiida_nmcml.structures import dft_ready

    atoms = atoms.copy()
    has_moments = atoms.has('initial_magmoms') and np.any(atoms.get_initial_magnetic_moments())
    if 'sublattice' in atoms.arrays and not has_moments:
        dft_ready(atoms)
    return atoms


@calcfunction
def frames_to_structures(frames: TrainingSet) -> dict:
    """Unlabelled frames (e.g. an MD or GA output) → one StructureData each, kinds split by initial moment.

    Starting moments: see :func:`starting_atoms`. A frame with neither sublattice labels nor moments gets no
    ``nmcml_magmoms``, so the protocol's per-element defaults apply (not zeros).
    """
    results = {}
    for index, atoms in enumerate(frames.get_frames()):
        results[f'frame_{index}'] = atoms_to_structure(starting_atoms(atoms))
    return results


@calcfunction
def derive_starting_moments(structure: orm.StructureData) -> orm.StructureData:
    """The structure with the builder's starting moments (:func:`starting_atoms`), for StructureData inputs."""
    from aiida_nmcml.structures import from_structure_data

    return atoms_to_structure(starting_atoms(from_structure_data(structure)))


def needs_starting_moments(structure: orm.StructureData) -> bool:
    """True for a structure with sublattice labels whose recorded moments are absent or all zero."""
    attrs = structure.base.attributes.all
    return 'nmcml_sublattice' in attrs and not any(attrs.get('nmcml_magmoms') or [])


def atoms_to_structure(atoms) -> orm.StructureData:
    """The structures module's converter (kinds split by moment, sublattice labels); no moments given: none recorded.

    Without moments the protocol's per-element defaults apply, not zeros.
    """
    from aiida_nmcml.structures import to_structure_data

    structure = to_structure_data(atoms)
    if not atoms.has('initial_magmoms'):
        for key in ('nmcml_magmoms', 'nmcml_kind_magmoms'):
            structure.base.attributes.delete(key)
    return structure

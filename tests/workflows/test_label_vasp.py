"""nmcml.label with VASP through aiida-vasp's VaspWorkChain — MOCKED: VASP cannot run here.

The ``vasp`` code is ``tests/fixtures/vasp/fake_vasp.py``: it checks the INCAR/POSCAR/POTCAR/KPOINTS that aiida-vasp
wrote and replays a recorded, hand-made VASP output (numbers from a pw.x DFT+U run of the same cell; see
``make_recording.py``). The POTCARs are header-only stubs. Everything else is real: aiida-vasp's calculation,
parser and restart work chain, and this package's work chain and frame conversion.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_nmcml.workflows.label import LabelWorkChain

FIXTURES = pathlib.Path(__file__).parent.parent / 'fixtures' / 'vasp'
STUB_FAMILY = 'nmcml-test-stub-PBE'
FRAME_KEYS = {'REF_energy', 'REF_stress', 'source_uuid', 'engine', 'functional', 'hubbard_u', 'ecutwfc',
              'kpoints_distance', 'pseudos', 'smearing', 'hubbard_projector', 'config_type', 'label_key'}  # fmt: skip


@pytest.fixture(scope='module')
def vasp_code(nmcml_codes):
    """The fake vasp on localhost and the stub POTCAR family (created once per profile)."""
    from aiida.common.exceptions import NotExistent
    from aiida_vasp.data.potcar import PotcarData

    if PotcarData.get_potcar_group(STUB_FAMILY) is None:
        PotcarData.upload_potcar_family(str(FIXTURES / 'potcars'), STUB_FAMILY, 'header-only stubs for tests')
    try:
        return orm.load_code(f'fake-vasp@{nmcml_codes["computer"].label}')
    except NotExistent:
        return orm.InstalledCode(
            computer=nmcml_codes['computer'],
            filepath_executable=str(FIXTURES / 'fake_vasp.py'),
            label='fake-vasp',
            default_calc_job_plugin='vasp.vasp',
            with_mpi=False,
        ).store()


def recorded_structure() -> tuple[orm.StructureData, dict]:
    """The cell of the recording (rattled LiNiO2), with the Ni moment set as the structures module would."""
    from ase import Atoms

    source = json.loads((FIXTURES / 'pw_source.json').read_text())
    atoms = Atoms(source['symbols'], cell=source['cell'], scaled_positions=source['scaled_positions'], pbc=True)
    structure = orm.StructureData(ase=atoms)
    structure.base.attributes.set('nmcml_magmoms', [1.0 if s == 'Ni' else 0.0 for s in source['symbols']])
    return structure, source


def test_vasp_inputs_are_materials_project_style(vasp_code):
    from aiida_nmcml.dft.vasp_inputs import vasp_inputs

    structure, _ = recorded_structure()
    builder = LabelWorkChain.get_builder_from_protocol(
        vasp_code,
        [structure],
        engine='vasp',
        protocol='moderate',
        overrides={'vasp': {'potential_family': STUB_FAMILY}},
    )
    settings = builder.settings.get_dict()
    child = vasp_inputs(vasp_code, structure, settings['vasp'], settings['hubbard_u'], settings['magmoms'])
    incar = child.parameters['incar']
    assert incar['ispin'] == 2 and incar['encut'] == 520 and incar['ldau'] is True
    # label defaults (science review 1.8): Gaussian smearing, total EDIFF, no real-space projection in small cells
    assert (incar['ismear'], incar['sigma'], incar['ediff'], incar['lreal']) == (0, 0.05, 1e-6, False)
    assert 'ediff_per_atom' not in incar
    assert incar['ldauu'] == [0.0, 6.2, 0.0]  # Li, Ni, O in POSCAR order
    assert incar['ldaul'] == [-1, 2, -1]
    assert incar['magmom'] == [0.0, 1.0, 0.0, 0.0]
    assert child.potential_mapping.get_dict() == {'Li': 'Li_sv', 'Ni': 'Ni_pv', 'O': 'O'}


def test_vasp_label_replays_recorded_outputs_into_the_same_frames(vasp_code, data_regression):
    structure, source = recorded_structure()
    builder = LabelWorkChain.get_builder_from_protocol(
        vasp_code, {'rattled': structure}, engine='vasp', protocol='plumbing',
        overrides={'vasp': {'potential_family': STUB_FAMILY}},
    )  # fmt: skip
    outputs, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_message, outputs['failures'].get_dict())
    (frame,) = outputs['labelled'].get_frames()
    calc = next(n for n in node.called_descendants if isinstance(n, orm.CalcJobNode))
    assert FRAME_KEYS <= set(frame.info)
    assert frame.info['engine'] == 'vasp' and frame.info['source_uuid'] == calc.uuid
    # the parsed numbers are the recorded ones, in the units and sign convention of the QE frames (ASE's)
    assert frame.info['REF_energy'] == pytest.approx(source['energy'], abs=1e-6)
    np.testing.assert_allclose(frame.arrays['REF_forces'], source['forces'], atol=1e-6)
    np.testing.assert_allclose(frame.info['REF_stress'], source['stress_voigt'], atol=1e-6)
    np.testing.assert_allclose(frame.arrays['REF_magmoms'], source['magmoms'], atol=1e-3)
    data_regression.check(
        {
            'energy': round(float(frame.info['REF_energy']), 6),
            'forces': np.round(frame.arrays['REF_forces'], 6).tolist(),
            'stress': np.round(frame.info['REF_stress'], 8).tolist(),
            'magmoms': np.round(frame.arrays['REF_magmoms'], 3).tolist(),
            'settings': {
                k: getattr(frame.info[k], 'item', lambda v=frame.info[k]: v)()
                for k in ('engine', 'functional', 'hubbard_u', 'ecutwfc', 'kpoints_distance')
            },
        }
    )


def test_vasp_missing_potcar_mapping_is_refused(vasp_code):
    from aiida_nmcml.dft.common import LabelInputError
    from aiida_nmcml.dft.vasp_inputs import check_potentials

    structure, _ = recorded_structure()
    with pytest.raises(LabelInputError, match='no POTCAR'):
        check_potentials(
            'x', structure, {'potential_mapping': {'Li': 'Li_sv', 'O': 'O'}, 'potential_family': STUB_FAMILY}
        )
    with pytest.raises(LabelInputError, match='not uploaded'):
        check_potentials(
            'x', structure, {'potential_mapping': {'Li': 'Li', 'Ni': 'Ni', 'O': 'O'}, 'potential_family': 'nope'}
        )


def test_vasp_u_is_read_back_from_vasprun(vasp_code):
    """The replay echoes the INCAR's LDAU tags in <parameters> as VASP does; the work chain pairs LDAUU with the
    POTCAR atom types of vasprun.xml. A U on the wrong species (an order slip) is rejected."""
    from aiida_nmcml.dft.vasp_inputs import applied_ldauu, ldau_mismatch

    structure, _ = recorded_structure()
    builder = LabelWorkChain.get_builder_from_protocol(
        vasp_code, {'rattled': structure}, engine='vasp', protocol='plumbing',
        overrides={'vasp': {'potential_family': STUB_FAMILY}},
    )  # fmt: skip
    outputs, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_message, outputs['failures'].get_dict())
    calc = next(n for n in node.called_descendants if isinstance(n, orm.CalcJobNode))
    assert applied_ldauu(calc.outputs.retrieved) == {'Ni': 6.2}
    assert ldau_mismatch(calc, {'Ni': 6.2, 'Co': 3.32}) is None  # Co is not in the cell
    message = ldau_mismatch(calc, {'Ni': 5.0})
    assert message and 'requested' in message and 'POTCAR' in message

    # the same vasprun.xml with LDAUU in the wrong species order: U would act on O
    text = calc.outputs.retrieved.base.repository.get_object_content('vasprun.xml', mode='r')
    start = text.index('name="LDAUU">')
    end = text.index('</v>', start)
    swapped = text[:start] + 'name="LDAUU">  0.0 0.0 6.2' + text[end:]
    folder = orm.FolderData()
    folder.base.repository.put_object_from_bytes(swapped.encode('latin-1'), 'vasprun.xml')
    assert applied_ldauu(folder) == {'O': 6.2}


def test_vasp_energy_label_is_the_free_energy():
    """The label is TOTEN (energy_free), whose derivatives are the forces, not the sigma->0 extrapolation."""
    import types

    from aiida_nmcml.dft.frames import vasp_frame

    structure, _ = recorded_structure()
    misc = {
        'total_energies': {'energy_free': -10.0, 'energy_extrapolated': -10.05},
        'forces': np.zeros((4, 3)).tolist(),
        'stress': np.zeros((3, 3)).tolist(),
    }

    class Misc(dict):  # the parts of a misc Dict node vasp_frame reads
        creator = types.SimpleNamespace(uuid='calc-uuid')

    atoms = vasp_frame(structure, Misc(misc))
    assert atoms.info['REF_energy'] == -10.0

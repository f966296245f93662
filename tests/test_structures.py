"""NMC builders: lattice, composition, Li content, antisites, charge balance, moments and conversions.

All checks are on real structures built by the module (no mocks); the AiiDA profile fixture is autouse, so
StructureData nodes are really stored.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from aiida_nmcml import structures as st


def spacegroup_number(atoms) -> int:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    return SpacegroupAnalyzer(st.to_pymatgen(atoms), symprec=1e-3).get_space_group_number()


def min_distance(atoms) -> float:
    d = atoms.get_all_distances(mic=True)
    return float(d[~np.eye(len(atoms), dtype=bool)].min())


def build_quietly(*args, **kwargs):
    """build_nmc with any NmcStructureWarning turned into an error: the request must be exact."""
    with warnings.catch_warnings():
        warnings.simplefilter('error', st.NmcStructureWarning)
        return st.build_nmc(*args, **kwargs)


# ------------------------------------------------------------------------------------------------ lattice
@pytest.mark.parametrize('primitive', [True, False])
def test_parent_is_r3m_with_sane_distances(primitive):
    parent = st.layered_parent(primitive=primitive)
    assert len(parent) == (4 if primitive else 12)
    assert spacegroup_number(parent) == 166
    assert min_distance(parent) > 1.7


@pytest.mark.parametrize('target', [4, 40, 120, 240])
def test_supercell_by_atom_count_keeps_layers_and_symmetry(target):
    lattice = st.NmcLattice.from_supercell(target)
    assert lattice.n_sites == target
    assert round(abs(np.linalg.det(lattice.matrix))) == target // 4
    assert (len(lattice.li_sites), len(lattice.tm_sites), len(lattice.o_sites)) == (
        target // 4,
        target // 4,
        target // 2,
    )
    # layer-aligned: the first two vectors lie in the layer plane, so z is the stacking axis
    assert np.allclose(lattice.cell[:2, 2], 0.0)
    # every Li (TM) site sits on a Li (TM) plane: z values of the two sublattices never coincide
    c_layer = st.C_NMC811 / 3
    z_li = np.mod(lattice.positions[lattice.li_sites, 2], c_layer)
    assert np.allclose(np.minimum(np.abs(z_li - c_layer / 2), c_layer - np.abs(z_li - c_layer / 2)), 0.0, atol=1e-6)
    parent = lattice.to_atoms(lattice.parent_occupancy())
    assert spacegroup_number(parent) == 166
    assert min_distance(parent) > 1.7


@pytest.mark.parametrize('target', [120, 2000])
def test_supercell_search_prefers_compact_cells(target):
    """The thinnest face-to-face width (what limits an MLIP cutoff) is close to the side of a cube of equal volume."""
    cell = st.NmcLattice.from_supercell(target).cell
    widths = st._perpendicular_widths(cell[None])[0]
    assert widths.min() > 0.9 * abs(np.linalg.det(cell)) ** (1 / 3)


def test_supercell_by_matrix_and_repeats_agree():
    by_repeats = st.NmcLattice.from_supercell((2, 2, 1))
    by_matrix = st.NmcLattice.from_supercell(np.diag([2, 2, 1]))
    assert np.allclose(by_repeats.positions, by_matrix.positions)
    assert list(by_repeats.sublattice[:4]) == ['li'] * 4


@pytest.mark.parametrize(('target', 'nearest'), [(41, 40), (43, 44)])
def test_target_not_multiple_of_four_warns(target, nearest):
    with pytest.warns(st.NmcStructureWarning, match='not a multiple of 4'):
        lattice = st.NmcLattice.from_supercell(target)
    assert lattice.n_sites == nearest


def test_lattice_arrays_are_read_only_and_vacancies_dropped():
    lattice = st.NmcLattice.from_supercell(40)
    with pytest.raises(ValueError, match='read-only'):
        lattice.positions[0, 0] = 1.0
    occupancy = lattice.parent_occupancy()
    occupancy[lattice.li_sites[:3]] = 'X'
    atoms = lattice.to_atoms(occupancy)
    assert len(atoms) == 37
    assert np.array_equal(atoms.arrays['site_index'], np.flatnonzero(occupancy != 'X'))
    assert np.allclose(atoms.positions, lattice.positions[atoms.arrays['site_index']])
    assert list(atoms.arrays['sublattice']) == list(lattice.sublattice[atoms.arrays['site_index']])


def test_lattice_dict_round_trip_is_json_safe():
    import json

    lattice = st.NmcLattice.from_supercell(40)
    again = st.NmcLattice.from_dict(json.loads(json.dumps(lattice.as_dict())))
    occupancy = lattice.default_occupancy(x_li=0.5, seed=1)
    left, right = lattice.to_atoms(occupancy), again.to_atoms(occupancy)
    assert left.get_chemical_symbols() == right.get_chemical_symbols()
    assert np.allclose(left.positions, right.positions)
    assert list(left.arrays['sublattice']) == list(right.arrays['sublattice'])
    with pytest.raises(ValueError, match='unknown sublattice'):
        st.NmcLattice.from_dict({**lattice.as_dict(), 'sublattice': ['xx'] * lattice.n_sites})


@pytest.mark.parametrize(
    ('occupancy', 'match'), [(['Li'] * 3, 'one symbol per lattice site'), (['Li', 'Qq', 'O', 'O'], 'unknown symbol')]
)
def test_to_atoms_rejects_bad_occupancy(occupancy, match):
    with pytest.raises(ValueError, match=match):
        st.NmcLattice.from_supercell(4).to_atoms(occupancy)


def test_default_occupancy_matches_build_nmc():
    lattice = st.NmcLattice.from_supercell(120)
    occupancy = lattice.default_occupancy(x_li=0.5, seed=3)
    atoms = st.build_nmc(lattice, x_li=0.5, seed=3)
    assert list(atoms.get_chemical_symbols()) == [s for s in occupancy if s != 'X']


# ----------------------------------------------------------------------------------------- composition, x, antisites
def test_exact_nmc811_on_30_tm_sites():
    atoms = build_quietly(120, seed=0)
    symbols = np.array(atoms.get_chemical_symbols())
    tm = atoms.arrays['sublattice'] == 'tm'
    counts = {el: int(np.sum(symbols[tm] == el)) for el in st.TM_ELEMENTS}
    assert counts == {'Ni': 24, 'Mn': 3, 'Co': 3}  # 8:1:1 of 30
    assert counts['Ni'] / tm.sum() == pytest.approx(0.8)
    assert atoms.info['nmcml']['warnings'] == []
    assert min_distance(atoms) > 1.7


@pytest.mark.parametrize(
    ('target', 'expected'), [(48, {'Ni': 10, 'Mn': 1, 'Co': 1}), (20, {'Ni': 4, 'Mn': 1, 'Co': 0})]
)
def test_inexact_cell_gives_nearest_composition_with_warning(target, expected):
    with pytest.warns(st.NmcStructureWarning, match='not exact'):
        atoms = st.build_nmc(target, seed=0)
    assert atoms.info['nmcml']['tm_counts'] == expected
    assert any('not exact' in w for w in atoms.info['nmcml']['warnings'])
    assert sum(expected.values()) == target // 4


@pytest.mark.parametrize('x_li', [1.0, 0.5, 0.2, 0.0])
def test_li_content_sets_vacancies_on_li_layer(x_li):
    atoms = build_quietly(120, x_li=x_li, seed=1)
    li = np.array(atoms.get_chemical_symbols()) == 'Li'
    assert li.sum() == round(30 * x_li)
    assert set(atoms.arrays['sublattice'][li]) <= {'li'}
    assert np.sum(atoms.arrays['sublattice'] == 'tm') == 30  # TM layer untouched
    assert atoms.info['nmcml']['x_li_actual'] == pytest.approx(x_li)


def test_inexact_li_content_rounds_with_warning():
    with pytest.warns(st.NmcStructureWarning, match='x_li = 0.33'):
        atoms = st.build_nmc(40, x_li=0.33, seed=1)
    assert atoms.get_chemical_symbols().count('Li') == 3
    assert atoms.info['nmcml']['x_li_actual'] == pytest.approx(0.3)


@pytest.mark.parametrize(('x_li', 'fraction'), [(1.0, 0.1), (0.5, 0.2)])
def test_antisites_swap_li_and_ni(x_li, fraction):
    reference = build_quietly(120, x_li=x_li, seed=4)
    atoms = build_quietly(120, x_li=x_li, seed=4, antisite_fraction=fraction)
    symbols = np.array(atoms.get_chemical_symbols())
    sub = atoms.arrays['sublattice']
    n_pairs = round(fraction * 30)  # a fraction of the 30 Li-layer sites, whatever x_li
    assert np.sum((symbols == 'Ni') & (sub == 'li')) == n_pairs
    assert np.sum((symbols == 'Li') & (sub == 'tm')) == n_pairs
    assert atoms.info['nmcml']['n_antisite_pairs'] == n_pairs
    assert sorted(symbols) == sorted(reference.get_chemical_symbols())  # a swap keeps the composition


@pytest.mark.parametrize('fraction', [0.1, 0.2])
def test_antisite_count_is_independent_of_li_content(fraction):
    """The fraction is per Li-layer site and placed before Li is removed (Rietveld Li/Ni mixing, fixed at synthesis):
    the same fraction gives the same Ni_Li count at x = 0.5 as at x = 1, and delithiation leaves the Ni_Li in place."""
    counts = {}
    for x_li in (1.0, 0.5):
        atoms = build_quietly(120, x_li=x_li, seed=4, antisite_fraction=fraction)
        symbols, sub = np.array(atoms.get_chemical_symbols()), atoms.arrays['sublattice']
        counts[x_li] = int(np.sum((symbols == 'Ni') & (sub == 'li')))
        assert np.sum(symbols == 'Li') == round(30 * x_li)  # x_li counts every Li, the TM-layer ones included
    assert counts[0.5] == counts[1.0] == round(30 * fraction)


def test_antisites_need_li_left_on_the_tm_layer():
    with pytest.raises(ValueError, match='raise x_li or lower antisite_fraction'):
        st.build_nmc(40, x_li=0.0, seed=0, antisite_fraction=0.2)


def test_seed_reproducibility():
    first, again, other = (st.build_nmc(120, x_li=0.5, seed=s) for s in (7, 7, 8))
    assert first.get_chemical_symbols() == again.get_chemical_symbols()
    assert np.array_equal(first.arrays['site_index'], again.arrays['site_index'])
    assert np.array_equal(first.arrays['oxidation_state'], again.arrays['oxidation_state'])
    assert first.get_chemical_symbols() != other.get_chemical_symbols()
    drawn = st.build_nmc(40)
    assert isinstance(drawn.info['nmcml']['seed'], int)
    assert st.build_nmc(40, seed=drawn.info['nmcml']['seed']).get_chemical_symbols() == drawn.get_chemical_symbols()


def test_given_tm_order_is_used():
    order = ['Ni'] * 8 + ['Mn', 'Co']
    atoms = build_quietly(40, tm_order=order, seed=0)
    tm = atoms.arrays['sublattice'] == 'tm'
    assert list(np.array(atoms.get_chemical_symbols())[tm]) == order
    assert atoms.info['nmcml']['composition'] == pytest.approx({'Ni': 0.8, 'Mn': 0.1, 'Co': 0.1})


# ------------------------------------------------------------------------------------ oxidation states, moments
def charge_of(atoms) -> int:
    return int(atoms.arrays['oxidation_state'].sum())


@pytest.mark.parametrize(('x_li', 'fraction'), [(1.0, 0.0), (0.7, 0.0), (0.3, 0.0), (1.0, 0.1), (0.0, 0.0)])
def test_charge_balance_and_moments_follow_oxidation_states(x_li, fraction):
    atoms = build_quietly(120, x_li=x_li, antisite_fraction=fraction, seed=2)
    symbols = np.array(atoms.get_chemical_symbols())
    q = atoms.arrays['oxidation_state']
    # Li+ count + TM charges = 2 x O count
    assert np.sum(symbols == 'Li') + q[np.isin(symbols, st.TM_ELEMENTS)].sum() == 2 * np.sum(symbols == 'O')
    assert charge_of(atoms) == 0
    assert set(q[symbols == 'Mn']) == {4}
    assert set(q[symbols == 'Ni']) <= {2, 3, 4}
    moments = atoms.get_initial_magnetic_moments()
    for s, qi, m in zip(symbols, q, moments, strict=True):
        assert m == st.SPIN_ONLY_MOMENTS[(s, int(qi))]
    if x_li > 0:
        assert set(q[symbols == 'Co']) == {3}  # Co stays 3+ while some Ni can still be oxidised
        # Ni charges spread as evenly as possible: at most two neighbouring oxidation states
        assert np.ptp(q[symbols == 'Ni']) <= 1


def test_mn4_is_compensated_by_ni2_in_lithiated_nmc():
    """In LiNi0.8Mn0.1Co0.1O2 each Mn4+ forces one Ni2+; antisite Ni on the Li layer are the Ni2+ ones."""
    atoms = build_quietly(120, antisite_fraction=0.1, seed=5)
    symbols = np.array(atoms.get_chemical_symbols())
    q = atoms.arrays['oxidation_state']
    ni2 = (symbols == 'Ni') & (q == 2)
    assert ni2.sum() == np.sum(symbols == 'Mn')
    on_li = (symbols == 'Ni') & (atoms.arrays['sublattice'] == 'li')
    assert on_li.sum() == 3
    assert np.all(q[on_li] == 2)


def _neighbour_counts(atoms):
    """Per atom: Mn neighbours and empty Li-layer sites among the 6 nearest (an independent re-count)."""
    from ase.neighborlist import neighbor_list

    symbols = np.array(atoms.get_chemical_symbols())
    i, j = neighbor_list('ij', atoms, 3.0)
    mn = np.bincount(i[symbols[j] == 'Mn'], minlength=len(atoms))
    li_layer = np.bincount(i[atoms.arrays['sublattice'][j] == 'li'], minlength=len(atoms))
    return mn, 6 - li_layer


def test_dft_ready_charge_order_is_deterministic_and_physical():
    """GA candidates and MD frames are relabelled by dft_ready with a fixed charge order: at x = 1 the Ni2+ (one per
    Mn4+) are Ni next to Mn; at x = 0.5 the Ni4+ are the Ni with the most Li vacancies around them; a frame whose atoms
    come in another order gets the same charges on the same sites."""
    lattice = st.NmcLattice.from_supercell(120)
    for x_li in (1.0, 0.5):
        occupancy = lattice.default_occupancy(x_li=x_li, seed=3)
        atoms = st.dft_ready(lattice.to_atoms(occupancy))
        symbols, q = np.array(atoms.get_chemical_symbols()), atoms.arrays['oxidation_state']
        mn, empty = _neighbour_counts(atoms)
        ni = symbols == 'Ni'
        assert charge_of(atoms) == 0
        if x_li == 1.0:
            ni2 = ni & (q == 2)
            assert ni2.sum() == np.sum(symbols == 'Mn') == 3
            assert mn[ni2].min() >= 1 and mn[ni2].min() >= mn[ni & (q == 3)].max()
        else:
            ni4 = ni & (q == 4)
            assert ni4.sum() > 0
            score = empty - mn
            assert score[ni4].min() >= score[ni & (q == 3)].max()
            assert empty[ni4].mean() > empty[ni & (q == 3)].mean()
        shuffled = atoms[np.random.default_rng(0).permutation(len(atoms))]
        again = st.dft_ready(shuffled)
        by_site = dict(zip(atoms.arrays['site_index'], q, strict=True))
        assert all(by_site[s] == qs for s, qs in zip(again.arrays['site_index'], again.arrays['oxidation_state']))


def test_fully_delithiated_oxidises_co_after_ni():
    atoms = build_quietly(40, x_li=0.0, seed=0)
    symbols = np.array(atoms.get_chemical_symbols())
    q = atoms.arrays['oxidation_state']
    assert set(q[symbols == 'Ni']) == {4}
    assert set(q[symbols == 'Co']) == {4}
    assert charge_of(atoms) == 0


@pytest.mark.parametrize(
    ('symbols', 'match'),
    [(['Ni', 'O', 'O', 'O'], 'beyond 4\\+'), (['Li', 'Li', 'Li', 'Ni', 'O', 'O'], 'below 2\\+'), (['Fe', 'O'], 'Fe')],
)
def test_impossible_charge_balance_raises(symbols, match):
    with pytest.raises(ValueError, match=match):
        st.assign_oxidation_states(symbols)


@pytest.mark.parametrize(('magnetic', 'expected'), [('mp', {'Ni': 5.0, 'Mn': 5.0, 'Co': 0.6}), (False, {})])
def test_other_magnetic_schemes(magnetic, expected):
    atoms = build_quietly(40, seed=0, magnetic=magnetic)
    for s, m in zip(atoms.get_chemical_symbols(), atoms.get_initial_magnetic_moments(), strict=True):
        assert m == expected.get(s, 0.0)


# -------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'x_li': 1.2}, r'x_li must be within \[0, 1\]'),
        ({'x_li': -0.1}, r'x_li must be within \[0, 1\]'),
        ({'x_li': float('nan')}, r'x_li must be within \[0, 1\]'),
        ({'composition': {'Ni': 0.8, 'Mn': 0.1}}, 'must sum to 1'),
        ({'composition': {'Ni': 1.2, 'Mn': -0.2}}, 'non-negative'),
        ({'composition': {'Ni': 0.8, 'Fe': 0.2}}, r"unknown element\(s\) \['Fe'\].*only Ni, Mn, Co"),
        ({'antisite_fraction': 1.5}, r'antisite_fraction must be within \[0, 1\]'),
        ({'antisite_fraction': -0.01}, r'antisite_fraction must be within \[0, 1\]'),
        ({'composition': {'Mn': 0.5, 'Co': 0.5}, 'antisite_fraction': 0.5}, 'holds only 0 Ni'),
        ({'tm_order': ['Ni'] * 3}, 'one symbol per TM site'),
        ({'tm_order': ['Ni'] * 9 + ['Zn']}, 'only Ni, Mn, Co'),
        ({'tm_order': ['Ni'] * 10, 'composition': st.NMC811}, 'give one or the other'),
        ({'magnetic': 'afm'}, 'magnetic must be'),
    ],
)
def test_bad_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        st.build_nmc(40, seed=0, **kwargs)


@pytest.mark.parametrize(
    ('supercell', 'match'),
    [
        ([[1, 0, 0], [0, 1, 0], [1, 1, 0]], 'singular'),
        ([[1.5, 0, 0], [0, 1, 0], [0, 0, 1]], 'integer entries'),
        ([[0, 1, 0], [1, 0, 0], [0, 0, 1]], 'negative determinant'),
        ((2, 2), 'shape'),
        (1, 'too small'),
    ],
)
def test_bad_supercell_raises(supercell, match):
    with pytest.raises(ValueError, match=match):
        st.NmcLattice.from_supercell(supercell)


# -------------------------------------------------------------------------------------------------- conversions
def assert_same_nmc(left, right):
    assert left.get_chemical_symbols() == right.get_chemical_symbols()
    assert np.allclose(left.positions, right.positions)
    assert np.allclose(left.cell.array, right.cell.array)
    assert np.allclose(left.get_initial_magnetic_moments(), right.get_initial_magnetic_moments())
    for name in ('sublattice', 'site_index', 'oxidation_state'):
        assert np.array_equal(left.arrays[name], right.arrays[name]), name
    assert right.arrays['sublattice'].dtype.kind == 'U'


def test_structure_data_round_trip_stores_and_splits_kinds():
    from aiida import orm

    atoms = build_quietly(120, x_li=0.5, antisite_fraction=0.2, seed=6)
    node = st.to_structure_data(atoms)
    node.store()
    loaded = orm.load_node(node.pk)
    assert loaded.base.attributes.get('nmcml_sublattice') == list(atoms.arrays['sublattice'])
    assert loaded.base.attributes.get('nmcml_info')['seed'] == 6
    # one kind per distinct (element, moment), named Ni, Ni1, ...; each kind holds a single moment
    moments_by_kind: dict[str, set] = {}
    for site, m in zip(loaded.sites, atoms.get_initial_magnetic_moments(), strict=True):
        moments_by_kind.setdefault(site.kind_name, set()).add(float(m))
    assert all(len(v) == 1 for v in moments_by_kind.values())
    ni_moments = {
        m for s, m in zip(atoms.get_chemical_symbols(), atoms.get_initial_magnetic_moments(), strict=True) if s == 'Ni'
    }
    assert {k for k in moments_by_kind if k.startswith('Ni')} == {'Ni', *(f'Ni{i}' for i in range(1, len(ni_moments)))}
    assert loaded.base.attributes.get('nmcml_kind_magmoms') == {k: v.pop() for k, v in moments_by_kind.items()}
    back = st.from_structure_data(loaded)
    assert_same_nmc(atoms, back)
    assert back.info['nmcml']['x_li'] == 0.5


def test_plain_structure_data_is_not_guessed():
    from aiida import orm

    node = orm.StructureData(ase=st.layered_parent())
    atoms = st.from_structure_data(node)
    assert 'sublattice' not in atoms.arrays


def test_pymatgen_round_trip():
    atoms = build_quietly(40, x_li=0.5, seed=9)
    structure = st.to_pymatgen(atoms)
    assert structure.site_properties['sublattice'] == list(atoms.arrays['sublattice'])
    assert structure.site_properties['magmom'] == list(atoms.get_initial_magnetic_moments())
    assert_same_nmc(atoms, st.from_pymatgen(structure))

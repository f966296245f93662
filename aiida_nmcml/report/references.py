"""Published numbers the report compares against (docs/references.md has the table and the tags V / C / U).

Experiments measure the *chemical* diffusion coefficient (GITT, fitted cell models); MD gives the *tracer* (self)
coefficient D*. They differ by the thermodynamic factor and the Haven ratio, so the report compares within one to two
orders of magnitude and labels which is which.
"""

from __future__ import annotations

# O'Regan et al., Electrochim. Acta 425, 140700 (2022): NMC811 (LG M50), 298 K, GITT fit; tag C (from the fit).
OREGAN_2022 = {
    'label': "NMC811 GITT fit, chemical D (O'Regan et al. 2022)",
    'x_li': [0.25, 0.32, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90, 1.0],
    'D_cm2_s': [2.0e-10, 2.9e-11, 1.0e-10, 7.3e-11, 6.8e-11, 3.9e-11, 3.0e-11, 3.6e-11, 6.1e-11],
    'temperature_K': 298.0,
    'kind': 'chemical',
    'tag': 'C',
}
# Chen et al., J. Electrochem. Soc. 2020, doi:10.1149/1945-7111/ab9050: NMC811 (LG M50), P2D constant; tag V.
CHEN_2020 = {
    'label': 'NMC811 P2D parameter, chemical D (Chen et al. 2020)',
    'D_cm2_s': 4.0e-11,
    'temperature_K': 298.0,
    'kind': 'chemical',
    'tag': 'V',
}
# Yang et al., Electrochim. Acta 66, 88 (2012): NMC532 GITT, room temperature, charge and discharge; tag V.
YANG_2012 = {
    'label': 'NMC532 GITT range, chemical D (Yang et al. 2012)',
    'D_min_cm2_s': 1.9e-11,
    'D_max_cm2_s': 3.9e-9,
    'temperature_K': 298.0,
    'kind': 'chemical',
    'tag': 'V',
}
EXPERIMENTAL_EA_EV = [
    ('NMC811, Arrhenius term of the GITT fit', 0.125, "O'Regan et al. 2022", 'C'),
    ('Li_x NMC111, muon spin relaxation', 0.100, 'Månsson et al., arXiv:1406.3985', 'V'),
]
# DFT NEB barriers (eV) of the two hops, for orientation (LiNiO2, not NMC811): Devi et al. arXiv:2508.06459 dataset;
# MACE-MP-0 (not fine-tuned) from Bheemaguli, Xiao, Sai Gautam, Digital Discovery 2026, doi:10.1039/D5DD00534E.
NEB_BARRIERS_EV = {
    'odh': ('LiNiO2 single vacancy (oxygen-dumbbell hop)', 0.451, 0.363),
    'tsh': ('LiNiO2 divacancy (tetrahedral-site hop)', 0.263, 0.262),
}

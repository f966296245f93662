"""Li diffusion from MD trajectories: tracer D*, collective D_sigma, Haven ratio, Arrhenius Ea and D(300 K).

Usable without AiiDA: give it a list of ASE ``Atoms`` (or a trajectory file, or a list of replicas) whose frames
carry unwrapped positions (the nmcml MD engine writes them to ``atoms.arrays['unwrapped']``, engine/md_io.py).

Why this estimator (docs/diffusion.md has the numbers):

* MSD points at different lags come from overlapping windows of the same trajectory, so they are strongly
  correlated. An ordinary least-squares fit treats them as independent and its error bar is far too small. We fit
  the MSD by *generalised* least squares with the covariance a random walk would give for exactly this set of lags,
  origins and particles (the analytic sum over overlapping windows, as in Bullerjahn, von Buelow & Hummer,
  J. Chem. Phys. 153, 024116 (2020)), including a white "vibrational" noise on the positions (the MSD intercept) and
  the excess fourth cumulant of lattice hopping (few hops per atom make displacements non-Gaussian; estimated from
  the data). The covariance depends on D, so the fit is iterated to self-consistency. With a flat prior the
  posterior of (slope, intercept) is then Gaussian; we sample it (slope > 0) and report quantiles. kinisi
  (McCluskey et al., JCTC 2024) does the same kind of fit with an empirical covariance and MCMC; the benchmark
  ``benchmarks/diffusion_estimator.py`` compares the two.
* Displacements are taken relative to the host framework's centre of mass (O + transition metals): a drifting
  cell (thermostat, momentum leak) must not count as Li diffusion.
* The ballistic/vibrational start is excluded by a stated rule: lags shorter than ``start_fs`` (default 1 ps) are
  not fitted, and the longest lag is ``max_lag_fraction`` (default 1/2) of the trajectory, beyond which few
  independent windows remain.
* Layers lie in xy (the structure builder guarantees it): the in-plane D_xy = <dr_xy^2>/(4t) is the primary
  number, D_z is reported as a check (it must be ~0), and the isotropic D = <dr^2>/(6t) is reported as well.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

K_B_EV = 8.617333262e-5  # eV/K
E_CHARGE = 1.602176634e-19  # C
K_B_SI = 1.380649e-23  # J/K
A2_PER_FS_TO_CM2_PER_S = 0.1  # 1 Angstrom^2/fs = 1e-16 cm^2 / 1e-15 s
DIMENSIONS = {'x': 0, 'y': 1, 'z': 2}
DEFAULT_FRAMEWORK = ('O', 'Ni', 'Mn', 'Co')


class DiffusionError(ValueError):
    """A trajectory or request this analysis cannot give a meaningful answer for; the message says what to do."""


class TrajectoryTooShortError(DiffusionError):
    pass


class NoMobileSpeciesError(DiffusionError):
    pass


class WrappedCoordinatesError(DiffusionError):
    pass


# ----------------------------------------------------------------------------------------------------------------
# Reading trajectories
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """Unwrapped positions of one run, shape (n_frames, n_atoms, 3), in Angstrom, frames ``dt_fs`` apart."""

    positions: np.ndarray
    symbols: list[str]
    masses: np.ndarray
    cells: np.ndarray
    dt_fs: float

    @property
    def n_frames(self) -> int:
        return self.positions.shape[0]

    @property
    def duration_fs(self) -> float:
        return (self.n_frames - 1) * self.dt_fs

    @property
    def volume(self) -> float:
        return float(np.mean([abs(np.linalg.det(c)) for c in self.cells]))


def load_trajectory(frames, timestep_fs: float | None = None, stride: int = 1) -> Trajectory:
    """Turn a list of ASE Atoms (or a file ASE can read) into a :class:`Trajectory`.

    Positions come from ``arrays['unwrapped']`` when present, else from the positions (which must then be unwrapped).
    The frame interval is ``timestep_fs * stride``; without ``timestep_fs`` it is read from ``info['time_fs']``
    (written by the nmcml MD engine). Wrapped coordinates are refused: an atom moving more than half the narrowest
    cell width between two frames means positions were folded back into the cell.
    """
    if isinstance(frames, str | os.PathLike):
        from ase.io import read

        frames = read(str(frames), index=':')
    frames = list(frames)
    if len(frames) < 2:
        raise TrajectoryTooShortError(f'a trajectory needs at least 2 frames, got {len(frames)}')
    symbols = frames[0].get_chemical_symbols()
    for i, frame in enumerate(frames):
        if frame.get_chemical_symbols() != symbols:
            raise DiffusionError(f'frame {i} has different atoms than frame 0; the analysis needs a fixed composition')
    has_unwrapped = all('unwrapped' in f.arrays for f in frames)
    positions = np.array([f.arrays['unwrapped'] if has_unwrapped else f.get_positions() for f in frames], dtype=float)
    cells = np.array([f.cell.array for f in frames], dtype=float)
    if timestep_fs is None:
        times = [f.info.get('time_fs') for f in frames]
        if any(t is None for t in times):
            raise DiffusionError("give timestep_fs (and stride): the frames carry no info['time_fs']")
        steps = np.diff(np.asarray(times, dtype=float))
        if not np.allclose(steps, steps[0], rtol=1e-6) or steps[0] <= 0:
            raise DiffusionError('frames are not evenly spaced in time; the MSD estimator needs a constant interval')
        dt_fs = float(steps[0])
    else:
        if timestep_fs <= 0 or int(stride) < 1:
            raise DiffusionError(f'timestep_fs must be > 0 and stride >= 1, got {timestep_fs} and {stride}')
        dt_fs = float(timestep_fs) * int(stride)
    _check_unwrapped(positions, cells, 'arrays["unwrapped"]' if has_unwrapped else 'positions')
    return Trajectory(positions, symbols, frames[0].get_masses(), cells, dt_fs)


def _check_unwrapped(positions: np.ndarray, cells: np.ndarray, source: str) -> None:
    cell = cells[0]
    volume = abs(np.linalg.det(cell))
    widths = [volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    step = np.linalg.norm(np.diff(positions, axis=0), axis=-1)
    worst = float(step.max()) if step.size else 0.0
    if worst > 0.5 * min(widths):
        frame, atom = np.unravel_index(int(step.argmax()), step.shape)
        raise WrappedCoordinatesError(
            f'atom {atom} moves {worst:.2f} A between frames {frame} and {frame + 1} ({source}), more than half the '
            f'narrowest cell width ({min(widths):.2f} A): the coordinates look wrapped into the cell. Use the '
            "unwrapped positions (nmcml MD writes arrays['unwrapped']) or write frames more often."
        )


def _as_replicas(trajectory, timestep_fs, stride) -> list[Trajectory]:
    if isinstance(trajectory, Trajectory):
        return [trajectory]
    if isinstance(trajectory, str | os.PathLike):
        return [load_trajectory(trajectory, timestep_fs, stride)]
    items = list(trajectory)
    if items and (isinstance(items[0], Trajectory | str | os.PathLike) or isinstance(items[0], list | tuple)):
        reps = [r if isinstance(r, Trajectory) else load_trajectory(r, timestep_fs, stride) for r in items]
    else:
        reps = [load_trajectory(items, timestep_fs, stride)]
    first = reps[0]
    for r in reps[1:]:
        if r.n_frames != first.n_frames or not math.isclose(r.dt_fs, first.dt_fs):
            raise DiffusionError('replicas must have the same number of frames and frame interval; cut them to match')
    return reps


# ----------------------------------------------------------------------------------------------------------------
# MSD and its covariance
# ----------------------------------------------------------------------------------------------------------------


def choose_lags(n_frames: int, dt_fs: float, start_fs: float, max_lag_fraction: float, n_lags: int) -> np.ndarray:
    """Frame lags fitted: from ``start_fs`` to ``max_lag_fraction`` of the run, at most ``n_lags`` evenly spaced."""
    first = max(1, math.ceil(start_fs / dt_fs - 1e-9))
    last = math.floor(max_lag_fraction * (n_frames - 1))
    if last - first + 1 < 3:
        raise TrajectoryTooShortError(
            f'the trajectory spans {(n_frames - 1) * dt_fs / 1000:.3g} ps in {n_frames} frames; fitting from '
            f'{start_fs / 1000:.3g} ps up to {max_lag_fraction:.2g} of the run leaves {max(0, last - first + 1)} lags '
            f'(need >= 3). Run longer (more than {2 * start_fs / max_lag_fraction / 1000:.3g} ps), write frames more '
            'often, or lower start_fs.'
        )
    return np.unique(np.linspace(first, last, min(n_lags, last - first + 1)).round().astype(int))


@dataclass
class _Moments:
    msd: np.ndarray  # <|X|^2>
    c4: np.ndarray  # excess fourth cumulant E|X|^4 - (E|X|^2)^2 - 2 sum_ab (E X_a X_b)^2
    n_particles: int


def _moments(disp_series: Sequence[np.ndarray], lags: np.ndarray) -> _Moments:
    """MSD over all time origins and particles at each lag; ``disp_series``: per replica (n_frames, n, d) arrays."""
    msd, c4 = [], []
    for k in lags:
        sq, quart, second = 0.0, 0.0, 0.0
        count = 0
        for pos in disp_series:
            x = pos[k:] - pos[:-k]
            r2 = np.einsum('tnd,tnd->tn', x, x)
            sq += r2.sum()
            quart += (r2**2).sum()
            second = second + np.einsum('tna,tnb->ab', x, x)
            count += r2.size
        m2 = sq / count
        mab = second / count
        msd.append(m2)
        c4.append(quart / count - m2**2 - 2 * float(np.sum(mab**2)))
    return _Moments(np.array(msd), np.array(c4), sum(p.shape[1] for p in disp_series))


def overlap_sums(lags: np.ndarray, n_intervals: int, n_particles: int) -> dict[str, np.ndarray]:
    """The parts of the covariance of the overlapping-window MSD estimator at frame ``lags`` (independent walkers).

    For two windows of lengths k and l whose origins are ``delta`` frames apart, ``ov`` is the number of shared steps
    and ``e`` counts shared end points (+1 same-sign, -1 opposite). Each part is sum over all origin pairs (by
    offset) divided by the numbers of origins and walkers: ``ov2`` (sum ov^2), ``ove`` (ov e), ``e2`` (e^2), ``ov``.
    :func:`msd_covariance` combines them.
    """
    n = len(lags)
    parts = {name: np.zeros((n, n)) for name in ('ov2', 'ove', 'e2', 'ov')}
    for i, k in enumerate(lags):
        for j in range(i, n):
            l = lags[j]  # noqa: E741
            delta = np.arange(-l, k + 1)
            count = np.minimum(n_intervals - k, n_intervals - l - delta) - np.maximum(0, -delta) + 1
            count = np.clip(count, 0, None).astype(float)
            ov = np.clip(np.minimum(k, delta + l) - np.maximum(0, delta), 0, None).astype(float)
            e = (delta == k - l).astype(float) - (delta == k) - (delta == -l) + (delta == 0)
            norm = (n_intervals - k + 1) * (n_intervals - l + 1) * n_particles
            for name, value in (('ov2', ov * ov), ('ove', ov * e), ('e2', e * e), ('ov', ov)):
                parts[name][i, j] = parts[name][j, i] = np.sum(count * value) / norm
    return parts


def msd_covariance(parts: dict, dim: int, var_step: float, var_noise: float, c4_step: float) -> np.ndarray:
    """Covariance of the MSD estimator for walkers with positions = walk + white noise.

    ``var_step``: per-frame step variance per dimension; ``var_noise``: noise variance per dimension; ``c4_step``: the
    excess fourth cumulant of one step (non-Gaussian lattice hops). For Gaussian parts Cov(X^2, Y^2) = 2 Cov(X, Y)^2 per
    dimension with Cov(X, Y) = var_step ov + var_noise e; shared steps add ``c4_step`` each.
    """
    gauss = var_step**2 * parts['ov2'] + 2 * var_step * var_noise * parts['ove'] + var_noise**2 * parts['e2']
    return 2 * dim * gauss + c4_step * parts['ov']


@dataclass
class MSDFit:
    """One diffusion coefficient with its posterior: ``D_samples`` in cm^2/s, ``dims`` the Cartesian axes used."""

    dims: str
    lag_fs: np.ndarray
    msd: np.ndarray  # Angstrom^2
    msd_std: np.ndarray  # from the model covariance
    slope: float  # Angstrom^2/fs
    intercept: float  # Angstrom^2
    D_samples: np.ndarray
    n_particles: int
    start_fs: float
    level: float = 0.95

    @property
    def D(self) -> float:
        return float(np.median(self.D_samples))

    def interval(self, level: float | None = None) -> tuple[float, float]:
        level = self.level if level is None else level
        lo, hi = np.quantile(self.D_samples, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)

    def as_dict(self) -> dict:
        lo, hi = self.interval()
        return {
            'dims': self.dims,
            'D_cm2_s': self.D,
            'D_interval_cm2_s': [lo, hi],
            'level': self.level,
            'n_particles': self.n_particles,
            'fit_start_fs': self.start_fs,
            'intercept_A2': self.intercept,
            'lag_fs': self.lag_fs.tolist(),
            'msd_A2': self.msd.tolist(),
            'msd_std_A2': self.msd_std.tolist(),
        }


def fit_msd(
    disp_series: Sequence[np.ndarray],
    dt_fs: float,
    lags: np.ndarray,
    n_intervals: int,
    dims: str = 'xy',
    fit_intercept: bool = True,
    n_samples: int = 4000,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
    iterations: int = 4,
    n_grid: int = 160,
) -> MSDFit:
    """GLS fit of MSD(t) = 2 d D t (+ intercept) with the random-walk covariance, iterated; posterior samples of D.

    ``disp_series``: per replica, displacement-ready positions (n_frames, n_walkers, d) already projected on ``dims``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    d = len(dims)
    mom = _moments(disp_series, lags)
    parts = overlap_sums(lags, n_intervals, mom.n_particles)
    t = lags * dt_fs
    design = np.column_stack([t, np.ones_like(t)]) if fit_intercept else t[:, None]
    beta = np.linalg.lstsq(design, mom.msd, rcond=None)[0]
    floor = 1e-9 * max(float(mom.msd.max()), 1e-30) / t[-1]
    # Excess fourth cumulant per step, c4(k) ~ c4_1 k for independent steps, as a multiple of the slope (for lattice
    # hops both grow with the hop rate: c4_1 / slope ~ hop length^2). Taken from the shortest quarter of the fitted
    # lags, where most independent windows exist (long-lag estimates are noisy and biased low). Negative -> 0.
    short = slice(0, max(2, len(lags) // 4))
    kappa = max(0.0, float(np.sum(mom.c4[short]) / (max(float(beta[0]), floor) * np.sum(t[short]))))

    def covariance(slope, intercept):
        slope = max(slope, floor)
        cov = msd_covariance(parts, d, slope * dt_fs / d, max(intercept, 0.0) / (2 * d), kappa * slope * dt_fs)
        return cov + np.eye(len(lags)) * 1e-10 * np.trace(cov) / len(lags)

    for _ in range(iterations):  # GLS iterated to self-consistency: the best estimate and the grid's centre
        intercept = float(beta[1]) if fit_intercept else 0.0
        chol = np.linalg.cholesky(covariance(float(beta[0]), intercept))
        xw, yw = np.linalg.solve(chol, design), np.linalg.solve(chol, mom.msd)
        beta = np.linalg.lstsq(xw, yw, rcond=None)[0]
    intercept = float(beta[1]) if fit_intercept else 0.0
    slope_sd = math.sqrt(np.linalg.inv(xw.T @ xw)[0, 0])
    # The spread of the MSD grows with D, so an interval from the covariance at the estimate alone is too narrow
    # when the estimate happens to be low (and too wide when high). For each candidate slope m we therefore refit
    # with the covariance *at m* and ask how far the estimate lies from m in units of that fit's error:
    # H(m) = Phi((m - m_gls(m)) / sd(m)) is a confidence distribution for the slope (score-test inversion, as for
    # Wilson's binomial interval); the D samples are drawn from it (inverse CDF), restricted to m > 0. For a fixed
    # covariance this is exactly the flat-prior Gaussian posterior of the GLS fit.
    from scipy.stats import norm

    grid = np.linspace(max(floor, float(beta[0]) - 8 * slope_sd), float(beta[0]) + 14 * slope_sd, n_grid)
    pivot = np.empty_like(grid)
    for g, slope in enumerate(grid):
        chol = np.linalg.cholesky(covariance(slope, intercept))
        xw_g, yw_g = np.linalg.solve(chol, design), np.linalg.solve(chol, mom.msd)
        fit_g = np.linalg.lstsq(xw_g, yw_g, rcond=None)[0]
        pivot[g] = (slope - fit_g[0]) / math.sqrt(np.linalg.inv(xw_g.T @ xw_g)[0, 0])
    cdf = np.maximum.accumulate(norm.cdf(pivot))
    lower = norm.cdf(pivot[0]) if grid[0] > floor else 0.0  # mass below the grid start only matters away from 0
    if np.isfinite(cdf).all() and cdf[-1] - lower > 1e-6 and np.ptp(cdf) > 0:
        u = rng.uniform(max(cdf[0], lower), cdf[-1], n_samples)
        slopes = np.interp(u, cdf + np.arange(cdf.size) * 1e-15, grid)
    else:  # a flat MSD (no motion at all along these axes): the GLS Gaussian, folded to slope >= 0
        slopes = np.abs(rng.normal(float(beta[0]), slope_sd, n_samples))
    d_samples = slopes / (2 * d) * A2_PER_FS_TO_CM2_PER_S
    cov = covariance(float(beta[0]), intercept)
    return MSDFit(
        dims=dims,
        lag_fs=t,
        msd=mom.msd,
        msd_std=np.sqrt(np.diag(cov)),
        slope=float(beta[0]),
        intercept=float(beta[1]) if fit_intercept else 0.0,
        D_samples=d_samples,
        n_particles=mom.n_particles,
        start_fs=float(t[0]),
        level=level,
    )


def ols_msd_fit(msd: np.ndarray, t: np.ndarray, d: int, level: float = 0.95) -> tuple[float, float, float]:
    """Ordinary least squares with the textbook standard error (points treated as independent): the naive baseline.

    Returns (D, lower, upper) in cm^2/s. Only for comparison in the benchmark; its interval is far too narrow.
    """
    from scipy import stats

    res = stats.linregress(t, msd)
    z = stats.t.ppf((1 + level) / 2, len(t) - 2)
    f = A2_PER_FS_TO_CM2_PER_S / (2 * d)
    return res.slope * f, (res.slope - z * res.stderr) * f, (res.slope + z * res.stderr) * f


# ----------------------------------------------------------------------------------------------------------------
# The analysis of one (T, x) point
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class DiffusionResult:
    tracer_xy: MSDFit
    tracer_z: MSDFit
    tracer_iso: MSDFit
    collective_xy: MSDFit | None
    haven_samples: np.ndarray | None
    n_li: int
    n_replicas: int
    volume_A3: float
    duration_fs: float
    temperature: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def z_ratio(self) -> float:
        """D_z / D_xy (upper ends): ~0 for layered Li hopping; a large value means the layers are not in xy."""
        return self.tracer_z.interval()[1] / max(self.tracer_xy.D, 1e-300)

    def haven_ratio(self, level: float = 0.95) -> tuple[float, float, float] | None:
        if self.haven_samples is None:
            return None
        lo, med, hi = np.quantile(self.haven_samples, [(1 - level) / 2, 0.5, (1 + level) / 2])
        return float(med), float(lo), float(hi)

    def conductivity(self, temperature: float | None = None, use: str = 'tracer') -> dict:
        """Nernst-Einstein conductivity (S/cm) from the in-plane tracer D* (Haven ratio 1) or from D_sigma."""
        temperature = self.temperature if temperature is None else temperature
        if temperature is None:
            raise DiffusionError('give the temperature for the Nernst-Einstein conductivity')
        fit = self.tracer_xy if use == 'tracer' else self.collective_xy
        if fit is None:
            raise DiffusionError('no collective diffusion coefficient: it needs the Li centre of mass')
        samples = nernst_einstein(fit.D_samples, self.n_li, self.volume_A3, temperature)
        lo, med, hi = np.quantile(samples, [0.025, 0.5, 0.975])
        return {'sigma_S_cm': float(med), 'interval_S_cm': [float(lo), float(hi)], 'from': use}

    def as_dict(self) -> dict:
        data = {
            'D_xy': self.tracer_xy.as_dict(),
            'D_z': self.tracer_z.as_dict(),
            'D_iso': self.tracer_iso.as_dict(),
            'D_z_over_D_xy': self.z_ratio,
            'D_collective_xy': self.collective_xy.as_dict() if self.collective_xy is not None else None,
            'haven_ratio': self.haven_ratio(),
            'n_li': self.n_li,
            'n_replicas': self.n_replicas,
            'volume_A3': self.volume_A3,
            'duration_fs': self.duration_fs,
            'temperature': self.temperature,
            'warnings': list(self.warnings),
        }
        if self.temperature is not None:
            data['conductivity_tracer'] = self.conductivity()
        return data


def analyse_diffusion(
    trajectory,
    timestep_fs: float | None = None,
    stride: int = 1,
    *,
    species: str = 'Li',
    framework: Sequence[str] = DEFAULT_FRAMEWORK,
    start_fs: float = 1000.0,
    max_lag_fraction: float = 0.5,
    n_lags: int = 60,
    temperature: float | None = None,
    n_samples: int = 4000,
    level: float = 0.95,
    seed: int = 0,
    collective: bool = True,
) -> DiffusionResult:
    """Tracer D* (xy, z, isotropic), collective D_sigma (xy) and the Haven ratio of ``species`` for one (T, x).

    ``trajectory``: a list of Atoms, a file name, or a list of such (independent replicas of equal length).
    """
    reps = _as_replicas(trajectory, timestep_fs, stride)
    first = reps[0]
    symbols = np.array(first.symbols)
    mobile = np.flatnonzero(symbols == species)
    if mobile.size == 0:
        raise NoMobileSpeciesError(f'no {species} atoms in the trajectory: nothing to analyse')
    host = np.flatnonzero(np.isin(symbols, list(framework)))
    warnings = []
    if host.size == 0:
        warnings.append(f'no framework atoms ({", ".join(framework)}): displacements are not drift-corrected')
    lags = choose_lags(first.n_frames, first.dt_fs, start_fs, max_lag_fraction, n_lags)
    n_intervals = first.n_frames - 1
    rng = np.random.default_rng(seed)

    rel = []
    for rep in reps:
        pos = rep.positions[:, mobile] - rep.positions[:1, mobile]
        if host.size:
            m = rep.masses[host]
            com = np.einsum('tna,n->ta', rep.positions[:, host], m) / m.sum()
            pos = pos - (com - com[:1])[:, None, :]
        rel.append(pos)

    def project(arrs, dims):
        idx = [DIMENSIONS[c] for c in dims]
        return [a[:, :, idx] for a in arrs]

    def fit(arrs, dims):
        return fit_msd(
            project(arrs, dims), first.dt_fs, lags, n_intervals, dims, n_samples=n_samples, level=level, rng=rng
        )

    xy, z, iso = fit(rel, 'xy'), fit(rel, 'z'), fit(rel, 'xyz')
    coll, haven = None, None
    if collective:
        # sqrt(N) * centre-of-mass displacement: its MSD is N <dR^2>, whose slope gives D_sigma; one walker per replica
        com = [np.sqrt(mobile.size) * a.mean(axis=1, keepdims=True) for a in rel]
        coll = fit(com, 'xy')
        haven = xy.D_samples / rng.permutation(coll.D_samples)
        if len(reps) < 3:
            warnings.append('collective diffusion from fewer than 3 replicas: the Haven ratio is poorly determined')
    result = DiffusionResult(
        xy,
        z,
        iso,
        coll,
        haven,
        int(mobile.size),
        len(reps),
        float(np.mean([r.volume for r in reps])),
        first.duration_fs,
        temperature,
        warnings,
    )
    if result.z_ratio > 0.1:
        warnings.append(
            f'D_z is {result.z_ratio:.2g} of D_xy: Li moves between layers or the layers are not in xy; check the run'
        )
    hops = xy.D * 4 * first.duration_fs * 10 / 2.9**2  # D = Gamma a^2 / 4 in-plane, a ~ 2.9 A Li-Li distance
    if hops < 10:
        warnings.append(f'~{hops:.2g} Li hops per atom in the run (< 10): D is poorly determined; run longer or hotter')
    return result


def nernst_einstein(d_cm2_s, n_ions: int, volume_A3: float, temperature: float, charge: int = 1):
    """sigma = n q^2 D / (k_B T) in S/cm; with the tracer D* this assumes a Haven ratio of 1."""
    n_per_cm3 = n_ions / (volume_A3 * 1e-24)
    return n_per_cm3 * (charge * E_CHARGE) ** 2 * np.asarray(d_cm2_s) / (K_B_SI * temperature)


# ----------------------------------------------------------------------------------------------------------------
# Arrhenius
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ArrheniusResult:
    temperatures: np.ndarray
    ln_d_mean: np.ndarray
    ln_d_std: np.ndarray
    ea_samples: np.ndarray  # eV
    ln_d0_samples: np.ndarray  # ln(cm^2/s)
    chi2_reduced: float
    inflation: float
    curvature: dict
    level: float = 0.95

    def _q(self, samples):
        lo, med, hi = np.quantile(samples, [(1 - self.level) / 2, 0.5, (1 + self.level) / 2])
        return float(med), float(lo), float(hi)

    @property
    def Ea(self) -> tuple[float, float, float]:
        """(median, lower, upper) in eV."""
        return self._q(self.ea_samples)

    def extrapolate_samples(self, temperature: float) -> np.ndarray:
        return np.exp(self.ln_d0_samples - self.ea_samples / (K_B_EV * temperature))

    def extrapolate(self, temperature: float = 300.0) -> tuple[float, float, float]:
        """D(T) (median, lower, upper) in cm^2/s from the posterior samples."""
        return self._q(self.extrapolate_samples(temperature))

    def as_dict(self) -> dict:
        return {
            'temperatures_K': self.temperatures.tolist(),
            'ln_D_mean': self.ln_d_mean.tolist(),
            'ln_D_std': self.ln_d_std.tolist(),
            'Ea_eV': self.Ea,
            'D0_cm2_s': self._q(np.exp(self.ln_d0_samples)),
            'D_300K_cm2_s': self.extrapolate(300.0),
            'chi2_reduced': self.chi2_reduced,
            'uncertainty_inflation': self.inflation,
            'curvature': self.curvature,
            'level': self.level,
        }


def arrhenius_fit(
    temperatures: Sequence[float],
    d_samples: Sequence[np.ndarray],
    n_samples: int = 4000,
    level: float = 0.95,
    seed: int = 0,
) -> ArrheniusResult:
    """Fit ln D = ln D0 - Ea/(k_B T) to per-temperature posterior samples of D; posterior samples of (Ea, ln D0).

    Each temperature enters with the mean and spread of its ln D samples (weighted linear regression, flat prior:
    a Gaussian posterior). When the points scatter more than their error bars (reduced chi^2 > 1) the posterior is
    widened by sqrt(chi^2_red) (Birge ratio) and this is reported. Curvature check (mechanism change, e.g. oxygen-
    dumbbell vs tetrahedral-site hopping): a quadratic term in 1/T, flagged when it differs from 0 by > 2 sigma.
    """
    temps = np.asarray(temperatures, dtype=float)
    if temps.size < 2:
        raise DiffusionError('an Arrhenius fit needs D at >= 2 temperatures (>= 5 recommended)')
    logs = [np.log(np.asarray(s, dtype=float)[np.asarray(s) > 0]) for s in d_samples]
    mean = np.array([lg.mean() for lg in logs])
    std = np.array([max(lg.std(ddof=1), 1e-6) for lg in logs])
    x = -1.0 / (K_B_EV * temps)
    design = np.column_stack([np.ones_like(x), x])  # ln D0, Ea
    w = 1 / std
    beta, *_ = np.linalg.lstsq(design * w[:, None], mean * w, rcond=None)
    cov = np.linalg.inv((design * w[:, None]).T @ (design * w[:, None]))
    dof = temps.size - 2
    chi2 = float(np.sum(((mean - design @ beta) * w) ** 2))
    chi2_red = chi2 / dof if dof > 0 else float('nan')
    inflation = math.sqrt(chi2_red) if dof > 0 and chi2_red > 1 else 1.0
    draws = np.random.default_rng(seed).multivariate_normal(beta, cov * inflation**2, size=n_samples)
    curvature = {'checked': False, 'reason': 'needs >= 4 temperatures'}
    if temps.size >= 4:
        xs = x - x.mean()
        quad = np.column_stack([np.ones_like(xs), xs, xs**2]) * w[:, None]
        qbeta, *_ = np.linalg.lstsq(quad, mean * w, rcond=None)
        qcov = np.linalg.inv(quad.T @ quad) * inflation**2
        z = float(qbeta[2] / math.sqrt(qcov[2, 2]))
        curvature = {
            'checked': True,
            'quadratic_coefficient': float(qbeta[2]),
            'z_score': z,
            'curved': abs(z) > 2,
            'note': 'curvature in ln D vs 1/T hints at a change of mechanism (ODH vs TSH) or of the model domain',
        }
    return ArrheniusResult(temps, mean, std, draws[:, 1], draws[:, 0], chi2_red, inflation, curvature, level)


# ----------------------------------------------------------------------------------------------------------------
# Synthetic trajectories with a known answer (tests, benchmarks)
# ----------------------------------------------------------------------------------------------------------------


def synthetic_hopping_trajectory(
    n_li: int = 64,
    n_frames: int = 400,
    hop_rate_per_fs: float = 2e-3,
    dt_fs: float = 10.0,
    hop_length: float = 2.87,
    n_host: int = 16,
    vibration: float = 0.0,
    drift_per_frame: Sequence[float] = (0.0, 0.0, 0.0),
    seed: int = 0,
):
    """Li hopping on a triangular lattice in xy (6 directions, Poisson hops, rate ``hop_rate_per_fs`` per Li) among
    fixed O atoms, optionally with white positional noise and a rigid drift of everything.

    The exact answer is D_xy = Gamma a^2 / 4 and D_iso = Gamma a^2 / 6 (returned in ``info['D_xy_cm2_s']`` of the first
    frame only for the caller's checks; the analysis never reads it).
    """
    from ase import Atoms

    rng = np.random.default_rng(seed)
    angles = np.arange(6) * np.pi / 3
    vectors = hop_length * np.column_stack([np.cos(angles), np.sin(angles), np.zeros(6)])
    hops = rng.poisson(hop_rate_per_fs * dt_fs, size=(n_frames - 1, n_li))
    steps = np.zeros((n_frames - 1, n_li, 3))
    for count in range(1, int(hops.max(initial=0)) + 1):
        mask = hops >= count
        steps[mask] += vectors[rng.integers(0, 6, size=int(mask.sum()))]
    box = 4 * hop_length * max(4, math.ceil(math.sqrt(n_li)))
    start_li = rng.uniform(0, box, size=(n_li, 3)) * [1, 1, 0] + [0, 0, 0.25 * box]
    start_o = rng.uniform(0, box, size=(n_host, 3))
    li = start_li + np.concatenate([np.zeros((1, n_li, 3)), np.cumsum(steps, axis=0)])
    host = np.broadcast_to(start_o, (n_frames, n_host, 3)).copy()
    drift = np.arange(n_frames)[:, None] * np.asarray(drift_per_frame, dtype=float)
    li = li + drift[:, None, :] + vibration * rng.standard_normal(li.shape)
    host = host + drift[:, None, :] + vibration * rng.standard_normal(host.shape)
    frames = []
    d_xy = hop_rate_per_fs * hop_length**2 / 4 * A2_PER_FS_TO_CM2_PER_S
    for i in range(n_frames):
        pos = np.concatenate([li[i], host[i]])
        atoms = Atoms(['Li'] * n_li + ['O'] * n_host, positions=pos, cell=[box, box, box], pbc=True)
        atoms.arrays['unwrapped'] = pos.copy()
        atoms.set_positions(pos, apply_constraint=False)
        atoms.wrap()
        atoms.info['time_fs'] = i * dt_fs
        if i == 0:
            atoms.info['D_xy_cm2_s'] = d_xy
        frames.append(atoms)
    return frames

"""One small interface per DFT code, so ``nmcml.label`` has no per-engine branches.

Why: the labelling path used to resolve the same settings several times (the pseudopotential family was loaded 2+N
times per run) and split on the engine at five places in ``workflows/label.py``. Now the settings are parsed once
into a :class:`DftSettings` value, one adapter is built from it, and the work chain only calls the interface:

* :meth:`DftAdapter.check` refuses a structure the code cannot label (missing pseudopotentials or POTCARs);
* :meth:`DftAdapter.builder` gives the builder of the code's restart work chain for one structure; that work chain
  carries the code's sanity handler (the Hubbard U really applied, :mod:`aiida_nmcml.dft.qe` / ``.vasp``);
* :meth:`DftAdapter.fingerprint` gives the per-frame settings that make labels comparable;
* :meth:`DftAdapter.frame_outputs` names the child's outputs the frame calcfunction reads, and :meth:`DftAdapter.frame`
  turns them into one labelled frame (inside :func:`aiida_nmcml.dft.frames.collect_labelled_frames`).

A third code (or QE's ``neb.x``) plugs in by adding a module with an adapter and one line in :data:`ADAPTERS`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import ClassVar

from .common import ENGINES, LabelInputError

#: engine name -> ``module:class`` of its adapter (imported when needed: aiida-vasp is optional at run time)
ADAPTERS: dict[str, str] = {'qe': 'aiida_nmcml.dft.qe:QeAdapter', 'vasp': 'aiida_nmcml.dft.vasp:VaspAdapter'}
assert set(ADAPTERS) == set(ENGINES)


@dataclasses.dataclass(frozen=True)
class DftSettings:
    """The resolved label settings of one engine (the ``settings`` input of ``nmcml.label``), parsed once.

    :param engine: ``qe`` or ``vasp``.
    :param hubbard_u: U (eV) per element; ``{}`` is plain DFT.
    :param magmoms: default initial moment (µB) per element (a structure's own moments win).
    :param section: the engine's own section of the protocol (``qe`` or ``vasp`` in ``label.yaml``).
    :param allow_nonmagnetic_start: accept frames whose starting moments are all zero.
    """

    engine: str
    hubbard_u: dict
    magmoms: dict
    section: dict
    allow_nonmagnetic_start: bool = False

    @classmethod
    def from_dict(cls, settings: dict, engine: str) -> DftSettings:
        """From the resolved settings dict (``get_builder_from_protocol``); a missing engine section is refused."""
        if engine not in ENGINES:
            raise LabelInputError(f'unknown engine {engine!r}: choose one of {", ".join(ENGINES)}.')
        if engine not in settings:
            raise LabelInputError(
                f'settings hold no {engine!r} section: build the inputs with get_builder_from_protocol.'
            )
        return cls(
            engine=engine,
            hubbard_u={k: float(v) for k, v in (settings.get('hubbard_u') or {}).items()},
            magmoms={k: float(v) for k, v in (settings.get('magmoms') or {}).items()},
            section=dict(settings[engine]),
            allow_nonmagnetic_start=bool(settings.get('allow_nonmagnetic_start', False)),
        )


class DftAdapter:
    """The interface ``nmcml.label`` uses; one subclass per DFT code."""

    #: the engine name (``label.yaml`` section and ``engine`` input)
    engine: ClassVar[str] = ''
    #: the calcjob plugin the ``code`` must run
    plugin: ClassVar[str] = ''

    def __init__(self, settings: DftSettings):
        self.settings = settings

    def check(self, key: str, structure) -> None:
        """Raise :class:`LabelInputError` when ``structure`` cannot be labelled with these settings."""
        raise NotImplementedError

    def check_code(self, code) -> str | None:
        """A message when ``code`` runs another plugin than this engine needs, else ``None``."""
        if code.default_calc_job_plugin not in (None, self.plugin):
            return (
                f'code {code.full_label!r} runs {code.default_calc_job_plugin!r}, but engine {self.engine!r} needs '
                f'{self.plugin!r}.'
            )
        return None

    def builder(self, code, structure):
        """The builder of the code's restart work chain (with the sanity handler) for one structure."""
        raise NotImplementedError

    def fingerprint(self) -> dict:
        """The per-frame DFT settings (``settings_fingerprint``), with ``engine`` among them."""
        raise NotImplementedError

    @staticmethod
    def frame_outputs(child) -> dict:
        """``name -> node`` of the finished child that :meth:`frame` needs (inputs of the frame calcfunction)."""
        raise NotImplementedError

    @staticmethod
    def frame(structure, **outputs):
        """One labelled frame (ASE Atoms with REF_* keys) from the structure and :meth:`frame_outputs`."""
        raise NotImplementedError


def adapter_class(engine: str) -> type[DftAdapter]:
    if engine not in ADAPTERS:
        raise LabelInputError(f'unknown engine {engine!r}: choose one of {", ".join(ADAPTERS)}.')
    module, name = ADAPTERS[engine].split(':')
    return getattr(importlib.import_module(module), name)


def get_adapter(settings: dict | DftSettings, engine: str | None = None) -> DftAdapter:
    """The adapter of ``engine`` built once from the resolved settings (a dict or :class:`DftSettings`)."""
    if not isinstance(settings, DftSettings):
        settings = DftSettings.from_dict(settings, engine)
    return adapter_class(settings.engine)(settings)

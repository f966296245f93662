"""``nmcml.model``: a MACE model file as a node, identified by its sha256.

MACE ``.model`` files are Python pickles: unpickling one runs arbitrary code. The sha256 is therefore not bookkeeping
but the safety check of the whole plugin — every place that loads a model (the engine, fine-tuning, the user's
``load_model``) first checks that the bytes are the bytes provenance says they are, and refuses otherwise.

Metadata (elements, r_max, dtype, heads, architecture) is read once, when the node is created, so that work chains can
check e.g. that a foundation model covers the elements of a dataset without unpickling anything later.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pathlib
import shutil

from aiida import orm
from aiida.common.exceptions import ValidationError

from aiida_nmcml.engine.common import sha256sum

# User-facing names of foundation models -> mace-torch's keys in ``mace.calculators.foundations_models.mace_mp_urls``.
FOUNDATION_MODELS: dict[str, str] = {
    'mace-mp-0-small': 'small',
    'mace-mp-0-medium': 'medium',
    'mace-mp-0-large': 'large',
    'mace-mp-0b3-medium': 'medium-0b3',
    'mace-mpa-0-medium': 'medium-mpa-0',
    'mace-omat-0-small': 'small-omat-0',
    'mace-omat-0-medium': 'medium-omat-0',
    'mace-matpes-pbe-0': 'mace-matpes-pbe-0',
    'mace-matpes-r2scan-0': 'mace-matpes-r2scan-0',
}


class ModelHashMismatch(ValueError):
    """The bytes of a model file differ from the sha256 recorded on its node: never unpickle them."""


class FoundationModelUnavailable(FileNotFoundError):
    """A named foundation model is neither cached nor downloadable (typically an air-gapped cluster)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """The same digest the engine checks on the compute node (one implementation, so they cannot drift)."""
    return sha256sum(path)


class CompiledModelError(ValueError):
    """A compiled (TorchScript) MACE model was given where the plain ``.model`` file is needed."""


def is_torchscript(data: bytes) -> bool:
    """True for a TorchScript archive (``torch.jit.save``, e.g. mace's ``*_compiled.model``), without loading it.

    Both formats are zip files; only TorchScript has ``code/`` (the compiled Python) and ``constants.pkl``.
    """
    import zipfile

    if not zipfile.is_zipfile(io.BytesIO(data)):
        return False
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    return any('/code/' in name or name.endswith('/constants.pkl') for name in names)


def read_model_metadata(data: bytes) -> dict:
    """Unpickle a model from ``data`` (already hashed by the caller) and return what the node records about it.

    Only call this on bytes whose sha256 has been computed and will be stored with them: then whatever was loaded is
    exactly what provenance identifies. A compiled (TorchScript) model is refused before anything is loaded: torch
    would hand it to ``torch.jit.load`` and fail deep inside with a bare ``NotImplementedError``.
    """
    if is_torchscript(data):
        raise CompiledModelError(
            'this is a compiled (TorchScript) MACE model, e.g. the `compiled_model` output of nmcml.mace.train '
            '(*_compiled.model): MaceModel holds the plain .model file (the `model` output), which the engine, '
            'fine-tuning and load_model need. Use the compiled file directly, e.g. '
            "MACECalculator(model_paths=path, model_type='MACE') outside this plugin."
        )
    import mace  # noqa: F401  (registers the classes the pickle refers to)
    import torch

    from aiida_nmcml.engine.model_metadata import metadata_from_model

    try:
        model = torch.load(io.BytesIO(data), map_location='cpu', weights_only=False)
    except Exception as exc:
        raise ValueError(f'not a MACE model file ({type(exc).__name__}: {exc})') from exc
    return metadata_from_model(model)


METADATA_KEYS = ('elements', 'atomic_numbers', 'e0s', 'r_max', 'dtype', 'heads', 'architecture')


class MaceModel(orm.SinglefileData):
    """A MACE ``.model`` file with its sha256 and metadata.

    ``source`` says where the file came from: ``'file'`` (a path the user gave), ``'foundation:<name>'`` (a named
    foundation model), ``'training'`` (output of an ``nmcml.mace.train`` job; the link in the graph says which).
    """

    @classmethod
    def from_file(cls, path: str | os.PathLike, source: str = 'file', filename: str | None = None) -> MaceModel:
        """Create an (unstored) node from a model file on this machine.

        The file came from the user, who vouches for it: it is hashed first and then unpickled *from the same bytes*
        to read its metadata, so the recorded sha256 identifies exactly what was inspected. Later loads are checked
        against that hash (:meth:`copy_to`, :meth:`load_model`, the engine's ``make_calculator``).
        """
        path = pathlib.Path(path).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f'model file {path} does not exist')
        return cls.from_bytes(path.read_bytes(), filename=filename or path.name, source=source)

    @classmethod
    def from_bytes(cls, data: bytes, filename: str, source: str = 'file', metadata: dict | None = None) -> MaceModel:
        """Like :meth:`from_file` for bytes in memory (e.g. a model in a calculation's ``retrieved`` folder).

        Hash first, then unpickle the very same bytes: whoever hands them over vouches for their origin. With
        ``metadata`` (the ``model_metadata.json`` the training job wrote, :mod:`aiida_nmcml.engine.model_metadata`)
        nothing is unpickled: its recorded sha256 must be the hash of ``data``.
        """
        sha256 = sha256_bytes(data)
        if metadata is not None:
            if metadata.get('sha256') != sha256:
                raise ModelHashMismatch(
                    f'the model metadata describes sha256 {metadata.get("sha256")}, the file has {sha256}'
                )
            missing = [key for key in METADATA_KEYS if key not in metadata]
            if missing:
                raise ValueError(f'the model metadata lacks {missing}')
            metadata = {key: metadata[key] for key in METADATA_KEYS}
        else:
            metadata = read_model_metadata(data)
        node = cls(io.BytesIO(data), filename=filename)
        node.base.attributes.set('sha256', sha256)
        node.base.attributes.set('source', str(source))
        node.base.attributes.set('size', len(data))
        for key, value in metadata.items():
            node.base.attributes.set(key, value)
        return node

    @classmethod
    def find_by_hash(cls, sha256: str) -> MaceModel | None:
        """A stored model with these exact bytes, if any (the oldest, so repeated look-ups agree)."""
        qb = orm.QueryBuilder()
        qb.append(cls, filters={'attributes.sha256': sha256}, tag='m')
        qb.order_by({'m': {'ctime': 'asc'}})
        qb.limit(1)
        found = qb.first(flat=True)
        return found

    @classmethod
    def get_or_create(cls, path: str | os.PathLike, source: str = 'file', store: bool = True) -> MaceModel:
        """Return the stored node holding the same bytes as ``path`` or create (and store) a new one.

        Deduplication matters because foundation models are hundreds of MB and every campaign starts from one.
        The hash is computed before anything is unpickled; an existing node is returned without unpickling at all.
        """
        existing = cls.find_by_hash(sha256_file(path))
        if existing is not None:
            return existing
        node = cls.from_file(path, source=source)
        return node.store() if store else node

    # --- attributes -------------------------------------------------------------------------------------------------
    @property
    def sha256(self) -> str:
        return self.base.attributes.get('sha256')

    @property
    def elements(self) -> list[str]:
        return list(self.base.attributes.get('elements', []))

    @property
    def r_max(self) -> float:
        return self.base.attributes.get('r_max')

    @property
    def dtype(self) -> str:
        return self.base.attributes.get('dtype')

    @property
    def heads(self) -> list[str]:
        return list(self.base.attributes.get('heads', ['Default']))

    @property
    def e0s(self) -> dict | None:
        """``{symbol: eV}`` of the head fine-tuned from (None for nodes made before this was recorded)."""
        value = self.base.attributes.get('e0s', None)
        return dict(value) if value is not None else None

    @property
    def architecture(self) -> dict:
        return dict(self.base.attributes.get('architecture', {}))

    @property
    def source(self) -> str:
        return self.base.attributes.get('source')

    def missing_elements(self, elements) -> list[str]:
        """Elements of ``elements`` the model has no embedding for (fine-tuning would fail on them)."""
        known = set(self.elements)
        return sorted({str(e) for e in elements} - known)

    # --- safe access ------------------------------------------------------------------------------------------------
    def verified_bytes(self) -> bytes:
        """The file content, after checking it against the recorded sha256 (the one place that check lives)."""
        with self.open(mode='rb') as handle:
            data = handle.read()
        actual = sha256_bytes(data)
        if actual != self.sha256:
            raise ModelHashMismatch(
                f'MaceModel<{self.pk}> content has sha256 {actual}, node records {self.sha256}: refusing to use it'
            )
        return data

    def verify(self) -> None:
        """Raise :class:`ModelHashMismatch` if the repository content differs from the recorded sha256."""
        self.verified_bytes()

    def copy_to(self, path: str | os.PathLike) -> pathlib.Path:
        """Write the model file to ``path`` (a file, or a directory to put ``filename`` in) and check its hash."""
        path = pathlib.Path(path)
        if path.is_dir():
            path = path / self.filename
        with self.open(mode='rb') as source, open(path, 'wb') as target:
            shutil.copyfileobj(source, target)
        actual = sha256_file(path)
        if actual != self.sha256:
            path.unlink(missing_ok=True)
            raise ModelHashMismatch(
                f'copy of MaceModel<{self.pk}> to {path} has sha256 {actual}, node records {self.sha256}: removed it'
            )
        return path

    @contextlib.contextmanager
    def calculator(self, device: str = 'cpu', dtype: str = 'float64'):
        """A MACECalculator over this model, for the ``with`` block: the file is copied to a temporary folder and its
        hash checked (:meth:`copy_to`); the folder is removed on leaving the block."""
        import tempfile

        from aiida_nmcml.engine.common import mace_calculator

        with tempfile.TemporaryDirectory() as tmp:
            yield mace_calculator(self.copy_to(tmp), device=device, dtype=dtype)

    def load_model(self, device: str = 'cpu'):
        """Unpickle the torch module, after checking the bytes against the recorded hash."""
        import mace  # noqa: F401
        import torch

        return torch.load(io.BytesIO(self.verified_bytes()), map_location=device, weights_only=False)

    def _validate(self):
        super()._validate()
        sha256 = self.base.attributes.get('sha256', None)
        if not sha256:
            raise ValidationError('MaceModel has no sha256: create it with MaceModel.from_file')
        try:
            self.verified_bytes()
        except ModelHashMismatch as exc:
            raise ValidationError(str(exc)) from exc
        return True


def foundation_model_cache_path(name: str) -> pathlib.Path:
    """Where mace-torch caches the named model (``$XDG_CACHE_HOME/mace`` or ``~/.cache/mace``)."""
    from mace.calculators.foundations_models import mace_mp_urls
    from mace.tools.utils import get_cache_dir

    url = mace_mp_urls[FOUNDATION_MODELS[name]]
    basename = ''.join(c for c in os.path.basename(url) if c.isalnum() or c == '_')
    return pathlib.Path(get_cache_dir()) / basename


def resolve_foundation_model(name_or_path: str | os.PathLike, store: bool = True) -> MaceModel:
    """A foundation model as a (deduplicated, stored) node, from a known name or a local file.

    A file path always works offline (air-gapped clusters: copy the file there). A name is looked up in mace-torch's
    cache and downloaded when missing; offline with nothing cached, the error names the file to copy and where to.
    """
    text = str(name_or_path)
    if text in FOUNDATION_MODELS:
        cached = foundation_model_cache_path(text)
        if not cached.is_file():
            from mace.calculators.foundations_models import download_mace_mp_checkpoint, mace_mp_urls

            url = mace_mp_urls[FOUNDATION_MODELS[text]]
            try:
                downloaded = pathlib.Path(download_mace_mp_checkpoint(FOUNDATION_MODELS[text]))
            except Exception as exc:  # URLError, socket timeouts, HTTP errors: all mean "not available here"
                raise FoundationModelUnavailable(
                    f'foundation model {text!r} is not cached at {cached} and could not be downloaded '
                    f'({type(exc).__name__}: {exc}). On a machine with internet download {url} and copy it to '
                    f'{cached}, or pass the path of the .model file instead of the name.'
                ) from exc
            cached = downloaded
        try:
            return MaceModel.get_or_create(cached, source=f'foundation:{text}', store=store)
        except ValueError as exc:  # an interrupted download leaves a truncated file under the final name
            raise FoundationModelUnavailable(
                f'the cached file {cached} for {text!r} cannot be read ({exc}); it may be a partial download: '
                'delete it and try again'
            ) from exc
    path = pathlib.Path(text).expanduser()
    if path.is_file():
        return MaceModel.get_or_create(path.resolve(), source='file', store=store)
    raise FoundationModelUnavailable(
        f'{text!r} is neither a known foundation model ({", ".join(sorted(FOUNDATION_MODELS))}) nor an existing file'
    )

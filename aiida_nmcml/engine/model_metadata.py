"""What a MACE ``.model`` file is (elements, r_max, dtype, heads, E0s), read where the model was made.

Why: a ``.model`` file is a pickle, and unpickling runs arbitrary code. The training job writes this summary next to
the model (``python model_metadata.py nmcml.model model_metadata.json``, in the job's own environment, which has
torch and mace since it just trained), so the daemon's parser stores the model node from the JSON without ever
unpickling a file produced on a remote machine. The JSON records the sha256 of the bytes it describes; the parser
checks it against the retrieved file.

Self-contained on purpose (standard library, numpy, torch, mace, ase): the calcjob copies this very file into the
job's folder, so the compute node needs nothing of aiida-nmcml. :func:`metadata_from_model` is also what
:class:`aiida_nmcml.data.model.MaceModel` records for a file the user gives (one implementation).
"""

from __future__ import annotations

import hashlib
import json
import sys

FILENAME = 'model_metadata.json'
SCRIPT_FILENAME = 'model_metadata.py'


def model_e0s(model, head: str | None = None) -> dict[str, float]:
    """The E0s of a loaded MACE model, as ``{symbol: eV}``, for ``head`` (default: mace's choice, the first head
    that is not ``pt_head``, which is what ``mace_run_train`` fine-tunes from)."""
    from ase.data import chemical_symbols

    energies = model.atomic_energies_fn.atomic_energies.detach().cpu().numpy()
    heads = [str(h) for h in getattr(model, 'heads', None) or ['Default']]
    if energies.ndim > 1:
        energies = energies.reshape(-1, energies.shape[-1])
        if head is None:
            head = next((h for h in heads if h != 'pt_head'), heads[0])
        index = heads.index(head) if head in heads and energies.shape[0] == len(heads) else 0
        energies = energies[index]
    numbers = [int(z) for z in model.atomic_numbers]
    return {chemical_symbols[z]: float(energies[i]) for i, z in enumerate(numbers)}


def metadata_from_model(model) -> dict:
    """Elements, atomic numbers, E0s, r_max, dtype, heads and architecture of a loaded MACE model."""
    from ase.data import chemical_symbols

    if not hasattr(model, 'atomic_numbers') or not hasattr(model, 'r_max'):
        raise ValueError(f'the file holds a {type(model).__name__}, not a MACE model (no atomic_numbers / r_max)')
    numbers = [int(z) for z in model.atomic_numbers]
    try:
        dtype = str(next(model.parameters()).dtype).replace('torch.', '')
    except StopIteration:
        dtype = 'unknown'
    heads = [str(h) for h in getattr(model, 'heads', None) or ['Default']]
    architecture = {'class': type(model).__name__}
    value = getattr(model, 'num_interactions', None)
    if value is not None:
        architecture['num_interactions'] = int(value)
    try:
        architecture['hidden_irreps'] = str(model.products[0].linear.irreps_out)
    except (AttributeError, IndexError, TypeError):
        pass
    try:  # the E0s of the head mace_run_train fine-tunes from (checked against the `e0s` input of a training)
        e0s = model_e0s(model)
    except (AttributeError, ValueError, IndexError):
        e0s = None
    return {
        'elements': [chemical_symbols[z] for z in numbers],
        'atomic_numbers': numbers,
        'e0s': e0s,
        'r_max': float(model.r_max),
        'dtype': dtype,
        'heads': heads,
        'architecture': architecture,
    }


def write_metadata(model_path: str, target: str = FILENAME) -> dict:
    """Hash the file, unpickle the same bytes, write ``{'sha256': ..., **metadata}`` to ``target``."""
    import io

    import mace  # noqa: F401  (registers the classes the pickle refers to)
    import torch

    with open(model_path, 'rb') as handle:
        data = handle.read()
    model = torch.load(io.BytesIO(data), map_location='cpu', weights_only=False)
    summary = {'sha256': hashlib.sha256(data).hexdigest(), **metadata_from_model(model)}
    with open(target, 'w') as handle:
        json.dump(summary, handle, indent=1, sort_keys=True)
    return summary


if __name__ == '__main__':  # on the compute node, after mace_run_train
    write_metadata(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else FILENAME)

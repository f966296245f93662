"""A small campaign for the report and export tests: real engine outputs parsed by the real parsers, real calcfunctions.

What is real: the committee (two tiny MACE models trained on toy frames, ``aiida_nmcml.testing.toymodel``, and a
member made by ``prepare_member_model``), ``nmcml.evaluate`` run by the engine on labelled toy frames, three
``nmcml.ga`` searches (x = 0, 0.5, 1; pair fitness) and ``convex_hull`` over them, an ``nmcml.neb`` of an
oxygen-dumbbell hop with the committee, and ``analyse_trajectories`` / ``arrhenius`` on synthetic Li-hopping
trajectories with a known D (MD that diffuses is too expensive for a test; the diffusion analysis is the real one).
Each engine job runs in a scratch folder exactly as in its CalcJob and is turned into a CalcJobNode by
``tests/factories.make_calc_job_node(parse=True)``, i.e. the real parser attaches the outputs.

What is mock: the campaign WorkChainNode that calls the jobs (the ``nmcml.campaign`` work chain is built elsewhere)
and four pw.x CalcJobNodes with exit status 0 and no outputs, which stand for DFT calls in the counts and the learning
curve. Labels are toy (pair potential), not DFT. The calcfunctions run on their own (only a running work chain can
call one), so the campaign node does not reach them: the group hierarchy does, as it does for stages run by hand.
"""

from __future__ import annotations

import io
import json
import math
import os
import pathlib
import tempfile

import pytest

CAMPAIGN = 'report-test'


def engine_files(subcommand: str, config: dict, setup) -> dict[str, bytes]:
    """Run one engine job in a scratch folder (as its CalcJob would) and return every file it left, by name."""
    from aiida_nmcml.engine.cli import main

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            setup(pathlib.Path(tmp))
            pathlib.Path('input.json').write_text(json.dumps(config))
            main([subcommand, 'input.json'])
            return {p.name: p.read_bytes() for p in pathlib.Path(tmp).iterdir() if p.is_file()}
        finally:
            os.chdir(cwd)


def synthetic_trajectory(x_li: float, temperature: float, seed: int):
    """Li hopping among fixed hosts (rate from Ea = 0.3 eV), with Ni hosts so that the Li content x is known."""
    from ase import Atoms

    from aiida_nmcml.analysis import diffusion as dm

    rate = math.exp(-0.3 / (dm.K_B_EV * temperature))
    dt = 0.03 / rate
    frames = dm.synthetic_hopping_trajectory(n_li=12, n_frames=80, hop_rate_per_fs=rate, dt_fs=dt, seed=seed)
    n_tm = round(12 / x_li)
    hosts = Atoms(['Ni'] * n_tm, positions=[[1.0 + i, 2.0, 3.0] for i in range(n_tm)])
    out = []
    for atoms in frames:
        atoms = atoms + hosts
        atoms.arrays['unwrapped'][-n_tm:] = hosts.positions
        out.append(atoms)
    return out, dt


def as_file(frames):
    from aiida import orm
    from ase.io import write

    handle = io.StringIO()
    write(handle, frames, format='extxyz')
    return orm.SinglefileData(io.BytesIO(handle.getvalue().encode()), filename='trajectory.extxyz')


@pytest.fixture(scope='session')
def report_campaign(aiida_profile, tiny_foundation_model, toy_frames):
    """``(campaign WorkChainNode, group label, parts)``; groups ``report-test/...`` as the campaign lays them out."""
    from aiida import orm
    from ase.io import write
    from factories import make_calc_job_node
    from plumpy import ProcessState

    from aiida_nmcml.data.model import MaceModel
    from aiida_nmcml.data.trainingset import TrainingSet
    from aiida_nmcml.testing.toymodel import cached_tiny_mace
    from aiida_nmcml.workflows.diffusion import analyse_trajectories, arrhenius
    from aiida_nmcml.workflows.finetune import prepare_member_model
    from aiida_nmcml.workflows.search import content_key, convex_hull

    try:
        computer = orm.load_computer('report-localhost')
    except Exception:
        computer = orm.Computer(
            label='report-localhost', hostname='localhost', transport_type='core.local', scheduler_type='core.direct'
        ).store()
        computer.set_workdir('/tmp')
    campaign = orm.WorkChainNode(process_type='aiida.workflows:nmcml.campaign')
    campaign.label = CAMPAIGN
    campaign.store()

    def job(entry_point, label, **kwargs):
        """A CalcJobNode called by the campaign (``label``), outputs from its real parser when ``files`` are given."""
        node = make_calc_job_node(entry_point, computer, caller=campaign, call_link_label=label, **kwargs)
        node.label = label
        node.seal()  # as the engine does when a process ends (an archive takes only sealed processes)
        return node

    dataset = TrainingSet.from_frames(toy_frames).store()
    held_out = TrainingSet.from_frames(toy_frames[:10]).store()
    m1 = MaceModel.from_file(tiny_foundation_model, source='test:seed1').store()
    m2 = MaceModel.from_file(cached_tiny_mace(seed=2), source='test:seed2').store()
    member = prepare_member_model(m1, orm.Int(3), orm.Dict({'readout_init': 'perturb', 'readout_scale': 0.5}))
    committees = {0: {'member_0': m1, 'member_1': m2}, 1: {'member_0': member, 'member_1': m2}}

    evaluations = []
    for iteration, models in committees.items():
        for k in range(2):
            job('quantumespresso.pw', f'iter_{iteration:02d}_pw_{k}', exit_status=0)

        def setup(tmp, models=models):
            held_out.write_extxyz(tmp / 'frames.xyz')
            for key, model in models.items():
                model.copy_to(tmp / f'{key}.model')

        config = {
            'frames': 'frames.xyz',
            'models': [{'path': f'{k}.model', 'sha256': m.sha256} for k, m in models.items()],
            'device': 'cpu',
            'n_bins': 4,
        }
        files = engine_files('evaluate', config, setup)
        label = f'iter_{iteration:02d}_evaluate'
        inputs = {'frames': held_out, 'models': models}
        evaluations.append(job('nmcml.evaluate', label, files=files, inputs=inputs, parse=True))

    lattice = {'supercell': [2, 2, 1], 'composition': {'Ni': 0.5, 'Mn': 0.25, 'Co': 0.25}, 'seed': 1}
    ga_nodes = {}
    for x_li in (0.0, 0.5, 1.0):
        spec = {**lattice, 'x_li': x_li}

        def setup(tmp, spec=spec):
            from aiida_nmcml.calculations.ga import build_lattice_atoms

            write(tmp / 'lattice.extxyz', build_lattice_atoms(spec))

        config = {'lattice': 'lattice.extxyz', 'fitness': 'pair', 'generations': 2, 'top_k': 2, 'seed': 0}
        files = engine_files('ga', config, setup)
        label = f'ga_{content_key(x_li)}'
        ga_nodes[content_key(x_li)] = job(
            'nmcml.ga', label, files=files, inputs={'lattice': orm.Dict(spec)}, parse=True
        )
    hull = convex_hull(**{key: node.outputs.output_parameters for key, node in ga_nodes.items()})

    from aiida_nmcml.hops import build_hop, hexagonal_supercell

    hop = build_hop('odh', supercell=hexagonal_supercell(2, 2, 1), seed=0)

    def setup_neb(tmp):
        write(tmp / 'initial.extxyz', hop.initial)
        write(tmp / 'final.extxyz', hop.final)
        for key, model in committees[0].items():
            model.copy_to(tmp / f'{key}.model')

    config = {
        'initial': 'initial.extxyz',
        'final': 'final.extxyz',
        'models': [{'path': f'{k}.model', 'sha256': m.sha256} for k, m in committees[0].items()],
        'device': 'cpu',
        'n_images': 3,
        'max_steps': 2,
        'endpoint_max_steps': 2,
    }
    neb = job('nmcml.neb', 'barrier_odh', files=engine_files('neb', config, setup_neb), parse=True)

    fits, points = {}, {}
    for x_li in (0.5, 1.0):
        samples = {}
        for i, temperature in enumerate((700.0, 1000.0)):
            trajectories = {}
            for r in range(1):
                frames, dt = synthetic_trajectory(x_li, temperature, seed=100 * i + r + int(10 * x_li))
                trajectories[f'r{r}'] = as_file(frames)
            parameters = {'start_fs': 5 * dt, 'n_lags': 15, 'temperature_K': temperature, 'n_samples': 300}
            out = analyse_trajectories(parameters=orm.Dict(parameters), **trajectories)
            samples[f't{int(temperature)}'] = out['samples']
            points[(x_li, temperature)] = out
        fits[x_li] = arrhenius(**samples)

    campaign.set_process_state(ProcessState.FINISHED)
    campaign.set_exit_status(0)
    campaign.seal()
    layout = {
        '': [campaign],
        'labels': [dataset, held_out],
        'committee': [m1, m2, member],
        'active_learning/iter_00': [evaluations[0].outputs.metrics],
        'active_learning/iter_01': [evaluations[1].outputs.metrics, member],
        'search': [hull, *(n.outputs.output_parameters for n in ga_nodes.values())],
        'diffusion': [*(f['result'] for f in fits.values()), *(p['result'] for p in points.values())],
        'barriers': [neb.outputs.output_parameters],
    }
    for suffix, nodes in layout.items():
        group, _ = orm.Group.collection.get_or_create(f'{CAMPAIGN}/{suffix}'.rstrip('/'))
        group.add_nodes(nodes)
    parts = {
        'dataset': dataset,
        'held_out': held_out,
        'models': [m1, m2, member],
        'evaluations': evaluations,
        'ga': ga_nodes,
        'hull': hull,
        'neb': neb,
        'fits': fits,
    }
    return campaign, CAMPAIGN, parts


@pytest.fixture(scope='session')
def built_report(report_campaign, tmp_path_factory):
    """The report of the test campaign, built once from its group."""
    from aiida_nmcml.report import build_report

    folder = tmp_path_factory.mktemp('report')
    return build_report(report_campaign[1], folder)

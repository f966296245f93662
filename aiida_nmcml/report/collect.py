"""What a campaign produced, gathered from its WorkChainNode or its group hierarchy, by process type and link label.

Why by process type and not by the campaign's own outline: the report must work for whatever stages ran (a campaign
that skipped the search, stages run by hand and put in a group, a campaign killed half-way), and for stage work
chains added later. So the collector finds every process of the campaign's graph and the report sections pick the
ones they know (``nmcml.evaluate`` for parity, ``nmcml.ga`` for convergence, the ``arrhenius`` calcfunction, ...).

From a group ``C`` the collector takes ``C`` and every group ``C/...``, walks from each member to the top-most process
that created or called it (a stage's outputs lead to the stage, a campaign's stage to the campaign), and then down
through every process those called. From a process node it starts at that node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiida import orm
from aiida.common.links import LinkType

# Process types of the stages the report knows. Work chains and calcjobs by entry point; calcfunctions by name.
WORKFLOWS = {
    'campaign': 'aiida.workflows:nmcml.campaign',
    'label': 'aiida.workflows:nmcml.label',
    'finetune': 'aiida.workflows:nmcml.finetune',
    'search': 'aiida.workflows:nmcml.search',
    'active_learning': 'aiida.workflows:nmcml.active_learning',
    'diffusion': 'aiida.workflows:nmcml.diffusion',
    'barrier': 'aiida.workflows:nmcml.barrier',
}
CALCJOBS = {
    'evaluate': 'aiida.calculations:nmcml.evaluate',
    'ga': 'aiida.calculations:nmcml.ga',
    'md': 'aiida.calculations:nmcml.md',
    'neb': 'aiida.calculations:nmcml.neb',
    'train': 'aiida.calculations:nmcml.mace.train',
}
CALCFUNCTIONS = ('analyse_trajectories', 'arrhenius', 'convex_hull', 'summarize_search')
DFT_CALCJOBS = {'aiida.calculations:quantumespresso.pw': 'qe', 'aiida.calculations:vasp.vasp': 'vasp'}
OUT_LINKS = (LinkType.CREATE, LinkType.RETURN)
IN_LINKS = (LinkType.INPUT_CALC, LinkType.INPUT_WORK)
ITERATION = re.compile(r'iter(?:ation)?_?(\d+)', re.IGNORECASE)


@dataclass
class Campaign:
    """The processes and groups of one campaign (or of whatever the report was asked about)."""

    title: str
    target: orm.Node | orm.Group
    groups: list[orm.Group] = field(default_factory=list)
    processes: list[orm.ProcessNode] = field(default_factory=list)  # sorted by creation time
    loose_data: list[orm.Data] = field(default_factory=list)  # group members no process created (given inputs)
    _links: dict | None = None

    def links(self) -> dict:
        """All links of the campaign's processes, read in three queries (not one per attribute access): ``outputs``
        and ``inputs`` ({pk: {label: node}}), ``caller`` ({pk: (caller pk, call link label)})."""
        if self._links is None:
            pks = [p.pk for p in self.processes]
            outputs: dict[int, dict] = {pk: {} for pk in pks}
            inputs: dict[int, dict] = {pk: {} for pk in pks}
            caller: dict[int, tuple] = {}
            for start in range(0, len(pks), 500):
                chunk = pks[start : start + 500]
                query = orm.QueryBuilder().append(orm.ProcessNode, filters={'id': {'in': chunk}}, project='id', tag='p')
                query.append(orm.Data, with_incoming='p', edge_project='label', project='*')
                for pk, *pair in query.all():
                    label, node = pair if isinstance(pair[0], str) else pair[::-1]
                    outputs[pk][label] = node
                query = orm.QueryBuilder().append(orm.ProcessNode, filters={'id': {'in': chunk}}, project='id', tag='p')
                query.append(orm.Data, with_outgoing='p', edge_project='label', project='*')
                for pk, *pair in query.all():
                    label, node = pair if isinstance(pair[0], str) else pair[::-1]
                    inputs[pk][label] = node
                query = orm.QueryBuilder().append(orm.ProcessNode, filters={'id': {'in': chunk}}, project='id', tag='p')
                query.append(orm.ProcessNode, with_outgoing='p', edge_project='label', project='id')
                for pk, *pair in query.all():  # the edge projection may come before or after the vertex's
                    label, parent = pair if isinstance(pair[0], str) else pair[::-1]
                    caller[pk] = (parent, label)
            self._links = {'outputs': outputs, 'inputs': inputs, 'caller': caller}
        return self._links

    def outs(self, process) -> dict:
        """Output nodes of a process by link label (namespaces flattened with ``__``)."""
        found = self.links()['outputs'].get(process.pk)
        if found is None:  # a process outside the campaign (e.g. the training behind a given model)
            found = {e.link_label: e.node for e in process.base.links.get_outgoing(link_type=OUT_LINKS).all()}
        return found

    def ins(self, process) -> dict:
        """Input nodes of a process by link label."""
        found = self.links()['inputs'].get(process.pk)
        if found is None:
            found = {e.link_label: e.node for e in process.base.links.get_incoming(link_type=IN_LINKS).all()}
        return found

    def returned_label(self, node) -> str:
        """The link label under which a work chain of the campaign returned ``node`` (e.g. ``arrhenius__x0_5000``)."""
        for process in self.processes:
            if isinstance(process, orm.WorkflowNode):
                for label, output in self.outs(process).items():
                    if output.pk == node.pk:
                        return label
        return ''

    def of(self, kind: str) -> list[orm.ProcessNode]:
        """Processes of one kind: a key of WORKFLOWS / CALCJOBS, or a calcfunction name."""
        process_type = WORKFLOWS.get(kind) or CALCJOBS.get(kind)
        if process_type is not None:
            return [p for p in self.processes if p.process_type == process_type]
        return [p for p in self.processes if p.process_label == kind and isinstance(p, orm.CalcFunctionNode)]

    def dft_calculations(self) -> list[orm.CalcJobNode]:
        return [p for p in self.processes if p.process_type in DFT_CALCJOBS]

    def data_nodes(self) -> list[orm.Data]:
        """Every data node created by or given to the campaign's processes (and the group members), unique."""
        seen: dict[int, orm.Data] = {n.pk: n for n in self.loose_data}
        for process in self.processes:
            for node in (*self.outs(process).values(), *self.ins(process).values()):
                seen.setdefault(node.pk, node)
        return list(seen.values())

    def call_path(self, process) -> list[str]:
        """Call link labels from the top-most caller of the campaign down to ``process``."""
        labels, pk = [], process.pk
        callers = self.links()['caller']
        while pk in callers:
            pk, label = callers[pk]
            labels.append(label)
        return labels[::-1]

    def iteration_of(self, process) -> int | None:
        """Active-learning iteration of a process, from its callers' link labels or labels (``iter_NN``)."""
        for label in reversed(self.call_path(process)):
            if match := ITERATION.search(label):
                return int(match.group(1))
        if process.label and (match := ITERATION.search(process.label)):
            return int(match.group(1))
        return None

    def describe(self, process) -> str:
        """A short human name: the last call link labels and the pk."""
        path = [p for p in self.call_path(process) if p != 'CALL']
        name = ' / '.join(path[-3:]) if path else (process.label or process.process_label or 'process')
        return f'{name} <{process.pk}>'

    def callers(self, process) -> list[orm.ProcessNode]:
        """The processes that called ``process``, nearest first."""
        by_pk = {p.pk: p for p in self.processes}
        found, pk = [], process.pk
        callers = self.links()['caller']
        while pk in callers:
            pk = callers[pk][0]
            if pk in by_pk:
                found.append(by_pk[pk])
        return found


def load_target(identifier) -> orm.Node | orm.Group:
    """A node or group from itself, a pk/uuid, or a group label (groups first: a campaign is named by its group)."""
    if isinstance(identifier, orm.Node | orm.Group):
        return identifier
    text = str(identifier)
    try:
        return orm.load_group(label=text)
    except Exception:  # not a group label: try a node identifier
        pass
    return orm.load_node(text)


def top_process(node: orm.ProcessNode) -> orm.ProcessNode:
    while node.caller is not None:
        node = node.caller
    return node


def subgroups(group: orm.Group) -> list[orm.Group]:
    """``group`` and every group whose label starts with ``<label>/`` (the campaign's hierarchy)."""
    query = orm.QueryBuilder().append(orm.Group, filters={'label': {'like': f'{escape_like(group.label)}/%'}})
    return [group, *sorted((g for (g,) in query.all()), key=lambda g: g.label)]


def escape_like(text: str) -> str:
    return text.replace('\\', '\\\\').replace('%', '\\%').replace('_', '\\_')


def collect(target) -> Campaign:
    """All processes of the campaign ``target`` (a process node, a group, or an identifier of either)."""
    target = load_target(target)
    roots: dict[int, orm.ProcessNode] = {}
    loose: list[orm.Data] = []
    if isinstance(target, orm.Group):
        groups = subgroups(target)
        for group in groups:
            for node in group.nodes:
                for origin in origins(node):
                    roots.setdefault(origin.pk, origin)
                if isinstance(node, orm.Data) and not origins(node):
                    loose.append(node)
        title = target.label
    else:
        if not isinstance(target, orm.ProcessNode):
            raise TypeError(f'{target} is neither a process node nor a group: give the campaign or its group')
        roots[target.pk] = target
        groups = groups_of(target)
        title = target.label or f'{target.process_label}<{target.pk}>'
    processes: dict[int, orm.ProcessNode] = {}
    for root in roots.values():
        processes[root.pk] = root
        for child in root.called_descendants:
            processes.setdefault(child.pk, child)
    ordered = sorted(processes.values(), key=lambda p: (p.ctime, p.pk))
    return Campaign(title=title, target=target, groups=groups, processes=ordered, loose_data=loose)


def origins(node: orm.Node) -> list[orm.ProcessNode]:
    """The top-most processes behind a group member: itself, or whatever created or returned it."""
    if isinstance(node, orm.ProcessNode):
        return [top_process(node)]
    found = {}
    incoming = node.base.links.get_incoming(link_type=(LinkType.CREATE, LinkType.RETURN)).all()
    for entry in incoming:
        top = top_process(entry.node)
        found[top.pk] = top
    return list(found.values())


def groups_of(process: orm.ProcessNode) -> list[orm.Group]:
    """The campaign's group hierarchy: the group named by the campaign (its ``name`` input, or ``name`` /
    ``group_label`` in its extras), groups holding the process (with their ``label/...`` subgroups), and groups holding
    any of its direct outputs."""
    groups: dict[int, orm.Group] = {}
    extras = process.base.extras.all if process.is_stored else {}
    names = [extras.get('group_label'), (extras.get('nmcml_campaign') or {}).get('name')]
    name_input = process.base.links.get_incoming(link_label_filter='name').first()
    if name_input is not None and isinstance(name_input.node, orm.Str):
        names.append(name_input.node.value)
    for label in filter(None, names):
        try:
            for group in subgroups(orm.load_group(label=label)):
                groups[group.pk] = group
        except Exception:  # no such group (deleted, or not made yet): report without it
            pass
    query = orm.QueryBuilder().append(orm.Node, filters={'id': process.pk}, tag='node')
    query.append(orm.Group, with_node='node', project='*')
    for (group,) in query.all():
        for member in subgroups(group):
            groups.setdefault(member.pk, member)
    pks = [e.node.pk for e in process.base.links.get_outgoing().all()]
    if pks:
        query = orm.QueryBuilder().append(orm.Node, filters={'id': {'in': pks}}, tag='node')
        query.append(orm.Group, with_node='node', project='*')
        for (group,) in query.all():
            groups.setdefault(group.pk, group)
    return sorted(groups.values(), key=lambda g: g.label)

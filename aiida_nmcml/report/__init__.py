"""The campaign report (static HTML with matplotlib figures) and the FAIR export of a campaign.

``build_report(node_or_group, folder)`` and ``export_campaign(node_or_group, folder)`` accept the campaign's
WorkChainNode, a stage's process node or the campaign group (with its ``label/...`` subgroups).
"""

from .export import export_campaign
from .html import build_report

__all__ = ('build_report', 'export_campaign')

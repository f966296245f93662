"""Pure-Python pieces shared by every layer (engine, calcjobs, parsers, work chains).

Nothing in this package imports AiiDA at module import time, so the compute-node engine may use it too.
"""

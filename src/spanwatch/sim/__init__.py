"""A trace simulator with labelled fault injection, for tests, the demo and the benchmarks."""

from ._simulator import DEFAULT_START_NS, NS, Fault, Label, Noise, Simulator
from ._topology import TOPOLOGIES, Call, Dependency, Entry, Operation, Topology, chain, fanout, shop

__all__ = [
    "DEFAULT_START_NS",
    "NS",
    "TOPOLOGIES",
    "Call",
    "Dependency",
    "Entry",
    "Fault",
    "Label",
    "Noise",
    "Operation",
    "Simulator",
    "Topology",
    "chain",
    "fanout",
    "shop",
]

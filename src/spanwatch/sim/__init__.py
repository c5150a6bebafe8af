"""A trace simulator with labelled fault injection, for tests, the demo and the benchmarks."""

from ._simulator import DEFAULT_START_NS, NS, Fault, Label, Noise, Simulator
from ._topology import Call, Dependency, Entry, Operation, Topology, shop

__all__ = [
    "DEFAULT_START_NS",
    "NS",
    "Call",
    "Dependency",
    "Entry",
    "Fault",
    "Label",
    "Noise",
    "Operation",
    "Simulator",
    "Topology",
    "shop",
]

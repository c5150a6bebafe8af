"""Coverage-guided fuzzing of the OTLP decoders with atheris (libFuzzer), where it installs.

The property is the tests': a body decodes or is refused as malformed; anything else is a crash
that atheris reports with the input. Not part of CI (atheris builds against libFuzzer).

Usage: pip install atheris && python benchmarks/atheris_decoders.py -runs=200000
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from spanwatch.otlp import MalformedPayload, decode_protobuf, decode_request, parse_json


def one_input(data: bytes) -> None:
    if not data:
        return
    as_json, body = data[0] & 1, data[1:]
    try:
        if as_json:
            decode_request(parse_json(body))
        else:
            decode_protobuf(body)
    except MalformedPayload:
        return


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()

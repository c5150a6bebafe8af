"""Coverage-guided fuzzing of the OTLP decoders with atheris (libFuzzer).

Two properties, for any input: a body decodes or is refused as malformed (MalformedPayload),
never anything else; and the C fast path (``_wire``) gives exactly what the protobuf path
gives, or leaves the body to it. ``make sanitize`` runs this, against an ASan+UBSan build of the
C path, from the committed corpus in ``benchmarks/corpus/decoders`` for a fixed time; a crash, a
sanitizer report or a differing answer stops it with the input saved.

The first byte picks the decoder (odd: OTLP/JSON, even: protobuf); the rest is the body.

Usage: python benchmarks/atheris_decoders.py [WORK_CORPUS] benchmarks/corpus/decoders
    -max_total_time=60
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from spanwatch.otlp import MalformedPayload, decode_protobuf, decode_request, parse_json
    from spanwatch.otlp._decode import NATIVE


@atheris.instrument_func
def _outcome(body: bytes, native: bool) -> object:
    try:
        result = decode_protobuf(body, native=native)
    except MalformedPayload as exc:
        return ("malformed", str(exc))
    return (result.batch.columns(), result.refused, result.reason)


@atheris.instrument_func
def one_input(data: bytes) -> None:
    if not data:
        return
    as_json, body = data[0] & 1, data[1:]
    if as_json:
        try:
            decode_request(parse_json(body))
        except MalformedPayload:
            return
        return
    reference = _outcome(body, native=False)
    if NATIVE:
        fast = _outcome(body, native=True)
        if fast != reference:
            raise AssertionError(
                f"the C fast path differs from protobuf: {fast!r} != {reference!r}"
            )


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()

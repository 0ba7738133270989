"""Corpus-based fuzzing, fast enough for every run (the long campaign: scripts/fuzz_campaign.py).

The corpus is one real stream made here with the tiny model plus streams built from scratch
with lying headers (svcodec.container.mutate). Every mutated or generated input must end in
the codec's own error (SvcError: one `svc: error:` line naming the file) or decode; never in
another exception. Seeds are fixed: a failure here is reproducible from its seed and index.
"""

import random

import pytest
from click.testing import CliRunner

from conftest import stereo_frames
from svcodec.cli.main import main
from svcodec.codec.api import encode_frames, iter_decode
from svcodec.container import SvcReader
from svcodec.container.mutate import Mutator, crafted_stream, generated
from svcodec.errors import SvcError

pytestmark = pytest.mark.usefixtures("one_thread")

PARSER_INPUTS = 3000
DECODES = 60
CLI_RUNS = 8


@pytest.fixture(scope="module")
def seed_stream(tmp_path_factory, tiny_codec):
    path = tmp_path_factory.mktemp("seed") / "seed.svc"
    lefts, rights = stereo_frames(3, 48, 64, seed=5)
    encode_frames(lefts, rights, path, gop=2, codec=tiny_codec)
    return path.read_bytes()


def parse_everything(path):
    reader = SvcReader(path)
    for _, units in reader:
        for au in units:
            au.to_dict()
    reader.to_dict()


def outcome(fn, path) -> str:
    """'ok' or the SvcError class name; any other exception fails the test with its input."""
    try:
        fn(path)
    except SvcError as e:
        assert str(e).strip() and "\n" not in str(e).strip(), repr(e)
        return type(e).__name__
    return "ok"


def test_parser_never_fails_with_another_exception(tmp_path, seed_stream):
    mutator, gen = Mutator(seed_stream, seed=1), random.Random(2)
    path = tmp_path / "m.svc"
    seen = {}
    for i in range(PARSER_INPUTS):
        op, data = ("generated", generated(gen)) if i % 5 == 4 else mutator.next()
        path.write_bytes(data)
        try:
            result = outcome(parse_everything, path)
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"input {i} ({op}): {type(e).__name__}: {e}")
        seen[op, result] = seen.get((op, result), 0) + 1
    # The mutator really reaches past the CRCs: field checks reject CRC-repaired lies, and some
    # repaired payload damage parses (it is for the decoder to catch).
    assert seen.get(("field_fixed", "BitstreamError"), 0) > 50
    assert seen.get(("payload_fixed", "ok"), 0) > 20
    assert sum(n for (op, r), n in seen.items() if r == "BitstreamError") > PARSER_INPUTS // 2


def test_decoder_never_fails_with_another_exception(tmp_path, seed_stream, tiny_codec):
    """Full decodes of CRC-repaired payload damage and header lies: the range decoder and the
    reconstruction checksum must turn every one into BitstreamError (or an exact decode)."""
    mutator = Mutator(seed_stream, seed=3)
    path = tmp_path / "m.svc"
    results = {}
    for i in range(DECODES):
        op = "payload_fixed" if i % 2 else mutator.rng.choice(("field_fixed", "resize_fixed", "bytes_fixed"))
        data = getattr(mutator, "_" + op)()
        path.write_bytes(data)
        try:
            result = outcome(lambda p: [None for _ in iter_decode(p, codec=tiny_codec)], path)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"decode {i} ({op}): {type(e).__name__}: {e}")
        results[result] = results.get(result, 0) + 1
    assert results.get("BitstreamError", 0) >= DECODES // 2, results


def test_cli_reports_hostile_streams_in_one_line(tmp_path, seed_stream, tiny_weights, tiny_codec):
    """The issue's crafted files (valid CRCs, the right model id so that decoding would start)
    and CRC-repaired payload damage, through `svc info` and `svc decode`."""
    mutator = Mutator(seed_stream, seed=4)
    mid = dict(model_id=tiny_codec.model_id, model_name="tiny")
    inputs = [crafted_stream(65535, 65535, slices=4, **mid), crafted_stream(1024, 1024, **mid),
              crafted_stream(64, 48, claimed_frames=0xFFFFFFFF, **mid)]
    inputs += [mutator._payload_fixed() for _ in range(CLI_RUNS - len(inputs))]
    for i, data in enumerate(inputs):
        path = tmp_path / f"h{i}.svc"
        path.write_bytes(data)
        for args in (["info", path], ["decode", path, "-o", tmp_path / "out", "--weights", tiny_weights, "-q"]):
            res = CliRunner().invoke(main, [str(a) for a in args], env={"SVC_DEBUG": None})
            lines = res.stderr.strip().splitlines()
            if res.exit_code == 0:
                if args[0] == "info":  # the container of crafted file 1 is sound; its payload is not
                    assert i >= 1, "the crafted header was accepted"
                    continue
                assert i >= 3, "a crafted stream was decoded"
                (tmp_path / "out.left.mkv").unlink()
                (tmp_path / "out.right.mkv").unlink()
                continue
            assert res.exit_code == 1, (i, args[0], res.exit_code, res.stderr)
            assert len(lines) == 1 and lines[0].startswith(f"svc: error: {path}"), (i, args[0], res.stderr)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"h{k}.svc" for k in range(i + 1))

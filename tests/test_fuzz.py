"""Property-based fuzzing (hypothesis) of everything that reads user input: the IDX reader, the
config loader, the model-archive check and the command-line parser. Each must either succeed or raise the project's own
``UserError`` (one line for the CLI); any other exception is a bug that would show a traceback.

Every test counts the inputs it tried and checks the count, so a run cannot pass on a handful.
"""

import contextlib
import gzip
import io
import json
import math
import os
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import idx_bytes
from mnist_vae import archive, data
from mnist_vae.cli import build_parser, config_from_args
from mnist_vae.config import Config
from mnist_vae.errors import UserError

# Inputs per test and CI run: 1,500 for each of the seven tests (see docs/bad-input.md).
EXAMPLES = 1500
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _tried_enough(seen):
    print(f"{len(seen)} inputs tried")  # shown with pytest -s
    assert len(seen) >= EXAMPLES * 0.9, f"only {len(seen)} inputs tried"


# --- the IDX reader -------------------------------------------------------------------------

@st.composite
def idx_like(draw):
    """Bytes that look like an IDX file: a plausible or broken header, then about the right data."""
    zero = draw(st.sampled_from([0, 0, 0, 1, 0x0800, 0xFFFF]))
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x07, 0xFF]))
    dims = draw(st.integers(0, 5))
    shape = draw(st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)), min_size=dims, max_size=dims))
    header = struct.pack(">HBB", zero, code, dims) + struct.pack(f">{dims}I", *shape)
    itemsize = data.idx.IDX_DTYPES[code].itemsize if code in data.idx.IDX_DTYPES else 1
    n = math.prod(shape) * itemsize
    body = draw(st.binary(min_size=max(0, n - 2), max_size=n + 2)) if n <= 4096 else draw(st.binary(max_size=64))
    content = header + body
    cut = draw(st.one_of(st.none(), st.integers(0, len(content))))
    return content if cut is None else content[:cut]


def _parse_or_refuse(content, **kwargs):
    try:
        array = data.parse_idx(content, **kwargs)
    except data.DataError:
        return
    assert isinstance(array, np.ndarray) and array.dtype.byteorder in "=|"


def test_idx_parser_on_arbitrary_and_idx_like_bytes():
    seen = []

    @FUZZ
    @given(st.one_of(st.binary(max_size=600), idx_like()), st.sampled_from([None, 1, 3]))
    def check(content, ndim):
        seen.append(content)
        _parse_or_refuse(content, name="fuzz", ndim=ndim)

    check()
    _tried_enough(seen)


def test_idx_file_reader_on_damaged_gzip_and_raw_files():
    seen = []
    good = gzip.compress(idx_bytes(np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256))

    @st.composite
    def damaged(draw):
        content = bytearray(draw(st.sampled_from([good, idx_bytes(np.zeros(5)), b"\x1f\x8b", b""])))
        for _ in range(draw(st.integers(0, 4))):  # flip bytes
            if content:
                i = draw(st.integers(0, len(content) - 1))
                content[i] = draw(st.integers(0, 255))
        cut = draw(st.integers(0, len(content)))
        return bytes(content[:cut]) + draw(st.binary(max_size=8))

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t10k-images-idx3-ubyte.gz"

        @FUZZ
        @given(st.one_of(damaged(), st.binary(max_size=300)), st.sampled_from([None, 100, 10_000]),
               st.sampled_from([None, "0" * 64]))
        def check(content, max_bytes, sha256):
            seen.append(content)
            path.write_bytes(content)
            try:
                array = data.read_idx(path, ndim=3, sha256=sha256, max_bytes=max_bytes)
            except data.DataError:
                return
            assert array.ndim == 3

        check()
    _tried_enough(seen)


# --- the config loader ----------------------------------------------------------------------

FIELDS = [name for name in Config.__dataclass_fields__]
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-10, 100), st.integers(2**31, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["mnist", "fashion_mnist", "seed", "keras_io", "conv", "resnet", "resnet_ar", "dynamic", "none", "cosine",
                     "float32", "mixed_bfloat16", "auto"]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                 st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                           max_leaves=6)
config_dicts = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)), json_values, max_size=6)


def test_config_from_arbitrary_json_values():
    seen = []

    @FUZZ
    @given(config_dicts)
    def check(values):
        seen.append(values)
        try:
            config = Config.from_dict(values)
        except UserError:
            return
        assert config.validate() is config

    check()
    _tried_enough(seen)


def test_config_files_of_arbitrary_bytes_and_json():
    seen = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.json"

        @FUZZ
        @given(st.one_of(
            st.binary(max_size=200),
            config_dicts.map(lambda d: json.dumps(d).encode()),
            st.tuples(config_dicts, st.integers(0, 60)).map(lambda t: json.dumps(t[0]).encode()[:t[1]]),
            st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
        ))
        def check(content):
            seen.append(content)
            path.write_bytes(content)
            try:
                config = Config.load(path)
            except UserError as e:
                assert "\n" not in str(e) and len(str(e)) < 1000, str(e)
                return
            assert isinstance(config, Config)

        check()
    _tried_enough(seen)


def _object_text(pairs):
    """A JSON object written from (key, value) pairs as they are: a key may come twice."""
    return "{" + ", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in pairs) + "}"


def test_config_files_with_repeated_keys_are_refused_whatever_the_values():
    seen = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.json"

        @FUZZ
        @given(st.lists(st.tuples(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)), json_values), max_size=6))
        def check(pairs):
            seen.append(pairs)
            path.write_text(_object_text(pairs))
            keys = [key for key, _ in pairs]
            repeated = [key for key in keys if keys.count(key) > 1]
            try:
                Config.load(path)
            except UserError as e:
                assert "\n" not in str(e), str(e)
                if repeated:
                    assert "is given twice" in str(e), (pairs, str(e))
                return
            assert not repeated, pairs

        check()
    _tried_enough(seen)


# --- the model-archive check ----------------------------------------------------------------

ENTRY_NAMES = st.one_of(st.sampled_from([*archive.JSON_ENTRIES, *archive.WEIGHT_ENTRIES]),
                        st.sampled_from(["../config.json", "/etc/passwd", "assets/x", "config.json/", ""]),
                        st.text(max_size=12))
ENTRY_SIZES = st.one_of(st.integers(0, 64), st.sampled_from([archive.MAX_JSON_BYTES + 1, archive.MAX_WEIGHT_BYTES + 1,
                                                              archive.MAX_JSON_BYTES, 2**40]))


def _declared_zip(entries):
    """A zip archive whose central directory declares ``entries`` (name, uncompressed size); the
    data stored is a few bytes, as a bomb's would be before it inflates."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as zf:
        warnings.simplefilter("ignore", UserWarning)  # zipfile's note on a repeated name: wanted here
        for name, _ in entries:
            zf.writestr(zipfile.ZipInfo(name or "_"), b"{}")
        for info, (_, size) in zip(zf.infolist(), entries):
            info.file_size = size  # written with the central directory on close
    return buffer.getvalue()


def test_the_model_archive_check_on_generated_archives_and_bytes():
    seen = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"

        @FUZZ
        @given(st.one_of(st.lists(st.tuples(ENTRY_NAMES, ENTRY_SIZES), max_size=archive.MAX_ENTRIES + 3)
                         .map(lambda entries: (entries, _declared_zip(entries))),
                         st.binary(max_size=300).map(lambda raw: (None, raw))))
        def check(case):
            entries, raw = case
            seen.append(raw)
            path.write_bytes(raw)
            try:
                archive.check_model_archive(path)
            except UserError as e:
                assert "\n" not in str(e) and len(str(e)) < 600, str(e)
                return
            # Accepted: within every bound.
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
            names = [i.filename for i in infos]
            assert len(infos) <= archive.MAX_ENTRIES and "config.json" in names and len(set(names)) == len(names)
            for info in infos:
                limit = archive.MAX_JSON_BYTES if info.filename in archive.JSON_ENTRIES else archive.MAX_WEIGHT_BYTES
                assert info.filename in (*archive.JSON_ENTRIES, *archive.WEIGHT_ENTRIES) and info.file_size <= limit

        check()
    _tried_enough(seen)


# --- the command-line parser ----------------------------------------------------------------

def _flags():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # the subcommands' own parsers
    return sorted({flag for sub in commands.values() for action in sub._actions for flag in action.option_strings
                   if flag not in ("-h", "--help")})


TOKENS = st.one_of(
    st.sampled_from(_flags()),
    st.sampled_from(["train", "plot", "evaluate", "0", "1", "-1", "2", "64", "4294967296", "1e-3", "nan", "inf",
                     "mnist", "cifar", "resnet_ar", "dynamic", "", "--", "-", "/", "/dev/null", "/nonexistent"]),
    st.integers(-10**30, 10**30).map(str),
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)
    .filter(lambda t: not t.startswith("--he") and t not in ("-h", "--h")),
)


def test_cli_parser_and_config_mapping_on_arbitrary_command_lines():
    seen = []
    home = tempfile.mkdtemp()  # relative paths resolve here: nothing the fuzzer names exists

    @FUZZ
    @given(st.one_of(
        st.lists(TOKENS, max_size=8),
        st.tuples(st.just("train"), st.lists(TOKENS, max_size=8)).map(lambda t: [t[0], *t[1]]),
    ))
    def check(argv):
        seen.append(argv)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                args = build_parser().parse_args(argv)
                if args.command == "train":
                    config = config_from_args(args)
                    assert config.validate() is config
        except UserError:
            pass  # main prints it as one line, control characters escaped (test_config tests that)

    cwd = os.getcwd()
    os.chdir(home)
    try:
        check()
    finally:
        os.chdir(cwd)
        os.rmdir(home)
    _tried_enough(seen)

"""Hostile or careless config files and overrides: each is one short ``ConfigError`` (or one line
and exit 2 from the CLI) naming the file, never an expansion, a huge echo or a silent surprise."""

import resource
import time
from pathlib import Path

import pytest

from vfmkd_ray import run_files
from vfmkd_ray.cli import main
from vfmkd_ray.config import CONFIGS_DIR, ConfigError, load_config, parse_override, validate_config
from vfmkd_ray.config_checks import config_warnings
from vfmkd_ray.config_yaml import MAX_BYTES, MAX_NODES

DEMO = (CONFIGS_DIR / "demo.yaml").read_text()


def anchor_bomb(levels: int) -> str:
    """'Billion laughs': each level an anchored list of 9 aliases to the one before; ``seed`` gets
    the last, 9**levels strings once expanded (a valid key, so the old loader validated it)."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{n}: &l{n} [{','.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels)]
    return "\n".join(lines) + f"\nseed: *l{levels - 1}\n"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_an_anchor_bomb_is_refused_at_once_in_bounded_memory(tmp_path: Path):
    path = write(tmp_path, "bomb.yaml", anchor_bomb(9))  # 9**9 = 387M strings expanded
    assert path.stat().st_size < 500
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert time.perf_counter() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_kb < 50_000  # KB
    message = str(err.value)
    assert len(message) < 300 and str(path) in message and f"over {MAX_NODES} values" in message


def test_an_alias_to_itself_is_refused(tmp_path: Path):
    with pytest.raises(
        ConfigError, match=r"loop.yaml: the value anchored at line 1 holds an alias to itself"
    ):
        load_config(write(tmp_path, "loop.yaml", "seed: &a [1, *a]\n"))


def test_one_long_string_repeated_by_aliases_is_refused(tmp_path: Path):
    # Few nodes, but 20 x 500 KB of characters once expanded (and echoed in a bad-value error).
    text = f"long: &s {'x' * 500_000}\nseed: [{', '.join(['*s'] * 20)}]\n"
    with pytest.raises(ConfigError, match=r"strings.yaml holds over \d+ characters"):
        load_config(write(tmp_path, "strings.yaml", text))


def test_a_too_large_config_file_is_refused_before_it_is_parsed(tmp_path: Path):
    # Not YAML at all: a refusal about the size shows nothing was parsed.
    path = write(tmp_path, "big.yaml", DEMO + "[" * (2 * MAX_BYTES))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert f"{path} is {path.stat().st_size} bytes, over the {MAX_BYTES} bytes" in message
    assert len(message) < 300


@pytest.mark.parametrize(
    ("tail", "key", "first", "second"),
    [
        ("train:\n  epochs: 1\n", "'train'", 26, 33),  # a whole section given twice
        ("seed: 1\n", "'seed'", 4, 33),
        ("tracking:\n  uri: a\n  uri: b\n", "'uri'", 34, 35),  # inside a section
    ],
)
def test_a_duplicate_key_names_the_key_and_both_lines(tmp_path: Path, tail: str, key: str, first, second):
    assert DEMO.count("\n") == 32
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "twice.yaml", DEMO + tail))
    assert str(err.value) == (
        f"{tmp_path / 'twice.yaml'}: key {key} is given twice in one mapping, at line {first} and line "
        f"{second}: remove one"
    )


def test_merge_keys_keep_their_meaning(tmp_path: Path):
    text = DEMO.replace(
        "    feature_mse: {type: feature_mse, weight: 1.0, student_stride: 16}\n",
        "    feature_mse: &base {type: feature_mse, weight: 0.7, student_stride: 16}\n"
        "    fine:\n      <<: *base\n      student_stride: 8\n",  # explicit beats merged: no duplicate
    )
    cfg = load_config(write(tmp_path, "merged.yaml", text))
    fine = cfg.distill.terms["fine"]
    assert (fine.type, fine.weight, fine.student_stride) == ("feature_mse", 0.7, 8)
    assert cfg.distill.terms["feature_mse"].student_stride == 16


@pytest.mark.parametrize(
    "override",
    [
        "train.lr=.inf",
        "train.lr=.nan",
        "tune.space={train.lr: {kind: uniform, low: 0.001, high: .inf}}",
        "distill.terms.fgd={type: fgd, alpha: -.inf}",
    ],
)
def test_infinity_and_nan_are_refused_for_every_float(override: str):
    with pytest.raises(ConfigError, match=r"Input should be a finite number \(got -?(inf|nan)\)"):
        load_config(None, [override])


def test_a_huge_value_is_echoed_truncated():
    with pytest.raises(ConfigError) as err:
        validate_config({**load_config(None).model_dump(), "name": "x y" * 1_666_667})
    message = str(err.value)
    assert len(message) < 500 and "'name'" in message and "... (5000001 characters))" in message
    with pytest.raises(ConfigError) as err:
        parse_override("y" * 5_000_000)  # no '='
    assert len(str(err.value)) < 300 and "... (5000000 characters)" in str(err.value)


def test_a_huge_key_and_many_problems_are_echoed_short():
    with pytest.raises(ConfigError) as err:
        validate_config({"train": {"k" * 1_000_000: 1}, "transfer": {"label_fractions": ["x"] * 5000}})
    message = str(err.value)
    assert (
        len(message) < 12_000
        and "(1000006 characters)" in message
        and "... and 4981 more problems" in message
    )


def test_a_config_that_is_not_utf8_names_the_file_and_the_offset(tmp_path: Path):
    path = write(tmp_path, "latin1.yaml", DEMO.replace("name: demo", "name: d\xe9mo").encode("latin-1"))
    offset = DEMO.index("name: demo") + len("name: d")
    with pytest.raises(
        ConfigError, match=rf"latin1.yaml is not UTF-8 text: byte 0xe9 at byte offset {offset}"
    ):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("train: [1, 2\n", "while parsing a flow sequence; at line 1, column 8; did not find expected"),
        ("seed: !!python/object/apply:os.getcwd []\n", "could not determine a constructor for the tag"),
    ],
)
def test_a_file_that_is_not_yaml_or_not_safe_is_one_line_naming_it(tmp_path: Path, text: str, problem: str):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "broken.yaml", text))
    assert str(err.value).startswith(f"{tmp_path / 'broken.yaml'} is not valid YAML: ")
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_a_weight_of_zero_is_a_warning_naming_the_head_or_term():
    cfg = load_config(None, ["distill.terms.edge.weight=0", "heads.seg={type: sam_mask, weight: 0}"])
    lines = config_warnings(cfg)
    assert any(
        line.startswith("heads.seg.weight is 0: its loss is computed and logged but trains") for line in lines
    )
    assert any(line.startswith("distill.terms.edge.weight is 0: its loss is") for line in lines)
    feeding = load_config(
        None, ["distill.terms.feature_mse.weight=0", "heads.seg={type: sam_mask, features: feature_mse}"]
    )
    assert any("(its adapter trains only through heads.seg)" in line for line in config_warnings(feeding))
    assert not config_warnings(load_config(None))


def test_override_values_are_read_by_the_same_bounded_loader():
    bomb = "[" + ", ".join(f"&l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)) + "]"
    with pytest.raises(ConfigError, match=rf"override seed holds over {MAX_NODES} values"):
        parse_override("seed=[&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1], " + bomb[1:])
    with pytest.raises(
        ConfigError, match=r"override train: key 'lr' is given twice in one mapping, at line 1"
    ):
        parse_override("train={lr: 0.1, lr: 0.2}")
    # Not YAML (nor a Python tag the safe loader refuses): the text itself, as before.
    assert parse_override("data.root=a: b: c") == ("data.root", "a: b: c")
    assert (
        parse_override("name=!!python/object/apply:os.getcwd []")[1] == "!!python/object/apply:os.getcwd []"
    )


def test_a_run_config_read_back_from_storage_is_bounded(tmp_path: Path):
    (tmp_path / run_files.RESOLVED_CONFIG).write_text(anchor_bomb(9))
    start = time.perf_counter()
    with pytest.raises(run_files.RunFileError, match=rf"resolved_config.yaml holds over {MAX_NODES} values"):
        run_files.find_run_config(str(tmp_path / "best_model.pth"))
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bomb.yaml", anchor_bomb(8), "bomb.yaml holds over"),
        ("latin1.yaml", DEMO.replace("demo", "d\xe9mo").encode("latin-1"), "latin1.yaml is not UTF-8 text"),
        ("big.yaml", DEMO + "train.epochz: 1\n#" + "x" * MAX_BYTES, "big.yaml is "),
        ("long.yaml", DEMO.replace("name: demo", f"name: '{'x y' * 300_000}'"), "(900000 characters))"),
    ],
)
def test_the_cli_says_one_short_line(tmp_path: Path, capsys, name: str, content, expected: str):
    assert main(["train", str(write(tmp_path, name, content))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vfmkd train: error: ") and expected in err
    # One line; a bad value is the usual two: "invalid config:" and the problem.
    assert len(err) < 600 and err.count("\n") == (2 if name == "long.yaml" else 1) and "Traceback" not in err


def test_a_run_name_is_a_directory_name_of_bounded_length():
    """A long name of allowed characters used to validate and fail later as a directory name."""
    with pytest.raises(ConfigError, match="String should have at most 200 characters"):
        load_config(None, ["name=" + "a" * 201])

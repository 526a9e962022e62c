import re
import subprocess
import sys

import pytest
from conftest import REPO, repo_params, with_overrides, write_params
from ruamel.yaml import YAML

from hotdog.core.declared import UndeclaredParam
from hotdog.core.overrides import apply_overrides
from hotdog.core.params import ParamsError, load_params, parse_params, read_params
from hotdog.data.sizes import eval_resize


def has(raw: dict, dotted: str) -> bool:
    """Whether plain params data holds a dotted key ("train.epochs"), as DVC looks it up."""
    for key in dotted.split("."):
        if not isinstance(raw, dict) or key not in raw:
            return False
        raw = raw[key]
    return True


def test_the_repo_params_validate_and_hold_every_key_dvc_yaml_names():
    # params.yaml's values may change; what must hold is that it validates, that each stage
    # can load the params it declares (and DVC finds them in the file), and that every ${...}
    # that dvc.yaml substitutes is in it.
    read_params(REPO / "params.yaml")
    raw, dvc = repo_params(), (REPO / "dvc.yaml").read_text()
    stages = YAML(typ="safe").load(dvc)["stages"]
    for name, stage in stages.items():
        load_params(*stage.get("params", []), path=REPO / "params.yaml")
        for key in stage.get("params", []):
            assert has(raw, key), f"{name} declares {key}"
    substituted = re.findall(r"\$\{([^}]+)\}", dvc)
    assert substituted
    for key in substituted:
        assert has(raw, key), key


def test_the_eval_resize_is_the_seeds_256_for_224_scaled():
    # d2l's test transform: Resize([256, 256]), then CenterCrop(224).
    assert eval_resize(224) == 256 and eval_resize(32) == 37  # 36.57 rounds up


@pytest.mark.parametrize(
    "change, words",
    [
        ({"train.batch_size": "128"}, ["train.batch_size", "integer", "'128'"]),
        ({"train.bach_size": 1}, ["unknown key", "train.bach_size"]),
        ({"train.device": "gpu"}, ["train.device", "'gpu'"]),
        ({"finetune.pretrained": "yes"}, ["finetune.pretrained", "boolean"]),
        ({"data.sha1": "abc"}, ["data.sha1", "40 hex digits"]),
        ({"weights.sha256": "f37072"}, ["weights.sha256", "8 to 64 hex digits"]),
        ({"scratch.lr": -1.0}, ["scratch.lr", "greater than 0"]),
        ({"manifest.max_reject_fraction": 2}, ["manifest.max_reject_fraction"]),
        ({"scratch.head_init": "imagenet-hotdog"}, ["key 'scratch': head_init imagenet-hotdog", "pretrained to true"]),
        ({"finetune.freeze_body": "yes"}, ["finetune.freeze_body", "boolean"]),
    ],
)
def test_bad_value_names_the_key(change, words):
    with pytest.raises(ParamsError) as err:
        parse_params(with_overrides(repo_params(), change))
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("rename, words", [
    # A misspelt key leaves its real one missing: one problem, named by the misspelling.
    (("train", "epochs", "epoch"), "params.yaml: unknown key 'train.epoch'; did you mean 'train.epochs'? rename it"),
    ((None, "train", "trian"), "params.yaml: unknown key 'trian'; did you mean 'train'? rename it"),
    (("train", "epochs", "zzz"), "params.yaml: unknown key 'train.zzz'; remove it or correct its spelling "
                                 "(1 more problem(s) after this one)"),
])
def test_a_misspelt_key_is_named_before_the_key_it_leaves_missing(rename, words):
    raw = repo_params()
    section, old, new = rename
    where = raw if section is None else raw[section]
    where[new] = where.pop(old)
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert str(err.value) == words


@pytest.mark.parametrize("change, fix", [
    ({"train.epochs": "5"}, "write it without quotes"),
    ({"finetune.lr": "1e-3"}, "write it without quotes"),
    ({"finetune.pretrained": "true"}, "write it without quotes"),
    ({"train.epochs": "five"}, "correct it"),  # no number in quotes: the quotes are not the problem
    ({"finetune.lr": "fast"}, "correct it"),
])
def test_a_quoted_number_or_boolean_is_told_to_lose_its_quotes(change, fix):
    with pytest.raises(ParamsError) as err:
        parse_params(with_overrides(repo_params(), change))
    assert str(err.value).endswith(f"; {fix}")


def test_a_duplicate_key_is_named(tmp_path):
    text = (REPO / "params.yaml").read_text()
    doubled = text.replace("\n  epochs:", "\n  epochs: 3\n  epochs:", 1)
    assert doubled != text
    (tmp_path / "params.yaml").write_text(doubled)
    line = doubled[:doubled.index("  epochs: 3")].count("\n") + 2
    with pytest.raises(ParamsError, match=rf": line {line} is not valid YAML \(found duplicate key \"epochs\" "
                                          r"with value .*\); fix the syntax$"):
        read_params(tmp_path / "params.yaml")


def test_a_hyphenated_key_is_named_as_it_is_written():
    # `--batch-size` on the command line: `batch-size:` in the file is a likely typo.
    raw = repo_params()
    raw["train"]["batch-size"] = raw["train"].pop("batch_size")
    raw["train"]["weight-decay"] = raw["train"].pop("weight_decay")
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert str(err.value) == ("params.yaml: unknown key 'train.batch-size'; did you mean 'train.batch_size'? rename "
                              "it (1 more problem(s) after this one)")


def test_a_section_check_with_two_overrides_in_it_names_no_one_of_them(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    with pytest.raises(ParamsError) as err:
        apply_overrides({"scratch.lr": 0.001, "scratch.head_init": "imagenet-hotdog"}, path)
    assert "an override" not in str(err.value) and "key 'scratch': head_init imagenet-hotdog" in str(err.value)


def test_a_union_key_is_named_as_the_file_spells_it_and_counted_once():
    with pytest.raises(ParamsError) as err:
        parse_params(with_overrides(repo_params(), {"train.devices": 0, "train.epochs": 0}))
    assert str(err.value) == ("params.yaml: key 'train.epochs': Input should be greater than or equal to 1 (got 0); "
                              "correct it (1 more problem(s) after this one)")
    with pytest.raises(ParamsError) as err:
        parse_params(with_overrides(repo_params(), {"train.devices": 0}))
    assert str(err.value) == ("params.yaml: key 'train.devices': Input should be 'auto' or greater than or equal to "
                              "1 (got 0); correct it")  # was key 'train.devices.literal['auto']', and 2 problems


def test_missing_key_is_named():
    raw = repo_params()
    del raw["train"]["precision"]
    with pytest.raises(ParamsError, match=r"missing key 'train.precision'"):
        parse_params(raw)


def test_yaml_numbers_as_dvc_writes_them():
    # `dvc exp run -S finetune.lr=5e-5` writes 5e-05, which YAML 1.1 readers take for a string.
    p = parse_params(with_overrides(repo_params(), {"finetune.lr": 5e-05}))
    assert p.finetune.lr == 5e-05


def test_unparsable_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 0\ntrain: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        read_params(bad)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        read_params(tmp_path / "params.yaml")


def test_a_stage_reaches_only_what_it_declares(tmp_path):
    path = write_params(tmp_path / "params.yaml", {"seed": 7, "finetune.lr": 3e-4})
    p = load_params("seed", "finetune", "train.image_size", "train.device", path=path)
    assert (p.seed, p.finetune.lr, p.train.image_size, p.train.device) == (7, 3e-4, 32, "cpu")
    assert p.paths.models.name == "models" and p.runtime.num_workers == 0  # always there
    with pytest.raises(UndeclaredParam, match=r"train.batch_size is read but not declared; add it to the "
                                              r"stage's params in dvc.yaml"):
        p.train.batch_size
    with pytest.raises(UndeclaredParam, match=r"params section 'scratch' is read but not declared"):
        p.scratch
    whole = load_params("train", "train.image_size", path=path)  # a whole section wins
    assert whole.train.batch_size == 4
    with pytest.raises(UndeclaredParam, match=r"runtime: every stage gets runtime without declaring it"):
        load_params("runtime", path=path)
    with pytest.raises(UndeclaredParam, match=r"trian.epochs is not a section of params.yaml"):
        load_params("trian.epochs", path=path)
    with pytest.raises(UndeclaredParam, match=r"train.image_sise is not a key of params.yaml's train section"):
        load_params("train.image_sise", path=path)


def test_stage_exits_with_one_line(tmp_path):
    write_params(tmp_path / "params.yaml", {"train.epochs": "five"})
    run = subprocess.run([sys.executable, "-m", "stages.scratch"], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "error: scratch: params.yaml: key 'train.epochs': Input should be a valid integer "
        "(got 'five'); correct it"
    ]


def test_overrides_keep_comments_and_report_changes(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("# a comment of our own\n" + (REPO / "params.yaml").read_text())
    comments = [line.strip() for line in path.read_text().splitlines() if line.strip().startswith("#")]
    old = read_params(path)
    lr, device = old.scratch.lr * 2, "cpu" if old.train.device != "cpu" else "auto"
    changed = apply_overrides({"scratch.lr": lr, "train.epochs": old.train.epochs, "train.device": device}, path)
    assert changed == {"scratch.lr": (old.scratch.lr, lr), "train.device": (old.train.device, device)}
    text = path.read_text()
    assert all(comment in text for comment in comments)
    expected = with_overrides(old.model_dump(), {"scratch.lr": lr, "train.device": device})
    assert read_params(path).model_dump() == expected  # those two changed, and nothing else


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"scratch.lrr": 0.1}, "unknown key 'scratch.lrr'"),
        ({"train": 3}, "unknown key 'train'"),
        ({"nope.lr": 0.1}, "unknown key 'nope.lr'"),
        ({"train.epochs": "ten"}, "train.epochs='ten', an override: Input should be a valid integer"),
        ({"train.epochs": 0}, "train.epochs=0, an override: Input should be greater than or equal to 1 (got 0); "
                              "give another value ("),
        # A union fails once per member, and a list in its item: still the override named, once.
        ({"train.devices": 0}, "train.devices=0, an override: Input should be 'auto' or greater than or equal to 1 "
                               "(got 0); give another value ("),
        ({"data.classes": ["a/b", "c"]}, "data.classes=['a/b', 'c'], an override: String should match pattern"),
        ({"scratch.head_init": "imagenet-hotdog"}, "scratch.head_init='imagenet-hotdog', an override: head_init "
                                                   "imagenet-hotdog starts fc"),
    ],
)
def test_bad_overrides_change_nothing(tmp_path, overrides, words):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    before = path.read_bytes()
    with pytest.raises(ParamsError, match=re.escape(words)):
        apply_overrides(overrides, path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("pair, words", [
    ("train.epochs", "expected key=value, e.g. {flag} train.epochs=1"),
    ("=1", "expected key=value"),
    ("train.epochs=[1", "the value is not valid YAML ("),
])
def test_a_command_lines_key_value_pair_that_is_not_one_is_one_line(pair, words, capsys):
    # `hotdog experiments run -S` and `python -m flows.pipeline --set` read the same pairs: a
    # pair without `=` was the key set to null, and a value that is not YAML a traceback.
    from flows.pipeline import parse_args
    from hotdog.core.overrides import parse_pairs
    from hotdog.experiments.spec import ExperimentsError, parse_sets

    assert parse_pairs(["train.epochs=2", "data.classes=[b, a]", "data.url=a=b"], "-S") == {
        "train.epochs": 2, "data.classes": ["b", "a"], "data.url": "a=b"}
    with pytest.raises(ExperimentsError, match=rf"^-S '{re.escape(pair)}': {re.escape(words.format(flag='-S'))}"):
        parse_sets([pair])
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--set", pair])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith(f"python -m flows.pipeline: error: --set '{pair}': {words.format(flag='--set')}"), error

"""Typed params: errors name ``section.key`` and the value; Literal/tuple/Optional/nested; fingerprints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from pose3d.runtime import params as P
from pose3d.runtime.params import ParamsError, as_flat_dict, fingerprint, from_dict, load, require

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sub:
    width: int = 64
    drop: float = 0.25

    def validate(self, p):
        require(0.0 <= self.drop < 1.0, f"{p}.drop", self.drop, "must be in [0, 1)")


@dataclass(frozen=True)
class Demo:
    lr: float = 1e-3
    epochs: int = 10
    flip: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    size: tuple[int, int] = (256, 192)
    scales: tuple[float, ...] = (1.0,)
    subjects: list[str] = field(default_factory=lambda: ["S1"])
    limit: Optional[int] = None
    weights: dict[str, float] = field(default_factory=dict)
    sub: Sub = field(default_factory=Sub)

    def validate(self, p):
        require(self.lr > 0, f"{p}.lr", self.lr, "must be > 0")
        require(self.epochs >= 1, f"{p}.epochs", self.epochs, "must be >= 1")


@dataclass(frozen=True)
class NeedsKey:
    required_value: int


def _err(data, cls=Demo) -> str:
    with pytest.raises(ParamsError) as e:
        from_dict(cls, data, "demo")
    return str(e.value)


def test_defaults_and_conversions():
    d = from_dict(Demo, {}, "demo")
    assert d == Demo()
    d = from_dict(Demo, {"lr": 1, "size": [128, 96], "scales": [1, 0.5], "limit": None,
                         "weights": {"a": 2}, "sub": {"width": 32}}, "demo")
    assert d.lr == 1.0 and isinstance(d.lr, float)  # an integer is a valid float
    assert d.size == (128, 96) and d.scales == (1.0, 0.5) and d.weights == {"a": 2.0}
    assert d.sub == Sub(width=32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.lr = 0.1


def test_unknown_key_names_section_and_key():
    msg = _err({"lr": 0.1, "learning_rate": 0.1})
    assert msg.startswith("demo.learning_rate: unknown key")
    assert "lr" in msg  # lists the known keys
    assert _err({"sub": {"widht": 3}}).startswith("demo.sub.widht: unknown key")


@pytest.mark.parametrize("data, expected", [
    ({"epochs": "ten"}, "demo.epochs = 'ten': expected an integer"),
    ({"epochs": 2.5}, "demo.epochs = 2.5: expected an integer"),
    ({"epochs": True}, "demo.epochs = True: expected an integer"),
    ({"lr": "fast"}, "demo.lr = 'fast': expected a number"),
    ({"flip": "yes"}, "demo.flip = 'yes': expected true or false"),
    ({"device": "tpu"}, "demo.device = 'tpu': expected one of ['auto', 'cpu', 'cuda']"),
    ({"size": [1, 2, 3]}, "demo.size = [1, 2, 3]: expected 2 values"),
    ({"size": 256}, "demo.size = 256: expected a list"),
    ({"size": [256, "x"]}, "demo.size[1] = 'x': expected an integer"),
    ({"scales": [1.0, None]}, "demo.scales[1] = None: expected a number"),
    ({"subjects": ["S1", 5]}, "demo.subjects[1] = 5: expected a string"),
    ({"limit": "all"}, "demo.limit = 'all': expected an integer"),
    ({"weights": {"a": "b"}}, "demo.weights.a = 'b': expected a number"),
    ({"sub": 3}, "demo.sub = 3: expected a mapping"),
    ({"sub": {"width": 1.5}}, "demo.sub.width = 1.5: expected an integer"),
])
def test_wrong_type_names_key_and_value(data, expected):
    assert _err(data) == expected


@pytest.mark.parametrize("data, expected", [
    ({"lr": -0.1}, "demo.lr = -0.1: must be > 0"),
    ({"epochs": 0}, "demo.epochs = 0: must be >= 1"),
    ({"sub": {"drop": 1.0}}, "demo.sub.drop = 1.0: must be in [0, 1)"),
])
def test_out_of_range_names_key_and_value(data, expected):
    assert _err(data) == expected


def test_optional_and_missing_required():
    assert from_dict(Demo, {"limit": 5}, "demo").limit == 5
    assert from_dict(Demo, {"limit": None}, "demo").limit is None
    assert _err({}, NeedsKey) == "demo.required_value: missing required key"


@pytest.fixture
def registered_demo():
    class RegDemo:  # a plain class: @section makes it a frozen dataclass and registers it
        epochs: int = 10
        device: Literal["auto", "cpu", "cuda"] = "auto"

        def validate(self, p):
            require(self.epochs >= 1, f"{p}.epochs", self.epochs, "must be >= 1")

    P.section("_test_demo")(RegDemo)
    assert dataclasses.is_dataclass(RegDemo) and P.SECTIONS["_test_demo"] is RegDemo
    yield "_test_demo"
    P.SECTIONS.pop("_test_demo", None)


def test_load_from_yaml(tmp_path, registered_demo):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"_test_demo": {"epochs": 3, "device": "cpu"}, "other": {"x": 1}}))
    d = load(registered_demo, f)
    assert d.epochs == 3 and d.device == "cpu"
    f.write_text(yaml.safe_dump({"_test_demo": {"epochs": -3}}))
    with pytest.raises(ParamsError, match=r"^_test_demo\.epochs = -3: must be >= 1$"):
        load(registered_demo, f)
    f.write_text(yaml.safe_dump({"other": {}}))
    with pytest.raises(ParamsError, match="missing section '_test_demo'"):
        load(registered_demo, f)
    with pytest.raises(ParamsError, match="params file not found"):
        load(registered_demo, tmp_path / "nope.yaml")
    with pytest.raises(ParamsError, match="no_such_section: no such params section"):
        load("no_such_section", f)


def test_fingerprint_is_stable_and_sensitive():
    a, b = from_dict(Demo, {}, "demo"), Demo()
    assert fingerprint(a) == fingerprint(b)
    assert len(fingerprint(a)) == 16
    assert fingerprint(Demo(lr=2e-3)) != fingerprint(a)
    assert fingerprint(a, Sub()) != fingerprint(a)
    # pinned: a change here silently invalidates every checkpoint's params match
    assert fingerprint(Sub()) == "b6979e9e8d767299"


def test_flat_dict_for_mlflow():
    flat = as_flat_dict(Demo(weights={"reproj": 2.0}))
    assert flat["sub.width"] == 64 and flat["sub.drop"] == 0.25
    assert flat["weights.reproj"] == 2.0 and flat["lr"] == 1e-3
    assert "sub" not in flat


def test_repo_params_yaml_sections_all_validate():
    """Every registered section present in the repository's params.yaml loads cleanly."""
    path = REPO / "params.yaml"
    if not path.exists():
        pytest.skip("no params.yaml")
    data = P.read_yaml(path)
    checked = [name for name in P.SECTIONS if name in data and not name.startswith("_test")]
    assert "base" in checked
    for name in checked:
        load(name, path)


def test_params_yaml_states_every_default_of_params_py():
    """Each default exists once: params.yaml holds every key of every section with the value of
    the params.py dataclass, so a default changed in one place and not the other fails here."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    mismatches = []
    for name, cls in P.SECTIONS.items():
        if name.startswith("_test"):
            continue
        assert name in data, f"params.yaml lacks section {name!r}"
        section = data[name] or {}
        missing = sorted({f.name for f in dataclasses.fields(cls)} - set(section))
        assert not missing, f"params.yaml [{name}] lacks {missing}"
        loaded, default = from_dict(cls, section, name), cls()
        mismatches += [f"{name}.{f.name}: params.py {getattr(default, f.name)!r} != params.yaml "
                       f"{getattr(loaded, f.name)!r}" for f in dataclasses.fields(cls)
                       if getattr(default, f.name) != getattr(loaded, f.name)]
    assert not mismatches, "\n".join(mismatches)


def test_a_yaml_syntax_error_is_a_params_error_naming_the_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("base:\n  seed: [0\n")
    with pytest.raises(P.ParamsError, match="params.yaml: not valid YAML"):
        P.load("base", bad)

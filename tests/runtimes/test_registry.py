"""The runtime registry: every row is consistent, and the loader, CLIs and doctor read their names from it."""

from __future__ import annotations

import sys

import pytest

from lightseg_edge.errors import InvalidInputError
from lightseg_edge.runtimes.base import BasePredictor
from lightseg_edge.runtimes.registry import (
    RUNTIMES, alias_table, artifact_key, check_options, get_runtime, known_suffixes, runtime_for_artifact, runtime_for_suffix,
)
from lightseg_edge.types import Precision, Runtime

SPECS = list(RUNTIMES.values())


def test_every_runtime_enum_member_has_one_row():
    assert set(RUNTIMES) == set(Runtime)


def test_names_and_suffixes_are_unique():
    names = [n for s in SPECS for n in s.names]
    assert len(names) == len(set(names))
    assert len(known_suffixes()) == len(set(known_suffixes()))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"rt-{s.runtime.value}")
def test_row_resolves_by_every_name_and_suffix(spec):
    for name in spec.names:
        assert get_runtime(name) is spec and get_runtime(name.upper()) is spec
        assert alias_table()[name] == spec.runtime.value
    for suffix in spec.suffixes:
        assert runtime_for_suffix(suffix.upper()) is spec


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"rt-{s.runtime.value}")
def test_predictor_class_matches_its_row(spec):
    if not spec.available():
        pytest.skip(f"{spec.label} is not installed")
    cls = spec.predictor_class()
    assert issubclass(cls, BasePredictor) and cls.runtime_kind is spec.runtime


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"rt-{s.runtime.value}")
def test_artifact_keys_round_trip(spec):
    if spec.runtime is Runtime.PYTORCH:
        with pytest.raises(InvalidInputError, match="has no export artifacts"):
            artifact_key(spec, "fp32")
        return
    for precision in Precision:
        assert runtime_for_artifact(artifact_key(spec, precision.value)) is spec


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"rt-{s.runtime.value}")
def test_unusable_reason_agrees_with_installation(spec):
    reason = spec.unusable_reason(device="cpu")
    if not spec.available():
        assert spec.install_hint() in reason
    elif spec.needs_gpu:
        assert "needs a GPU" in reason
    elif spec.runs_on == "macOS":
        assert (reason is None) == (sys.platform == "darwin")
    else:
        assert reason is None


def test_unknown_names_and_options_are_refused_with_the_choices():
    with pytest.raises(InvalidInputError, match="unknown runtime 'paddle'; expected auto or one of pytorch, onnxruntime, tensorrt"):
        get_runtime("paddle")
    with pytest.raises(InvalidInputError, match=r"unknown option\(s\) providers for the openvino runtime; expected some of .*inference_precision"):
        check_options(RUNTIMES[Runtime.OPENVINO], {"providers": ["cpu"]})
    check_options(RUNTIMES[Runtime.OPENVINO], {"threads": 1, "precision": "fp32"})


def test_cli_runtime_choices_come_from_the_registry(capsys):
    from lightseg_edge.cli import predict

    with pytest.raises(SystemExit):
        predict.main(["--help"])
    out = capsys.readouterr().out
    for spec in SPECS:
        assert spec.runtime.value in out

"""lightseg-export under kills and bad input: the output folder is always the old export or the complete new one.

Kill tests are real: a subprocess runs ``lightseg_edge.cli.export.main`` and SIGKILLs itself before its N-th file
operation of the commit (every one the export's own code makes: links, renames, the folder exchange, the removal of
the old content), or at the end of a step. A first run without a kill counts the operations and makes the reference
new export. Exports are cheap: --from-onnx on a 128x128 UCM-Net graph.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from reliability_helpers import assert_one_line_error, run_main, snapshot

from lightseg_edge.cli.export import main
from lightseg_edge.manifest import read_manifest, verify_artifacts
from lightseg_edge.export.staging import STAGING_PREFIX

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "isic_sample"
USER_FILES = {"notes.txt": b"my notes\n", "extra/readme.txt": b"kept beside the export\n"}

# Runs the export CLI; LIGHTSEG_KILL_AT=N: SIGKILL before the N-th file operation the export's own code makes from the
# start of the commit on (0: none; the count goes to stderr); LIGHTSEG_KILL_STEP=name: SIGKILL once that step's work is
# done; LIGHTSEG_NO_EXCHANGE=1: the swap as two renames (what a system without RENAME_EXCHANGE does).
_WRAPPER = r"""
import os, shutil, signal, sys
from lightseg_edge.cli.export import main
from lightseg_edge.export import staging, steps

kill_at, step = int(os.environ.get("LIGHTSEG_KILL_AT", "0")), os.environ.get("LIGHTSEG_KILL_STEP")
ours = ("lightseg_edge.export.staging", "lightseg_edge.manifest", "lightseg_edge._atomic")
state = {"on": False, "n": 0}

def counted(fn):
    def call(*a, **k):
        if state["on"] and sys._getframe(1).f_globals.get("__name__") in ours:
            state["n"] += 1
            if state["n"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return fn(*a, **k)
    return call

for mod, names in ((os, ("replace", "rename", "link", "symlink", "unlink", "mkdir", "rmdir")), (shutil, ("copytree", "copy2", "rmtree", "copymode"))):
    for name in names:
        setattr(mod, name, counted(getattr(mod, name)))
exchange = (lambda a, b: False) if os.environ.get("LIGHTSEG_NO_EXCHANGE") else staging._exchange
staging._exchange = counted(exchange)
commit = staging.Staging.commit
def start_commit(self, *a):
    state["on"] = True
    return commit(self, *a)
staging.Staging.commit = start_commit
run = steps.StepLog.run
def kill_after(self, name, fn, *a, **k):
    def body():
        result = fn()
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return run(self, name, body, *a, **k)
steps.StepLog.run = kill_after
code = main(sys.argv[1:])
print(f"kill-points: {state['n']}", file=sys.stderr)
sys.exit(code)
"""


def _export(argv: List[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _WRAPPER] + argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Dict[str, Path]:
    """Finished exports to copy from: ucmnet 128 fp32, the same with fp16, and ucmnet 192 fp32 (another model.onnx)."""
    from lightseg_edge.export import ExportConfig, export

    base = tmp_path_factory.mktemp("templates")
    small = dict(model="ucmnet", weights="random", data=str(SAMPLE), parity_images=2, eval_images=2, fp16_check_images=2,
                 simplifier="none", engine="off", progress=False, cpu_default=False)
    out = {"t128": base / "t128", "t128fp16": base / "t128fp16", "t192": base / "t192"}
    export(ExportConfig(img_size=128, output=str(out["t128"]), **small))
    export(ExportConfig(img_size=192, output=str(out["t192"]), **small))
    shutil.copytree(out["t128"], out["t128fp16"])
    export(ExportConfig(from_onnx=str(out["t128fp16"] / "model.onnx"), fp16=True, data=str(SAMPLE), eval_images=2,
                        fp16_check_images=2, engine="off", progress=False, cpu_default=False))
    return out


def _folder(template: Path, at: Path) -> Path:
    """A copy of ``template`` with the user's own files in it."""
    shutil.copytree(template, at)
    for rel, data in USER_FILES.items():
        (at / rel).parent.mkdir(exist_ok=True)
        (at / rel).write_bytes(data)
    return at


def _leftovers(base: Path) -> List[str]:
    """Hidden files or folders anywhere under ``base``: staging folders, temporary files."""
    return sorted(str(p.relative_to(base)) for p in base.rglob(".*"))


def _kind(out: Path, old: Dict[str, str], new: Dict[str, str]) -> str:
    """'old' when ``out`` is exactly the old export, 'new' when it holds exactly the new export's files (the manifest,
    with its timestamps and paths, is judged by verification), 'missing' when there is no folder at all."""
    if not out.exists():
        return "missing"
    now = snapshot(out)
    assert verify_artifacts(out, read_manifest(out)) == []
    if now == old:
        return "old"
    files = {k: v for k, v in now.items() if k != "manifest.json"}
    assert files == {k: v for k, v in new.items() if k != "manifest.json"}, f"neither the old nor the new export: {sorted(now)}"
    assert now["manifest.json"] != old["manifest.json"]
    return "new"


def _from_onnx(onnx: Path, *more: str) -> List[str]:
    # --no-cpu-default: the CPU default's timing (most of each export's time here) makes no file operation of the commit
    return ["--from-onnx", str(onnx), *more, "--no-cpu-default"]


def _fp16_in_place(out: Path, templates: Dict[str, Path]) -> List[str]:
    return _from_onnx(out / "model.onnx", "--fp16", "--data", str(SAMPLE))


# case -> (template of the old export, argv for an output folder, environment of the wrapper)
SCENARIOS = {
    "in-place-fp16": ("t128", _fp16_in_place, {}),
    "replace-model": ("t128fp16", lambda out, t: _from_onnx(t["t192"] / "model.onnx", "--output", str(out)), {}),
    "two-renames": ("t128", _fp16_in_place, {"LIGHTSEG_NO_EXCHANGE": "1"}),
}


@pytest.mark.parametrize("case", sorted(SCENARIOS))
def test_a_kill_at_any_point_of_the_commit_leaves_the_old_or_the_new_export(case, templates, tmp_path, capsys):
    template, make_argv, env = SCENARIOS[case]
    ref = _folder(templates[template], tmp_path / "ref" / "out")
    old = snapshot(ref)
    done = _export(make_argv(ref, templates), **env)
    assert done.returncode == 0, done.stderr[-2000:]
    points = int(done.stderr.rsplit("kill-points: ", 1)[1])
    new = snapshot(ref)
    assert new != old and _leftovers(ref.parent) == []
    assert {k: new[k] for k in USER_FILES} == {k: old[k] for k in USER_FILES}  # the user's files come along
    if case == "replace-model":
        assert "model.fp16.onnx" not in new  # the old export's FP16 file belongs to another model: not left beside the new one
    outs = {n: _folder(templates[template], tmp_path / f"k{n}" / "out") for n in range(1, points + 1)}
    with ThreadPoolExecutor(2) as pool:  # one export per core; each kills itself at its own point
        kills = dict(zip(outs, pool.map(lambda n: _export(make_argv(outs[n], templates), LIGHTSEG_KILL_AT=str(n), **env), outs)))
    seen = set()
    for n, out in outs.items():
        killed = kills[n]
        assert killed.returncode == -signal.SIGKILL, f"kill point {n} of {points}: {killed.stderr[-2000:]}"
        state = _kind(out, old, new)
        assert state != "missing" or env, f"kill point {n}: no output folder"
        seen.add(state)
        # the next export into the folder finishes or removes what the kill left, and succeeds
        result = run_main(main, make_argv(out, templates), capsys)
        assert result.code == 0, result.err[-2000:]
        assert verify_artifacts(out, read_manifest(out)) == []
        assert _leftovers(out.parent) == [], f"kill point {n}: left behind"
        assert {k: snapshot(out)[k] for k in USER_FILES} == {k: old[k] for k in USER_FILES}
    assert {"old", "new"} <= seen, f"kill points {points} never hit both sides of the swap: {seen}"
    if env:
        assert "missing" in seen  # a kill between the two renames, rolled forward by the next export


def test_a_kill_during_a_step_leaves_the_folder_and_the_next_export_removes_the_staging(templates, tmp_path, capsys):
    out = _folder(templates["t128"], tmp_path / "out")
    before = snapshot(out)
    argv = ["--from-onnx", str(out / "model.onnx"), "--fp16", "--data", str(SAMPLE)]
    killed = _export(argv, LIGHTSEG_KILL_STEP="fp16")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert snapshot(out) == before
    staged = [p for p in tmp_path.glob(f"{STAGING_PREFIX}*") if (p / "new" / "model.fp16.onnx").is_file()]
    assert staged, f"expected the killed export's staging folder beside the output: {_leftovers(tmp_path)}"
    result = run_main(main, argv, capsys)
    assert result.code == 0, result.err[-2000:]
    assert _leftovers(tmp_path) == []
    assert "fp16" in read_manifest(out)["artifacts"] and verify_artifacts(out, read_manifest(out)) == []


# ------------------------------------------------------------------------------------------------- bad arguments
def _tiny_onnx(path: Path, size: int) -> Path:
    """A valid one-node ONNX (Identity) taking 1x3xSxS images: cheap stand-in for a foreign model."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, size, size])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "tiny", [x], [y])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


M = ["--model", "ucmnet", "--weights", "random", "--data", str(SAMPLE)]
BAD = [
    (M + ["--batch", "0"], ["--batch", "positive integer"]),
    (M + ["--batch", "two"], ["--batch"]),
    (M + ["--opset", "16"], ["--opset", "16", "17..20"]),
    (M + ["--opset", "x"], ["--opset"]),
    (M + ["--img-size", "0"], ["--img-size"]),
    (M + ["--img-size", "100"], ["--img-size", "100", "stride 64"]),
    (M + ["--dynamic-batch", "8,2,4"], ["--dynamic-batch", "MIN <= OPT <= MAX"]),
    (M + ["--dynamic-batch", "1,x,4"], ["--dynamic-batch"]),
    (M + ["--dynamic-batch", "0,1,2"], ["--dynamic-batch"]),
    (M + ["--batch", "2", "--dynamic-batch", "1,2,4"], ["--dynamic-batch", "--batch"]),
    (M + ["--int8", "--calib-data", str(SAMPLE), "--calib-images", "0"], ["--calib-images"]),
    (M + ["--calib-images", "8"], ["--calib-images", "--int8"]),
    (M + ["--calib-data", str(SAMPLE)], ["--calib-data", "--int8"]),
    (M + ["--int8-keep", "auto"], ["--int8-keep", "--int8"]),
    (M + ["--fp16-keep", "2"], ["--fp16-keep", "--fp16"]),
    (M + ["--int8", "--calib-data", str(SAMPLE), "--int8-keep", ","], ["--int8-keep", "layer names"]),
    (M + ["--int8", "--calib-data", str(SAMPLE), "--max-dice-drop", "2"], ["--max-dice-drop", "0 to 1"]),
    (M + ["--int8", "--calib-data", str(SAMPLE), "--int8-method", "tensorrt"], ["--int8-method", "tensorrt"]),
    (M + ["--workspace", "0"], ["--workspace"]),
    (M + ["--simplifier", "polygraphy"], ["--simplifier", "polygraphy"]),
    (["--model", "ucmnt", "--weights", "random", "--data", str(SAMPLE)], ["ucmnt", "ucmnet"]),
    (M + ["--data", "{tmp}/no-such-data"], ["--data", "no-such-data"]),
    (["--model", "ucmnet", "--data", str(SAMPLE), "--weights", "{tmp}/no.safetensors"], ["--weights", "no.safetensors"]),
    (["--from-onnx", "{tmp}/missing.onnx"], ["--from-onnx", "missing.onnx"]),
    (["--from-onnx", "{old}/model.onnx", "--model", "unet"], ["--model", "unet", "ucmnet"]),
    (["--from-onnx", "{old}/model.onnx", "--opset", "18"], ["--opset", "--from-onnx"]),
    (["--from-onnx", "{old}/model.onnx", "--simplifier", "onnxslim"], ["--simplifier", "--from-onnx"]),
    (["--from-onnx", "{old}/model.onnx", "--img-size", "128"], ["--img-size", "--from-onnx"]),
    (["--from-onnx", "{old}/model.onnx", "--weights", "random"], ["--weights", "--from-onnx"]),
    (["--from-onnx", "{old}/model.onnx", "--batch", "4"], ["--batch", "4"]),
    (["--from-onnx", "{old}/model.onnx", "--dynamic-batch", "1,2,4"], ["--dynamic-batch"]),
    (["--from-onnx", "{tiny96}", "--model", "ucmnet", "--fp16"], ["--model", "ucmnet", "96x96", "stride 64"]),
    (["--from-onnx", "{tiny96}", "--model", "nosuchnet", "--fp16"], ["nosuchnet"]),
]


@pytest.mark.parametrize("argv, names", BAD, ids=[" ".join(a[-2:]) if len(a) > 1 else a[0] for a, _ in BAD])
def test_a_bad_argument_is_one_line_and_changes_nothing(argv, names, templates, tmp_path, capsys):
    old = _folder(templates["t128"], tmp_path / "old")
    tiny = _tiny_onnx(tmp_path / "tiny" / "model.onnx", 96)
    fill = {"{tmp}": str(tmp_path), "{old}": str(old), "{tiny96}": str(tiny)}
    argv = [_fill(a, fill) for a in argv]
    if "--output" not in argv and "--from-onnx" not in argv:
        argv += ["--output", str(old)]  # an existing export as the target: it must come through untouched
    before, tiny_before = snapshot(tmp_path / "old"), snapshot(tiny.parent)
    assert_one_line_error(run_main(main, argv, capsys), *[_fill(n, fill) for n in names])
    assert snapshot(tmp_path / "old") == before and snapshot(tiny.parent) == tiny_before
    assert _leftovers(tmp_path) == []


def _fill(text: str, fill: Dict[str, str]) -> str:
    for k, v in fill.items():
        text = text.replace(k, v)
    return text


@pytest.mark.parametrize("where", ["parent-is-a-file", "is-a-file", "mount-point"])
def test_an_output_that_cannot_be_a_folder_is_refused_before_any_step(where, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"x")
    output: Optional[Path] = {"parent-is-a-file": blocker / "out", "is-a-file": blocker, "mount-point": Path("/")}[where]
    res = run_main(main, M + ["--output", str(output)], capsys)
    assert_one_line_error(res, "--output", str(output))
    assert "[model]" not in res.err  # refused before the first step
    assert blocker.read_bytes() == b"x" and _leftovers(tmp_path) == []

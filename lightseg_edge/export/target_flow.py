"""The target loop of the export: every requested non-ONNX format built, then each artifact scored.

One loop for every row of the target table (``export.targets``): build the files in the staging folder, record each
artifact (with its companions) for the manifest, load it through its runtime's predictor from the runtime registry
and score it on the held-out images against the FP32 ONNX; an artifact whose runtime cannot run here is recorded as
not scored, with the reason.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from ..errors import BackendUnavailableError
from .._hashing import artifact_bytes, sha256_file
from .accuracy import HeldoutScorer, VariantAccuracy
from .steps import StepLog
from .targets import BuiltArtifact, Target, TargetJob, get_target


def _entry(job: TargetJob, art: BuiltArtifact) -> dict:
    path = job.stage / art.path
    entry = {"path": art.path, "precision": art.precision, "sha256": sha256_file(path), "bytes": artifact_bytes(path), **art.extra}
    if job.deploy_form is not None:
        entry["deploy_form"] = job.deploy_form.value
    if art.companions:
        entry["companions"] = [{"path": c, "sha256": sha256_file(job.stage / c)} for c in art.companions]
    return entry


def _acc_line(r: VariantAccuracy) -> str:
    return (f"{r.variant} ({r.runtime}) on {r.images} held-out images: mDice {r.mdice:.4f}, delta {r.delta_mdice:+.4f} vs fp32 ONNX, "
            f"mask agreement {r.agreement_dice:.4f}")


def run_targets(names: Tuple[str, ...], job_for: Callable[[Target], TargetJob], steps: StepLog,
                scorer: Optional[HeldoutScorer]) -> Tuple[Dict[str, dict], List[str]]:
    """(manifest artifact entries by key, file names to commit) for the targets ``names``; ``job_for`` gives each
    target its job (the deploy form its runtime runs best)."""
    artifacts: Dict[str, dict] = {}
    files: List[str] = []
    for name in names:
        target = get_target(name)
        job = job_for(target)
        built = steps.run(name, lambda: target.build(job), lambda arts: ", ".join(f"{a.key}: {a.path}" for a in arts))
        reason = target.runnable()
        for art in built:
            artifacts[art.key] = _entry(job, art)
            files += [art.path, *art.companions]
            _check(target, job, art.path, art.precision, art.key, steps, scorer, reason)
        by_key = {a.key: a for a in built}
        for key, source, options in target.extra_scores:
            if source in by_key:  # an optional setting this machine lacks (bf16 without AVX512-BF16) is skipped, no failure
                _check(target, job, by_key[source].path, by_key[source].precision, key, steps, scorer, reason,
                       (BackendUnavailableError,), **options)
    return artifacts, files


def _check(target: Target, job: TargetJob, path: str, precision: str, key: str, steps: StepLog, scorer: Optional[HeldoutScorer],
           reason: Optional[str], skip_on: Tuple[type, ...] = (), **options) -> None:
    if reason is not None:
        steps.skip(f"accuracy-{key}", f"not runnable here: {reason}")
        if scorer is not None:
            scorer.unscored[key] = reason
    elif scorer is not None:
        steps.run(f"accuracy-{key}", lambda: scorer.score(job.stage / path, key, target.runtime, precision, **options), _acc_line, skip_on)

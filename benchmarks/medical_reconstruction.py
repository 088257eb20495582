"""DiffusionMBIR (issue 14) at a reduced CPU size: 3-D reconstruction of a held-out volume with a 2-D
slice prior, against FBP / zero-filled, 3-D ADMM-TV, slice-wise diffusion (no z prior) and DPS.

    python benchmarks/medical_reconstruction.py [--epochs 150] [--mri-epochs 1000] [--steps 200]
        [--fast 50,100,199] [--seeds 0,1,2] [--threads 1] [--run-dir /tmp/medical_reconstruction_bench] [--readme]
    python benchmarks/medical_reconstruction.py --table-only [--readme]   # re-render from the stored JSON

* Priors: trained once with the CLI's configs (``workbench.cli.train``) into ``<run-dir>/<prior>_<epochs>ep``
  and reused from there (a marker file records a finished training; nothing is retrained then).
  CT: ``experiment=medical/demo`` (32x32 slices of 6 Shepp-Logan phantoms x 16 slices, 16 channels,
  held-out phantom = seed 6) with ``--epochs``. MRI: ``experiment=medical/mni_t1_cpu`` at 32x32 with the
  demo's small network and ``sigma_max`` 15, on the MNI152 T1 of ``$WORKBENCH_DATA/medical`` (in-volume
  split: the central 16 slices are the test volume, the prior trains on the others) with
  ``--mri-epochs``; the MRI row is skipped with a note when the file is absent.
* Tasks: SV-CT 8 and 4 views (``ParallelBeamCT``), CS-MRI x4 (uniform1d, 8 % centre lines).
* Methods, per task, on the same test volume and measurement:
  ``fbp`` / ``zero-filled`` (``mbir.zero_filled``); ``admm-tv-3d`` (``mbir.admm_tv_3d``, 30 x 20 CG,
  x0 = 0); ``slice-wise`` (PC, ``--steps``, ``DiffusionMBIRGuidance(z_tv=False)``: per-step CG data
  consistency, no TV along z); ``dps`` (PC, ``--steps``, the core's ``DPSGuidance(zeta=1)``, untuned,
  on the ``--dps`` tasks: it needs a differentiable operator); ``diffusionmbir`` (PC, ``--steps``: the
  full sampler) and ``diffusionmbir-fast`` (DPM-Solver++(2M) with the same ADMM post-step at each
  ``--fast`` step count). Sampled methods run once per ``--seeds`` seed. The core's
  ``replacement`` guidance does not apply (its observation must be state-shaped; y is a sinogram /
  k-space). CT uses the reference's lamb 0.04 / rho 10 with the final Kaczmarz step, MRI lamb 0.005 /
  rho 0.01 without (the configs' values); ADMM-TV uses the same lamb / rho.
* Reported: PSNR / SSIM on the axial, coronal and sagittal views (``metrics.volume_metrics``, data range
  1 in the normalised units) and the PSNR over non-air slices only (:func:`tissue_psnr`), the data
  residual ||A x - y|| / ||y||, NFE per slice (denoiser calls; each call sees every slice of the
  volume), wall time, and peak memory: the peak resident set size of the process during the method
  (``/proc/self/statm``, polled every 5 ms by a thread; it includes the interpreter, torch and the
  loaded prior) and its increase over the RSS at the method's start.

Writes ``benchmarks/results/medical_reconstruction.json``; ``--readme`` renders the table into
``domains/medical/README.md`` (block ``medical-reconstruction-table``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _meta import ROOT, meta_line, measurement, publish  # noqa: E402

OUT = Path(__file__).parent / "results" / "medical_reconstruction.json"
README = ROOT / "domains" / "medical" / "README.md"
BLOCK = "medical-reconstruction-table"
MNI = "medical/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
SMALL_NET = ["network.channels=16", "network.channel_mult=[1,2]", "network.attn_resolutions=[]",
             "network.mid_attention=false", "network.num_res_blocks=1", "module.lr=2.0e-3",
             "process.sigma_max=15.0"]
PRIORS = {
    "ct": {"experiment": "medical/demo", "overrides": [], "what": "6 Shepp-Logan CT phantoms x 16 slices, 32x32; "
                                                                   "test: held-out phantom (seed 6), 16 slices"},
    "mri": {"experiment": "medical/mni_t1_cpu",
            "overrides": SMALL_NET + ["datamodule.image_size=32", "datamodule.test_slices=16",
                                      "datamodule.batch_size=16"],
            "what": "MNI152 T1 at 32x32, in-volume split: central 16 slices test, the other slices train"},
    "ct64": {"experiment": "medical/phantom_ct_cpu", "overrides": [],
             "what": "the cpu configs' prior: 8 Shepp-Logan CT phantoms x 32 slices, 64x64, 32 channels x (1, 2, 2); "
                     "test: held-out phantom (seed 8), 32 slices"},
}
MRI_X = lambda acc, cf: ["datamodule.task=cs_mri", "datamodule.mask_kind=uniform1d",  # noqa: E731
                          f"datamodule.acceleration={acc}", f"datamodule.center_fraction={cf}"]
TASKS = {
    "sv_ct_8": ("ct", ["datamodule.task=sv_ct", "datamodule.n_views=8"], {"lamb": 0.04, "rho": 10.0, "final_consistency": True}),
    "sv_ct_4": ("ct", ["datamodule.task=sv_ct", "datamodule.n_views=4"], {"lamb": 0.04, "rho": 10.0, "final_consistency": True}),
    "cs_mri_x4": ("mri", ["datamodule.task=cs_mri", "datamodule.mask_kind=uniform1d", "datamodule.acceleration=4.0",
                          "datamodule.center_fraction=0.08"], {"lamb": 0.005, "rho": 0.01, "final_consistency": False}),
    "la_ct_90": ("ct", ["datamodule.task=la_ct", "datamodule.arc=90.0", "datamodule.angle_step=1.0"],
                 {"lamb": 0.04, "rho": 10.0, "final_consistency": True}),
    "cs_mri_x2": ("mri", MRI_X(2.0, 0.15), {"lamb": 0.005, "rho": 0.01, "final_consistency": False}),
    "cs_mri_x8": ("mri", MRI_X(8.0, 0.08), {"lamb": 0.005, "rho": 0.01, "final_consistency": False}),
    "sv_ct_8_64": ("ct64", ["datamodule.task=sv_ct", "datamodule.n_views=8"], {"lamb": 0.04, "rho": 10.0, "final_consistency": True}),
}
#: methods (kinds) run per task when not all: the 64-px task is about 30x the cost of a 32-px one
TASK_METHODS = {"sv_ct_8_64": ("analytic", "iterative", "full", "fast")}
VIEWS = ("axial", "coronal", "sagittal")


# -- memory ---------------------------------------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident set size above the value at entry, polled by a thread every ``every`` seconds."""

    def __init__(self, every: float = 0.005) -> None:
        self.every, self.peak, self.start = every, 0, 0

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            self._stop.wait(self.every)

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def mb(self) -> float:
        """Peak RSS during the block (MB)."""
        return self.peak / 2 ** 20

    @property
    def delta_mb(self) -> float:
        """Peak RSS during the block above the RSS at its start (MB): 0 when the method fits in memory the
        process already holds (the allocator reuses freed pages)."""
        return (self.peak - self.start) / 2 ** 20


# -- priors ---------------------------------------------------------------------------------------------
def _cfg(prior: str, epochs: int, run_dir: Path, extra: list[str] = ()):
    from workbench.cli import compose_config

    p = PRIORS[prior]
    return compose_config([f"experiment={p['experiment']}", *p["overrides"], f"trainer.max_epochs={epochs}",
                           f"trainer.check_val_every_n_epoch={epochs}", f"run_dir={run_dir}",
                           "trainer.enable_progress_bar=false", "resume=true", "threads=" + str(torch.get_num_threads()),
                           *extra])


def train_prior(prior: str, epochs: int, run_dir: Path) -> tuple[float, bool]:
    """Train (or find trained) the prior in ``run_dir``; (seconds, trained now)."""
    from workbench.cli import train

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    done = run_dir / f".trained_{epochs}"
    if ckpt.exists() and done.exists():
        return json.loads(done.read_text())["seconds"], False
    t0 = time.perf_counter()
    train(_cfg(prior, epochs, run_dir))
    seconds = time.perf_counter() - t0
    done.write_text(json.dumps({"seconds": seconds}))
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    return seconds, True


def load(prior: str, epochs: int, run_dir: Path, task_overrides: list[str]):
    from workbench.cli import build
    from workbench.lit import load_checkpoint, load_ema_weights

    cfg = _cfg(prior, epochs, run_dir, task_overrides)
    cfg.run_dir = str(run_dir.absolute())
    dm, module, _ = build(cfg)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    module.load_state_dict(ckpt["state_dict"])
    if cfg.sample.use_ema:
        load_ema_weights(module, ckpt)
    module.eval()
    dm.prepare_data()
    dm.setup("fit")
    return cfg, dm, module


# -- methods ----------------------------------------------------------------------------------------------
def _sample(module, guidance, batch, sampler, steps: int, seed: int, spacing: str | None = None) -> tuple[torch.Tensor, int]:
    """One reconstruction with ``sampler`` on the module's process, the guided denoiser's post_step (if any)
    handed to the sampler; (volume, NFE per slice)."""
    from workbench.conditional import template_of
    from workbench.samplers.common import sampler_grid

    calls = [0]
    h = module.denoiser.register_forward_pre_hook(lambda *a, **k: calls.__setitem__(0, calls[0] + 1))
    try:
        g = torch.Generator().manual_seed(seed)
        template = template_of(batch)
        guided = guidance(module.denoiser, batch, generator=g)
        hook = getattr(guided, "post_step", None)
        geometry = module.geometry.bind(template.get("mask"))
        ts = sampler_grid(module.process, sampler, steps, spacing=spacing)
        x = module.process.prior_sample(template["x"], geometry, generator=g)
        with torch.no_grad():
            out = sampler(guided, x, ts, process=module.process, geometry=geometry, extra_args={}, generator=g,
                          **({} if hook is None else {"post_step": hook}))
    finally:
        h.remove()
    return out, calls[0]


def methods(task: str, module, cfg, steps: int, fast: list[int], weights: dict, dps: bool, *, full_steps: int = 0,
            fast_eta: float = 0.3, fast_admm: int = 8, fast_spacing: str = "karras", all_axes: bool = True,
            only: tuple[str, ...] | None = None):
    """(label, kind, callable(batch, seed) -> (volume, nfe), sampled): ``sampled`` methods start from a
    seeded prior draw and are run once per seed; the others are deterministic and run once. ``only``:
    keep the kinds named (analytic, iterative, slice-wise, dps, full, all-axes, reference, fast)."""
    from functools import partial

    from workbench.domains.medical.mbir import DiffusionMBIRGuidance, admm_tv_3d, zero_filled
    from workbench.guidance.factory import DPSGuidance
    from workbench.samplers import sample_ddim, sample_pc

    pc = partial(sample_pc, predictor="reverse_diffusion", corrector="langevin", snr=float(cfg.sampler.snr),
                 n_corrector=int(cfg.sampler.n_corrector))
    base = "fbp" if "_ct_" in task else "zero-filled"
    out = [
        (base, "analytic", lambda b, s: (zero_filled(b["observation"]["operator"], b["observation"]["y"]), 0), False),
        ("admm-tv-3d (30 x 20 CG)", "iterative",
         lambda b, s: (admm_tv_3d(b["observation"]["operator"], b["observation"]["y"], lamb=weights["lamb"],
                                  rho=weights["rho"], outer=30, cg_iters=20), 0), False),
        (f"slice-wise (PC {steps}, no z-TV)", "slice-wise",
         lambda b, s: _sample(module, DiffusionMBIRGuidance(z_tv=False, **weights), b, pc, steps, s), True),
    ]
    if dps:
        out.append((f"dps (PC {steps}, zeta 1)", "dps",
                    lambda b, s: _sample(module, DPSGuidance(zeta=1.0), b, pc, steps, s), True))
    out.append((f"diffusionmbir (PC {steps})", "full",
                lambda b, s: _sample(module, DiffusionMBIRGuidance(**weights), b, pc, steps, s), True))
    if all_axes:
        out.append((f"diffusionmbir all-axes TV (PC {steps})", "all-axes",
                    lambda b, s: _sample(module, DiffusionMBIRGuidance(tv_axes="zhw", **weights), b, pc, steps, s), True))
    if full_steps:
        out.append((f"diffusionmbir (PC {full_steps}, reference length)", "reference",
                    lambda b, s: _sample(module, DiffusionMBIRGuidance(**weights), b, pc, full_steps, s), True))
    ddim = partial(sample_ddim, eta=fast_eta)
    for n in fast:
        out.append((f"diffusionmbir-fast (DDIM eta {fast_eta:g} {n}, {fast_admm} ADMM/step)", "fast",
                    lambda b, s, n=n: _sample(module, DiffusionMBIRGuidance(n_admm=fast_admm, **weights), b, ddim, n, s,
                                              spacing=fast_spacing), True))
    return [m for m in out if only is None or m[1] in only]


METRIC_KEYS = [f"{m}_{v}" for m in ("psnr", "ssim", "psnr_tissue") for v in VIEWS] + ["data_residual"]


def tissue_psnr(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """PSNR per view (data range 1) averaged over the slices whose truth is not all air (not all 0).
    ``volume_metrics`` leaves out only slices reproduced exactly (PSNR inf); an all-air slice that a
    linear method reproduces up to float round-off (PSNR ~ 147 dB, e.g. the zero-filled MRI's end
    coronal rows) stays in and dominates its view's mean."""
    from workbench.domains.medical.metrics import VIEWS as AXES

    out = {}
    p, t = pred.double(), truth.double()
    for view, axis in AXES.items():
        ps, ts = p.movedim(axis, 0), t.movedim(axis, 0)
        keep = ts.flatten(1).abs().amax(1) > 0
        mse = (ps[keep] - ts[keep]).pow(2).flatten(1).mean(1)
        out[f"psnr_tissue_{view}"] = float((10 * torch.log10(1.0 / mse.clamp_min(1e-300))).mean())
    return out


def run_task(task: str, epochs: int, run_dir: Path, steps: int, fast: list[int], dps_tasks: tuple[str, ...] = (),
             seeds: tuple[int, ...] = (0,), full_seeds: tuple[int, ...] = (0,), **options) -> dict:
    """Every method on the task's test volume; sampled methods once per seed, their metrics the mean over
    the seeds (``*_sd``: the standard deviation over them, ``per_seed``: each run)."""
    import numpy as np

    from workbench.domains.medical.mbir import data_residual
    from workbench.domains.medical.metrics import volume_metrics

    prior, overrides, weights = TASKS[task]
    cfg, dm, module = load(prior, epochs, run_dir / f"{prior}_{epochs}ep", overrides)
    batch = next(iter(dm.observations(1, 1)))
    truth, op, y = batch["x"], batch["observation"]["operator"], batch["observation"]["y"]
    rows = []
    dps = task in dps_tasks
    only = TASK_METHODS.get(task)
    for label, kind, fn, sampled in methods(task, module, cfg, steps, fast, weights, dps, only=only, **options):
        runs = []
        for seed in ((full_seeds if kind == "reference" else seeds) if sampled else (0,)):
            torch.manual_seed(seed)
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                try:
                    x, nfe = fn(batch, seed)
                except Exception as e:       # recorded, not fatal: e.g. an operator DPS cannot differentiate
                    x, nfe = torch.full_like(truth, float("nan")), 0
                    error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                else:
                    error = None
                seconds = time.perf_counter() - t0
            x = x.detach().float()
            finite = bool(torch.isfinite(x).all())
            rec = {"seed": seed, "nfe_per_slice": nfe, "seconds": round(seconds, 2), "peak_rss_mb": round(mem.mb, 1),
                   "peak_rss_increase_mb": round(mem.delta_mb, 1), "load_avg_1min": round(os.getloadavg()[0], 2),
                   "finite": finite, **({"error": error} if error else {})}
            if finite:
                rec.update({k: round(v, 4) for k, v in volume_metrics(x[:, 0], truth[:, 0].float(), data_range=1.0).items()})
                rec.update({k: round(v, 4) for k, v in tissue_psnr(x[:, 0], truth[:, 0].float()).items()})
                rec["data_residual"] = round(data_residual(op, x, y), 5)
            runs.append(rec)
            print(f"{task:10s} {label:40s} s{seed} " + " ".join(f"{rec.get('psnr_' + v, float('nan')):6.2f}" for v in VIEWS)
                  + f"  res {rec.get('data_residual', float('nan')):.4f}  nfe {nfe}  {seconds:6.1f} s  {mem.mb:7.1f} MB",
                  file=sys.stderr)
        finite = all(r["finite"] for r in runs)
        row = {"method": label, "kind": kind, "seeds": [r["seed"] for r in runs], "nfe_per_slice": runs[0]["nfe_per_slice"],
               "seconds": round(float(np.mean([r["seconds"] for r in runs])), 2),
               "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
               "peak_rss_increase_mb": max(r["peak_rss_increase_mb"] for r in runs), "finite": finite,
               **({"error": runs[0]["error"]} if runs[0].get("error") else {})}
        if finite:
            for k in METRIC_KEYS:
                vals = [r[k] for r in runs]
                row[k] = round(float(np.mean(vals)), 4 if k != "data_residual" else 5)
                if len(runs) > 1:
                    row[k + "_sd"] = round(float(np.std(vals, ddof=1)), 4 if k != "data_residual" else 5)
        if len(runs) > 1:
            row["per_seed"] = runs
        else:
            row.update({k: runs[0][k] for k in ("load_avg_1min", "peak_rss_increase_mb")})
        rows.append(row)
    return {"task": task, "prior": prior, "volume": list(truth.shape), "operator": repr(op), **weights, "rows": rows}


# -- table ----------------------------------------------------------------------------------------------
def _f(v, fmt):
    return "–" if v is None else format(v, fmt)


def table(result: dict) -> str:
    s = result["settings"]
    lines = ["| task | method | PSNR ax / cor / sag | SSIM ax / cor / sag | residual | "
             "NFE / slice | time (s) | peak RSS (MB) |", "|---|---|---|---|---|---|---|---|"]
    for t in result["tasks"]:
        if t.get("skipped"):
            lines.append(f"| {t['task']} | skipped: {t['skipped']} | – | – | – | – | – | – |")
            continue
        for r in t["rows"]:
            if not r["finite"]:
                what = f"failed ({r['error']})" if r.get("error") else "non-finite"
                lines.append(f"| {t['task']} | {r['method']} | {what} | – | – | {r['nfe_per_slice']} | "
                             f"{r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
                continue
            psnr = " / ".join(_f(r[f"psnr_{v}"], ".1f") + (f" ± {r[f'psnr_{v}_sd']:.1f}" if f"psnr_{v}_sd" in r else "")
                              for v in VIEWS)
            ssim = " / ".join(_f(r[f"ssim_{v}"], ".2f") for v in VIEWS)
            lines.append(f"| {t['task']} | {r['method']} | {psnr} | {ssim} | {r['data_residual']:.3f} | "
                         f"{r['nfe_per_slice'] or '–'} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    seeds = s.get("seeds", [0])
    lines += ["", f"Sampled rows: mean ± standard deviation over seeds {', '.join(map(str, seeds))} (prior draw and "
              "sampler noise; the reference-length row: seed 0 only). PSNR / SSIM: `metrics.volume_metrics` (the "
              "domain's metric, data range 1, slices whose truth is constant left out). Time: mean seconds per "
              "reconstruction; peak RSS: the process's peak resident set size during the method (it includes Python, "
              "torch and the prior).",
              "", "Priors (trained once inside the benchmark, seed 0): "
              + "; ".join(f"{k}: {v['what']}, {v.get('epochs', s['epochs'])} epochs ({v['train_seconds']:.0f} s)" for k, v in result["priors"].items()) + "."]
    summ = summarise(result["tasks"])
    if summ:
        lines += ["", "Differences of mean PSNR (dB), axial / coronal / sagittal. z-TV gain: DiffusionMBIR − slice-wise "
                  "(same PC steps); all-axes: TV on z, h, w − TV on z; fast − reference: the fast mode against the "
                  "reference-length PC sampler (2,000 steps, seed 0 only), fast − PC: against the PC row of the "
                  "same seeds.", "",
                  "| task | z-TV gain | all-axes − z | fast − reference | fast − PC |", "|---|---|---|---|---|"]

        def fmt(vals):
            return "–" if vals is None else " / ".join(f"{v:+.2f}" for v in vals)

        for task, d in summ.items():
            lines.append(f"| {task} | {fmt(d.get('z_tv_gain'))} | {fmt(d.get('all_axes_minus_z'))} | "
                         f"{fmt(d.get('fast_minus_reference'))} | {fmt(d.get('fast_minus_full'))} |")
    lines += ["", meta_line(result)]
    return "\n".join(lines)


def summarise(tasks: list[dict]) -> dict:
    """Per task, differences of mean PSNR per view between rows (None when a row is missing)."""
    out = {}

    def diff(a, b):
        return None if a is None or b is None else [round(a[f"psnr_{v}"] - b[f"psnr_{v}"], 2) for v in VIEWS]

    for t in tasks:
        if t.get("skipped"):
            continue
        by_kind: dict[str, dict] = {}
        for r in t["rows"]:
            if r["finite"]:
                by_kind.setdefault(r["kind"], r)
        full, fast = by_kind.get("full"), by_kind.get("fast")
        out[t["task"]] = {"z_tv_gain": diff(full, by_kind.get("slice-wise")),
                          "all_axes_minus_z": diff(by_kind.get("all-axes"), full),
                          "fast_minus_reference": diff(fast, by_kind.get("reference")),
                          "fast_minus_full": diff(fast, full)}
    return out


def merge_results(old: dict, new: dict) -> dict:
    """``new`` with the tasks (and priors) of ``old`` that it did not re-run, in ``old``'s order then new
    ones (``--update``: re-run some tasks, keep the stored others)."""
    fresh = {t["task"]: t for t in new["tasks"]}
    tasks = [fresh.pop(t["task"], t) for t in old.get("tasks", [])] + list(fresh.values())
    out = dict(new, tasks=tasks, priors={**old.get("priors", {}), **new.get("priors", {})})
    out["summary"] = summarise(tasks)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=150, help="training epochs of the CT slice prior (6 batches each)")
    ap.add_argument("--mri-epochs", type=int, default=1000, help="training epochs of the MRI slice prior (1 batch each)")
    ap.add_argument("--steps", type=int, default=200, help="PC steps of the full sampler (2 NFE per step)")
    ap.add_argument("--ct64-epochs", type=int, default=300, help="training epochs of the 64-px CT prior (the cpu configs')")
    ap.add_argument("--full-steps", type=int, default=2000, help="PC steps of the reference-length row (0: none)")
    ap.add_argument("--full-seeds", default="0", help="seeds of the reference-length row")
    ap.add_argument("--fast", default="199", help="DDIM step counts of the fast mode (NFE = steps + 1)")
    ap.add_argument("--fast-eta", type=float, default=0.3, help="DDIM eta of the fast mode (0 diverged with the ADMM step)")
    ap.add_argument("--fast-admm", type=int, default=8, help="ADMM iterations per step of the fast mode")
    ap.add_argument("--fast-spacing", default="karras", help="time grid of the fast mode")
    ap.add_argument("--tasks", default="sv_ct_8,sv_ct_4,la_ct_90,cs_mri_x2,cs_mri_x4,cs_mri_x8,sv_ct_8_64")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the sampled methods (prior draw and sampler noise)")
    ap.add_argument("--dps", default="sv_ct_8", help="tasks to run DPS on (it needs a differentiable operator)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 stalled badly when another process held a core)")
    ap.add_argument("--run-dir", default="/tmp/medical_reconstruction_bench", help="where the priors are trained / cached")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--update", action="store_true", help="keep the stored JSON's tasks that this run does not re-run")
    ap.add_argument("--readme", action="store_true", help="write the table into domains/medical/README.md")
    args = ap.parse_args(argv)
    if args.table_only:
        result = json.loads(Path(args.out).read_text())
        if result.get("summary") != summarise(result["tasks"]):     # derived from the rows: keep it in step
            from workbench.data import write_json

            result["summary"] = summarise(result["tasks"])
            write_json(args.out, result)
    else:
        from workbench.cli import versions
        from workbench.data import data_root, write_json

        torch.set_num_threads(args.threads)
        run_dir = Path(args.run_dir).absolute()
        tasks = [t for t in args.tasks.split(",") if t]
        fast = [int(v) for v in args.fast.split(",") if v]
        epochs = {"ct": args.epochs, "mri": args.mri_epochs, "ct64": args.ct64_epochs}
        full_seeds = tuple(int(v) for v in args.full_seeds.split(",") if v)
        options = {"full_steps": args.full_steps, "fast_eta": args.fast_eta, "fast_admm": args.fast_admm,
                   "fast_spacing": args.fast_spacing}
        seeds = tuple(int(v) for v in args.seeds.split(",") if v)
        t_start = time.perf_counter()
        load0 = os.getloadavg()
        mni = Path(os.environ["WORKBENCH_DATA"]) / MNI if os.environ.get("WORKBENCH_DATA") else data_root() / MNI
        priors, out = {}, []
        for task in tasks:
            prior = TASKS[task][0]
            if prior == "mri" and not mni.exists():
                out.append({"task": task, "skipped": f"{MNI} not found under $WORKBENCH_DATA"})
                continue
            if prior not in priors:
                seconds, now = train_prior(prior, epochs[prior], run_dir / f"{prior}_{epochs[prior]}ep")
                priors[prior] = {"experiment": PRIORS[prior]["experiment"], "overrides": PRIORS[prior]["overrides"],
                                 "what": PRIORS[prior]["what"], "epochs": epochs[prior], "train_seconds": round(seconds, 1),
                                 "trained_in_this_run": now}
                print(f"prior {prior}: {seconds:.0f} s ({'trained' if now else 'cached'})", file=sys.stderr)
            small = TASK_METHODS.get(task) is None      # the 64-px task: one seed, no reference-length row
            out.append(run_task(task, epochs[prior], run_dir, args.steps, fast, tuple(args.dps.split(",")),
                                seeds if small else seeds[:1], full_seeds if small else (), **options))
        settings = {"epochs": args.epochs, "mri_epochs": args.mri_epochs, "ct64_epochs": args.ct64_epochs,
                    "steps": args.steps, "fast": fast, "full_seeds": list(full_seeds), **options, "tasks": tasks, "seeds": list(seeds), "dps": args.dps, "threads": args.threads,
                    "run_dir": str(run_dir), "seed": 0}
        result = {"benchmark": "medical_reconstruction", "settings": settings, "priors": priors, "tasks": out,
                  "summary": summarise(out), "total_seconds": round(time.perf_counter() - t_start, 1),
                  "peak_rss_process_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "memory_note": "peak_rss_mb: peak resident set size of the process during the method (/proc/self/statm "
                                 "polled every 5 ms; includes interpreter, torch, prior); peak_rss_increase_mb: that "
                                 "peak minus the RSS at the method's start; peak_rss_process_mb: ru_maxrss of the run",
                  "load_avg_at_start": [round(v, 2) for v in load0],
                  "not_applicable": {"replacement": "the core's replacement guidance needs a state-shaped observation "
                                                    "and mask; y is a sinogram / k-space",
                                     "dps": "zeta 1, untuned (one value, no sweep); a backward pass through the prior per NFE"},
                  "versions": versions(), "meta": measurement(settings)}
        if args.update and Path(args.out).exists():
            result = merge_results(json.loads(Path(args.out).read_text()), result)
        write_json(args.out, result)
    return publish(result, table, README, BLOCK, args.readme)


#: README blocks rendered from the JSON (checked by tests/test_readme_tables.py)
TABLES = {BLOCK: (table, OUT.name)}

if __name__ == "__main__":
    main()

"""Sample quality against NFE for every core sampler on a trained 2-D mixture model.

    python benchmarks/samplers.py [--epochs 200] [--n 4000] [--prediction eps] [--process vp]

Trains a small model (ToyMLP, 8 modes), then for each sampler and NFE budget draws ``n``
samples and reports the sliced Wasserstein-2 distance to the test split (lower is better),
the fraction of samples within 3 std of a mode, and wall time, on two time grids (uniform
in t, and uniform in log-SNR as DPM-Solver recommends). The "data floor" row is the
distance between two independent draws of the data of the same size. Writes
``benchmarks/results/samplers.json`` and prints a Markdown table.

    python benchmarks/samplers.py --exact [--n 10000] [--processes vp,edm] [--readme]

The exact-score section needs no training: the data are a 2-D mixture of narrow, well-separated
Gaussians whose denoiser E[x0 | x_t] (hence eps and the score) is known in closed form under every
affine process x_t = alpha x0 + sigma eps (:class:`MixtureDenoiser`). Every sampler runs on every
time grid of every process, and the error is the mean exact log-density of its samples minus the
data's own (nats; 0 is perfect, negative = too spread out, positive = collapsed onto the modes).
Writes ``benchmarks/results/samplers_exact.json`` and, with ``--readme``, the table into README.md.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _meta import ROOT, measurement, settings_match, write_block  # noqa: E402
from workbench.data import write_json  # noqa: E402
from workbench.geometry import Euclidean
from workbench.lit import EMA, DiffusionModule
from workbench.precond import Prediction
from workbench.processes import EDM, VE, VP, DiscreteDDPM, LinearInterpolant, SubVP, TrigInterpolant
from workbench.samplers import (NFECounter, sample_ddim, sample_dpm_solver, sample_euler_maruyama, sample_ode, sample_pc,
                                sample_s4)
from workbench.samplers.common import default_spacing
from workbench.toy import GaussianMixtureDataModule, ToyMLP, gaussian_mixture, toy_metrics

# name -> (function, kwargs, network evaluations per step)
SAMPLERS = {
    "euler_maruyama": (sample_euler_maruyama, {}, 1),
    "pc (snr 0.05)": (sample_pc, {"snr": 0.05}, 2),
    "ode euler": (sample_ode, {"method": "euler"}, 1),
    "ode heun": (sample_ode, {"method": "heun"}, 2),
    "ddim (eta 0)": (sample_ddim, {}, 1),
    "ddpm ancestral (ddim eta 1)": (sample_ddim, {"eta": 1.0}, 1),
    "dpm-solver++(2M)": (sample_dpm_solver, {}, 1),
}
NFES = (10, 20, 50, 100, 200)
PROCESSES = {"vp": VP, "edm": EDM, "linear": LinearInterpolant}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--n", type=int, default=None, help="samples (default 4000; 20000 with --exact)")
    ap.add_argument("--prediction", default="v")
    ap.add_argument("--process", default="vp", choices=list(PROCESSES))
    ap.add_argument("--out", default=None)
    ap.add_argument("--exact", action="store_true", help="the exact-score section (no training)")
    ap.add_argument("--processes", default=",".join(EXACT_PROCESSES), help="--exact: comma-separated processes")
    ap.add_argument("--readme", action="store_true", help="--exact: write the table into README.md")
    ap.add_argument("--table-only", action="store_true", help="only re-render the stored result (no measuring)")
    ap.add_argument("--reuse", action="store_true",
                    help="--exact: keep stored processes measured with the same settings (default: only this run's)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    if args.exact and args.table_only:  # re-render the stored result (e.g. after changing a default)
        result = json.loads(Path(args.out or Path(__file__).parent / "results" / "samplers_exact.json").read_text())
        text = exact_table(result)
        print(text)
        if args.readme:
            _write_readme(text)
        return result
    if args.table_only:
        result = json.loads(Path(args.out or Path(__file__).parent / "results" / "samplers.json").read_text())
        print(table(result))
        if args.readme:
            write_block(ROOT / "README.md", "samplers-table", table(result))
        return result
    if args.exact:
        return exact_main(args)
    args.n = args.n or 4000
    args.out = args.out or str(Path(__file__).parent / "results" / "samplers.json")
    pl.seed_everything(0, verbose=False)
    process = PROCESSES[args.process]()
    prediction = "velocity" if args.process == "linear" else args.prediction
    dm = GaussianMixtureDataModule(n_train=8192, batch_size=256)
    model = DiffusionModule(network=ToyMLP(dim=2, hidden=128, depth=3), process=process, prediction=prediction,
                            lr=2e-3, lr_decay=0.97)
    ema = EMA(0.999, warmup=True)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         callbacks=[ema], gradient_clip_val=1.0, enable_progress_bar=False,
                         enable_model_summary=False)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    train_s = time.perf_counter() - t0
    ref = dm.reference()
    floor = toy_metrics(gaussian_mixture(args.n, seed=123)[0], ref)
    rows = [{"sampler": "data floor", "nfe": 0, "sliced_w2": floor["sliced_w2"], "in_mode": floor["in_mode"],
             "seconds": 0.0}]
    model.eval()
    spacings = ["karras", "logsnr"] if args.process == "edm" else ["time", "logsnr"]
    with ema.average(model):
        for name, (fn, kw, per_step) in SAMPLERS.items():
            if fn in (sample_euler_maruyama, sample_pc) and not process.stochastic:
                continue
            for spacing in spacings:
                label = f"{name} [{spacing}]"
                for nfe in NFES:
                    steps = max(1, (nfe - 1) // per_step)
                    counter = NFECounter(model.denoiser)
                    g = torch.Generator().manual_seed(1)
                    x = process.prior_sample(torch.zeros(args.n, 2), Euclidean(), generator=g)
                    ts = process.time_grid(steps, spacing=spacing)
                    t1 = time.perf_counter()
                    out = fn(counter, x, ts, process=process, geometry=Euclidean(), generator=g, **kw)
                    sec = time.perf_counter() - t1
                    m = toy_metrics(out, ref)
                    rows.append({"sampler": label, "spacing": spacing, "nfe": counter.nfe,
                                 "sliced_w2": m["sliced_w2"], "in_mode": m["in_mode"], "seconds": round(sec, 3)})
                    print(f"{label:36s} NFE {counter.nfe:4d}  SW2 {m['sliced_w2']:.4f}  "
                          f"in-mode {m['in_mode']:.3f}  {sec:.2f}s", file=sys.stderr)
    result = {"benchmark": "samplers", "process": args.process, "prediction": prediction, "epochs": args.epochs,
              "n_samples": args.n, "train_seconds": round(train_s, 1), "torch": torch.__version__,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "rows": rows,
              "meta": measurement({"epochs": args.epochs, "n": args.n, "process": args.process,
                                   "prediction": prediction, "seed": 0})}
    write_json(args.out, result)
    print(table(result))
    return result


def table(result: dict) -> str:
    """Markdown table: one row per sampler, one column per NFE budget (sliced W2)."""
    names = [r["sampler"] for r in result["rows"] if r["sampler"] != "data floor"]
    names = list(dict.fromkeys(names))
    lines = [f"Process {result['process']} ({result['prediction']} prediction), {result['epochs']} epochs "
             f"({result['train_seconds']} s), {result['n_samples']} samples; sliced W2 to the test split "
             f"(data floor {result['rows'][0]['sliced_w2']:.4f}).", "",
             "| sampler | " + " | ".join(f"NFE≈{n}" for n in NFES) + " |",
             "|---|" + "---|" * len(NFES)]
    for name in names:
        vals = [r for r in result["rows"] if r["sampler"] == name]
        lines.append(f"| {name} | " + " | ".join(f"{r['sliced_w2']:.4f} ({r['nfe']})" for r in vals) + " |")
    return "\n".join(lines)


# -- exact-score section ---------------------------------------------------------------------------

EXACT_PROCESSES = {
    "vp": VP, "subvp": SubVP, "ve": lambda: VE(0.01, 50.0), "edm": EDM, "linear": LinearInterpolant,
    "trig": TrigInterpolant, "ddpm": lambda: DiscreteDDPM(1000), "ddpm cosine": lambda: DiscreteDDPM(1000, "cosine"),
}
EXACT_SAMPLERS = {
    "euler_maruyama": (sample_euler_maruyama, {}, 1),
    "pc (snr 0.05)": (sample_pc, {"snr": 0.05}, 2),
    "s4": (sample_s4, {}, 1),
    "ode euler": (sample_ode, {"method": "euler"}, 1),
    "ode heun": (sample_ode, {"method": "heun"}, 2),
    "ddim (eta 0)": (sample_ddim, {}, 1),
    "ddpm ancestral (ddim eta 1)": (sample_ddim, {"eta": 1.0}, 1),
    "dpm-solver++(2M)": (sample_dpm_solver, {}, 1),
}
GRIDS = ("time", "quadratic", "logsnr", "karras")
#: DiffusionModule's default sampler (DPM-Solver++(2M); chosen from this table), marked in the table
MODULE_DEFAULT = "dpm-solver++(2M)"


class MixtureDenoiser(nn.Module):
    """Exact E[x0 | x_t] for x0 ~ sum_k w_k N(mu_k, s^2 I) under x_t = alpha x0 + sigma eps.

    x_t is a mixture of N(alpha mu_k, (alpha^2 s^2 + sigma^2) I) with the same weights; given x_t
    the component has posterior weights r_k(x_t) and, within it, x0 has mean
    mu_k + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mu_k). E[x0 | x_t] = sum_k r_k (...) and
    eps = (x_t - alpha E[x0 | x_t]) / sigma (both exact, also where alpha = 0). Float64 inside.
    """

    def __init__(self, process, means: torch.Tensor, std: float, weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.process, self.std = process, float(std)
        self.means = means.double()
        w = torch.full((len(means),), 1.0 / len(means), dtype=torch.float64) if weights is None else weights.double()
        self.log_w = w.log()

    def forward(self, x, t, geometry, **extras) -> Prediction:
        t = self.process._batch_t(t, x)
        coef = self.process.at(t, x, geometry)
        c64 = self.process.coefficients(t.double())
        a, s = c64.alpha[:, None, None], c64.sigma[:, None, None]
        var = a * a * self.std**2 + s * s                                      # [B, 1, 1]
        diff = x.double()[:, None, :] - a * self.means                           # [B, K, d]
        r = torch.softmax(self.log_w - 0.5 * (diff * diff).sum(-1) / var[..., 0], dim=-1)
        x0 = (r[..., None] * (self.means + a * self.std**2 / var * diff)).sum(1)
        eps = (x.double() - a[:, 0] * x0) / s[:, 0]
        return Prediction(x0.to(x.dtype), eps.to(x.dtype), coef)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p0(x) per row."""
        d = x.shape[-1]
        diff = x.double()[:, None, :] - self.means
        comp = -0.5 * (diff * diff).sum(-1) / self.std**2 - 0.5 * d * math.log(2 * math.pi * self.std**2)
        return torch.logsumexp(self.log_w + comp, dim=-1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.multinomial(self.log_w.exp(), n, replacement=True, generator=generator)
        return self.means[k] + self.std * torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)


def exact_mixture(process, n_modes: int = 8, radius: float = 2.0, std: float = 0.1) -> MixtureDenoiser:
    """8 modes of std 0.1 on a circle of radius 2 (neighbours 15 std apart)."""
    ang = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64) / n_modes
    return MixtureDenoiser(process, radius * torch.stack([ang.cos(), ang.sin()], 1), std)


def exact_main(args) -> dict:
    n = args.n or 10000
    out_path = args.out or str(Path(__file__).parent / "results" / "samplers_exact.json")
    names = [p.strip() for p in args.processes.split(",") if p.strip()]
    ref = exact_mixture(VP())
    g = torch.Generator().manual_seed(0)
    data_mean = float(ref.log_prob(ref.sample(2_000_000, g)).mean())   # E_data[log p0], +-0.001
    floor = float(ref.log_prob(ref.sample(n, torch.Generator().manual_seed(7)).float()).mean()) - data_mean
    rows = [{"process": "data", "sampler": "data floor", "grid": None, "nfe": 0, "nats": floor}]
    t0 = time.perf_counter()
    for pname in names:
        process = EXACT_PROCESSES[pname]()
        den = exact_mixture(process)
        for sname, (fn, kw, per_step) in EXACT_SAMPLERS.items():
            if fn in (sample_euler_maruyama, sample_pc, sample_s4) and not process.stochastic:
                continue
            for grid in GRIDS:
                for nfe in NFES:
                    steps = max(1, (nfe - 1) // per_step)
                    if isinstance(process, DiscreteDDPM):
                        steps = min(steps, process.steps - 1)
                    counter = NFECounter(den)
                    gen = torch.Generator().manual_seed(1)
                    x = process.prior_sample(torch.zeros(n, 2), Euclidean(), generator=gen)
                    ts = process.time_grid(steps, spacing=grid)
                    out = fn(counter, x, ts, process=process, geometry=Euclidean(), generator=gen, **kw)
                    lp = den.log_prob(out)
                    nats = float(lp[torch.isfinite(lp)].mean()) - data_mean if torch.isfinite(lp).any() else float("nan")
                    if not torch.isfinite(out).all():
                        nats = float("nan")
                    rows.append({"process": pname, "sampler": sname, "grid": grid, "nfe": counter.nfe,
                                 "nats": round(nats, 4)})
                print(f"{pname:12s} {sname:28s} {grid:9s} "
                      + " ".join(f"{r['nats']:+.3f}({r['nfe']})" for r in rows[-len(NFES):]), file=sys.stderr)
    measured = {p: measurement({"n": n, "process": p}) for p in names}
    if args.reuse and Path(out_path).exists():  # keep processes measured earlier with the same settings
        old = json.loads(Path(out_path).read_text())
        keep = {p: m for p, m in old.get("measured", {}).items()
                if p not in names and settings_match({"meta": m}, {"n": n, "process": p})}
        rows = rows[:1] + [r for r in old["rows"][1:] if r["process"] in keep] + rows[1:]
        measured = {**keep, **measured}
    defaults = {}
    for sname, (fn, kw, _) in EXACT_SAMPLERS.items():
        defaults[sname] = default_spacing(fn, **kw)
    result = {"benchmark": "samplers_exact", "n_samples": n, "data": "8 modes, std 0.1, radius 2",
              "data_mean_logp": round(data_mean, 4), "seconds": round(time.perf_counter() - t0, 1),
              "sampler_default_spacing": defaults, "module_default_sampler": MODULE_DEFAULT,
              "torch": torch.__version__, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
              "measured": measured, "rows": rows}
    write_json(out_path, result)
    text = exact_table(result)
    print(text)
    if args.readme:
        _write_readme(text)
    return result


def _default_grid(process_name: str, sampler: str) -> str:
    """The grid a sampler runs on by default on a process (its preference, else the process's own)."""
    fn, kw, _ = EXACT_SAMPLERS[sampler]
    return default_spacing(fn, **kw) or ("karras" if process_name == "edm" else "time")


def exact_table(result: dict, budgets: tuple[int, ...] = (10, 20, 50)) -> str:
    """Markdown: rows sampler [grid], columns processes, cells the errors at NFE ~ ``budgets``."""
    measured = {r["process"] for r in result["rows"]}
    procs = [p for p in EXACT_PROCESSES if p in measured]
    floor = result["rows"][0]["nats"]
    lines = [f"Exact score, 2-D mixture ({result['data']}), {result['n_samples']} samples: mean log p0(sample) "
             f"minus the data's own (nats; data floor {floor:+.3f}), at NFE ≈ " + " / ".join(map(str, budgets))
             + ". `*` a sampler's default grid; **bold** DiffusionModule's default (DPM-Solver++(2M)) on it.", "",
             "| sampler [grid] | " + " | ".join(procs) + " |", "|---|" + "---|" * len(procs)]
    for sname in EXACT_SAMPLERS:
        for grid in GRIDS:
            cells, any_row = [], False
            for p in procs:
                rs = [r for r in result["rows"] if r["process"] == p and r["sampler"] == sname and r["grid"] == grid]
                if not rs:
                    cells.append("—")
                    continue
                any_row = True
                vals = []
                for b in budgets:
                    r = min(rs, key=lambda r: abs(r["nfe"] - b))
                    v = r["nats"]
                    vals.append("nan" if v != v else f"{v:+.2f}" if abs(v) < 9.995 else f"{v:+.0f}")
                cell = " / ".join(vals)
                if grid == _default_grid(p, sname):
                    cell = f"**{cell}** *" if sname == MODULE_DEFAULT else f"{cell} *"
                cells.append(cell)
            if any_row:
                lines.append(f"| {sname} [{grid}] | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_readme(text: str, path: Path = ROOT / "README.md") -> None:
    write_block(path, "samplers-exact-table", text)


#: README block -> renderer (and the JSON file it renders)
TABLES = {"samplers-table": (table, "samplers.json"), "samplers-exact-table": (exact_table, "samplers_exact.json")}


if __name__ == "__main__":
    main()

"""TSDiff benchmarks of the time-series domain (issue 4), at a fixed CPU budget.

    python benchmarks/timeseries.py speed
    python benchmarks/timeseries.py eval --dataset m4_hourly [--epochs 40] [--max-series N] [--seeds 0]
    python benchmarks/timeseries.py eval --dataset exchange_rate_nips
    python benchmarks/timeseries.py check --epochs 100 --run-dir R --samples 16 100 --weights raw ema
    python benchmarks/timeseries.py table

speed: the paper's model size (hidden 64, 3 blocks, d_state 128) on M4 windows (context 312 +
  prediction 48, batch 64): seconds per training batch (forward, backward, clipping, Adam) and
  seconds per series to forecast with 16 samples and quantile guidance (ancestral DDPM, 100
  steps), the two figures the issue compares with the reference code (4.8 s and 87 s here).
check: TSDiff-Q on the first --max-series (30) test windows for each --samples count and --weights
  (raw, EMA), from the --checkpoint (last, best): what the CRPS depends on, at a fraction of eval's cost.
eval: train the `<dataset>_cpu` experiment (resumed if its run exists), then on the whole test
  set: seasonal naive, ridge, TSDiff-MS and TSDiff-Q (16 samples, DDPM 100 steps, the paper's
  scales), the seasonal-naive forecasts (and with --refine-ridge the ridge ones) refined by ML-Q
  and LMC-Q (20 iterations, the paper's step sizes), and the LPS of 1,000 synthetic windows next to ridge trained on 1,000 real
  windows; CRPS (mean wQL 0.1..0.9), ND, NRMSE, wall time and NFE per forecast.
Results go to --out (default benchmarks/results/timeseries.json; each part written when it finishes);
`table` prints the Markdown tables of the domain README from the JSON alone (--readme writes them
between their markers). Every part measures: the stored results of an entry are kept only with
--reuse and only when the entry was recorded with the same settings; each measured entry records
when, with which settings and on what machine it was measured (``meta``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _meta import ROOT, meta_line, measurement, settings_match, write_block  # noqa: E402
from workbench.cli import compose_config, train, versions  # noqa: E402
from workbench.data import write_json  # noqa: E402

OUT = Path(__file__).parent / "results" / "timeseries.json"   # --out replaces it
README = ROOT / "domains" / "timeseries" / "README.md"
# the paper's refinement step sizes (configs/refinement/*-seasonal_naive.yaml)
REFINE_LR = {"exchange_rate_nips": 0.01}


def _load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {}


def _save(key: str, value: dict) -> None:
    data = _load()
    data.setdefault(key, {}).update(value)
    data["versions"] = versions()
    write_json(OUT, data)


def _metrics(fc, entries) -> dict:
    m = fc.metrics(entries)
    out = {k: round(m[k], 5) for k in ("CRPS", "ND", "NRMSE")}
    for k in ("seconds_per_series", "nfe", "seconds"):
        if k in fc.info:
            out[k] = round(float(fc.info[k]), 4) if isinstance(fc.info[k], float) else fc.info[k]
    return out


def speed(batches: int = 20, series: int = 8) -> dict:
    """Training and guided-forecast speed at the paper's M4 model size (random weights)."""
    from workbench.domains.timeseries.data import TimeSeriesDataModule, synthetic_dataset
    from workbench.domains.timeseries.forecast import TSDiff
    from workbench.domains.timeseries.geometry import series_geometry
    from workbench.domains.timeseries.networks import TSDiffNetwork
    from workbench.lit import DiffusionModule
    from workbench.processes import DiscreteDDPM

    torch.manual_seed(0)
    ds = synthetic_dataset(n_series=16, length=1000, prediction_length=48, windows=1)
    dm = TimeSeriesDataModule(ds, context_length=312, use_lags=False, batch_size=64)
    dm.setup("fit")
    module = DiffusionModule(TSDiffNetwork(dm.input_dim, 64, 3, 128, 128), DiscreteDDPM(100, "linear", 1e-4, 0.1),
                             series_geometry(), prediction="eps")
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    it = iter(dm.train_dataloader())
    times = []
    for i in range(batches + 3):
        b = next(it)
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = module._loss(b, module._generator(i)).loss.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 0.5)
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    model = TSDiff(module, context_length=312, prediction_length=48, freq="h", use_lags=False)
    entries = ds.test[:series]
    fc = model.predict(entries, guidance="quantile", scale=2.0, num_samples=16, batch_size=64, progress=False)
    out = {"train_seconds_per_batch": round(float(np.median(times)), 4),
           "forecast_seconds_per_series": round(fc.info["seconds_per_series"], 3),
           "forecast_nfe": fc.info["nfe"], "forecast_backward_passes": fc.info["backward_passes"],
           "reference_train_seconds_per_batch": 4.8, "reference_forecast_seconds_per_series": 87.0,
           "threads": torch.get_num_threads(), "batch": 64, "samples_per_series": 16,
           "parameters": sum(p.numel() for p in module.parameters())}
    out["meta"] = measurement({"batches": batches, "series": series})
    out["train_speedup"] = round(4.8 / out["train_seconds_per_batch"], 1)
    out["forecast_speedup"] = round(87.0 / out["forecast_seconds_per_series"], 1)
    return out


def _train_and_load(dataset: str, epochs: int, run_dir: Path, weights: str = "raw", checkpoint: str = "last"):
    from workbench.cli import build
    from workbench.lit import load_checkpoint, load_ema_weights

    exp = "kdd_cup_2018" if dataset.startswith("kdd") else dataset
    cfg = compose_config([f"experiment=timeseries/{exp}_cpu", f"trainer.max_epochs={epochs}", f"run_dir={run_dir}",
                          "trainer.enable_progress_bar=false", "resume=true"])
    t0 = time.perf_counter()
    last = run_dir / "checkpoints" / "last.ckpt"
    done = last.exists() and load_checkpoint(last).get("epoch", -1) + 1 >= epochs
    if not done:
        train(cfg)
    seconds = time.perf_counter() - t0
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    dm, module, _ = build(cfg)
    path = run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    ckpt = load_checkpoint(path)
    module.load_state_dict(ckpt["state_dict"])
    if weights == "ema" and not load_ema_weights(module, ckpt):
        raise SystemExit(f"{path} holds no EMA weights")
    dm.setup("fit")
    module.eval()
    return seconds, dm, module, cfg, int(ckpt.get("global_step", 0))


def _start_entry(key: str, settings: dict, reuse: bool) -> None:
    """Begin the stored entry ``key`` for a run with ``settings``: a fresh entry, unless ``reuse`` and
    the stored one was recorded with the same settings (then its results and checks are kept)."""
    data = _load()
    old = data.get(key, {})
    if not (reuse and settings_match(old, settings)):
        data[key] = {"meta": measurement(settings)}
        data["versions"] = versions()
        write_json(OUT, data)


def evaluate(dataset: str, epochs: int, run_dir: Path, max_series: int | None, seeds: list[int],
             skip: set[str], refine_ridge: bool = False, ms_scale: float | None = None,
             missing: list[str] | None = None, tag: str | None = None, weights: str = "raw",
             checkpoint: str = "last", reuse: bool = False) -> dict:
    from workbench.domains.timeseries.baselines import RidgeForecaster, seasonal_naive, training_windows
    from workbench.domains.timeseries.forecast import Forecast, TSDiff, linear_predictive_score

    secs, dm, module, cfg, steps = _train_and_load(dataset, epochs, run_dir, weights, checkpoint)
    key = f"{dataset} ({tag})" if tag else dataset
    entries = dm.dataset.test[:max_series] if max_series else dm.dataset.test
    settings = {"dataset": dataset, "epochs": epochs, "run_dir": Path(run_dir).absolute(), "max_series": max_series,
                "seeds": seeds, "weights": weights, "checkpoint": checkpoint}
    _start_entry(key, settings, reuse)
    _save(key, {"setup": {"epochs": epochs, "train_steps": steps, "train_wall_seconds_this_call": round(secs, 1),
                          "context_length": dm.context_length, "prediction_length": dm.prediction_length,
                          "lags": len(dm.lags), "test_windows": len(entries), "samples": 16,
                          "guidance_scale": float(cfg.task.scale), "seeds": seeds, "weights": weights,
                          "checkpoint": checkpoint}})
    model = TSDiff.from_datamodule(module, dm)
    P, C = dm.prediction_length, dm.context_length
    idx = [s.index(len(s) - P, P) for s in entries]
    ids = [s.item_id for s in entries]
    res: dict = dict(_load().get(key, {}).get("results", {}))   # kept only with --reuse (_start_entry)
    sn = Forecast(seasonal_naive(entries, P), ids, idx, {"method": "seasonal_naive"})
    res["Seasonal naive"] = _metrics(sn, entries)
    ridge = RidgeForecaster(C, P).fit(dm.train_series, seed=0)
    rf = Forecast(ridge.predict(entries), ids, idx, {"method": "ridge"})
    res["Linear (ridge)"] = _metrics(rf, entries)
    print(json.dumps(res, indent=1), flush=True)
    _save(key, {"results": res})
    scale = float(cfg.task.scale)
    for name, guidance in (("TSDiff-Q", "quantile"), ("TSDiff-MS", "mse")):
        if name in skip:
            continue
        if name == "TSDiff-MS" and ms_scale is not None:
            name, scale = f"TSDiff-MS (scale {ms_scale:g})", ms_scale
        runs = []
        for seed in seeds:
            try:
                fc = model.predict(entries, guidance=guidance, scale=scale, num_samples=16, seed=seed)
                runs.append(_metrics(fc, entries))
            except FloatingPointError as e:
                runs.append({"error": str(e)})
        ok = [r for r in runs if "error" not in r]
        row = dict(ok[0]) if ok else dict(runs[0])
        if len(ok) > 1:
            for k in ("CRPS", "ND", "NRMSE"):
                row[k] = round(float(np.mean([r[k] for r in ok])), 5)
                row[k + "_std"] = round(float(np.std([r[k] for r in ok])), 5)
        row["scale"] = scale
        res[name] = row
        print(name, row, flush=True)
        _save(key, {"results": res})
    for kind in missing or []:
        # the paper's missing-value experiment: half of the context hidden (RM random, BM-B / BM-E a block)
        fc = model.predict(entries, guidance="quantile", scale=float(cfg.task.scale), num_samples=16,
                           missing=kind, n_missing=C // 2, seed=0)
        row = _metrics(fc, entries)
        res[f"TSDiff-Q, {kind} (half the context missing)"] = row
        print(kind, row, flush=True)
        _save(key, {"results": res})
    lr = REFINE_LR.get(dataset, 0.1)
    if "refine" not in skip:
        bases = [("Seasonal naive", sn)] + ([("Linear (ridge)", rf)] if refine_ridge else [])
        for base_name, base in bases:
            for method in ("ml", "lmc"):
                r = model.refine(entries, base, method=method, guidance="quantile", iterations=20, step_size=lr,
                                 noise_scale=0.1, num_samples=16, seed=0)
                row = _metrics(r, entries)
                row["step"] = r.info["step"]
                res[f"{base_name} + {method.upper()}-Q"] = row
                print(base_name, method, row, flush=True)
                _save(key, {"results": res})
    if "lps" not in skip:
        t0 = time.perf_counter()
        syn = model.synthesize(1000, seed=0)
        syn_s = time.perf_counter() - t0
        lps = linear_predictive_score(syn, entries, C, P)
        real = training_windows(dm.train_series, C + P, 1000, seed=0)
        real_scaled = real / np.maximum(np.abs(real[:, :C]).mean(1, keepdims=True), 1e-10)
        lps_real = linear_predictive_score(real_scaled, entries, C, P)
        res["LPS"] = {"synthetic_CRPS": round(lps["CRPS"], 5), "real_CRPS": round(lps_real["CRPS"], 5),
                      "synthetic_windows": 1000, "sampling_seconds": round(syn_s, 1)}
        print("LPS", res["LPS"], flush=True)
        _save(key, {"results": res})
    return res


def check(dataset: str, epochs: int, run_dir: Path, max_series: int, samples: list[int], weights: list[str],
          tag: str | None = None, checkpoint: str = "last", reuse: bool = False) -> dict:
    """TSDiff-Q on the first `max_series` test windows only, for each sample count and weight set
    (the raw weights, as TSDiff evaluates, or the EMA average the core keeps): a quick look at what
    the CRPS gap to the paper depends on, without a whole-test-set run per variant."""
    from workbench.domains.timeseries.forecast import TSDiff

    key = f"{dataset} ({tag})" if tag else dataset
    stored = _load().get(key, {})
    settings = {"dataset": dataset, "epochs": epochs, "run_dir": Path(run_dir).absolute(), "max_series": max_series,
                "checkpoint": checkpoint}
    keep = reuse and settings_match(stored.get("checks_meta") and {"meta": stored["checks_meta"]} or {}, settings)
    out = dict(stored.get("checks", {})) if keep else {}
    _save(key, {"checks": out, "checks_meta": measurement(settings)})
    for w in weights:
        _, dm, module, cfg, steps = _train_and_load(dataset, epochs, run_dir, w, checkpoint)
        entries = dm.dataset.test[:max_series]
        model = TSDiff.from_datamodule(module, dm)
        for n in samples:
            fc = model.predict(entries, guidance="quantile", scale=float(cfg.task.scale), num_samples=n, seed=0)
            out[f"{w} weights, {n} samples, first {len(entries)} windows, {checkpoint} checkpoint at {steps} steps"] = \
                _metrics(fc, entries)
            print(w, n, out, flush=True)
            _save(key, {"checks": out})
    return out


ORDER = ["Seasonal naive", "Linear (ridge)", "TSDiff-MS", "TSDiff-Q", "Seasonal naive + ML-Q",
         "Seasonal naive + LMC-Q", "Linear (ridge) + ML-Q", "Linear (ridge) + LMC-Q"]
PAPER = {"m4_hourly": {"Seasonal naive": 0.048, "TSDiff-MS": 0.045, "TSDiff-Q": 0.036},
         "exchange_rate_nips": {"Seasonal naive": 0.011, "TSDiff-MS": 0.018, "TSDiff-Q": 0.011}}


def speed_table(data: dict) -> str:
    """The speed figures at the paper's model size, with the whole-test-set forecast times of `eval`."""
    sp = data["speed"]
    whole = [(f"{r['seconds_per_series']:.2g} over the whole {name} test set", r["seconds_per_series"])
             for key, name in (("m4_hourly", "M4"), ("exchange_rate_nips", "exchange rate"))
             if (r := data.get(key, {}).get("results", {}).get("TSDiff-Q")) and "seconds_per_series" in r]
    secs = [sp["forecast_seconds_per_series"]] + [s for _, s in whole]
    ups = sorted({round(87.0 / x) for x in secs})
    up = f"{ups[0]}x" if len(ups) == 1 else f"{ups[0]}–{ups[-1]}x"
    fc = "; ".join([f"{sp['forecast_seconds_per_series']} (random weights, {sp.get('meta', {}).get('settings', {}).get('series', 8)} series)"]
                   + [t for t, _ in whole])
    lines = ["| figure | ours | reference code, same machine | speed-up |", "|---|---|---|---|",
             f"| training, s / batch (forward, backward, clipping, Adam) | {sp['train_seconds_per_batch']} | "
             f"{sp['reference_train_seconds_per_batch']:g} | {sp['train_speedup']}x |",
             f"| forecast, s / series, {sp['samples_per_series']} samples, quantile guidance, DDPM 100 steps "
             f"({sp['forecast_nfe']} NFE + {sp['forecast_backward_passes']} backward passes) | {fc} | "
             f"{sp['reference_forecast_seconds_per_series']:g} | {up} |",
             "", f"{sp['threads']} torch threads; {sp['parameters']:,} parameters. " + meta_line(sp)]
    return "\n".join(lines)


def table(data: dict) -> str:
    """The accuracy tables of every `eval` entry (and its quick checks)."""
    lines = []
    keys = [k for base in ("m4_hourly", "exchange_rate_nips", "etth1")
            for k in sorted(data) if k == base or k.startswith(base + " (")]
    for key in keys:
        ds = key.split(" (")[0]
        d = data.get(key)
        if not d or "results" not in d:
            continue
        st = d.get("setup", {})
        how = "".join([", EMA weights" if st.get("weights") == "ema" else "",
                       ", the best validation-CRPS checkpoint" if st.get("checkpoint") == "best" else ""])
        lines += [f"**{key}** ({st.get('test_windows')} test windows, {st.get('train_steps')} training steps{how}, "
                  f"guidance scale {st.get('guidance_scale')})", "",
                  "| method | CRPS | ND | NRMSE | s / series | NFE | paper CRPS |", "|---|---|---|---|---|---|---|"]
        names = [n for n in ORDER if n in d["results"]]
        extra = sorted(n for n in d["results"] if n.startswith("TSDiff-MS (scale"))
        if extra:
            at = names.index("TSDiff-Q") if "TSDiff-Q" in names else len(names)
            names[at:at] = extra
        names += sorted(n for n in d["results"] if n.startswith("TSDiff-Q, "))
        for name in names:
            r = d["results"][name]
            if "error" in r:
                lines.append(f"| {name} (scale {r.get('scale', st.get('guidance_scale'))}) | diverged (non-finite) | | | | | "
                             f"{PAPER.get(ds, {}).get(name, '')} |")
                continue
            crps = f"{r['CRPS']:.4f}" + (f" ± {r['CRPS_std']:.4f}" if "CRPS_std" in r else "")
            paper = PAPER.get(ds, {}).get(name.split(" (")[0], "")
            lines.append(f"| {name} | {crps} | {r['ND']:.4f} | {r['NRMSE']:.4f} | "
                         f"{r.get('seconds_per_series', 0):.3g} | {r.get('nfe', '')} | {paper} |")
        lps = d["results"].get("LPS")
        if lps:
            lines += ["", f"LPS (ridge trained on 1,000 windows, CRPS on the test set): synthetic {lps['synthetic_CRPS']:.4f}, "
                      f"real {lps['real_CRPS']:.4f}."]
        if d.get("checks"):
            lines += ["", "Quick checks, TSDiff-Q on the first test windows only (`check`):", "",
                      "| variant | CRPS | ND | NRMSE |", "|---|---|---|---|"]
            lines += [f"| {name} | {r['CRPS']:.4f} | {r['ND']:.4f} | {r['NRMSE']:.4f} |" for name, r in d["checks"].items()]
        lines += ["", meta_line(d), ""]
    return "\n".join(lines).strip("\n")


#: README block -> renderer (and the JSON entry it needs)
TABLES = {"timeseries-speed-table": (speed_table, "speed"), "timeseries-table": (table, None)}


def write_readme(data: dict, path: Path | None = None) -> None:
    for name, (fn, key) in TABLES.items():
        if key is None or key in data:
            write_block(path or README, name, fn(data))


def main(argv: list[str] | None = None) -> None:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "eval", "check", "table"])
    ap.add_argument("--dataset", default="m4_hourly")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--max-series", type=int, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--skip", nargs="*", default=[], help="parts to skip: TSDiff-Q TSDiff-MS refine lps")
    ap.add_argument("--refine-ridge", action="store_true", help="also refine the ridge forecasts")
    ap.add_argument("--ms-scale", type=float, default=None, help="MSE-guidance scale (default: the paper's quantile scale)")
    ap.add_argument("--tag", default=None, help="store the results under '<dataset> (<tag>)' (e.g. a longer run)")
    ap.add_argument("--missing", nargs="*", default=[], help="missing-value scenarios to run: RM BM-B BM-E")
    ap.add_argument("--weights", nargs="+", default=["raw"], choices=["raw", "ema"],
                    help="evaluate the raw weights (TSDiff's way) or the core's EMA average (check: both)")
    ap.add_argument("--samples", type=int, nargs="+", default=[16], help="check: forecast sample counts")
    ap.add_argument("--checkpoint", default="last", choices=["last", "best"],
                    help="the last checkpoint or the best validation CRPS (callbacks.forecast_val)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep an entry's stored results when it was recorded with the same settings")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/timeseries.json)")
    ap.add_argument("--readme", action="store_true", help="write the tables into domains/timeseries/README.md")
    a = ap.parse_args(argv)
    OUT = a.out or OUT
    if a.what == "speed":
        r = speed()
        _save("speed", r)
        print(json.dumps(r, indent=1))
    else:
        run_dir = (a.run_dir or Path("benchmarks/runs") / f"tsdiff_{a.dataset}").absolute()
    if a.what == "eval":
        evaluate(a.dataset, a.epochs, run_dir, a.max_series, a.seeds, set(a.skip), a.refine_ridge, a.ms_scale,
                 a.missing, a.tag, a.weights[0], a.checkpoint, a.reuse)
    elif a.what == "check":
        check(a.dataset, a.epochs, run_dir, a.max_series or 30, a.samples, a.weights, a.tag, a.checkpoint, a.reuse)
    print(table(_load()))
    if a.readme:
        write_readme(_load())


if __name__ == "__main__":
    sys.exit(main())

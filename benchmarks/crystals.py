"""Crystals (issue: CrysBFN): Perov-5 CSP at a fixed CPU budget and equal network size, CrysBFN at 10 /
50 / 100 steps against a DiffCSP-style wrapped-normal diffusion at 50 / 100 / 200 NFE, plus Perov-5
generation with CrysBFN, and the per-step training / sampling cost against the reference code's.

    python benchmarks/crystals.py [--budget-seconds 900] [--n-test 200] [--n-gen 200] [--gen-steps 100]
        [--run-dir /tmp/crystals_bench] [--readme]
    python benchmarks/crystals.py --table-only [--readme]   # re-render from the stored JSON

* Data: Perov-5 (``$WORKBENCH_DATA/crystals/perov_5``). train.csv is absent from the shipped data, so
  every model trains on val.csv (3,787 crystals) and is evaluated on the first ``--n-test`` crystals of
  test.csv: a reduced benchmark, not the paper's split.
* Models (one seed, 0), all with the network of ``crystals/perov_5_csp_cpu`` (CSPNet hidden 128, 4 layers,
  32 frequencies, time_dim 64; batch 128), each trained for ``--budget-seconds`` of wall clock (Lightning's
  ``max_time``; validation off) with the CLI (``workbench.cli.train``) into ``<run-dir>/<model>`` and
  reused from there (a marker file ``done.json`` records a finished training and its budget):
  ``crysbfn_n{10,50,100}`` (``experiment=crystals/perov_5_csp_cpu``, ``method.steps=n``: the schedule
  depends on n, so one model per n, sampled with n steps = n NFE); ``crysbfn_n50_refhead`` (n = 50 with
  the reference's coordinate head, ``network.coord_scale=none``: the ablation of our default head); ``diffcsp``
  (``experiment=crystals/diffcsp_perov_5_csp_cpu``: VE wrapped normal on frac + VP lattice, eps
  prediction, predictor-corrector) sampled with 25 / 50 / 100 PC steps (2 NFE per step + 1 final
  denoising call); ``crysbfn_gen`` (``experiment=crystals/perov_5_gen_cpu``, ``method.steps=--gen-steps``).
* CSP metrics (``crystal_metrics``): match rate and RMSE (StructureMatcher stol 0.5, angle_tol 10,
  ltol 0.3; a pair counts when prediction and truth are valid, as DiffCSP), one sample per test crystal.
  Generation: ``--n-gen`` samples; structural / compositional validity, COV-R / COV-P (perov_5 cut-offs
  0.2 / 4), W(density), W(#elements) against the same ``--n-test`` test crystals.
* Cost: sampling seconds per structure (all ``--n-test`` in one batch, one thread); training steps done
  in the budget; and a separate step time on a fixed batch of 128 (forward + backward + AdamW step, median
  of ``--step-reps`` after 3 warm-up steps) for CrysBFN n = 50 (the reference's figure: 0.25-0.30 s per
  step, 0.53 s per structure to sample, on this machine; issue text) and the diffusion baseline.
* One torch thread throughout; the load average at start and end is recorded (another benchmark may
  hold the other core).

Writes ``benchmarks/results/crystals.json``; ``--readme`` renders the table into
``domains/crystals/README.md`` (block ``crystals-table``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _meta import ROOT, meta_line, measurement, publish  # noqa: E402

OUT = Path(__file__).parent / "results" / "crystals.json"
README = ROOT / "domains" / "crystals" / "README.md"
BLOCK = "crystals-table"
REF_STEP_S = (0.25, 0.30)     # the reference code on this machine (issue text): s per training step
LABELS = {"crysbfn_n50_refhead": "CrysBFN, the reference's coordinate head (`coord_scale=none`)"}
REF_SAMPLE_S = 0.53           # and s per structure to sample (n = 50, batch 128)


def models(gen_steps: int) -> dict[str, tuple[str, list[str]]]:
    return {
        "crysbfn_n10": ("crystals/perov_5_csp_cpu", ["method.steps=10"]),
        "crysbfn_n50": ("crystals/perov_5_csp_cpu", ["method.steps=50"]),
        "crysbfn_n100": ("crystals/perov_5_csp_cpu", ["method.steps=100"]),
        "crysbfn_n50_refhead": ("crystals/perov_5_csp_cpu", ["method.steps=50", "network.coord_scale=none"]),
        "diffcsp": ("crystals/diffcsp_perov_5_csp_cpu", []),
        "crysbfn_gen": ("crystals/perov_5_gen_cpu", [f"method.steps={gen_steps}"]),
    }


def _common(run: Path, n_test: int, n_sample: int, seed: int = 0) -> list[str]:
    return [f"run_dir={run}", "threads=1", f"seed={seed}", "datamodule.source=perov_5", f"datamodule.max_test={n_test}",
            f"sample.n={n_sample}", f"sample.batch_size={n_sample}", "sample.plot=false",
            "trainer.enable_progress_bar=false"]


def train_model(name: str, exp: str, extra: list[str], run: Path, budget: float, n_test: int, n_sample: int) -> dict:
    """Train ``name`` for ``budget`` seconds of wall clock (or reuse a finished run)."""
    from workbench.cli import compose_config, train

    marker = run / "done.json"
    if marker.exists():
        rec = json.loads(marker.read_text())
        if rec.get("budget_seconds") == budget:
            return {**rec, "trained_in_this_run": False}
    over = [f"experiment={exp}", *_common(run, n_test, n_sample), *extra, "resume=false",
            "trainer.max_epochs=100000", f"+trainer.max_time={{seconds:{int(budget)}}}",
            "+trainer.limit_val_batches=0"]
    cfg = compose_config(over)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - t0
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    steps = int(ckpt["global_step"])
    rec = {"model": name, "experiment": exp, "overrides": extra, "budget_seconds": budget,
           "train_wall_seconds": round(seconds, 1), "train_steps": steps, "epochs": int(ckpt.get("epoch", -1)) + 1,
           "s_per_step_in_budget": round(budget / max(steps, 1), 4),
           "load_avg_at_start": [round(v, 2) for v in load0]}
    marker.write_text(json.dumps(rec))
    return {**rec, "trained_in_this_run": True}


def evaluate_model(exp: str, extra: list[str], run: Path, n_test: int, n_sample: int, steps: int | None,
                   seed: int = 0) -> dict:
    """Sample (timed) and score; returns the metrics with the sampling cost. ``seed`` sets the sampler's
    generator (``seed + 1``, as ``workbench evaluate``); the trained model is the same."""
    from workbench.cli import _draw, _load_run, compose_config
    from workbench.data import call_with_meta

    over = [f"experiment={exp}", *_common(run, n_test, n_sample, seed), *extra]
    if steps is not None:
        over.append(f"sample.steps={steps}")
    cfg = compose_config(over)
    dm, module, metrics_fn, _ = _load_run(cfg)
    module.eval()
    t0 = time.perf_counter()
    samples, meta = _draw(cfg, dm, module)
    sample_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = {k: float(v) for k, v in call_with_meta(metrics_fn, samples, dm.reference(), meta=meta).items()}
    return {"metrics": metrics, "sample_steps": int(cfg.sample.steps), "sampling_seconds": round(sample_s, 2),
            "s_per_structure": round(sample_s / n_sample, 5), "metric_seconds": round(time.perf_counter() - t0, 1)}


def sample_time(exp: str, extra: list[str], run: Path, n_test: int, batch: int) -> float:
    """Seconds per structure to sample one batch of ``batch`` test compositions (no scoring)."""
    from workbench.cli import _draw, _load_run, compose_config

    cfg = compose_config([f"experiment={exp}", *_common(run, n_test, batch), *extra])
    dm, module, _, _ = _load_run(cfg)
    module.eval()
    t0 = time.perf_counter()
    _draw(cfg, dm, module)
    return round((time.perf_counter() - t0) / batch, 5)


def step_time(exp: str, extra: list[str], reps: int, batch: int = 128) -> dict:
    """Median wall time of forward + backward + AdamW step on one fixed training batch."""
    from workbench.cli import build, compose_config

    cfg = compose_config([f"experiment={exp}", "threads=1", "seed=0", "datamodule.source=perov_5",
                          f"datamodule.batch_size={batch}", *extra])
    dm, module, _ = build(cfg)
    dm.prepare_data()
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    times = []
    for k in range(reps + 3):
        t0 = time.perf_counter()
        loss = module._loss(b, g).loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k >= 3:
            times.append(time.perf_counter() - t0)
    return {"batch": batch, "reps": reps, "median_s": round(statistics.median(times), 4),
            "min_s": round(min(times), 4), "max_s": round(max(times), 4)}


def nfe(model: str, steps: int) -> int:
    """Network calls per sample: n for CrysBFN; PC: one predictor + one corrector per step, + 1 denoising."""
    return steps if model.startswith("crysbfn") else 2 * steps + 1


# -- rendering -----------------------------------------------------------------------------------------------
def _f(v, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def table(result: dict) -> str:
    s = result["settings"]
    tr = {m["model"]: m for m in result["training"]}
    lines = [f"Perov-5 CSP, one sample per test crystal (first {s['n_test']} of test.csv), every model trained "
             f"{s['budget_seconds']:.0f} s of wall clock on val.csv (not the paper's split), CSPNet hidden 128, "
             "4 layers, batch 128, one training seed, one torch thread; the first match rate / RMSE are at sampling "
             "seed 0, the next two columns over the sampling seeds of the same trained model:", "",
             "| method | steps | NFE | match rate (%) | RMSE | match rate over sampling seeds (%): mean (min-max) | "
             "RMSE over seeds: mean | sampling (s / structure) | training steps in budget | "
             "s / training step | load avg at training start |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["csp"]:
        t = tr[r["model"]]
        m = r["metrics"]
        seeds = r.get("by_seed") or []
        rates = [100 * b["match_rate"] for b in seeds]
        rmses = [b["rmse"] for b in seeds if b.get("rmse") is not None and b["rmse"] == b["rmse"]]
        spread = (f"{statistics.mean(rates):.1f} ({min(rates):.1f}-{max(rates):.1f}), {len(rates)} seeds"
                  if len(rates) > 1 else "-")
        lines.append(f"| {r['label']} | {r['sample_steps']} | {r['nfe']} | {100 * m['match_rate']:.1f} | "
                     f"{_f(m.get('rmse'), '{:.4f}')} | {spread} | "
                     f"{_f(statistics.mean(rmses) if len(rates) > 1 and rmses else None, '{:.4f}')} | "
                     f"{r['s_per_structure']:.4f} | {t['train_steps']} | "
                     f"{t['s_per_step_in_budget']:.3f} | {t['load_avg_at_start'][0]:.1f} |")
    st = result["step_time"]
    lines += ["", f"Training step on a fixed batch of {st['crysbfn_n50']['batch']} (forward + backward + AdamW, median "
              f"of {st['crysbfn_n50']['reps']}): CrysBFN n = 50 {st['crysbfn_n50']['median_s']:.3f} s, diffusion "
              f"{st['diffcsp']['median_s']:.3f} s; reference code on this machine {REF_STEP_S[0]:.2f}-{REF_STEP_S[1]:.2f} s "
              f"(x{REF_STEP_S[0] / st['crysbfn_n50']['median_s']:.1f}-{REF_STEP_S[1] / st['crysbfn_n50']['median_s']:.1f}). "
              f"Sampling CrysBFN n = 50: {result['sample_s_per_structure_n50']:.4f} s per structure vs the reference's "
              f"{REF_SAMPLE_S:.2f} s (x{REF_SAMPLE_S / result['sample_s_per_structure_n50']:.0f}; both at batch 128)."]
    g = result.get("gen")
    if g:
        m = g["metrics"]
        t = tr["crysbfn_gen"]
        lines += ["", f"Perov-5 generation, CrysBFN n = {g['sample_steps']}, {s['n_gen']} samples, {t['train_steps']} "
                  f"training steps in {s['budget_seconds']:.0f} s; COV / W against the same {s['n_test']} test crystals:", "",
                  "| struct. valid (%) | comp. valid (%) | COV-R (%) | COV-P (%) | W(density) | W(#elements) | "
                  "sampling (s / structure) |", "|---|---|---|---|---|---|---|",
                  f"| {_f(100 * m['struct_valid'], '{:.1f}')} | {_f(100 * m['comp_valid'], '{:.1f}')} | "
                  f"{_f(100 * m['cov_recall'], '{:.1f}') if 'cov_recall' in m else '-'} | "
                  f"{_f(100 * m['cov_precision'], '{:.1f}') if 'cov_precision' in m else '-'} | "
                  f"{_f(m.get('wdist_density'))} | {_f(m.get('wdist_num_elems'))} | {g['s_per_structure']:.4f} |"]
    la = result.get("load_avg", {})
    lines += ["", f"*Reduced benchmark: {s['note']} Load average (1, 5, 15 min) at start {la.get('start')}, at end "
              f"{la.get('end')}.*", "", meta_line(result)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-seconds", type=float, default=900.0, help="training wall clock per model")
    ap.add_argument("--n-test", type=int, default=200, help="first test crystals evaluated (CSP) / compared (gen)")
    ap.add_argument("--n-gen", type=int, default=200, help="generated samples")
    ap.add_argument("--gen-steps", type=int, default=100, help="n of the generation model")
    ap.add_argument("--pc-steps", default="25,50,100", help="PC steps of the diffusion baseline (NFE = 2 steps + 1)")
    ap.add_argument("--sample-seeds", default="10,11", help="extra sampling seeds for the CSP spread (0 is always run)")
    ap.add_argument("--step-reps", type=int, default=20, help="timed steps of the fixed-batch step time")
    ap.add_argument("--models", default="crysbfn_n10,crysbfn_n50,crysbfn_n100,crysbfn_n50_refhead,diffcsp,crysbfn_gen")
    ap.add_argument("--retrain", default="", help="models whose stored training is discarded first (comma list)")
    ap.add_argument("--note", default="", help="extra text for the table's note (e.g. what was cut for time)")
    ap.add_argument("--run-dir", default="/tmp/crystals_bench", help="where the models are trained / reused")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--readme", action="store_true", help="write the table into domains/crystals/README.md")
    args = ap.parse_args(argv)
    if args.table_only:
        result = json.loads(Path(args.out).read_text())
    else:
        from workbench.cli import versions
        from workbench.data import data_root, write_json

        torch.set_num_threads(1)
        run_dir = Path(args.run_dir).absolute()
        pc_steps = [int(v) for v in args.pc_steps.split(",") if v]
        sample_seeds = [int(v) for v in args.sample_seeds.split(",") if v and int(v) != 0]
        specs = models(args.gen_steps)
        chosen = [m for m in args.models.split(",") if m]
        load0 = os.getloadavg()
        t_start = time.perf_counter()
        training, csp, gen = [], [], None
        st = {"crysbfn_n50": step_time(*specs["crysbfn_n50"], args.step_reps),
              "diffcsp": step_time(*specs["diffcsp"], args.step_reps)}
        print(f"step time: {st}", file=sys.stderr)
        for name in chosen:
            exp, extra = specs[name]
            is_gen = name == "crysbfn_gen"
            if name in args.retrain.split(","):
                (run_dir / name / "done.json").unlink(missing_ok=True)
            n_sample = args.n_gen if is_gen else args.n_test
            rec = train_model(name, exp, extra, run_dir / name, args.budget_seconds, args.n_test, n_sample)
            training.append(rec)
            print(f"{name}: {rec['train_steps']} steps in {rec['train_wall_seconds']} s", file=sys.stderr)
            for steps in (pc_steps if name == "diffcsp" else [None]):
                r = evaluate_model(exp, extra, run_dir / name, args.n_test, n_sample, steps)
                r.update(model=name, label=LABELS.get(name, "CrysBFN" if name.startswith("crysbfn") else "DiffCSP-style diffusion (PC)"))
                r["nfe"] = nfe(name, r["sample_steps"])
                print(f"{name} @ {r['sample_steps']}: {r['metrics']} ({r['s_per_structure']} s/structure)", file=sys.stderr)
                if not is_gen:   # the spread over sampling seeds (same trained model)
                    r["by_seed"] = [{"seed": 0, "match_rate": r["metrics"]["match_rate"], "rmse": r["metrics"].get("rmse")}]
                    for sd in sample_seeds:
                        m = evaluate_model(exp, extra, run_dir / name, args.n_test, n_sample, steps, seed=sd)["metrics"]
                        r["by_seed"].append({"seed": sd, "match_rate": m["match_rate"], "rmse": m.get("rmse")})
                    print(f"  by sampling seed: {r['by_seed']}", file=sys.stderr)
                if is_gen:
                    gen = r
                else:
                    csp.append(r)
        n50 = None
        if "crysbfn_n50" in chosen:   # the reference's sampling figure is at batch 128: time that too (no metrics)
            n50 = sample_time(*specs["crysbfn_n50"], run_dir / "crysbfn_n50", args.n_test, 128)
            print(f"crysbfn_n50 sampling at batch 128: {n50} s/structure", file=sys.stderr)
        note = (f"{args.budget_seconds:.0f} s of training per model (the paper trains for days on a GPU), "
                f"{args.n_test} test crystals, val-as-train split, one training seed (0). "
                + (args.note + " " if args.note else "")).strip()
        settings = {"budget_seconds": args.budget_seconds, "n_test": args.n_test, "n_gen": args.n_gen,
                    "gen_steps": args.gen_steps, "pc_steps": pc_steps, "step_reps": args.step_reps,
                    "sample_seeds": [0, *sample_seeds],
                    "models": chosen, "threads": 1, "seed": 0, "run_dir": str(run_dir), "note": note,
                    "data": str(data_root() / "crystals" / "perov_5"), "train_split": "val", "test_split": "test"}
        result = {"benchmark": "crystals", "settings": settings, "training": training, "csp": csp, "gen": gen,
                  "step_time": st, "sample_s_per_structure_n50": n50, "sample_batch_n50": 128,
                  "reference": {"train_step_s": list(REF_STEP_S), "sample_s_per_structure": REF_SAMPLE_S,
                                "what": "wu-han-lin/CrysBFN on this 2-core machine, hidden 128, 4 layers, n = 50, "
                                        "batch 128 (issue text; not re-measured here)"},
                  "load_avg": {"start": [round(v, 2) for v in load0], "end": [round(v, 2) for v in os.getloadavg()]},
                  "total_seconds": round(time.perf_counter() - t_start, 1), "versions": versions(),
                  "meta": measurement(settings)}
        write_json(args.out, result)
    return publish(result, table, README, BLOCK, args.readme)


#: README blocks rendered from the JSON (checked by tests/test_readme_tables.py)
TABLES = {BLOCK: (table, OUT.name)}

if __name__ == "__main__":
    main()

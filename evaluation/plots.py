"""The report's figures of one setting: per loss, validation loss vs steps, FLOPs and wall-clock (every run
overlaid, ± 1 sd bands over seeds, the baseline's final loss as a line); CIDEr / FID / CLIP score vs steps;
final-loss bars (* = differs from the baseline, Holm-adjusted); the merges as differences to the headline run;
the headline run's gap to the baseline along training (paired by seed, 95% band); a selection's score against
its candidates' learning rates."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluation.significance import ALPHA, SeedStat  # noqa: E402

AXES = {"step": "training steps", "flops": "training FLOPs", "time": "wall-clock (s)"}
EVAL_LABELS = {"eval/cider": "CIDEr (higher is better)", "eval/fid": "FID (lower is better)",
               "eval/clip_score": "CLIP score (higher is better)"}


def band(ax, label: str, xs: list[np.ndarray], ys: list[np.ndarray], emphasis: bool) -> None:
    """Seed mean as a line; with >= 2 seeds a ± 1 sample-sd band around it (named in the legend)."""
    n = min(len(y) for y in ys)
    x = np.mean([v[:n] for v in xs], axis=0)
    y = np.stack([v[:n] for v in ys])
    name = label if len(ys) == 1 else f"{label} ({len(ys)} seeds, ± 1 sd)"
    line, = ax.plot(x, y.mean(0), marker="o", markersize=3, label=name, lw=2.2 if emphasis else 1.3,
                    zorder=3 if emphasis else 2)
    if len(ys) > 1:
        sd = y.std(0, ddof=1)
        ax.fill_between(x, y.mean(0) - sd, y.mean(0) + sd, color=line.get_color(), alpha=0.25, lw=0, zorder=1)


def _error_bars(ax, xs, values, errors) -> None:
    """Error bars only where seed noise was measured: a one-seed bar gets none (not a zero-width one)."""
    measured = [(x, v, e) for x, v, e in zip(xs, values, errors) if e is not None]
    if measured:
        x, v, e = zip(*measured)
        ax.errorbar(x, v, yerr=e, fmt="none", ecolor="black", capsize=3, lw=1)


def _save(fig, ax, path: Path) -> Path:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_losses(results, figures: Path) -> list[Path]:
    baseline = results.roles.baseline
    out = []
    for m in results.losses:
        for axis in AXES:
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for base, names in results.groups.items():
                band(ax, base, [results.curves[n][m][axis] for n in names],
                     [results.curves[n][m]["loss"] for n in names], base == baseline)
            if results.has(baseline):
                final = np.mean([results.curves[n][m]["loss"][-1] for n in results.groups[baseline]])
                ax.axhline(final, color="grey", ls="--", lw=1, label=f"{baseline} final (seed mean)")
                lows = [c[m]["loss"].min() for c in results.curves.values()]
                ax.set_ylim(min(lows) - 0.05 * final, final * 1.6)  # the interesting part: near the baseline's end
            ax.set(xlabel=AXES[axis], ylabel=f"val loss ({m})", title=f"{results.setting}: {m} validation loss")
            out.append(_save(fig, ax, figures / f"val_loss_{m}_vs_{axis}.png"))
    return out


def plot_eval_curves(results, figures: Path) -> list[Path]:
    out = []
    for key, label in EVAL_LABELS.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        drawn = False
        for base, names in results.groups.items():
            curves = [results.curves[n][key] for n in names if len(results.curves[n][key]["step"])]
            if curves:
                band(ax, base, [c["step"] for c in curves], [c["value"] for c in curves], base == results.roles.baseline)
                drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set(xlabel="training steps", ylabel=label, title=f"{results.setting}: {label}")
        out.append(_save(fig, ax, figures / f"{key.split('/')[1]}_vs_step.png"))
    return out


def plot_final_losses(results, final_rows: list[dict], comparisons: list[dict], figures: Path) -> list[Path]:
    """Final val loss per run (seed mean, ± 1 sd where measured); * = differs from the baseline (Holm p < α)."""
    baseline = results.roles.baseline
    differs = {(r["run"], r["loss"]) for r in comparisons
               if r["reference"] == baseline and r.get("differs_p") == "yes"}
    fig, axes = plt.subplots(1, len(results.modalities), figsize=(4.5 * len(results.modalities), 4.2), squeeze=False)
    for ax, m in zip(axes[0], results.modalities):
        present = [r for r in final_rows if isinstance(r[f"curve/loss_{m}"], SeedStat)]
        stats = [r[f"curve/loss_{m}"] for r in present]
        values = [s.mean for s in stats]
        errors = [s.std or 0.0 for s in stats]
        ax.bar(range(len(present)), values, color=["grey" if r["run"] == baseline else "C0" for r in present])
        _error_bars(ax, range(len(present)), values, [s.std for s in stats])
        for i, r in enumerate(present):
            if (r["run"], m) in differs:
                ax.annotate("*", (i, values[i] + errors[i]), ha="center", va="bottom", fontsize=12)
        ax.set_xticks(range(len(present)), [f"{r['run']} (n={r['seeds']})" for r in present],
                      rotation=60, ha="right", fontsize=7)
        if values:
            ax.set_ylim(min(v - e for v, e in zip(values, errors)) * 0.98,
                        max(v + e for v, e in zip(values, errors)) * 1.01)
        ax.set_title(f"final {m} val loss (* Holm p<{ALPHA} vs {baseline})", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path = figures / "ablations_final_val_loss.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_merges(results, rows: list[dict], figures: Path) -> list[Path]:
    """Bars per modality, grouped by run: final val loss minus the headline run's (± its standard error where
    measured; * Holm p < α)."""
    if not rows:
        return []
    headline = results.roles.headline
    runs = [r for r in dict.fromkeys(row["run"] for row in rows) if r != headline]
    by = {(row["run"], row["modality"]): row for row in rows}
    width = 0.8 / len(results.modalities)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.6 * len(runs) + 2), 4.2))
    for j, m in enumerate(results.modalities):
        xs, deltas, errors = [], [], []
        for i, run in enumerate(runs):
            row = by[run, m]
            if row["vs_headline_delta"] == "":
                continue
            xs.append(i + (j - (len(results.modalities) - 1) / 2) * width)
            deltas.append(row["vs_headline_delta"])
            errors.append(row["vs_headline_se"] or None)
            if row.get("differs_vs_headline_p") == "yes":
                ax.annotate("*", (xs[-1], deltas[-1] + np.sign(deltas[-1]) * (errors[-1] or 0.0)), ha="center",
                            va="bottom" if deltas[-1] >= 0 else "top", fontsize=12)
        ax.bar(xs, deltas, width, label=m, color=f"C{j}")
        _error_bars(ax, xs, deltas, errors)
    ax.axhline(0, color="black", lw=1)
    ax.set_xticks(range(len(runs)), [f"{r} (n={by[r, results.modalities[0]]['seeds']})" for r in runs],
                  rotation=30, ha="right", fontsize=8)
    ax.set(ylabel=f"final val loss − {headline}'s",
           title=f"{results.setting}: leave-one-modality-out (0 = {headline}; * Holm p<{ALPHA})")
    return [_save(fig, ax, figures / "merges_val_loss_vs_mot.png")]


def plot_gap(results, rows: list[dict], figures: Path) -> list[Path]:
    """The headline run's gap to the baseline along training (analysis.gap_rows), per loss, with its 95% band."""
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for j, m in enumerate(dict.fromkeys(r["loss"] for r in rows)):
        own = [r for r in rows if r["loss"] == m]
        steps = [r["step"] for r in own]
        ax.plot(steps, [r["delta"] for r in own], marker="o", markersize=3, color=f"C{j}",
                label=f"{m} ({own[0]['seeds']} seeds)")
        if own[0]["ci_low"] != "":
            ax.fill_between(steps, [r["ci_low"] for r in own], [r["ci_high"] for r in own], color=f"C{j}", alpha=0.2,
                            lw=0)
    ax.axhline(0, color="black", lw=1)
    zoom = _steady_limits(rows)
    xlabel = "training steps"
    if zoom is not None:  # warm-up differences (e.g. of two learning rates) would squash the rest of the curve
        ax.set_ylim(*zoom)
        xlabel += f" (y axis fitted to steps ≥ {STEADY_FROM:.0%} of training)"
    ax.set(xlabel=xlabel, ylabel=f"val loss: {results.roles.headline} − {results.roles.baseline}",
           title=f"{results.setting}: gap along training (paired by seed, 95% CI)")
    return [_save(fig, ax, figures / "gap_vs_step.png")]


STEADY_FROM = 0.2  # the gap figure's y axis is fitted to the points from this fraction of training on


def _steady_limits(rows: list[dict]) -> tuple[float, float] | None:
    """Y limits holding every gap point and interval from STEADY_FROM of training on (and 0), padded by 10%;
    None when the earlier points lie inside them anyway."""
    last = max(r["step"] for r in rows)
    values = [[r["delta"]] + ([r["ci_low"], r["ci_high"]] if r["ci_low"] != "" else []) for r in rows]
    late = [v for r, vs in zip(rows, values) for v in vs if r["step"] >= STEADY_FROM * last] + [0.0]
    lo, hi = min(late), max(late)
    pad = 0.1 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    every = [v for vs in values for v in vs]
    return None if lo <= min(every) and max(every) <= hi else (lo, hi)


def plot_selection(rows: list[dict], setting: str, figures: Path) -> list[Path]:
    """Each selection's score (final loss summed over modalities, seed mean) against its candidates' learning
    rates (log axis), the picked one circled."""
    scored = [r for r in rows if r["score"] != "" and r["lr"] is not None]
    if not scored:
        return []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for j, name in enumerate(dict.fromkeys(r["selection"] for r in scored)):
        own = sorted((r for r in scored if r["selection"] == name), key=lambda r: r["lr"])
        ax.plot([r["lr"] for r in own], [r["score"] for r in own], marker="o", color=f"C{j}", label=name)
        for r in own:
            if r["picked"]:
                ax.scatter([r["lr"]], [r["score"]], s=160, facecolors="none", edgecolors="black", zorder=4)
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="final loss, summed over modalities (seed mean)",
           title=f"{setting}: each selection's candidates (circled: picked)")
    return [_save(fig, ax, figures / "selection_vs_lr.png")]

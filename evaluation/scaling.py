"""The size sweep of a setting: MoT's speed-up over dense against model size, the tiny counterpart of
the paper's scaling figures. A setting sweeps sizes when its dense-arch runs come in several model
configs (per-run `model:` overrides); each MoT run (arch mot, no ablation) is compared with the dense
run of the same model config, seed by seed."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluation.analysis import add_holm, difference_cells, fraction_cells, paired_fractions  # noqa: E402
from evaluation.significance import compare, seed_stat  # noqa: E402
from mot.models.accounting import analytic_parameters  # noqa: E402
from mot.models.factory import model_config  # noqa: E402


def model_key(spec) -> str:
    return json.dumps(spec.model, sort_keys=True)


def size_pairs(specs) -> list[tuple[str, str, dict]]:
    """(dense base run, mot base run, model config) per model size, smallest first; [] without a sweep."""
    dense, mot = {}, {}
    for spec in specs:
        if spec.arch == "dense" and not spec.untie and spec.moe is None:
            dense.setdefault(model_key(spec), (spec.base_name, spec))
        elif spec.arch == "mot" and spec.ablation == "none" and set(spec.untie) == {"attn", "ffn", "norm"}:
            mot.setdefault(model_key(spec), (spec.base_name, spec))
    pairs = [(dense[k][0], mot[k][0], dense[k][1]) for k in dense if k in mot]
    if len(pairs) < 2:
        return []
    return sorted(pairs, key=lambda p: non_embedding(p[2]))


def non_embedding(spec) -> int:
    return analytic_parameters(model_config(spec, vocab_size=1, max_seq_len=8))["non_embedding"]


def size_label(spec) -> str:
    return f"d{spec.model['d_model']} L{spec.model['n_layers']}"


def size_sweep_rows(results) -> list[dict]:
    """Per size and modality: dense/MoT non-embedding parameters, MoT's steps fraction to reach the
    same-seed dense final loss (every seed counted, mean with a 95% t-interval; evaluation.analysis) and the
    paired difference of the final losses (Δ = mot − dense, interval, paired p, ρ). The table is one family:
    Holm over its p-values. `results` is a SettingResults."""
    rows = []
    for dense_base, mot_base, dense_spec in size_pairs(results.specs):
        mot_spec = next(s for s in results.specs if s.base_name == mot_base)
        for m in results.modalities:
            fractions = [r["steps_frac"] for r in paired_fractions(results, mot_base, dense_base, m)]
            dense_final, mot_final = results.final_by_seed(dense_base, m), results.final_by_seed(mot_base, m)
            rows.append({
                "size": size_label(dense_spec), "dense_run": dense_base, "mot_run": mot_base, "loss": m,
                "non_embedding_dense": non_embedding(dense_spec), "non_embedding_mot": non_embedding(mot_spec),
                "seeds": len(fractions), **fraction_cells(fractions, "steps_frac"),
                "dense_final": seed_stat(dense_final.values()) or "", "mot_final": seed_stat(mot_final.values()) or "",
                **difference_cells(compare(mot_final, dense_final)),
            })
    add_holm(rows)
    return rows


def _size_ticks(ax, sizes) -> None:
    """One labelled tick per model size (201k, 3.2M, ...) instead of a crowd of log-axis minor labels."""
    def label(n: float) -> str:
        return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k"

    ax.set_xticks(sorted(set(sizes)), [label(n) for n in sorted(set(sizes))])
    ax.minorticks_off()


def plot_size_sweep(rows: list[dict], modalities, setting: str, path: Path) -> Path | None:
    """Per modality: MoT's steps fraction (mean, 95% interval over seeds) and both final losses against model size."""
    if not rows:
        return None
    fig, axes = plt.subplots(2, len(modalities), figsize=(4.6 * len(modalities), 7.2), squeeze=False)
    for column, m in enumerate(modalities):
        mine = [r for r in rows if r["loss"] == m]
        x = np.array([r["non_embedding_dense"] for r in mine], float)
        ax = axes[0][column]
        shown = [(xi, r) for xi, r in zip(x, mine) if r["steps_frac"] != "" and np.isfinite(r["steps_frac"])]
        if shown:
            means = np.array([r["steps_frac"] for _, r in shown])
            low = np.array([r["steps_frac_ci_low"] if r["steps_frac_ci_low"] != "" else r["steps_frac"] for _, r in shown])
            high = np.array([r["steps_frac_ci_high"] if r["steps_frac_ci_high"] != "" else r["steps_frac"] for _, r in shown])
            ax.errorbar([xi for xi, _ in shown], means, yerr=[means - low, high - means], marker="o", capsize=3,
                        label="mot, every seed (95% CI)")
        ax.axhline(1.0, color="grey", ls="--", lw=1, label="dense (1.0)")
        ax.set(xscale="log", xlabel="non-embedding parameters (dense)", ylabel="fraction of dense's steps",
               title=f"{setting}: {m} speed-up vs size")
        _size_ticks(ax, x)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        ax = axes[1][column]
        for name, key in (("dense", "dense_final"), ("mot", "mot_final")):
            values = [r[key] for r in mine]
            ax.errorbar(x, [v.mean if v != "" else np.nan for v in values],
                        yerr=[(v.std or 0.0) if v != "" else 0.0 for v in values],
                        marker="o", capsize=3, label=name)
        ax.set(xscale="log", xlabel="non-embedding parameters (dense)", ylabel=f"final {m} val loss")
        _size_ticks(ax, x)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""Report sections of a reasoning run: the per-dataset summary and, per problem, the curve and the chain of
thought with the window's text span highlighted.

Registered for experiment "reasoning" (replacing the generic overview and per-case sections, which would
only show forward times and "none"); everything is re-drawn from the run directory alone (problems.jsonl,
config.json), so `critwin report DIR` works without the model and draws the same page as the run did.
Positions are given in the LLM coordinate throughout: tokens kept and the fraction of the response kept.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from critwin.experiments.reasoning import (
    DATASETS,
    SUMMARY,
    config_from_run,
    cut_intervals,
    main_window,
    read_records,
    summarize,
)
from critwin.report.build import build_report, register_sections
from critwin.report.figcache import cached
from critwin.report.html import Figure, Section, Table
from critwin.report.plots import (
    DETECTED_COLOUR,
    MEASURED_COLOUR,
    THEORY_COLOUR,
    bar_labels,
    outside_legend,
    png_bytes,
)
from critwin.rundir import CaseRecord, RunDir, atomic_write, write_json
from critwin.serialize import jsonable

#: Problems drawn one by one in the report (problems with windows first); the rest are listed in a table.
MAX_PROBLEM_SECTIONS = 60
ERROR_COLOUR = "#1e7d32"
STUMP_COLOUR = "#7b3294"
CRITICAL_COLOUR = "#e66101"
PIVOTAL_COLOUR = "#5e3c99"
OUTCOME_NAMES = {"same": "P(same answer)", "correct": "P(correct)"}
_CSS = (
    "<style>.cot{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;"
    "background:#f6f7f9;padding:8px 10px;border-radius:6px;line-height:1.5}"
    ".cot .win{background:#f5c6c2;border-bottom:2px solid #c0392b}"
    ".cot .pap{text-decoration:underline dotted #b7791f 2px}"
    ".cot .err{outline:2px solid #1e7d32;outline-offset:-1px;font-weight:700}"
    ".legend span{margin-right:14px;font-size:12.5px}</style>"
)


def _fmt(v: Any, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _kl_ci(ci: Sequence[float | None] | None) -> str:
    """ " [lo, hi]" of a KL interval (hi "∞" when unbounded); "" without one."""
    if not ci:
        return ""
    return f" [{ci[0]:.2f}, {'∞' if ci[1] is None else format(ci[1], '.2f')}]"


def _ci(entry: Mapping[str, Any], key: str) -> str:
    v, ci = entry.get(key), entry.get(f"{key}_ci")
    if v is None:
        return "—"
    return f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{v:.2f}"


@cached
def summary_figure(datasets: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Accuracy of the original answers with and without a window (ours and the paper's rule) per dataset,
    with their intervals; every bar carries its value ("n/a" for an empty group, so a bar at 0 is still
    seen), the share of problems with a window is printed above each dataset, the legend sits above."""
    names = list(datasets)
    fig, ax = plt.subplots(figsize=(8.6, 4.2), layout="constrained")
    width = 0.2
    x = np.arange(len(names))
    bars = [
        ("with window (ours)", lambda d: d, "accuracy_with_window", DETECTED_COLOUR, -1.5),
        ("without window (ours)", lambda d: d, "accuracy_without_window", MEASURED_COLOUR, -0.5),
        ("with window (paper rule)", lambda d: d["paper_rule"], "accuracy_with_window", "#e59866", 0.5),
        ("without window (paper rule)", lambda d: d["paper_rule"], "accuracy_without_window", "#85a3d6", 1.5),
    ]
    for label, pick, key, colour, off in bars:
        vals, lo, hi = [], [], []
        for n in names:
            e = pick(datasets[n])
            v, ci = e.get(key), e.get(f"{key}_ci")
            vals.append(np.nan if v is None else v)
            # max(0, ·): a Wilson end at 0 or 1 can sit a rounding hair past the estimate.
            lo.append(0.0 if v is None or not ci else max(0.0, v - ci[0]))
            hi.append(0.0 if v is None or not ci else max(0.0, ci[1] - v))
        xs = x + off * width
        ax.bar(
            xs,
            np.nan_to_num(vals),
            width,
            color=colour,
            label=label,
            yerr=[lo, hi],
            capsize=2,
            error_kw={"elinewidth": 0.8},
        )
        # A 0.00 bar has no height: mark its base and print every value above its interval.
        ax.plot(xs, np.where(np.isfinite(vals), 0.0, np.nan), "_", color=colour, ms=9, mew=2.5)
        bar_labels(ax, list(xs), vals, fontsize=6.5, at=[v + h for v, h in zip(vals, hi, strict=True)])
    for i, n in enumerate(names):
        d = datasets[n]
        share = d.get("share_with_window")
        ax.text(
            i,
            1.17,
            f"windows: {_fmt(share)} (ours), {_fmt(d['paper_rule'].get('share_with_window'))} "
            f"(paper); n = {d['n_problems']}",
            ha="center",
            fontsize=8,
        )
    ax.set_xticks(x, names, fontsize=9)
    ax.set_ylim(0, 1.25)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("accuracy of the original answer")
    outside_legend(fig, ax, ncol=2, fontsize=7.5)
    ax.grid(axis="y", alpha=0.25)
    return png_bytes(fig)


def summary_section(datasets: Mapping[str, Mapping[str, Any]], config: Mapping[str, Any]) -> Section:
    """The per-dataset table (ours and the paper's rule) and the accuracy chart."""
    method = next(iter(datasets.values())).get("ci_method", "bootstrap") if datasets else "bootstrap"
    rows = []
    for name, d in datasets.items():
        for rule, e in (("ours", d), (f"paper (jump > {d['paper_rule']['threshold']})", d["paper_rule"])):
            rows.append(
                [
                    name,
                    rule,
                    e["n_problems"],
                    _ci(e, "share_with_window"),
                    _ci(e, "accuracy_with_window"),
                    _ci(e, "accuracy_without_window"),
                    _ci(e, "accuracy_gap"),
                    d.get("n_failed", 0),
                ]
            )
    tables = [
        Table(
            [
                "dataset",
                "window rule",
                "problems",
                "share with window",
                "accuracy with window",
                "accuracy without window",
                "gap (without − with)",
                "failed",
            ],
            rows,
            caption=f"Intervals ({config.get('ci_level', 0.95):.0%}): {method}. Failed problems (no answer "
            "in the original, engine errors) are counted apart and never as right or wrong.",
        )
    ]
    err_rows = []
    for name, d in datasets.items():
        if "window_at_first_error_rate" not in d:
            continue
        for rule, e in (("ours", d), ("paper rule", d.get("paper_rule_errors", {}))):
            err_rows.append(
                [
                    name,
                    rule,
                    e.get("n_with_window"),
                    _fmt(e.get("window_at_first_error_rate")),
                    _fmt(e.get("window_at_wrong_step_rate")),
                    _fmt(e.get("any_window_at_first_error_rate")),
                    d.get("n_chains_with_wrong_step"),
                    _fmt(e.get("first_error_window_recall")),
                ]
            )
    if err_rows:
        tol = next(d for d in datasets.values() if "error_tolerance_tokens" in d)["error_tolerance_tokens"]
        tables.append(
            Table(
                [
                    "dataset",
                    "window rule",
                    "problems with a window",
                    "main window at first wrong step",
                    "main window at a wrong step",
                    "any window at first wrong step",
                    "chains with a wrong step",
                    "of those, with a window at the first",
                ],
                err_rows,
                caption="Running-sum task: every wrong step of every chain is known exactly (a step is wrong "
                "when it does not follow from the line before it). A window sits at a step when that step's "
                f"first wrong token lies between the window's cuts (± {tol} tokens). A chain with several "
                "slips often has its main window at the last one: only then is the wrong answer certain.",
            )
        )
    crit_rows = [
        [name, ct["n_incorrect"], ct["n_with_critical"], _ci(ct, "share_with_critical"),
         ct.get("n_judged"), _ci(ct, "at_first_error_rate") if "at_first_error_rate" in ct else None]
        for name, d in datasets.items()
        if (ct := d.get("critical_tokens"))
    ]
    if crit_rows:
        ct = next(d["critical_tokens"] for d in datasets.values() if d.get("critical_tokens"))
        tables.append(
            Table(
                ["dataset", "wrong originals", "with a critical token", "share", "judged (first wrong step "
                 "known)", "critical token at the first wrong step"],
                crit_rows,
                caption="Critical tokens (Lin et al., 2024): in a wrong original, the first token after "
                f"which every longer prefix is shown to succeed with P(correct) ≤ {ct['eps']:g} (one-sided "
                f"{ct['level']:.0%} Clopper–Pearson bound), while the prefix before it succeeded at least "
                "once. Wilson intervals.",
            )
        )
    fork_rows = [
        [name, fk["n_problems"], fk["n_draws"], fk["n_change_points"], fk.get("n_judged"),
         _ci(fk, "top_at_first_error_rate") if "top_at_first_error_rate" in fk else None]
        for name, d in datasets.items()
        if (fk := d.get("forks"))
    ]
    if fork_rows:
        tables.append(
            Table(
                ["dataset", "problems", "draws", "change points", "judged (wrong, first wrong step known)",
                 "top fork at the first wrong step"],
                fork_rows,
                caption="Forking tokens (Forking Paths): at every position each token with next-token "
                "probability ≥ the threshold is forced and K endings resampled. The top fork is the position "
                "whose redrawing most often changes the outcome. Wilson intervals.",
            )
        )
    anchor_rows = [
        [name, an["n_problems"], an["n_sentences"], an.get("n_judged"),
         _ci(an, "top_at_first_error_rate") if "top_at_first_error_rate" in an else None,
         an.get("n_counterfactual"), an.get("share_different")]
        for name, d in datasets.items()
        if (an := d.get("anchors"))
    ]
    if anchor_rows:
        tables.append(
            Table(
                ["dataset", "problems", "sentences scored", "judged (wrong, first wrong step known)",
                 "top anchor holds the first wrong step", "sentences with a counterfactual importance",
                 "rewrites that differ in meaning"],
                anchor_rows,
                caption="Sentence anchors (Thought Anchors): each sentence's resampling importance is the "
                "outcome's probability with the sentence kept minus with it rewritten (the cuts after and "
                "before it). The top anchor of a wrong chain is the sentence whose keeping lowers P(correct) "
                "most. The counterfactual importance counts only the rewrites whose embedding similarity to "
                "the sentence is below the threshold. Wilson intervals.",
            )
        )
    piv_rows = [
        [name, pt["n_problems"], pt["n_with_pivotal"], pt["n_pivotal"], pt.get("n_judged"),
         _ci(pt, "top_at_first_error_rate") if "top_at_first_error_rate" in pt else None]
        for name, d in datasets.items()
        if (pt := d.get("pivotal_tokens"))
    ]
    if piv_rows:
        tables.append(
            Table(
                ["dataset", "problems", "with a pivotal token", "pivotal tokens",
                 "judged (wrong, first wrong step known)",
                 "most harmful pivotal token at the first wrong step"],
                piv_rows,
                caption="Pivotal tokens (PTS, Abdin et al., 2024): tokens whose keeping moves P(correct) by "
                f"at least {config.get('min_jump')} between cuts one token apart. PTS uses no test, so a "
                "pivotal token can be noise. Wilson intervals.",
            )
        )
    def mean_ci(e: Mapping[str, Any]) -> str:
        if e["mean"] is None:
            return "—"
        return f"{e['mean']:+.2f}" + (f" [{e['ci'][0]:+.2f}, {e['ci'][1]:+.2f}]" if e["ci"] else "") + \
            f" (n = {e['n']})"

    revise_rows = [
        [name, rv["n_problems"], rv["n_skipped"], mean_ci(rv["window_effect"]), mean_ci(rv["control_effect"]),
         mean_ci(rv["window_minus_control"]), rv["n_draws"]]
        for name, d in datasets.items()
        if (rv := d.get("revise"))
    ]
    if revise_rows:
        tables.append(
            Table(
                ["dataset", "revised (with a window)", "skipped", "effect at the window",
                 "effect at a control position", "window − control (paired)", "draws"],
                revise_rows,
                caption="Revise at the window: K endings right after each main window with and without the "
                "re-prompt, and the same at a random position away from it; an effect is P(correct) with "
                "the re-prompt minus without, averaged over problems with a Student t interval across "
                "problems.",
            )
        )
    stump_rows = [
        [name, st["n_cuts"], _ci(st, "share_same"), _fmt(st.get("mean_p_same")), st["n_graded"],
         _ci(st, "accuracy")]
        for name, d in datasets.items()
        if (st := d.get("stump"))
    ]
    if stump_rows:
        tables.append(
            Table(
                ["dataset", "cuts", "stump answer = original's", "mean resampled P(same) at those cuts",
                 "graded stumps", "stump accuracy"],
                stump_rows,
                caption="Stump answers: at every cut the answer is asked for right after the truncated "
                "prefix, with no continuation (the elicitation turn, greedy). A cut without a stump answer "
                "counts as not the same. Wilson intervals.",
            )
        )
    cuts = (
        f"every {config['dense_step']} tokens"
        if config.get("dense_step")
        else "fractions kept " + ", ".join(f"{f:g}" for f in config.get("fractions", []))
    )
    strategy = config.get("strategy", "fixed")
    draws = (
        f"{config.get('k')} endings resampled per cut ({cuts})"
        if strategy == "fixed"
        else f"cuts chosen by the {strategy} strategy (starting from {cuts}"
        + (f"; budget {config['budget']} draws per problem" if config.get("budget") else "")
        + "), "
        + ("their number of endings chosen from the draws so far, so each cut's interval is a confidence "
           "sequence" if strategy == "adaptive" else
           "placed by looking at the draws so far, so each cut's interval is a confidence sequence"
           if strategy == "bisect" else f"{config.get('k')} endings at every token")
    )
    if strategy == "fixed" and config.get("budget"):
        draws += f" (at most {config['budget']} draws per problem)"
    intro = (
        f"Model {config.get('model')}; task {config.get('task')}; {draws} "
        f"at temperature {config.get('temperature')}, top-p {config.get('top_p')}; answers "
        f"read from the {config.get('answer_from')}. A window is a significant drop of P(same answer) "
        f"as fewer tokens are kept (ours: jump ≥ {config.get('min_jump')} at family-wise level "
        f"{config.get('level')}); the paper's rule is shown beside it."
    )
    fig = Figure(
        summary_figure(datasets),
        alt="accuracy with and without a window per dataset",
        caption="Bars: accuracy of the original answers of problems with / without a window, with the "
        "intervals of the table (value printed on each bar; n/a: no problem in that group).",
    )
    return Section("Reasoning: windows and accuracy", intro, tables, [fig] if datasets else [])


CI_NAMES = {"wilson": "Wilson", "confidence_sequence": "confidence sequence"}


@cached
def problem_figure(rec: Mapping[str, Any], level: float = 0.99) -> bytes:
    """P(same answer as the original) against the fraction of the response kept, with the intervals of
    the record (Wilson's, or confidence sequences when the strategy chose the draws adaptively; the cuts
    may sit anywhere and carry different numbers of draws), detected windows (red bands), the paper rule's
    windows (orange hatch) and the first wrong token."""
    c = rec["curve"]
    scored = OUTCOME_NAMES[c.get("outcome", "same")]
    length = max(int(rec["length"]), 1)
    x = np.asarray(c["kept"], float) / length
    k, n = np.asarray(c["n_kept"], float), np.asarray(c["n_valid"], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    method = c.get("ci_method", "wilson")
    lo, hi, method = cut_intervals(k, n, level, method == "confidence_sequence")
    order = np.argsort(x)
    fig, ax = plt.subplots(figsize=(8.6, 3.6), layout="constrained")
    for i, w in enumerate(rec.get("windows", [])):
        ax.axvspan(
            w["fraction_lo"],
            w["fraction_hi"],
            color=DETECTED_COLOUR,
            alpha=0.22,
            lw=0,
            label="window (ours)" if i == 0 else None,
        )
    for i, w in enumerate(rec.get("paper_windows", [])):
        ax.axvspan(
            w["fraction_lo"],
            w["fraction_hi"],
            color=THEORY_COLOUR,
            alpha=0.6,
            lw=0,
            fill=False,
            hatch="///",
            label="window (paper rule)" if i == 0 else None,
        )
    fe = rec.get("first_error")
    if fe is not None:
        ax.axvline(
            (fe["token"] + 0.5) / length, color=ERROR_COLOUR, ls="--", lw=1.2, label="first wrong token"
        )
    ok = n[order] > 0
    xs, ps = x[order][ok], p[order][ok]
    dense = len(xs) > 60  # every-prefix scans: a point per token, drawn without markers crowding them
    ax.errorbar(
        xs,
        ps,
        yerr=np.clip([ps - lo[order][ok], hi[order][ok] - ps], 0, None),
        fmt="-" if dense else "o-",
        ms=3.5,
        lw=1,
        color=MEASURED_COLOUR,
        capsize=0 if dense else 1.5,
        elinewidth=0.5 if dense else None,
        label=f"{scored} ({level:.0%} {CI_NAMES.get(method, method)})",
    )
    for i, pv in enumerate(rec.get("pivotal", [])):
        ax.axvline((pv["token"] + 0.5) / length, color=PIVOTAL_COLOUR, lw=1, ls=":",
                   label="pivotal token" if i == 0 else None)
    st = rec.get("stump")
    if st:
        same = np.array([np.nan if v is None else float(v) for v in st["same"]])
        ax.plot(np.asarray(st["kept"], float) / length, same, "D", ms=3.2, mfc="none", color=STUMP_COLOUR,
                label="stump answer is the original's (1) or not (0)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.05, 1.08)
    ax.set_xlabel("fraction of the response kept")
    crit = (rec.get("critical") or {}).get("critical")
    if crit is not None:
        ax.axvspan(crit["kept_lo"] / length, crit["kept_hi"] / length, color=CRITICAL_COLOUR, alpha=0.35,
                   lw=0, label="critical token")
    ax.set_ylabel(scored)
    ax.grid(alpha=0.25)
    outside_legend(fig, ax, fontsize=7.5)
    return png_bytes(fig)


def highlighted_chain(
    text: str,
    windows: Sequence[Mapping[str, Any]],
    paper: Sequence[Mapping[str, Any]],
    error_char: int | None,
) -> str:
    """The chain of thought as HTML: our windows' text spans highlighted, the paper rule's underlined, the
    first wrong character boxed (every character escaped)."""
    classes: list[set[str]] = [set() for _ in text]
    for cls, spans in (("win", windows), ("pap", paper)):
        for w in spans:
            for i in range(max(0, w["char_lo"]), min(len(text), w["char_hi"])):
                classes[i].add(cls)
    if error_char is not None and 0 <= error_char < len(text):
        classes[error_char].add("err")
    out, i = [], 0
    while i < len(text):
        j = i
        while j < len(text) and classes[j] == classes[i]:
            j += 1
        chunk = html.escape(text[i:j])
        out.append(f'<span class="{" ".join(sorted(classes[i]))}">{chunk}</span>' if classes[i] else chunk)
        i = j
    return '<div class="cot">' + "".join(out) + "</div>"


def edge_points(rec: Mapping[str, Any], kept: int) -> tuple[float, int] | None:
    """(P(same answer), draws) measured at the cut that keeps `kept` tokens: a plotted point; None when
    that cut has no valid draw."""
    c = rec.get("curve") or {}
    for k_, kk, nn in zip(c.get("kept", []), c.get("n_kept", []), c.get("n_valid", []), strict=True):
        if int(k_) == int(kept) and nn:
            return kk / nn, int(nn)
    return None


def _window_rows(rec: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    text = rec.get("response", "")
    for rule, ws in (("ours", rec.get("windows", [])), ("paper rule", rec.get("paper_windows", []))):
        for w in ws:
            lo, hi = edge_points(rec, w["kept_lo"]), edge_points(rec, w["kept_hi"])
            edges = None if lo is None or hi is None else f"{lo[0]:.2f} → {hi[0]:.2f}"
            rows.append(
                [
                    rule,
                    f"[{w['kept_lo']}, {w['kept_hi']})",
                    f"{w['fraction_lo']:.2f} → {w['fraction_hi']:.2f}",
                    edges,
                    # The paper rule's levels are the two cuts themselves (no plateaus pooled).
                    f"{w['p_after']:.2f} → {w['p_before']:.2f}" if rule == "ours" else None,
                    f"{w['jump']:.2f} [{w['jump_ci'][0]:.2f}, {w['jump_ci'][1]:.2f}]",
                    repr(text[w["char_lo"] : w["char_hi"]])[:80],
                ]
            )
    return rows


def problem_section(rec: Mapping[str, Any], level: float = 0.99) -> Section:
    """One problem: question, answers, curve, windows and the highlighted chain of thought."""
    verdict = {True: "correct", False: "wrong", None: "ungraded"}[rec.get("correct")]
    title = f"{rec['dataset']} · {rec['id']} — {verdict}, " + (
        "window" if rec.get("has_window") else "no window"
    )
    fe = rec.get("first_error")
    details = [
        ["question", rec.get("question")],
        ["gold answer", rec.get("gold")],
        ["answer (continuation)", rec.get("answer_continuation")],
        ["answer (elicitation turn)", rec.get("answer_elicit")],
        ["response tokens", rec.get("length")],
    ]
    if fe is not None:
        details.append(
            [
                "first wrong step",
                f"line {fe['step'] + 1}: wrote {fe['found']!r}, correct "
                f"{fe['expected']!r} (token {fe['token']})",
            ]
        )
    elif "first_error" in rec:
        details.append(["first wrong step", "none (the chain is correct)"])
    fk = rec.get("forks")
    if fk:
        text = rec.get("response", "")
        top = fk.get("top")
        where = "none" if top is None else (f"token {top['kept_lo']} {text[top['char_lo']:top['char_hi']]!r} "
                                            f"(fork probability {top['fork_probability']:.2f})")
        details.append(["forking tokens", f"change points at tokens {fk['change_points'] or 'none'}; top "
                        f"fork: {where}; survival to the end {fk['survival'][-1]:.2f}"])
    if rec.get("anchors"):
        text = rec.get("response", "")
        top = sorted(rec["anchors"], key=lambda a: -abs(a["importance"]))[:3]
        details.append(["sentence anchors (largest |importance|, Newcombe CI)",
                        "; ".join(f"{text[a['char_lo']:a['char_hi']].strip()!r}: {a['importance']:+.2f} "
                                  f"[{a['importance_ci'][0]:+.2f}, {a['importance_ci'][1]:+.2f}], KL "
                                  f"{a['kl']:.2f}{_kl_ci(a.get('kl_ci'))}" for a in top)])
        cf = [a for a in rec["anchors"] if (a.get("counterfactual") or {}).get("importance") is not None]
        if any("counterfactual" in a for a in rec["anchors"]):
            top = sorted(cf, key=lambda a: -abs(a["counterfactual"]["importance"]))[:3]
            shown = []
            for a in top:
                c = a["counterfactual"]
                shown.append(f"{text[a['char_lo']:a['char_hi']].strip()!r}: {c['importance']:+.2f} "
                             f"[{c['importance_ci'][0]:+.2f}, {c['importance_ci'][1]:+.2f}] from "
                             f"{c['n_different']} of {c['n_before']} rewrites")
            details.append(["counterfactual importance (rewrites that differ in meaning)",
                            "; ".join(shown) or "no rewrite of any sentence differs in meaning (embedding "
                            "similarity below the threshold)"])
    rv = rec.get("revise")
    if rv is not None:
        if "skipped" in rv:
            details.append(["revise at the window", rv["skipped"]])
        else:
            def arm(where: str) -> str:
                e = rv.get(f"{where}_effect")
                if e is None:
                    return f"{where}: no position away from the window"
                p = rv[where]["kept"]
                if e["effect"] is None:
                    return f"{where} (after token {p}): an arm has no gradable ending"
                return (f"{where} (after token {p}): P(correct) {e['p_plain']:.2f} → {e['p_revised']:.2f}, "
                        f"effect {e['effect']:+.2f} [{e['effect_ci'][0]:+.2f}, {e['effect_ci'][1]:+.2f}]")

            details.append([f"revise at the window (re-prompt {rv['prompt']!r})",
                            f"{arm('window')}; {arm('control')}"])
    if rec.get("pivotal"):
        text = rec.get("response", "")
        details.append(["pivotal tokens (token: P(correct) without → with it)",
                        ", ".join(f"{p['token']} {text[p['char_lo']:p['char_hi']]!r}: {p['p_before']:.2f} → "
                                  f"{p['p_after']:.2f}" for p in rec["pivotal"])])
    search = rec.get("critical")
    if search is not None:
        crit = search["critical"]
        if crit is None:
            details.append(["critical token", f"none: {search['reason']}"])
        else:
            text = rec.get("response", "")[crit["char_lo"] : crit["char_hi"]]
            at = {True: "; at the first wrong step", False: "; not at the first wrong step"}.get(
                search.get("at_first_error"), "")
            details.append(["critical token",
                            f"token {crit['token']} {text!r}: P(correct) {crit['p_before']:.2f} before, at "
                            f"most {crit['upper_after']:.3f} after ({search['level']:.0%} bound){at}"])
    st = rec.get("stump")
    if st:
        pairs = zip(st["kept"], st["answer"], strict=True)
        details.append(["stump answers (tokens kept: answer)",
                        ", ".join(f"{k}: {'—' if a is None else a}" for k, a in pairs)])
    tables = [Table(["", ""], details)]
    rows = _window_rows(rec)
    if rows:
        tables.append(
            Table(
                [
                    "rule",
                    "tokens kept [lo, hi)",
                    "fraction kept",
                    "P(same) at the two cuts (plotted points)",
                    "P(same) plateaus below → above",
                    f"jump ({level:.0%} CI)",
                    "text of the window",
                ],
                rows,
                caption="The answer got decided in the tokens between the two cuts. 'At the two cuts': the "
                "measured points at the window's edges, as plotted. 'Plateaus': the pooled P(same) of all "
                "cuts below the window (down to the previous window) and above it (up to the next); the "
                "jump is their difference, with Newcombe's interval; the paper rule's jump is between the "
                "two cuts.",
            )
        )
    legend = (
        '<div class="legend"><span class="cot"><span class="win">window (ours)</span></span>'
        '<span class="cot"><span class="pap">window (paper rule)</span></span>'
        '<span class="cot"><span class="err">first wrong character</span></span></div>'
    )
    chain = highlighted_chain(
        rec.get("response", ""),
        rec.get("windows", []),
        rec.get("paper_windows", []),
        None if fe is None else fe["char"],
    )
    fig = Figure(problem_figure(rec, level), alt=f"P(same answer) against fraction kept for {rec['id']}")
    return Section(title, "", tables, [fig], html=legend + chain)


def _order(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Problems with a window first (wrong ones first among them), then the rest, in run order."""
    return sorted(records, key=lambda r: (not r.get("has_window"), r.get("correct") is not False))


@register_sections("reasoning", replace_cases=True, overview=False)
def reasoning_sections(run: RunDir, cases: list[CaseRecord]) -> list[Section]:
    """Summary, per-problem sections (at most MAX_PROBLEM_SECTIONS) and the failed problems."""
    config = run.config
    cfg = config_from_run(run)
    records = read_records(run.path)
    ok = [r for r in records if r.get("status") == "ok"]
    failed = [r for r in records if r.get("status") != "ok"]
    head = summary_section(summarize(records, cfg), config)
    # The chain-of-thought styles ride along with the first section (the page template has no head hook).
    sections = [Section(head.title, head.intro, head.tables, head.figures, html=_CSS)]
    chosen = _order(ok)[:MAX_PROBLEM_SECTIONS]
    sections += [problem_section(r, cfg.windows.level) for r in chosen]
    if len(ok) > len(chosen):
        rest = [r for r in ok if r not in chosen]
        sections.append(
            Section(
                f"{len(rest)} more problems",
                "Not drawn one by one; see problems.jsonl.",
                [
                    Table(
                        ["dataset", "id", "correct", "window", "main window (tokens kept)"],
                        [
                            [
                                r["dataset"],
                                r["id"],
                                r.get("correct"),
                                r.get("has_window"),
                                None
                                if main_window(r.get("windows", [])) is None
                                else f"[{main_window(r['windows'])['kept_lo']}, "
                                f"{main_window(r['windows'])['kept_hi']})",
                            ]
                            for r in rest
                        ],
                    )
                ],
            )
        )
    if failed:
        sections.append(
            Section(
                "Failed problems",
                "Recorded, never counted as right or wrong; a rerun with the same --out retries them.",
                [
                    Table(
                        ["dataset", "id", "reason"],
                        [[r.get("dataset"), r.get("id"), r.get("error")] for r in failed],
                    )
                ],
            )
        )
    return sections


def build_reasoning_report(run: RunDir) -> tuple[str, dict[str, Any]]:
    """The report of a reasoning run: (HTML, {"cases": per-case summary}).

    The same builder as `critwin report DIR` (`critwin.report.build.build_report`), so the page a run
    writes and the page re-drawn later are identical.
    """
    return build_report(run)


def write_report(run: RunDir) -> dict[str, Any]:
    """Write index.html, reasoning_summary.json and summary.json ({"datasets": per-dataset summary, "cases":
    per-case summary}) of a reasoning run, from the run directory alone; returns the summary."""
    cfg = config_from_run(run)
    rows = run.records(DATASETS)
    datasets = summarize(read_records(run.path), cfg, rows[-1] if rows else None)
    write_json(run.path / "reasoning_summary.json", jsonable(datasets))
    html, cases = build_reasoning_report(run)
    summary = jsonable({"datasets": datasets, **cases})
    atomic_write(run.path / "index.html", lambda p: p.write_text(html))
    write_json(run.path / SUMMARY, summary)
    return summary

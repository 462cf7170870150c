"""Time every lesson as a student runs it, and every slider of every panel it builds.

    python benchmarks/bench_lessons.py                 # all lessons, full mode, one thread
    python benchmarks/bench_lessons.py 03 07 --quick   # two lessons in quick mode
    python benchmarks/bench_lessons.py 05 --figures    # also write each figure as a PNG
    python benchmarks/bench_lessons.py --table         # the README tables from the CSVs

Each lesson runs in a fresh kernel with one thread (``OMP_NUM_THREADS=1``: one laptop core) through
:func:`csm_edu.course.site.execute_notebook` (per-cell timeout and a rerun if the kernel hangs).
A first cell, added before the lesson's own, records every panel that
:func:`csm_edu.widgets.base.interactive_panel` builds; a last cell reads the kernel's CPU time
(the lesson's cost, which other jobs on a shared machine barely change, unlike its wall time) and
then drives each control of each panel to its extremes and back to its default, timing the
redraw (``control.value = v`` runs the panel's callback synchronously, figure rendering
included), in wall and CPU seconds.

Writes ``lesson_times_<mode>.csv`` and ``widget_response_<mode>.csv`` under ``--results``
(default ``benchmarks/results``; rows of the lessons run replace earlier rows of the same
lessons), and each executed notebook under ``--out``.
"""
import argparse
import base64
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "BENCH_LESSONS_JSON "

RECORD_PANELS = '''
import csm_edu.widgets.base as _bench_base
_BENCH_PANELS = []
_bench_original_panel = _bench_base.interactive_panel
def _bench_recording_panel(view, controls, columns=3):
    box = _bench_original_panel(view, controls, columns)
    name = getattr(view, "__qualname__", None) or type(view).__qualname__
    module = (getattr(view, "__module__", None) or type(view).__module__).rsplit(".", 1)[-1]
    _BENCH_PANELS.append((module + "." + name.split(".<locals>")[0], dict(controls)))
    return box
_bench_base.interactive_panel = _bench_recording_panel
'''

TIME_PANELS = '''
import json as _bench_json, resource as _bench_resource, time as _bench_time
import torch as _bench_torch
_usage = _bench_resource.getrusage(_bench_resource.RUSAGE_SELF)
_bench_result = {"cpu_s": _usage.ru_utime + _usage.ru_stime, "threads": _bench_torch.get_num_threads(),
                 "peak_rss_mb": _usage.ru_maxrss / 1024, "responses": []}
# Redraws go to this cell's own output, not into the panels' Output widgets: nbclient mimics a
# frontend for Output widgets, and with many redraws in one cell it stopped waiting for the
# cell's reply (the kernel idle, the client waiting). The figures are still rendered to PNG.
import ipywidgets as _bench_widgets
_bench_widgets.Output.__enter__ = lambda self: self
_bench_widgets.Output.__exit__ = lambda self, *exc: None

def _bench_settings(control):
    options = getattr(control, "options", None)
    if options is not None and len(options) > 0:
        default = control.value
        labels = list(getattr(control, "_options_values", options))
        if isinstance(default, tuple):                        # SelectMultiple: a tuple of chosen options
            return [("first", (labels[0],)), ("all", tuple(labels)), ("default", default)]
        return [("first", labels[0]), ("last", labels[-1]), ("default", default)]
    if isinstance(control.value, bool):
        return [("toggled", not control.value), ("default", control.value)]
    if hasattr(control, "min") and hasattr(control, "max"):
        scale = (lambda e: control.base ** e) if hasattr(control, "base") else (lambda v: v)  # FloatLogSlider: exponents
        return [("min", scale(control.min)), ("max", scale(control.max)), ("default", control.value)]
    return []

for _name, _controls in _BENCH_PANELS:
    for _label, _control in _controls.items():
        if not hasattr(_control, "value"):
            continue
        for _setting, _value in _bench_settings(_control):
            if _value == _control.value and _setting != "default":
                continue
            _wall, _cpu = _bench_time.perf_counter(), _bench_time.process_time()
            _control.value = _value
            _bench_result["responses"].append({"panel": _name, "control": _label, "setting": _setting,
                                               "value": repr(_control.value),
                                               "wall_s": _bench_time.perf_counter() - _wall,
                                               "cpu_s": _bench_time.process_time() - _cpu})
print("''' + MARK + '''" + _bench_json.dumps(_bench_result))
'''


def _instrumented(source: Path, target: Path) -> None:
    import nbformat

    nb = nbformat.read(source, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(RECORD_PANELS))
    nb.cells.append(nbformat.v4.new_code_cell(TIME_PANELS))
    nbformat.write(nb, target)


def _result(executed: Path) -> dict:
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    for output in nb.cells[-1].get("outputs", []):
        for line in output.get("text", "").splitlines():
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
    raise RuntimeError(f"{executed}: the timing cell printed no result")


def _write_figures(executed: Path, folder: Path) -> int:
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for index, cell in enumerate(nb.cells):
        for k, output in enumerate(cell.get("outputs", [])):
            png = output.get("data", {}).get("image/png")
            if png:
                (folder / f"cell{index:02d}_{k}.png").write_bytes(base64.b64decode(png))
                count += 1
    return count


def _merge_csv(path: Path, rows: list, lessons: set) -> None:
    old = []
    if path.exists():
        with path.open(newline="") as handle:
            old = [row for row in csv.DictReader(handle) if row["lesson"] not in lessons]
    merged = sorted(old + rows, key=lambda row: row["lesson"])
    if not merged:
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(merged[0].keys()))
        writer.writeheader()
        writer.writerows(merged)


def tables(results: Path) -> str:
    """The README's two tables, from the CSVs: full-mode time of each lesson, slowest response of each panel."""
    lines = []
    for mode in ("full", "quick"):
        path = results / f"lesson_times_{mode}.csv"
        if path.exists():
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            lines += [f"| lesson | {mode} mode, kernel CPU s (1 thread) | wall s | peak RSS MB |", "|---|---:|---:|---:|"]
            lines += [f"| {r['lesson']} | {r['kernel_cpu_s']} | {r['wall_s']} | {r['peak_rss_mb']} |" for r in rows]
            lines.append("")
    path = results / "widget_response_full.csv"
    if not path.exists():
        path = results / "widget_response_quick.csv"
    if path.exists():
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        worst = {}
        for r in rows:
            key = (r["lesson"], r["panel"])
            if key not in worst or float(r["cpu_s"]) > float(worst[key]["cpu_s"]):
                worst[key] = r
        lines += ["| lesson | panel | controls | slowest response, CPU s | at |", "|---|---|---:|---:|---|"]
        for (lesson, panel), r in sorted(worst.items()):
            n_controls = len({row["control"] for row in rows if (row["lesson"], row["panel"]) == (lesson, panel)})
            value = r["value"]
            try:
                value = f"{float(value):.4g}"
            except ValueError:
                pass
            at = f"{r['control']} = {value}" if value else r["control"]
            lines.append(f"| {lesson} | `{panel}` | {n_controls} | {float(r['cpu_s']):.2f} | {at} ({r['setting']}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("lessons", nargs="*", help="lesson numbers, e.g. 03 07 (default: all)")
    parser.add_argument("--quick", action="store_true", help="quick mode (default: full mode)")
    parser.add_argument("--threads", type=int, default=1, help="threads per kernel (default 1)")
    parser.add_argument("--cell-timeout", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "csm_edu_bench_lessons")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--figures", action="store_true", help="write every figure as out/NN/cellCC_K.png")
    parser.add_argument("--no-save", action="store_true", help="print only; write no CSV")
    parser.add_argument("--table", action="store_true", help="print the README tables from --results and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(tables(args.results))
        return 0

    sys.path.insert(0, str(ROOT))
    from csm_edu.course.site import execute_notebook

    mode = "quick" if args.quick else "full"
    os.environ.update(CSM_EDU_QUICK="1" if args.quick else "0", OMP_NUM_THREADS=str(args.threads),
                      MKL_NUM_THREADS=str(args.threads), MPLBACKEND="module://matplotlib_inline.backend_inline")
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.lessons:
        wanted = {name.zfill(2) for name in args.lessons}
        notebooks = [nb for nb in notebooks if nb.name[:2] in wanted]
        missing = wanted - {nb.name[:2] for nb in notebooks}
        if missing:
            parser.error(f"no lesson numbered {sorted(missing)} under notebooks/")
    machine = f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}"
    lesson_rows, widget_rows = [], []
    for notebook in notebooks:
        lesson = notebook.name[:2]
        folder = args.out / mode
        folder.mkdir(parents=True, exist_ok=True)
        source = folder / f"_instrumented_{notebook.name}"
        target = folder / notebook.name
        _instrumented(notebook, source)
        print(f"[bench] {notebook.name} ({mode} mode, {args.threads} thread(s)) ...", flush=True)
        info = execute_notebook(source, target, cell_timeout=args.cell_timeout)
        source.unlink()
        result = _result(target)
        lesson_rows.append({"lesson": lesson, "notebook": notebook.stem, "mode": mode, "threads": result["threads"],
                            "wall_s": f"{info['seconds']:.1f}", "kernel_cpu_s": f"{result['cpu_s']:.1f}",
                            "peak_rss_mb": f"{result['peak_rss_mb']:.0f}", "tries": info["tries"], "machine": machine,
                            "date": time.strftime("%Y-%m-%d")})
        print(f"[bench] {lesson}: wall {info['seconds']:.1f} s, kernel CPU {result['cpu_s']:.1f} s, "
              f"peak RSS {result['peak_rss_mb']:.0f} MB, {info['tries']} tries", flush=True)
        for response in result["responses"]:
            widget_rows.append({"lesson": lesson, "mode": mode, **{k: response[k] for k in ("panel", "control", "setting", "value")},
                                "wall_s": f"{response['wall_s']:.3f}", "cpu_s": f"{response['cpu_s']:.3f}"})
            print(f"        {response['panel']:<45} {response['control']:<14} {response['setting']:<8} "
                  f"wall {response['wall_s']:.3f} s  cpu {response['cpu_s']:.3f} s")
        if args.figures:
            print(f"[bench] {_write_figures(target, folder / lesson)} figures in {folder / lesson}")
        if not args.no_save:                   # after each lesson, so a later hang loses nothing
            args.results.mkdir(parents=True, exist_ok=True)
            _merge_csv(args.results / f"lesson_times_{mode}.csv", lesson_rows[-1:], {lesson})
            _merge_csv(args.results / f"widget_response_{mode}.csv",
                       [row for row in widget_rows if row["lesson"] == lesson], {lesson})
    return 0


if __name__ == "__main__":
    sys.exit(main())

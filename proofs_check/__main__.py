"""``python -m proofs_check [ID ...] [--json PATH] [--report DIR] [--seed N]``.

Runs the named checks (all when none is named), prints a table, optionally writes JSON and a
report folder, and exits 0 iff every named check passed (2 for an unknown id).
"""
from __future__ import annotations

import argparse
import sys
import traceback

import torch

from . import get, known_ids
from .report import details, table, write_json, write_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proofs_check", description=__doc__.split("\n\n")[1])
    parser.add_argument("ids", nargs="*", metavar="ID", help=f"check ids (default: all of {', '.join(known_ids())})")
    parser.add_argument("--json", metavar="PATH", help="write the results as a JSON list")
    parser.add_argument("--report", metavar="DIR", help="write a markdown report with one PNG per check")
    parser.add_argument("--seed", type=int, default=0, help="seed of every check (default 0)")
    parser.add_argument("--list", action="store_true", help="list the known checks and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every criterion")
    args = parser.parse_args(argv)

    if args.list:
        for cid in known_ids():
            mod = get(cid)
            print(f"{cid:4s} {mod.NAME}: {mod.CLAIM}")
        return 0
    ids = [i.upper() for i in args.ids] or known_ids()
    unknown = [i for i in ids if i not in known_ids()]
    if unknown:
        print(f"error: unknown check id(s) {', '.join(unknown)}; known ids: {', '.join(known_ids())}",
              file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    results, crashed = [], []
    for cid in ids:
        try:
            res = get(cid).run(seed=args.seed)
        except Exception:  # a crashing check is a failing check, and the others still run
            traceback.print_exc()
            crashed.append(cid)
            continue
        results.append(res)
        if args.verbose or not res.passed:
            print(f"{res.id} {res.name}: {'PASS' if res.passed else 'FAIL'}")
            print(details(res))
    print(table(results))
    if args.json:
        write_json(results, args.json)
    if args.report:
        write_report(results, args.report)
        print(f"report written to {args.report}/README.md")
    n_ok = sum(r.passed for r in results)
    print(f"{n_ok} passed, {len(ids) - n_ok} failed" + (f" (crashed: {', '.join(crashed)})" if crashed else ""))
    return 0 if n_ok == len(ids) else 1


if __name__ == "__main__":
    sys.exit(main())

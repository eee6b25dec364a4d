"""`nmsim formats`: metadata cost of N:M patterns under each encoding."""

from __future__ import annotations

import json

from compression.formats import ENCODING_REGISTRY, Pattern, pattern_summary

DEFAULT_PATTERNS = ("1:2", "2:4", "4:8", "8:16", "16:32")


def register(sub) -> None:
    p = sub.add_parser("formats", help="metadata bits per element of N:M patterns")
    p.add_argument("--pattern", action="append", default=[], metavar="N:M",
                   help="add a pattern to the default list (repeatable)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    patterns = [Pattern.parse(t) for t in DEFAULT_PATTERNS]
    for text in args.pattern:
        extra = Pattern.parse(text)
        if extra not in patterns:
            patterns.append(extra)
    records = [pattern_summary(p) for p in patterns]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    header = ("pattern", "density", "configurations",
              *(f"{name} b/elem" for name in ENCODING_REGISTRY))
    rows = [(r["pattern"], f"{r['density']:.4f}", str(r["configurations"]),
             *(f"{r[f'{name}_bits_per_element']:.4f}" for name in ENCODING_REGISTRY))
            for r in records]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    print("; ".join(f"{name}: {e.description}" for name, e in ENCODING_REGISTRY.items()))
    return 0

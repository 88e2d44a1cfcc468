#!/usr/bin/env python3
"""Every file in src/ opens with a `//!` doc saying what it owns, and has
at most MAX_CODE_LINES lines of code (lines that are neither blank nor
comments; tests included). Exits 1 and names each file that does not."""

import sys
from pathlib import Path

MAX_CODE_LINES = 400
SRC = Path(__file__).resolve().parent.parent / "src"

problems = []
for path in sorted(SRC.rglob("*.rs")):
    lines = path.read_text().splitlines()
    code = sum(1 for line in lines if line.strip() and not line.strip().startswith("//"))
    name = path.relative_to(SRC.parent)
    if not lines or not lines[0].startswith("//!"):
        problems.append(f"{name}: does not open with a //! line saying what it owns")
    if code > MAX_CODE_LINES:
        problems.append(f"{name}: {code} lines of code (at most {MAX_CODE_LINES})")
for problem in problems:
    print(problem)
print(f"sizes: {len(list(SRC.rglob('*.rs')))} files, {len(problems)} problems")
sys.exit(1 if problems else 0)

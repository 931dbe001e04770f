"""The README's numbers match the tables they cite (issue 22: "every number in the README matches
its results file"; the tables are rendered only from ``results/``, and ``test_rerun`` holds every
committed table to its result).

Checked: the README between ``<!-- numbers-checked:begin -->`` and ``<!-- numbers-checked:end -->``
(the reference results rewritten under the final code; the rest of that section is the history of
earlier runs, each with the commit it ran at). In each block (a top-level bullet or a paragraph):

- an interval ``m [low, high]`` must appear as a triple of one cited table, number by number at the
  README's printed precision (``0.100`` matches ``0.1``; ``× 10⁻²`` between ``m`` and the bracket is
  read as the table's scaled column, so it is skipped);
- every other decimal number must be one of the cited tables' numbers at its printed precision,
  unless a unit follows it (s, min, h, GB, %, ×: what the run measured about itself, which the table
  prints in other units or not at all);
- a block with a checked number cites at least one ``tables/….md`` (brace lists expand).
"""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- numbers-checked:begin -->", "<!-- numbers-checked:end -->"
DASHES = str.maketrans({"−": "-", "–": "-"})
NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"
TRIPLE = re.compile(rf"({NUMBER})(?: × 10[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+)? \[({NUMBER}), ({NUMBER})\]")
UNIT = r"\s*(?:GB|MB|s\b|min\b|h\b|%|×|x\b|ulp)"
DECIMAL = re.compile(rf"(?<![\w.^])({NUMBER})(?![\w.])(?!{UNIT})")
CITATION = re.compile(r"tables/[\w{},.\-]+?\.md")


def expand(path: str) -> list[str]:
    """``tables/{a,b}_x.md`` -> ``tables/a_x.md``, ``tables/b_x.md``."""
    match = re.search(r"\{([^}]*)\}", path)
    if match is None:
        return [path]
    return [full for part in match.group(1).split(",")
            for full in expand(path[:match.start()] + part + path[match.end():])]


def decimals(token: str) -> int:
    return len(token.split("e")[0].partition(".")[2])


def same(printed: str, value: float) -> bool:
    """``value`` printed at ``printed``'s precision reads ``printed`` (half a last digit apart; in
    scientific notation the last digit is the mantissa's: ``4.48e-26`` reads ``4.5e-26``, not ``4.4e-26``)."""
    digits, number = decimals(printed), float(printed)
    exponent = int(printed.split("e")[1]) if "e" in printed else 0
    return abs(value - number) <= 0.5 * 10.0 ** (exponent - digits) * (1 + 1e-9) + 1e-15 * abs(number)


def checked_blocks(text: str) -> list[str]:
    regions = re.findall(re.escape(BEGIN) + r"(.*?)" + re.escape(END), text, flags=re.S)
    blocks = [block for region in regions for block in re.split(r"\n(?=- |\s*\n)", region)]
    return [" ".join(block.split()).translate(DASHES) for block in blocks if block.strip()]


def table_text(path: str) -> str:
    return (ROOT / path).read_text().translate(DASHES)


def problems(block: str) -> list[str]:
    """What in one README block does not match the tables it cites."""
    cited = [path for found in CITATION.findall(block) for path in expand(found)]
    missing = [path for path in cited if not (ROOT / path).exists()]
    if missing:
        return [f"cites missing {', '.join(missing)}"]
    tables = [table_text(path) for path in cited]
    triples = [tuple(float(x) for x in found) for text in tables for found in TRIPLE.findall(text)]
    numbers = [float(x) for x in itertools.chain.from_iterable(re.findall(NUMBER, t) for t in tables)]
    found: list[str] = []
    for match in TRIPLE.finditer(block):
        if not any(all(same(p, v) for p, v in zip(match.groups(), triple, strict=True))
                   for triple in triples):
            found.append(f"interval {match.group(0)!r} is in none of {cited}")
    outside = TRIPLE.sub(" ", block)
    for match in DECIMAL.finditer(outside):
        token = match.group(1)
        if "." not in token:
            continue
        if not cited:
            found.append(f"{token} (no table cited)")
        elif not any(same(token, value) for value in numbers):
            context = outside[max(0, match.start() - 60):match.end()]
            found.append(f"{token!r} is in none of {cited}: …{context}")
    return found


def test_the_readme_has_a_checked_region():
    text = (ROOT / "README.md").read_text()
    assert text.count(BEGIN) == text.count(END) >= 1
    assert checked_blocks(text)


def test_every_checked_readme_number_is_in_the_table_it_cites():
    text = (ROOT / "README.md").read_text()
    report = [f"{block[:80]}…: {problem}" for block in checked_blocks(text) for problem in problems(block)]
    assert not report, "\n".join(report)


@pytest.mark.parametrize("block, ok", [
    ("DDM 0.338 [0.075, 0.659] (`tables/t.md`)", True),
    ("DDM 0.338 [0.075, 0.660] (`tables/t.md`)", False),  # a wrong bound
    ("DDM 0.34 and 0.041 in 12.5 s, 3.2 GB (`tables/t.md`)", True),  # rounded; units skipped
    ("DDM 0.35 (`tables/t.md`)", False),
    ("DDM −0.955 × 10⁻² [−1.76, −0.372] (`tables/t.md`)".translate(DASHES), True),
    ("DDM 0.338 somewhere", False),  # no citation
    ("rerun 4.48e-26 and 4.5e-26 (`tables/t.md`)", True),  # rounded in the mantissa
    ("rerun 4.4e-26 (`tables/t.md`)", False),  # half the mantissa's last digit, not an absolute 0.05
])
def test_the_checker_fails_on_what_it_should(tmp_path, monkeypatch, block, ok):
    (tmp_path / "tables").mkdir()
    table = "| DDM | 0.338 [0.075, 0.659] | 0.0412 | -0.955 [-1.76, -0.372] | 4.48e-26 |\n"
    (tmp_path / "tables" / "t.md").write_text(table)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert (problems(block) == []) is ok

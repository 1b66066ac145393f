"""What the README and the docs state about the repository holds: the checkpoint-selection metric
it names for each config is the one the config sets, its reproduction table is the committed
3-seed result, and every docs/ link in the README, the configs, the docs and the code leads to an
existing file and heading."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIGS = ROOT / "configs"
REPRODUCE_3SEEDS = ROOT / "bench" / "results" / "reproduce_3seeds.json"

# How the README names each selectable metric in prose.
METRIC_PROSE = {"max_box_acc_v2": "MaxBoxAccV2", "gt_known_loc": "GT-known Loc", "top1_loc": "Top-1 Loc",
                "pxap": "PxAP", "piou": "PIoU"}
# "`configs/a.yaml` and `configs/b_*.yaml` select(s) the best checkpoint|it on <prose> (`train.select_metric: <key>`"
SELECT_CLAIM = re.compile(
    r"(?P<configs>`configs/[\w*]+\.yaml`(?:(?:, | and )`configs/[\w*]+\.yaml`)*) selects? "
    r"(?:the best checkpoint|it) on (?P<prose>[^(]+?) \(`train\.select_metric: (?P<key>\w+)`"
)


def prose_of(metric: str) -> str:
    """The README's words for a ``train.select_metric`` value."""
    base = metric.removesuffix("_single")
    return METRIC_PROSE[base] + (" with a single contour" if metric != base else "")


def readme_text() -> str:
    """The README with its lines joined, so that a claim may wrap."""
    return " ".join(README.read_text(encoding="utf-8").split())


def select_claims() -> list[tuple[list[Path], str, str]]:
    claims = []
    for match in SELECT_CLAIM.finditer(readme_text()):
        patterns = re.findall(r"`configs/([\w*]+\.yaml)`", match.group("configs"))
        paths = [path for pattern in patterns for path in sorted(CONFIGS.glob(pattern))]
        claims.append((paths, match.group("prose"), match.group("key")))
    return claims


def test_the_readme_names_the_metric_each_config_selects_on():
    from fastwsol.config import load_config

    claims = select_claims()
    assert claims, "the README no longer says which metric the configs select their best checkpoint on"
    named = set()
    for paths, prose, key in claims:
        assert paths, f"the README's select-metric claim names no existing config: {prose!r}"
        assert prose == prose_of(key), f"the README calls {key!r} {prose!r}, not {prose_of(key)!r}"
        for path in paths:
            assert load_config(path).train.select_metric == key, f"{path.name} does not select on {key}"
            named.add(path.name)
    assert "synthetic.yaml" in named, "the README must say what the embedded reproduction selects on"


@pytest.mark.parametrize("metric, prose", [("top1_loc_single", "Top-1 Loc with a single contour"),
                                           ("max_box_acc_v2", "MaxBoxAccV2")])
def test_metric_prose(metric, prose):
    assert prose_of(metric) == prose


def readme_reproduction_table() -> dict[str, list[str]]:
    """The first table after the README's reproduction heading: row label → its cells."""
    section = README.read_text(encoding="utf-8").split("## The embedded reproduction", 1)[1]
    table = re.search(r"(?m)(?:^\|.*\n)+", section).group(0)
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in table.splitlines()]
    return {row[0]: row[1:] for row in cells[2:]}  # after the header and its rule


# README row → the results' keys that row states (several: equal figures, e.g. both contour modes)
TABLE_KEYS = {
    "GT-known Loc (multi = single contour)": ("gt_known_loc", "gt_known_loc_single"),
    "MaxBoxAccV2 (multi = single contour)": ("max_box_acc_v2", "max_box_acc_v2_single"),
    "inverted maps": ("inverted_pct",),
    "Top-1 classification": ("top1_cls",),
}
COLUMNS = ("cam", "all")  # vanilla CAM, the method: `fastwsol reproduce`'s variant keys


def test_the_readme_table_is_the_committed_3_seed_result():
    results = json.loads(REPRODUCE_3SEEDS.read_text())
    table = readme_reproduction_table()
    assert set(table) == set(TABLE_KEYS)
    text = readme_text()
    assert f"Test split of {results['test_images']} images" in text
    assert "seeds " + ", ".join(map(str, results["seeds"])) in text
    for label, keys in TABLE_KEYS.items():
        for column, cell in zip(COLUMNS, table[label], strict=True):
            stated = [float(x) for x in re.findall(r"\d+\.\d+", cell)]
            for key in keys:
                values = [run[key] for run in results["variants"][column]["test"]]
                measured = [statistics.mean(values), statistics.stdev(values)][: len(stated)]
                assert [f"{x:.1f}" for x in measured] == [f"{x:.1f}" for x in stated], (label, column, key)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    return {github_anchor(line.lstrip("#")) for line in markdown.read_text(encoding="utf-8").splitlines()
            if re.match(r"#{1,6} ", line)}


def linking_files() -> list[Path]:
    files = [README, *CONFIGS.glob("*.yaml"), *(ROOT / "docs").glob("*.md")]
    for folder in ("fastwsol", "kernels", "bench", "tests"):
        files += (ROOT / folder).rglob("*.py")
    return files


DOCS_LINK = re.compile(r"(?<![\w/.])(docs/[\w/.-]+?\.(?:md|png))(?:#([\w-]+))?")


def test_docs_links_lead_to_existing_files_and_headings():
    broken = []
    for path in linking_files():
        for target, anchor in DOCS_LINK.findall(path.read_text(encoding="utf-8")):
            relative = path.relative_to(ROOT)
            if not (ROOT / target).is_file():
                broken.append(f"{relative}: {target} does not exist")
            elif anchor and anchor not in anchors(ROOT / target):
                broken.append(f"{relative}: {target} has no heading #{anchor}")
    assert not broken, "\n".join(broken)


def test_readme_links_lead_to_existing_files():
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)", README.read_text(encoding="utf-8"))
    assert targets
    missing = [t for t in targets if not t.startswith(("http://", "https://")) and not (ROOT / t).exists()]
    assert not missing, missing


@pytest.mark.parametrize("heading, anchor", [
    ("## Does the paper's similarity weight work on the embedded set?",
     "does-the-papers-similarity-weight-work-on-the-embedded-set"),
    ("### Coarse or fine-grained masks?", "coarse-or-fine-grained-masks"),
])
def test_github_anchor(heading, anchor):
    assert github_anchor(heading.lstrip("#")) == anchor


def test_the_readme_stays_user_documentation_of_at_most_10_kb():
    text = README.read_text()
    assert len(text.encode()) <= 10_000
    assert not re.search(r"\b[0-9a-f]{7,40}\b(?![-\w])", re.sub(r"```.*?```", "", text, flags=re.S)), "a commit hash"

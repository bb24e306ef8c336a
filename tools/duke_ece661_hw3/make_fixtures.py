"""Regenerate every fixture of Duke ECE 661 HW3 (not the recorded snapshots).

    python -m tools.duke_ece661_hw3.make_fixtures [--root fixtures/duke_ece661_hw3]

Writes `IMDBDataset.csv` (Lab 1), `wikitext-2-raw/wiki.{train,valid,test}.raw` and `tiny-gpt2/`
(Lab 2), all deterministic for the default seeds; a second run rewrites identical bytes.
"""

import argparse
from pathlib import Path

from grader import project_root
from tools.duke_ece661_hw3.imdb import write_imdb_csv
from tools.duke_ece661_hw3.tiny_gpt2 import write_tiny_gpt2
from tools.duke_ece661_hw3.wikitext import write_wikitext

DEFAULT_ROOT = project_root() / "fixtures" / "duke_ece661_hw3"


def make_fixtures(root: Path = DEFAULT_ROOT) -> None:
    root.mkdir(parents=True, exist_ok=True)
    write_imdb_csv(root / "IMDBDataset.csv")
    write_wikitext(root / "wikitext-2-raw")
    write_tiny_gpt2(root / "tiny-gpt2", [root / "wikitext-2-raw" / "wiki.train.raw"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    make_fixtures(parser.parse_args().root)


if __name__ == "__main__":
    main()

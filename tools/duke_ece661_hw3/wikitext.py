"""Synthetic WikiText-2 (raw) splits for Duke ECE 661 HW3 Lab (2).

The lab fine-tunes GPT-2 on `wikitext-2-raw-v1`, which may not be downloaded here. This module
writes look-alike articles in the raw files' layout (`wiki.train.raw`, `wiki.valid.raw`,
`wiki.test.raw`): one record per line, each line starting with a space; titles as ` = Title = `,
sections as ` = = Section = = `, blank lines between records; punctuation split off by spaces and
WikiText's `@-@` / `@,@` / `@.@` escapes inside words and numbers. All text is made up.

    python -m tools.duke_ece661_hw3.wikitext OUT_DIR [--seed 0]
"""

import argparse
import random
from pathlib import Path

PLACES = [
    "Harrowgate",
    "Lindale",
    "Port Ewan",
    "Kesterby",
    "Marrow Fen",
    "Aldwick",
    "Tarnholm",
    "Brackenridge",
    "Saltcombe",
    "Ormsby",
    "Vellmoor",
    "Quenby",
]
PEOPLE = [
    "Edith Carrow",
    "Tomas Vell",
    "Anika Ross",
    "Hugo Marsh",
    "Ines Calder",
    "Rowan Pike",
    "Mira Oduya",
    "Felix Brandt",
    "Ada Winslow",
    "Jonah Reyes",
    "Clara Nyberg",
    "Omar Haddad",
]
THINGS = [
    "lighthouse",
    "railway station",
    "abbey",
    "bridge",
    "canal",
    "market hall",
    "mill",
    "observatory",
    "harbour",
    "castle",
    "library",
    "theatre",
]
ROLES = [
    "engineer",
    "architect",
    "painter",
    "historian",
    "merchant",
    "composer",
    "botanist",
    "mayor",
    "sailor",
    "teacher",
]
SECTIONS = [
    "History",
    "Construction",
    "Geography",
    "Early life",
    "Career",
    "Reception",
    "Legacy",
    "Design",
    "Later years",
    "Description",
]
SENTENCES = [
    "The {thing} at {place} was completed in {year} after {n} years of work .",
    "{person} was born in {place} in {year} , the {ord} of {n} children .",
    "In {year} , {person} moved to {place2} and worked as a {role} .",
    "The {thing} is {n} @,@ {m}00 metres long and stands on the north bank of the river .",
    "Local newspapers described the {thing} as one of the finest in the region .",
    "A fire in {year} destroyed the east wing , which was rebuilt by {person} .",
    "The population of {place} grew from {n} @,@ {m}00 in {year} to {n2} @,@ {m2}00 in {year2} .",
    "{person} 's work on the {thing} was praised by the council and the public .",
    "The {thing} closed in {year} and reopened as a museum in {year2} .",
    'Critics called the building " plain but well made " , and it became a listed site .',
    "The road to {place2} follows the old canal for {n} @.@ {m} kilometres .",
    "During the war the {thing} served as a store for grain and later as a school .",
    "{person} retired to {place2} in {year} and died there {n} years later .",
    "The {ord} floor holds a small collection of maps , letters and tools .",
    "Traffic across the {thing} doubled after the new line to {place2} opened in {year} .",
    "Its long @-@ term future was debated by the town council for several years .",
]
ORDINALS = ["first", "second", "third", "fourth", "fifth"]


def _sentence(rng: random.Random) -> str:
    year = rng.randint(1780, 1990)
    return rng.choice(SENTENCES).format(
        thing=rng.choice(THINGS),
        place=rng.choice(PLACES),
        place2=rng.choice(PLACES),
        person=rng.choice(PEOPLE),
        role=rng.choice(ROLES),
        ord=rng.choice(ORDINALS),
        year=year,
        year2=year + rng.randint(5, 60),
        n=rng.randint(2, 9),
        n2=rng.randint(10, 40),
        m=rng.randint(1, 9),
        m2=rng.randint(1, 9),
    )


def article(rng: random.Random) -> list[str]:
    """The lines of one article: title, sections with 1-3 paragraphs each, blank separators."""
    if rng.random() < 0.5:
        title = f"{rng.choice(THINGS).title()} of {rng.choice(PLACES)}"
    else:
        title = rng.choice(PEOPLE)
    lines = ["", f" = {title} = ", ""]
    for section in rng.sample(SECTIONS, rng.randint(2, 4)):
        lines += [f" = = {section} = = ", ""]
        for _ in range(rng.randint(1, 3)):
            lines += [" " + " ".join(_sentence(rng) for _ in range(rng.randint(2, 5))) + " ", ""]
    return lines


def write_wikitext(out_dir, seed: int = 0, articles=(40, 8, 8)) -> None:
    """wiki.train.raw, wiki.valid.raw and wiki.test.raw with the given numbers of articles."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, count in zip(("train", "valid", "test"), articles):
        lines = [line for _ in range(count) for line in article(rng)]
        (out_dir / f"wiki.{split}.raw").write_text(
            "".join(line + "\n" if line else " \n" for line in lines), encoding="utf-8"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_wikitext(args.out_dir, args.seed)


if __name__ == "__main__":
    main()

"""Synthetic IMDB reviews for Duke ECE 661 HW3 Lab (1), in the format of `IMDBDataset.csv`.

The real file (50,000 reviews, columns `review` and `sentiment` with values positive/negative,
HTML line breaks `<br /><br />` inside reviews) may not be downloaded or copied here, so this
module writes look-alike reviews from a small grammar: neutral sentences about a film, plus
opinion sentences whose adjectives lean towards the review's label (80% of them agree with it).
The LSTM of the lab, with its fixed HyperParams (EMBEDDING_DIM=1), learns that signal in 5
epochs (see `tools/duke_ece661_hw3/README.md` for the measured accuracy).

    python -m tools.duke_ece661_hw3.imdb OUT.csv [--rows 6000] [--seed 0]
"""

import argparse
import csv
import random

POSITIVE = [
    "great",
    "wonderful",
    "brilliant",
    "superb",
    "moving",
    "delightful",
    "excellent",
    "charming",
    "beautiful",
    "masterful",
    "gripping",
    "hilarious",
    "touching",
    "stunning",
    "memorable",
    "enjoyable",
    "fantastic",
    "clever",
    "heartfelt",
    "perfect",
]
NEGATIVE = [
    "awful",
    "boring",
    "terrible",
    "dull",
    "clumsy",
    "tedious",
    "weak",
    "horrible",
    "bland",
    "predictable",
    "annoying",
    "pointless",
    "forgettable",
    "messy",
    "lifeless",
    "poor",
    "wasted",
    "stupid",
    "painful",
    "worst",
]
NOUNS = [
    "movie",
    "film",
    "plot",
    "acting",
    "cast",
    "director",
    "story",
    "script",
    "ending",
    "music",
    "camera work",
    "dialogue",
    "lead actor",
    "lead actress",
    "sequel",
    "screenplay",
    "soundtrack",
    "pacing",
    "effects",
    "villain",
    "romance",
    "twist",
    "finale",
    "score",
]
NAMES = [
    "Walsh",
    "Moreno",
    "Okafor",
    "Lindqvist",
    "Tanaka",
    "Dubois",
    "Kowalski",
    "Brennan",
    "Haddad",
    "Novak",
    "Castillo",
    "Fischer",
    "Mensah",
    "Ivanova",
    "Quinn",
    "Sato",
]
GENRES = [
    "western",
    "thriller",
    "comedy",
    "drama",
    "horror film",
    "musical",
    "war film",
    "documentary",
    "romance",
    "mystery",
    "cartoon",
    "biopic",
]
PEOPLE = [
    "my brother",
    "my wife",
    "a friend",
    "my parents",
    "my roommate",
    "the kids",
    "my husband",
    "a coworker",
    "my sister",
    "my uncle",
]
OPINION = [
    "The {noun} was {adj}.",
    "I found the {noun} {adj} and the {noun2} {adj2}.",
    "{name} gives a {adj} performance as the {role}.",
    "Overall a {adj} {genre}.",
    "What a {adj} {noun}!",
    "Honestly the {noun} is {adj}, really {adj2}.",
    "It is one of the most {adj} {genre}s I have seen.",
    "The {noun} felt {adj} from start to finish.",
]
NEUTRAL = [
    "I watched it with {person} on a {day} night.",
    "The {noun} runs about {minutes} minutes.",
    "It was shot in {year} and released a year later.",
    "{name} plays the {role} and {name2} plays the {role2}.",
    "The story follows a {role} who moves to a small town.",
    "I rented this {genre} after reading about it.",
    "There is a long scene at a train station near the end.",
    "It is based on a novel from the {decade}s.",
]
ROLES = [
    "detective",
    "teacher",
    "sheriff",
    "doctor",
    "pilot",
    "singer",
    "soldier",
    "farmer",
    "journalist",
    "lawyer",
    "thief",
    "priest",
]
VERDICT = [
    "In short, {adj} and {adj2}.",
    "My verdict: {adj}, {adj2}.",
    "Simply {adj}.",
    "All in all {adj} and {adj2}, {adj}.",
]
DAYS = ["Monday", "Tuesday", "Friday", "Saturday", "Sunday"]


def review(rng: random.Random, positive: bool, agree: float = 0.8) -> str:
    """One review: 2-6 sentences ending with a verdict that agrees with the label.

    Opinion adjectives agree with the label with probability `agree`; the closing verdict always
    does (a recurrent model remembers the end of a sequence best).
    """
    sentences = []
    for _ in range(rng.randint(1, 5)):
        if rng.random() < 0.6:
            words = POSITIVE if positive == (rng.random() < agree) else NEGATIVE
            template = rng.choice(OPINION)
            fill = {"adj": rng.choice(words), "adj2": rng.choice(words)}
        else:
            template, fill = rng.choice(NEUTRAL), {}
        sentences.append(_fill(rng, template, fill))
    verdict = POSITIVE if positive else NEGATIVE
    sentences.append(_fill(rng, rng.choice(VERDICT), {"adj": rng.choice(verdict), "adj2": rng.choice(verdict)}))
    text = " ".join(s[0].upper() + s[1:] for s in sentences)
    if rng.random() < 0.3:  # the real file keeps the HTML line breaks of the reviews
        cut = text.find(". ", len(text) // 2)
        if cut > 0:
            text = text[: cut + 1] + "<br /><br />" + text[cut + 2 :]
    return text


def _fill(rng: random.Random, template: str, fill: dict) -> str:
    return template.format(
        noun=rng.choice(NOUNS),
        noun2=rng.choice(NOUNS),
        name=rng.choice(NAMES),
        name2=rng.choice(NAMES),
        role=rng.choice(ROLES),
        role2=rng.choice(ROLES),
        genre=rng.choice(GENRES),
        person=rng.choice(PEOPLE),
        day=rng.choice(DAYS),
        minutes=rng.randint(80, 180),
        year=rng.randint(1950, 2019),
        decade=rng.choice([1920, 1950, 1970, 1990]),
        **fill,
    )


def write_imdb_csv(path, rows: int = 6000, seed: int = 0) -> None:
    """Write `rows` unique reviews, half positive, in IMDBDataset.csv's format."""
    rng = random.Random(seed)
    seen, records = set(), []
    while len(records) < rows:
        positive = len(records) % 2 == 0
        text = review(rng, positive)
        if text not in seen:  # unique reviews keep the split tests' disjointness check exact
            seen.add(text)
            records.append((text, "positive" if positive else "negative"))
    rng.shuffle(records)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        writer.writerows(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_imdb_csv(args.out, args.rows, args.seed)


if __name__ == "__main__":
    main()

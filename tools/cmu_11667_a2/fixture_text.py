"""Synthetic English text for the CMU 11-667 A2 fixtures (tokenizer training, tiny corpora).

The course trains on C4 and scores Yelp reviews; neither may be downloaded or copied here, so
this module writes look-alike text from small hand-written grammars: short news items, how-to
paragraphs, anecdotes, and restaurant reviews in the course's classification template (so that
" positive", " negative", " good" and " bad" are frequent words). Deterministic for a seed.

    python -m tools.cmu_11667_a2.fixture_text OUT.txt [--chars 200000] [--seed 0]
"""

import argparse
import random

NAMES = [
    "Maria",
    "Daniel",
    "Priya",
    "Tomas",
    "Aisha",
    "Kenji",
    "Laura",
    "Samuel",
    "Nadia",
    "Oliver",
    "Grace",
    "Victor",
    "Elena",
    "Marcus",
    "Hannah",
    "Ibrahim",
]
PLACES = [
    "the harbour",
    "the old market",
    "the city library",
    "the train station",
    "the river bank",
    "the school",
    "the town hall",
    "the museum",
    "the community garden",
    "the bridge",
]
TOWNS = ["Millbrook", "Eastvale", "Northfield", "Riverton", "Ashford", "Lakeside", "Westport", "Oakridge"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
NEWS_EVENTS = [
    "a storm knocked out power to {n} homes",
    "the council approved a new budget for road repairs",
    "volunteers planted {n} trees along the main road",
    "a fire damaged a warehouse near {place}",
    "the local team won its third match of the season",
    "officials opened a new bus line between {town} and {town2}",
    "heavy rain closed the road to {town} for several hours",
    "students raised {n} dollars for the food bank",
]
NEWS_QUOTES = [
    "We are working hard to fix the problem as quickly as possible",
    "This is a good day for everyone who lives here",
    "It was a bad week, but people helped each other",
    "We expect the work to be finished by the end of the month",
    "Nobody was hurt, and that is what matters most",
]
ROLES = [
    "the mayor",
    "a spokesperson for the council",
    "the fire chief",
    "a local resident",
    "the head teacher",
    "a police officer",
]
TASKS = [
    "bake bread at home",
    "plant a small garden",
    "fix a leaking tap",
    "train for a long run",
    "write a clear report",
    "set up a new laptop",
    "paint a small room",
    "learn a new language",
]
STEPS = [
    "First, gather everything you need and clear a space to work.",
    "Read the instructions twice before you start.",
    "Measure carefully, because small mistakes add up.",
    "Take a short break if you feel tired.",
    "Ask a friend to check your work when you are done.",
    "Clean your tools after each use so they last longer.",
    "Start with the easy parts and leave the hard parts for later.",
    "Keep notes, so that next time the job goes faster.",
    "Do not rush the last step; it is the one people remember.",
]
STORY_OPENINGS = [
    "{name} had lived in {town} for {n} years and knew almost everyone at {place}.",
    "On a cold {day} morning, {name} walked to {place} with a letter in one hand.",
    "When {name} was young, the family spent every summer near {place}.",
]
STORY_MIDDLES = [
    "Nobody expected the visitor who arrived that afternoon.",
    "The weather turned, and the small boat had to return early.",
    "A neighbour offered help, and the two of them worked until dark.",
    "The old clock in the hall stopped, and nobody could fix it.",
    "It was not a good start, but things slowly got better.",
]
STORY_ENDINGS = [
    "Years later, {name} still told the story to anyone who would listen.",
    "By the evening, the whole street had heard the news.",
    "In the end, it was a good day after all.",
]
FOOD = [
    "pizza",
    "soup",
    "noodles",
    "burger",
    "salad",
    "coffee",
    "tacos",
    "pasta",
    "curry",
    "pancakes",
    "sandwich",
    "dessert",
    "fries",
    "steak",
    "sushi",
]
GOOD_PHRASES = [
    "The {food} was excellent and the staff were friendly.",
    "Great service, fair prices and a really good {food}.",
    "We loved the {food}, and the room was warm and clean.",
    "The waiter was kind and our {food} arrived quickly.",
    "Best {food} in {town}, we will come back soon.",
    "Everything tasted fresh and the portions were generous.",
    "A good place for a quiet dinner with friends.",
]
BAD_PHRASES = [
    "The {food} was cold and the staff ignored us.",
    "We waited an hour and the {food} tasted bad.",
    "The tables were dirty and the prices were too high.",
    "Rude service, small portions and a bland {food}.",
    "The worst {food} in {town}, we will not return.",
    "Our order was wrong twice and nobody said sorry.",
    "A bad place to eat, noisy and slow.",
]
YELP_TEMPLATE = "Here is a yelp review.\n{text}\nThis review is"
LABEL_WORDS = {True: [" positive", " good"], False: [" negative", " bad"]}


def _fill(rng: random.Random, template: str) -> str:
    town, town2 = rng.sample(TOWNS, 2)
    return template.format(
        name=rng.choice(NAMES),
        place=rng.choice(PLACES),
        town=town,
        town2=town2,
        day=rng.choice(DAYS),
        food=rng.choice(FOOD),
        n=rng.randint(2, 900),
    )


def news(rng: random.Random) -> str:
    event = _fill(rng, rng.choice(NEWS_EVENTS))
    town, day = rng.choice(TOWNS), rng.choice(DAYS)
    quote, role = rng.choice(NEWS_QUOTES), rng.choice(ROLES)
    return (
        f"Residents of {town} said on {day} that {event}. "
        f'"{quote}," said {role}. More details are expected later this week.'
    )


def how_to(rng: random.Random) -> str:
    steps = " ".join(rng.sample(STEPS, 4))
    return f"How to {rng.choice(TASKS)}. {steps}"


def story(rng: random.Random) -> str:
    parts = [rng.choice(STORY_OPENINGS), *rng.sample(STORY_MIDDLES, 2), rng.choice(STORY_ENDINGS)]
    return " ".join(_fill(rng, part) for part in parts)


def review(rng: random.Random) -> str:
    positive = rng.random() < 0.5
    phrases = GOOD_PHRASES if positive else BAD_PHRASES
    text = " ".join(_fill(rng, p) for p in rng.sample(phrases, rng.randint(1, 3)))
    return YELP_TEMPLATE.format(text=text) + rng.choice(LABEL_WORDS[positive]) + "."


def generate_text(n_chars: int = 200_000, seed: int = 0) -> str:
    """About n_chars characters of paragraphs separated by blank lines."""
    rng = random.Random(seed)
    kinds = [news, how_to, story, review, review]  # reviews twice: the label words must be frequent
    paragraphs, total = [], 0
    while total < n_chars:
        paragraph = rng.choice(kinds)(rng)
        paragraphs.append(paragraph)
        total += len(paragraph) + 2
    return "\n\n".join(paragraphs) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--chars", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with open(args.out, "w") as f:
        f.write(generate_text(args.chars, args.seed))


if __name__ == "__main__":
    main()

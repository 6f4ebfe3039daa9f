"""Synthetic articles: a seeded pseudo-word vocabulary drawn with Zipf frequencies.

The vocabulary (50k pseudo-words by default) is built deterministically from a seed and ranked;
words are drawn with probability proportional to 1/rank**s (s = 1.1), so a handful of words
appear in nearly every article and the tail appears in very few. Sampling uses a quantile table
(every word gets at least one slot), which is ~3x faster than weighted `random.choices`.
"""

from __future__ import annotations

import random

ONSETS = "b c d f g h j k l m n p r s t v w z br cr dr fl gr pl pr st tr sh ch th qu sl sp".split()  # noqa: SIM905
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y"]
CODAS = ["", "", "", "n", "r", "s", "l", "m", "t", "x", "nd", "st", "rk", "ng"]
# English stop words a pseudo-word must not be (they would vanish from the tsvector).
_STOP_WORDS = (
    "the and for are but not you all any can had her was one our out day get has him his how man "
    "new now old see two way who boy did its let put say she too use tis been from have into more "
    "only over such than that them then they this very what when with"
)
_STOP = frozenset(_STOP_WORDS.split())
TABLE_SIZE = 1 << 22
TITLE_TEMPLATES = [
    "How to {A} {B} in {Y}",
    "{N} {A} {B} Tips for {C}",
    "The Complete Guide to {A} {B}",
    "{A} vs {B}: Which {C} Wins",
    "Why {A} {B} Matters for {C}",
    "{A} {B}: A Beginner's Guide",
    "{N} Ways to Improve Your {A} {B}",
    "What Every {A} Should Know About {B}",
]


class Corpus:
    """Deterministic vocabulary and article generator; pass your own `random.Random`."""

    def __init__(self, seed: int = 7, size: int = 50_000, s: float = 1.1) -> None:
        rng = random.Random(seed)
        syllables = [o + v + c for o in ONSETS for v in VOWELS for c in CODAS]
        seen: set[str] = set()
        while len(seen) < size:
            word = "".join(rng.choices(syllables, k=rng.choice((1, 2, 2, 2, 3, 3, 4))))
            if len(word) >= 3 and word not in _STOP:
                seen.add(word)
        # Like natural language, frequent words tend to be short: rank by length, with noise.
        words = sorted(sorted(seen), key=lambda w: len(w) + rng.random() * 6)
        self.words = words  # rank order: words[0] is the most frequent
        weights = [1 / (rank**s) for rank in range(1, size + 1)]
        total = sum(weights)
        self.probability = [w / total for w in weights]
        table: list[str] = []
        for word, p in zip(words, self.probability, strict=True):
            table.extend([word] * max(1, round(p * TABLE_SIZE)))
        self._table = table
        tag_rng = random.Random(seed + 1)
        self.tags = [f"{words[tag_rng.randrange(50, 3000)]}" for _ in range(300)]
        self._tag_table = [
            t for i, t in enumerate(self.tags) for _ in range(max(1, 300 // (i + 1)))
        ]

    def draw(self, rng: random.Random, k: int) -> list[str]:
        return rng.choices(self._table, k=k)

    def title(self, rng: random.Random) -> str:
        a, b, c = (w.capitalize() for w in self.draw(rng, 3))
        title = rng.choice(TITLE_TEMPLATES).format(
            A=a, B=b, C=c, N=rng.randint(3, 25), Y=rng.randint(2019, 2026)
        )
        return title[:60]

    def markdown(self, rng: random.Random, title: str, target_words: int) -> str:
        """Headings, paragraphs, a list now and then, internal and external links."""
        stream = self.draw(rng, target_words + 200)
        links = [
            f"/blog/{'-'.join(self.draw(rng, 3))}"
            if rng.random() < 0.5
            else f"https://www.{self.draw(rng, 1)[0]}.com/{'-'.join(self.draw(rng, 2))}"
            for _ in range(rng.randint(2, 8))
        ]
        at = 0

        def sentence() -> str:
            nonlocal at
            n = rng.randint(6, 20)
            words = stream[at : at + n]
            at += n
            if links and rng.random() < 0.15:
                i = rng.randrange(n - 1)
                words[i : i + 2] = [f"[{words[i]} {words[i + 1]}]({links.pop()})"]
            return words[0].capitalize() + " " + " ".join(words[1:]) + "."

        parts = [f"# {title}"]
        while at < target_words:
            if at and rng.random() < 0.25:
                n = rng.randint(2, 6)
                parts.append("## " + " ".join(stream[at : at + n]).capitalize())
                at += n
            if rng.random() < 0.15:
                parts.append("\n".join(f"- {sentence()}" for _ in range(rng.randint(3, 6))))
            else:
                parts.append(" ".join(sentence() for _ in range(rng.randint(3, 7))))
        return "\n\n".join(parts) + "\n"

    def article(self, rng: random.Random) -> dict:
        """Column-style values of one article (no user, slug, or derived fields)."""
        title = self.title(rng)
        markdown = self.markdown(rng, title, rng.randint(800, 2500))
        keyword = " ".join(self.draw(rng, 2))
        status = rng.choices(("published", "draft", "archived"), (70, 25, 5))[0]
        excerpt = " ".join(self.draw(rng, rng.randint(20, 40))).capitalize() + "."
        return {
            "title": title,
            "content_markdown": markdown,
            "excerpt": excerpt,
            "meta_title": title[:60],
            "meta_description": excerpt[:155],
            "primary_keyword": keyword,
            "secondary_keywords": [" ".join(self.draw(rng, 2)) for _ in range(rng.randint(2, 6))],
            "tags": sorted(set(rng.choices(self._tag_table, k=rng.randint(2, 5)))),
            "seo_score": round(rng.uniform(35, 98), 1),
            "status": status,
        }

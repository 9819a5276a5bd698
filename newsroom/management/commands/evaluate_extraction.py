"""Print the entity extractor's precision and recall on a labelled set.

Each text in the set (tests/newsroom/extraction_set/ by default) is a .txt
with a .yaml beside it: the title and the labelled entities (name, kind and
the aliases the text uses). Two passes:

- known: the extractor's index is built from all the labels of the set, as if
  the Entity table held them, and must find each text's entities;
- new: the index is empty, and the candidates must name the labelled entities.

It reads files only: the database is neither read nor written, so it is safe
to run anywhere, any number of times.
"""

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand

from newsroom.extract import EntityIndex, extract, name_key

DEFAULT_SET = Path(settings.BASE_DIR) / "tests" / "newsroom" / "extraction_set"


@dataclass
class Sample:
    name: str
    title: str
    body: str
    entities: list  # dicts: name, kind, aliases


@dataclass
class Score:
    proposed: int = 0  # entities (known pass) or candidates (new pass) returned
    correct: int = 0  # of those, how many name a labelled entity
    expected: int = 0  # labelled entities
    named: int = 0  # of those, how many were found
    kinds_right: int = 0
    errors: list = field(default_factory=list)

    @property
    def precision(self):
        return self.correct / self.proposed if self.proposed else 1.0

    @property
    def recall(self):
        return self.named / self.expected if self.expected else 1.0

    @property
    def kind_accuracy(self):
        return self.kinds_right / self.correct if self.correct else 1.0


def load_set(path=DEFAULT_SET):
    samples = []
    for text in sorted(Path(path).glob("*.txt")):
        labels = yaml.safe_load(text.with_suffix(".yaml").read_text(encoding="utf-8"))
        samples.append(
            Sample(
                text.stem,
                labels.get("title") or "",
                text.read_text(encoding="utf-8"),
                labels["entities"],
            )
        )
    return samples


def _key(name):
    key = name_key(name)
    return key[4:] if key.startswith(" the ") else key


def labelled_entities(samples):
    """(name, kind, aliases) of every labelled entity, one per name."""
    entities = {}
    for sample in samples:
        for entity in sample.entities:
            _, kind, aliases = entities.get(entity["name"], (None, entity["kind"], []))
            aliases += [a for a in entity.get("aliases", []) if a not in aliases]
            entities[entity["name"]] = (entity["name"], kind, aliases)
    return list(entities.values())


def labelled_index(samples):
    """An index of every labelled entity, as if the Entity table held them."""
    rows = labelled_entities(samples)
    return EntityIndex(
        (pk, name, kind, "\n".join(aliases)) for pk, (name, kind, aliases) in enumerate(rows, 1)
    )


def score_known(samples, backend="rules", index=None):
    """index: default, one built from the labels; tests pass the Entity
    table's after seeding it from the same labels."""
    index = index or labelled_index(samples)
    score = Score()
    for sample in samples:
        expected = {e["name"] for e in sample.entities}
        found = {k.name for k in extract(sample.title, sample.body, index, backend).known}
        score.proposed += len(found)
        score.correct += len(found & expected)
        score.kinds_right += len(found & expected)  # a known entity keeps its kind
        score.expected += len(expected)
        score.named += len(found & expected)
        score.errors += [(sample.name, "extra", name) for name in sorted(found - expected)]
        score.errors += [(sample.name, "missed", name) for name in sorted(expected - found)]
    return score


def score_new(samples, backend="rules"):
    """Precision: candidates that name a labelled entity (by name or alias).
    Recall: labelled entities named by at least one candidate, so two
    candidates for one entity ("Greenleaf Market", "Greenleaf") find it once."""
    score = Score()
    for sample in samples:
        by_key = {}
        for entity in sample.entities:
            for label in [entity["name"], *entity.get("aliases", [])]:
                by_key[_key(label)] = entity
        named = set()
        for candidate in extract(sample.title, sample.body, EntityIndex([]), backend).new:
            score.proposed += 1
            entity = by_key.get(_key(candidate.name))
            if entity is None:
                score.errors.append((sample.name, "extra", f"{candidate.name} ({candidate.kind})"))
                continue
            score.correct += 1
            named.add(entity["name"])
            if candidate.kind == entity["kind"]:
                score.kinds_right += 1
            else:
                score.errors.append(
                    (
                        sample.name,
                        "kind",
                        f"{candidate.name}: {candidate.kind}, not {entity['kind']}",
                    )
                )
        score.expected += len(sample.entities)
        score.named += len(named)
        score.errors += [
            (sample.name, "missed", e["name"]) for e in sample.entities if e["name"] not in named
        ]
    return score


class Command(BaseCommand):
    help = "Print precision and recall of the entity extractor on a labelled set."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", default=str(DEFAULT_SET))
        parser.add_argument("--backend", choices=["rules", "spacy", "auto"], default="rules")
        parser.add_argument("--verbose", action="store_true", help="List every error.")

    def handle(self, path, backend, verbose, **options):
        samples = load_set(path)
        known, new = score_known(samples, backend), score_new(samples, backend)
        self.stdout.write(f"{len(samples)} texts, {sum(len(s.entities) for s in samples)} labels")
        self.stdout.write(
            f"known entities: precision {known.precision:.3f}  recall {known.recall:.3f}"
        )
        self.stdout.write(
            f"new candidates: precision {new.precision:.3f}  recall {new.recall:.3f}  "
            f"kind right {new.kind_accuracy:.3f}"
        )
        if verbose:
            for label, score in (("known", known), ("new", new)):
                for sample, what, name in score.errors:
                    self.stdout.write(f"  {label:5} {sample:28} {what:6} {name}")

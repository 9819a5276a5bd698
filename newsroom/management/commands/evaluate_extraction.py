"""Print the entity extractor's precision, recall and kind accuracy on a
labelled set of real news, per split, and where it goes wrong.

Each text in the set (tests/newsroom/extraction_real/ by default) is a .txt
with a .yaml beside it: the title, the split ("dev" to develop the rules on,
"heldout" to measure them), the source and licence, the labelled entities
(name, kind and the aliases the text uses) and `ignore`: proper names that
are neither a person, an organisation nor a place (laws, events, websites),
which a candidate may name without being counted right or wrong. Two passes:

- known: the extractor's index is built from all the labels of the set, as if
  the Entity table held them, and must find each text's entities;
- new: the index is empty, and the candidates must name the labelled entities.

It reads files only: the database is neither read nor written, so it is safe
to run anywhere, any number of times.
"""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand

from newsroom.extract import EntityIndex, extract, name_key

DEFAULT_SET = Path(settings.BASE_DIR) / "tests" / "newsroom" / "extraction_real"
SPLITS = ("dev", "heldout")


@dataclass
class Sample:
    name: str
    title: str
    body: str
    entities: list  # dicts: name, kind, aliases
    split: str = ""
    ignore: list = field(default_factory=list)


@dataclass
class Score:
    proposed: int = 0  # entities (known pass) or candidates (new pass) returned
    correct: int = 0  # of those, how many name a labelled entity
    expected: int = 0  # labelled entities
    named: int = 0  # of those, how many were found
    kinds_right: int = 0
    errors: list = field(default_factory=list)  # (sample, "extra"/"missed"/"kind", text)
    missed: list = field(default_factory=list)  # (kind, name, mentions in the text)

    @property
    def precision(self):
        return self.correct / self.proposed if self.proposed else 1.0

    @property
    def recall(self):
        return self.named / self.expected if self.expected else 1.0

    @property
    def kind_accuracy(self):
        return self.kinds_right / self.correct if self.correct else 1.0


def load_set(path=DEFAULT_SET, split=None):
    """The samples of a set; of one split only when `split` is given."""
    samples = []
    for text in sorted(Path(path).glob("*.txt")):
        labels = yaml.safe_load(text.with_suffix(".yaml").read_text(encoding="utf-8"))
        sample = Sample(
            text.stem,
            labels.get("title") or "",
            text.read_text(encoding="utf-8"),
            labels["entities"],
            labels.get("split") or "",
            labels.get("ignore") or [],
        )
        if split is None or sample.split == split:
            samples.append(sample)
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


def _mentions(sample, entity):
    """How often the text names an entity, by name or alias (for ranking misses)."""
    text = name_key(f"{sample.title} {sample.body}")
    labels = {_key(label) for label in [entity["name"], *entity.get("aliases", [])]}
    return max(text.count(label) for label in labels)


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
        for entity in sample.entities:
            if entity["name"] not in found:
                score.errors.append((sample.name, "missed", entity["name"]))
                score.missed.append((entity["kind"], entity["name"], _mentions(sample, entity)))
    return score


def score_new(samples, backend="rules"):
    """Precision: candidates that name a labelled entity (by name or alias),
    of the candidates that do not name an ignored one. Recall: labelled
    entities named by at least one candidate, so two candidates for one
    entity ("Greenleaf Market", "Greenleaf") find it once."""
    score = Score()
    for sample in samples:
        by_key = {}
        for entity in sample.entities:
            for label in [entity["name"], *entity.get("aliases", [])]:
                by_key[_key(label)] = entity
        ignored = {_key(name) for name in sample.ignore}
        named = set()
        for candidate in extract(sample.title, sample.body, EntityIndex([]), backend).new:
            entity = by_key.get(_key(candidate.name))
            if entity is None and _key(candidate.name) in ignored:
                continue
            score.proposed += 1
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
        for entity in sample.entities:
            if entity["name"] not in named:
                score.errors.append((sample.name, "missed", entity["name"]))
                score.missed.append((entity["kind"], entity["name"], _mentions(sample, entity)))
    return score


def worst_misses(score, kind, n=10):
    """The n names of one kind missed most often (texts × mentions)."""
    counts = Counter()
    for missed_kind, name, mentions in score.missed:
        if missed_kind == kind:
            counts[name] += max(mentions, 1)
    return counts.most_common(n)


class Command(BaseCommand):
    help = "Print precision, recall and kind accuracy of the entity extractor per split."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", default=str(DEFAULT_SET))
        parser.add_argument("--backend", choices=["rules", "spacy", "auto"], default="rules")
        parser.add_argument(
            "--split", choices=[*SPLITS, "all"], help="One split only (default: each in turn)."
        )
        parser.add_argument("--verbose", action="store_true", help="List every error.")

    def handle(self, path, backend, split, verbose, **options):
        samples = load_set(path)
        present = sorted({s.split for s in samples if s.split}, key=lambda s: (s not in SPLITS, s))
        if split == "all" or not present:
            groups = [("all", samples)]
        else:
            names = [split] if split else present
            groups = [(name, [s for s in samples if s.split == name]) for name in names]
        for name, group in groups:
            known, new = score_known(group, backend), score_new(group, backend)
            labels = sum(len(s.entities) for s in group)
            self.stdout.write(f"== {name}: {len(group)} texts, {labels} labels")
            self.stdout.write(
                f"known entities: precision {known.precision:.3f}  recall {known.recall:.3f}"
            )
            self.stdout.write(
                f"new names:      precision {new.precision:.3f}  recall {new.recall:.3f}  "
                f"kind right {new.kind_accuracy:.3f}"
            )
            for kind in ("person", "organization", "place"):
                misses = worst_misses(new, kind)
                if misses:
                    listed = ", ".join(f"{missed} ({count})" for missed, count in misses)
                    self.stdout.write(f"  worst missed {kind}s: {listed}")
            if verbose:
                for label, score in (("known", known), ("new", new)):
                    for sample, what, text in score.errors:
                        self.stdout.write(f"  {label:5} {sample:40} {what:6} {text}")

"""Seed articles: parse a seed file and load it as a published article.

A seed file is UTF-8 text with optional YAML front matter between `---` lines
(title, date, summary, byline, slug, entities, email_only), then the body. Paragraphs are
separated by blank lines, or, when the body has none, one paragraph a line.
The site's subscribe footer ("Discover more from …" / "Subscribe to get the
latest posts …") is stripped from the end: the site renders its own.
"""

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from django.db import transaction
from django.utils import timezone
from django.utils.html import escape
from django.utils.text import slugify

from .extract import extract
from .models import Article, ArticleEntity, Entity

FOOTER_LINES = [
    re.compile(r"^discover more from\b.*$", re.IGNORECASE),
    re.compile(r"^subscribe to get the latest posts sent to your email\.?$", re.IGNORECASE),
]
# Words whose final full stop does not end a sentence ("U.S. Attorney General").
ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "gen", "gov", "sen", "rep", "lt", "col", "no", "vs"}  # fmt: skip
TITLE_MAX_LENGTH = 300


class SeedError(Exception):
    """A seed file that cannot be loaded; the message names the file and line."""

    def __init__(self, path, line, message):
        super().__init__(f"{path}, line {line}: {message}")


@dataclass
class SeedEntity:
    name: str
    kind: str
    role: str = ArticleEntity.Role.ABOUT
    aliases: list = field(default_factory=list)
    description: str = ""
    same_as: str = ""


@dataclass
class Seed:
    path: Path
    title: str
    paragraphs: list
    published_at: datetime.datetime | None = None
    summary: str = ""
    byline: str = ""
    slug: str = ""
    entities: list = field(default_factory=list)
    has_front_matter: bool = False
    email_only: bool = False

    @property
    def body_html(self):
        return "\n".join(f"<p>{escape(p)}</p>" for p in self.paragraphs)

    @property
    def key(self):
        """What makes a second load of the same file find the first one."""
        return self.slug or slugify(self.title)[:200]


def first_sentence(text):
    for match in re.finditer(r"[.!?]['’\"”]?(?=\s+[“\"'‘A-Z0-9])", text):
        before = text[: match.start()].split()
        word = before[-1].lower().rstrip(".") if before else ""
        if word in ABBREVIATIONS or re.fullmatch(r"(?:[a-z]\.)*[a-z]", word):
            continue  # "Mr." or "U.S." – not the end of the sentence
        return text[: match.end()].strip()
    return text.strip()


def _split_paragraphs(body):
    lines = [line.rstrip() for line in body.strip("\n").splitlines()]
    if any(not line.strip() for line in lines):
        paragraphs, current = [], []
        for line in lines + [""]:
            if line.strip():
                current.append(line.strip())
            elif current:
                paragraphs.append(" ".join(current))
                current = []
    else:
        paragraphs = [line.strip() for line in lines]
    while paragraphs and any(p.fullmatch(paragraphs[-1]) for p in FOOTER_LINES):
        paragraphs.pop()
    return paragraphs


def _parse_date(value, path, line):
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, datetime.date):
        moment = datetime.datetime.combine(value, datetime.time(9, 0))
    else:
        raise SeedError(path, line, f"date must look like 2020-10-07, not {value!r}")
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def _text(value, path, line, name, required=False):
    if value is None:
        value = ""
    if not isinstance(value, str | int | float):
        raise SeedError(path, line, f"{name} must be text")
    value = str(value).strip()
    if required and not value:
        raise SeedError(path, line, f"{name} is required")
    return value


def _flag(value, path, line, name):
    if value is None:
        return False
    if not isinstance(value, bool):
        raise SeedError(path, line, f"{name} must be true or false, not {value!r}")
    return value


def _parse_entities(items, node, path):
    if items is None:
        return []
    if not isinstance(items, list):
        raise SeedError(path, node.start_mark.line + 2, "entities must be a list")
    kinds, roles = set(Entity.Kind.values), set(ArticleEntity.Role.values)
    entities = []
    for item, item_node in zip(items, node.value, strict=True):
        line = item_node.start_mark.line + 2  # +1 for the opening ---, +1 to count from 1
        if not isinstance(item, dict):
            raise SeedError(path, line, "each entity needs at least a name and a kind")
        name = _text(item.get("name"), path, line, "the entity's name", required=True)
        kind = item.get("kind", "")
        if kind == "organisation":
            kind = Entity.Kind.ORGANIZATION
        if kind not in kinds:
            raise SeedError(
                path, line, f"kind of {name!r} must be one of {', '.join(sorted(kinds))}"
            )
        role = item.get("role", ArticleEntity.Role.ABOUT)
        if role not in roles:
            raise SeedError(path, line, f"role of {name!r} must be 'about' or 'mentions'")
        aliases = item.get("aliases") or []
        if not isinstance(aliases, list):
            raise SeedError(path, line, f"aliases of {name!r} must be a list")
        entities.append(
            SeedEntity(
                name=name,
                kind=kind,
                role=role,
                aliases=[_text(a, path, line, "an alias") for a in aliases],
                description=_text(item.get("description"), path, line, "description"),
                same_as=_text(item.get("same_as"), path, line, "same_as"),
            )
        )
    return entities


def parse_seed(path):
    """Read and check a seed file; raises SeedError naming the file and line."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SeedError(path, raw[: exc.start].count(b"\n") + 1, "not UTF-8 text") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")

    meta, meta_node, body_line = {}, None, 1
    lines = text.split("\n")
    if lines and lines[0].strip() == "---":
        try:
            end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
        except StopIteration:
            raise SeedError(
                path, 1, "front matter starts with --- but has no closing ---"
            ) from None
        front = "\n".join(lines[1:end])
        try:
            meta_node = yaml.compose(front, Loader=yaml.SafeLoader)
            meta = yaml.safe_load(front) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 2 if mark else 1
            problem = getattr(exc, "problem", None) or str(exc)
            raise SeedError(path, line, f"front matter is not valid YAML: {problem}") from None
        if not isinstance(meta, dict):
            raise SeedError(path, 2, "front matter must be `key: value` lines")
        body_line = end + 2
        text = "\n".join(lines[end + 1 :])

    def line_of(key):
        if meta_node is None:
            return 1
        for key_node, _ in meta_node.value:
            if key_node.value == key:
                return key_node.start_mark.line + 2
        return 1

    paragraphs = _split_paragraphs(text)
    if not paragraphs:
        raise SeedError(path, body_line, "the article has no text")
    title = _text(meta.get("title"), path, line_of("title"), "title")
    if not title:
        title = first_sentence(paragraphs[0])
    if len(title) > TITLE_MAX_LENGTH:
        title = title[: TITLE_MAX_LENGTH - 1].rsplit(" ", 1)[0] + "…"
    entities_node = next(
        (v for k, v in (meta_node.value if meta_node else []) if k.value == "entities"), None
    )
    return Seed(
        path=path,
        title=title,
        paragraphs=paragraphs,
        published_at=_parse_date(meta.get("date"), path, line_of("date")),
        summary=_text(meta.get("summary"), path, line_of("summary"), "summary"),
        byline=_text(meta.get("byline"), path, line_of("byline"), "byline"),
        slug=slugify(_text(meta.get("slug"), path, line_of("slug"), "slug")),
        entities=_parse_entities(meta.get("entities"), entities_node, path),
        has_front_matter=meta_node is not None,
        email_only=_flag(meta.get("email_only"), path, line_of("email_only"), "email_only"),
    )


def _entity_for(seed_entity):
    entity = (
        Entity.objects.filter(name__iexact=seed_entity.name).first()
        or Entity.objects.filter(slug=slugify(seed_entity.name)).first()
    )
    if entity:
        return entity, False
    entity = Entity.objects.create(
        name=seed_entity.name,
        kind=seed_entity.kind,
        aliases="\n".join(seed_entity.aliases),
        description=seed_entity.description,
        same_as=seed_entity.same_as,
    )
    return entity, True


def tag_from_text(article, create_entities=False):
    """Tag an article with the entities the extractor finds in its text:
    known entities always, new candidates only with `create_entities` (as
    entities of the guessed kind). Returns (what, name, kind, role) for each,
    what being "tagged", "created" or "candidate" (found, not created)."""
    result = extract(article.title, article.body)
    entities = Entity.objects.in_bulk([found.id for found in result.known])
    found = [("tagged", entities[k.id], k.role) for k in result.known]
    for candidate in result.new:
        if create_entities:
            entity, created = _entity_for(SeedEntity(name=candidate.name, kind=candidate.kind))
            found.append(("created" if created else "tagged", entity, candidate.role))
        else:
            found.append(("candidate", Entity(name=candidate.name, kind=candidate.kind), None))
    for what, entity, role in found:
        if what != "candidate":
            ArticleEntity.objects.get_or_create(
                article=article, entity=entity, defaults={"role": role}
            )
    return [(what, entity.name, entity.kind, role) for what, entity, role in found]


@transaction.atomic
def load_seed(seed, email=True, create_entities=False):
    """Create the seed's article, published, with its entities.

    Returns the new Article, or None when it was loaded before (found by
    slug): a second load creates and changes nothing, and an editor's later
    changes to the article are never overwritten. A seed without front
    matter is tagged by the entity extractor (see tag_from_text); what it
    found is in `article.extracted`.
    """
    if Article.objects.filter(slug=seed.key).exists():
        return None
    article = Article.objects.create(
        title=seed.title,
        slug=seed.key,
        summary=seed.summary,
        byline=seed.byline,
        body=seed.body_html,
        status=Article.Status.PUBLISHED,
        published_at=seed.published_at,
        email_subscribers=email,
        email_only=seed.email_only,
    )
    for seed_entity in seed.entities:
        entity, _ = _entity_for(seed_entity)
        ArticleEntity.objects.get_or_create(
            article=article, entity=entity, defaults={"role": seed_entity.role}
        )
    article.extracted = [] if seed.has_front_matter else tag_from_text(article, create_entities)
    return article

"""A small newsroom for the browser tests of what readers see: the reference
article, seven more stories written for the extraction set (four with lead
images drawn here), and the people and places they are about."""

import io
import random
from datetime import timedelta
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.management import call_command
from django.utils import timezone
from PIL import Image, ImageDraw, ImageFilter

from newsroom.models import Article, ArticleEntity, Entity

TEXTS = Path(__file__).resolve().parents[1] / "newsroom" / "extraction_set"

STORIES = [
    # (text file, title, summary, byline, image colours or None, entities)
    (
        "04_local_bridge.txt",
        "Hawthorne Bridge to close to cars for 18 months as repairs are approved",
        "The council voted 7-2 for a $46 million plan after engineers found corrosion in two "
        "steel supports; 22,000 daily drivers will be sent across Elm Street.",
        "By Maria Lopez",
        ((38, 70, 110), (214, 140, 70)),
        [
            ("Lakeview", "place"),
            ("Lakeview City Council", "organization"),
            ("Anita Shah", "person"),
        ],
    ),
    (
        "05_science_exoplanet.txt",
        "Astronomers find water vapour on a planet in its star’s habitable zone",
        "The discovery, made with a space telescope over eleven nights, is the clearest sign yet "
        "of water on a world that could hold it as a liquid.",
        "By Tom Okafor",
        ((12, 18, 48), (120, 80, 200)),
        [("NASA", "organization")],
    ),
    (
        "08_environment_drought.txt",
        "Farmers plan for a third dry summer as reservoirs fall to record lows",
        "Water managers have cut allocations by a third and warn that the wells many farms rely "
        "on are dropping faster than at any time since records began.",
        "By Priya Natarajan",
        ((170, 120, 60), (240, 210, 150)),
        [("Central Valley", "place")],
    ),
    (
        "09_tech_batteries.txt",
        "A battery factory is coming, and with it 1,200 jobs and a fight over water",
        "The company says the plant will be the largest of its kind in the region; neighbours "
        "want to know how much water it will draw.",
        "By Sam Whitaker",
        ((30, 90, 80), (150, 210, 190)),
        [("Anita Shah", "person")],
    ),
    (
        "06_health_measles.txt",
        "Measles cases rise in three counties as vaccination rates slip",
        "Health officials urge parents to check their children’s records before the school year.",
        "By Dr. Helen Cho",
        None,
        [("Department of Health", "organization")],
    ),
    (
        "07_courts_bribery.txt",
        "Former city official found guilty of taking bribes for permits",
        "",
        "By Maria Lopez",
        None,
        [("Lakeview", "place")],
    ),
]


def lead_image(colours, seed):
    """A soft landscape-like picture: a sky gradient, hills and a sun."""
    rng = random.Random(seed)
    width, height = 1600, 1000
    top, bottom = colours
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / height
        draw.line(
            [(0, y), (width, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    draw.ellipse([1050, 160, 1290, 400], fill=(250, 236, 200))
    for layer in range(4):
        shade = tuple(max(0, int(c * (0.55 - layer * 0.1))) for c in bottom)
        base = 560 + layer * 110
        points = [(0, height)]
        for x in range(0, width + 100, 100):
            points.append((x, base + rng.randint(-70, 40)))
        points.append((width, height))
        draw.polygon(points, fill=shade)
    image = image.filter(ImageFilter.GaussianBlur(2))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=82)
    return out.getvalue()


def make_newsroom():
    """The content; returns the reference article (the newest story)."""
    call_command("load_seeds", "--no-email", stdout=io.StringIO())
    now = timezone.now()
    entities = {}
    for i, (filename, title, summary, byline, colours, tagged) in enumerate(STORIES):
        text = (TEXTS / filename).read_text()
        body = "".join(f"<p>{line.strip()}</p>" for line in text.splitlines() if line.strip())
        article = Article(
            title=title,
            summary=summary,
            byline=byline,
            body=body,
            status=Article.Status.PUBLISHED,
            published_at=now - timedelta(hours=3 + 20 * i),
            email_subscribers=False,
        )
        if colours:
            article.lead_image.save(f"e2e-{i}.jpg", ContentFile(lead_image(colours, i)), save=False)
            article.lead_image_alt = f"Illustration for “{title}”"
            article.lead_image_caption = "Illustration: the Newsroom art desk"
        article.save()
        for role, (name, kind) in zip(["about", "mentions"] * 3, tagged, strict=False):
            if name not in entities:
                entities[name] = Entity.objects.filter(name=name).first() or Entity.objects.create(
                    name=name, kind=kind
                )
            ArticleEntity.objects.create(article=article, entity=entities[name], role=role)
    reference = Article.objects.get(title__startswith="Report says Sessions")
    reference.published_at = now - timedelta(minutes=30)
    reference.byline = "By Katie Benner"
    reference.lead_image.save(
        "e2e-reference.jpg",
        ContentFile(lead_image(((60, 64, 80), (200, 170, 140)), 99)),
        save=False,
    )
    reference.lead_image_alt = "The Justice Department building in Washington at dusk"
    reference.lead_image_caption = (
        "The Justice Department in Washington. Illustration: the Newsroom art desk"
    )
    reference.save()
    return reference


def remove_images():
    for article in Article.objects.exclude(lead_image=""):
        article.lead_image.delete(save=False)

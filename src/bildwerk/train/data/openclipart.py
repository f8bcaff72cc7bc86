"""Open Clip Art Library PNGs (Debian ``openclipart-png``): captions from file paths.

Layout of the package (0.18): ``usr/share/openclipart/png/<category>/.../<name>.png``,
6,900 files plus 1,221 relative symlinks that file the same picture under a second
category. There is no per-image metadata; names follow the library's export scheme
``<title>_<author>_<NN>.png`` cut to 24 characters before the ``_NN`` (``_01``, ``_``,
``_r``...) suffix, e.g. ``apple_bitten_dan_gerhard_01`` or ``acquila_architetto_franc_01``.
Hand-named files (icon themes, flags, stars) carry no author.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from .debian_source import DebianPackageSource, find_content_dir
from .records import SourceRecord

PACKAGE = "openclipart-png"
LICENCE = "public-domain"
PNG_SUBDIR = Path("usr/share/openclipart/png")

# Authors seen at the end of file names in openclipart-png 0.18 (hyphens written as
# underscores). Truncated names are matched by prefix, so "dan_gerhard" and "archite"
# are both recognised.
AUTHORS: tuple[str, ...] = (
    "a.j._ashton", "aitor_avila", "aj_ashton", "alberto_piccin", "alejandro_tejada",
    "alex_fernandez", "alex_kuehne", "andrea_bianchi", "andreas_nilsson", "andrei_z",
    "andremarcel", "andrew_fitzsimon", "andy_fitzsimon", "anonymous", "anthony_liekens",
    "anton_yu", "architetto_francesco_rollandin", "arjen_meijer", "aubanel_monnier",
    "benji_park", "borja_bravo", "bradley_white", "brice_boyer", "cedric_bosdonnat",
    "celso", "charles_mccolm", "christoph_brill", "christophe", "clemente",
    "costea_bogdan", "dan_gerhards", "daniel_steele", "danny_allen", "darek_adamkiewicz",
    "dave_pena", "dave_reckoning", "david_wislon", "davide_pesente", "dennis_rutjes",
    "didier_fabert", "dirk_struve", "dudziak_tomek", "einar", "enrique_meza",
    "erich_schubert", "erik_postma", "erwan", "etienne_bersac", "ezechiele", "fabien_omic.ch",
    "fabio_olivo", "fco._andrade", "fearzip", "felipe_macieira", "felipescu",
    "ff77", "francesco_rollandin", "frank_warttig", "frederic_moser", "frouke",
    "fudriot_omic.ch", "gabrielle_nowicki", "ganson", "geraint_luff", "gerald_g.",
    "gino_rivera", "glenn_rolland", "goneri_le_bouder", "guillaume_boitel",
    "hans_deragon", "james_birkett", "jamin_ellis", "janet_theobroma", "jakob_chaosinfait",
    "jarno_vasamaa", "jasper_van_der_meer", "jean_maurice", "jean_victor_balin",
    "jean_vitor_balin", "jeff_simpson", "jeff_walden", "jesper_zedlitz", "joel_lehtonen",
    "joel_montes_de_oca", "joerg_rosenbauer", "joeseph_teed", "john_rariden",
    "jon_campbell", "jon_phillips", "jonadab", "jonathan_dietrich", "jordan_wiens",
    "josu_alcalde", "juliane_krug", "k_yager", "karl_bartel", "kevin_cowtan",
    "kilian_valkhof", "konstantin_r.", "kurt_cagle", "kurt_nordstrom", "lakshman_poonyth",
    "leif_lodahl", "leigh_purdie", "linda_kim", "lorenzo_luengo", "lumen_design_studio",
    "magnus_erik", "marcelo_caiafa", "marcelo_staudt", "marcin_wichary", "mark_near",
    "martin_koz", "martin_schmidt_li", "massimo_aiello", "mateya", "matt_todd",
    "matthew_gates", "mauro_olivo", "mazdac", "merzok", "michael_breuer",
    "michael_moore", "michael_tunnicliffe", "mikhail_a.medvedev", "mimooh",
    "mirjam_meijer", "mirko_maisch", "mo", "neil_turner", "nicolas_clementz", "nicu_buculei",
    "niels_epting", "nubldoff", "nurbldoff", "olivier_boyer", "omar_abo_namous",
    "openclipart", "orbu", "patricia_fidi", "peterm", "petri_lummemaki", "philippe_colin",
    "phentex", "raphael_seban", "ralf_stephan", "renante_tomas", "revdoug", "richard_torkar",
    "rick_beton", "rikva", "saint", "sek", "risto_pekkala", "rob_lucas", "robert_seitz", "roman_bertle",
    "romus", "rory_mccann", "ross_merrigan", "ruud_steltenpool", "ryan_phillips",
    "santiago_diaz", "saurabh_nanda", "sergio_luiz_araujo", "seth_yastrov", "shandy_brown",
    "sherrera", "stefan_alfredsson", "stefan_bazelkov", "susan_park", "tatiana_coutinho",
    "tess_brady", "teudimundo", "theerud_law", "timothy_white", "tom_webb", "toh_yen_cheng",
    "tristan_le_toullec", "uliphant", "utrescu", "valessio_soares_de_souza",
    "vikingdread", "william_page", "wolfram_esser", "yemu", "yen_cheng",
    "yogesh_kanitkar", "yves_guillou", "zazou", "snuatautisticido", "aj", "gabriel_lo",
    "b_r_kessels", "mitchell_johnson", "architetto", "israel_c", "rollandin_francesco", "rollandin",
    "the_mad_processor", "james_kilfige",
)

# Some 280 titles are Italian (most by one prolific author). Their words, in English,
# so "cigno_di_spalle" does not teach the model an Italian caption in the English column.
ITALIAN: dict[str, str] = {
    "acquila": "eagle", "aquila": "eagle", "frontale": "front view", "aglio": "garlic",
    "albero": "tree", "anatra": "duck", "anelli": "rings", "antilope": "antelope",
    "ape": "bee", "miele": "honey", "appunti": "notes", "asso": "ace", "attenzione": "warning",
    "bambina": "girl", "bianchi": "white", "bianco": "white", "bicicletta": "bicycle",
    "binocolo": "binoculars", "birra": "beer", "borsa": "bag", "estiva": "summer",
    "bussola": "compass", "calamita": "magnet", "calcolatrice": "calculator",
    "camicia": "shirt", "seta": "silk", "canguro": "kangaroo", "cani": "dogs", "carta": "paper",
    "carte": "cards", "casa": "house", "sogni": "dreams", "campagna": "countryside",
    "cassa": "cash register", "negozio": "shop", "cavallo": "horse", "cavalletta": "grasshopper",
    "cestino": "bin", "pieno": "full", "vuoto": "empty", "cesto": "basket", "chiave": "key",
    "cigni": "swans", "cigno": "swan", "cinepresa": "film camera", "clessidra": "hourglass",
    "coccinella": "ladybug", "coccinellona": "ladybug", "colombo": "pigeon", "coniglio": "rabbit",
    "cubo": "cube", "decorazione": "decoration", "dente": "tooth", "dentata": "toothed",
    "diagramma": "diagram", "dinosauri": "dinosaurs", "dinosauro": "dinosaur", "donna": "woman",
    "dottore": "doctor", "elefante": "elephant", "esperimento": "experiment",
    "chimico": "chemical", "fabbrica": "factory", "farfalla": "butterfly", "farfalle": "butterflies",
    "contorno": "outline", "semplice": "simple", "fata": "fairy", "fatina": "fairy",
    "finestra": "window", "finestre": "windows", "fiori": "flowers", "fiore": "flower",
    "foglio": "sheet of paper", "mondo": "world", "formica": "ant", "formichina": "ant",
    "formicona": "ant", "forbici": "scissors", "gabbiano": "seagull", "gallina": "hen",
    "gallo": "rooster", "gattina": "kitten", "gatti": "cats", "gatto": "cat", "gelato": "ice cream",
    "giallo": "yellow", "griglia": "grid", "grigia": "grey", "grigio": "grey", "guanti": "gloves",
    "gufo": "owl", "civetta": "owl", "incinta": "pregnant", "insetto": "insect",
    "istogramma": "histogram", "lattine": "cans", "lente": "lens", "leone": "lion",
    "lettera": "letter", "libellula": "dragonfly", "livella": "spirit level",
    "lucchetto": "padlock", "ottone": "brass", "lucertola": "lizard", "lucertolona": "lizard",
    "lucertolone": "lizard", "lumaca": "snail", "mantide": "mantis", "religiosa": "praying",
    "mattone": "brick", "mazzo": "bunch", "medicina": "medicine", "microscopio": "microscope",
    "moschito": "mosquito", "mostriciattolo": "little monster", "nero": "black", "neri": "black",
    "neve": "snow", "nonno": "grandfather", "nucleare": "nuclear", "orme": "footprints",
    "orso": "bear", "ombrelloni": "beach umbrellas", "pacco": "parcel", "regalo": "gift",
    "paesaggio": "landscape", "marino": "seascape", "palloncini": "balloons", "padella": "pan",
    "pattinatrice": "skater", "pattino": "skate", "pecora": "sheep", "pentola": "pot",
    "pera": "pear", "pesca": "peach", "pettine": "comb", "pinguino": "penguin", "pinze": "pliers",
    "pinzatrice": "stapler", "pollo": "chicken", "poltrona": "armchair", "ufficio": "office",
    "pomodori": "tomatoes", "portafoglio": "wallet", "preferite": "favourite",
    "proiettore": "projector", "provetta": "test tube", "provette": "test tubes",
    "prugna": "plum", "pulsante": "button", "puntine": "drawing pins", "ragno": "spider",
    "ramarro": "green lizard", "rana": "frog", "ravanello": "radish", "rosso": "red",
    "ruota": "wheel", "salvagente": "life buoy", "sangue": "blood", "sapone": "soap",
    "liquido": "liquid", "schermo": "screen", "scodella": "bowl", "scolapasta": "colander",
    "secchio": "bucket", "spugna": "sponge", "sedia": "chair", "legno": "wood",
    "signore": "gentleman", "signorina": "young woman", "simbolo": "symbol", "egizio": "egyptian",
    "siringa": "syringe", "stampante": "printer", "stormo": "flock", "uccelli": "birds",
    "uccello": "bird", "subacqueo": "scuba diver", "tabella": "table", "tacchino": "turkey",
    "tasto": "key", "tavolo": "table", "tavolozza": "palette", "tazza": "cup", "caffe": "coffee",
    "teiera": "teapot", "telecamera": "video camera", "telecomando": "remote control",
    "televisore": "television", "tigre": "tiger", "tigri": "tigers", "topo": "mouse",
    "toro": "bull", "tramonto": "sunset", "torta": "cake", "trattore": "tractor",
    "utensile": "tool", "utensili": "tools", "sega": "saw", "utente": "user", "singolo": "single",
    "utenti": "users", "valigie": "suitcases", "verde": "green", "viti": "screws",
    "zanzara": "mosquito", "cretina": "silly", "zucca": "pumpkin", "uomo": "man",
    # small words, only translated inside an Italian title
    "di": "of", "da": "for", "e": "and", "al": "at", "alla": "at", "con": "with", "del": "of",
    "dei": "of", "della": "of", "nella": "in", "sulla": "on", "il": "", "lo": "", "la": "",
    "le": "", "mie": "my", "per": "for", "in": "in",
}
# Italian words that also read as English (or are too short to be evidence alone).
_ADJECTIVES = {"white", "black", "yellow", "red", "green", "grey", "toothed", "empty", "full",
               "simple", "pregnant", "liquid", "single", "favourite", "silly", "nuclear"}
_ITALIAN_WEAK = {"di", "da", "e", "al", "alla", "con", "del", "dei", "della", "nella", "sulla",
                 "il", "lo", "la", "le", "mie", "per", "in", "ape", "carta", "pera", "toro"}

# Files that show a "Linked Image Not Found" placeholder instead of their picture.
BROKEN_FILES = {
    "animals/birds/duck_yellow_ii_kurt_cagl_.png",
    "animals/birds/penguin/tux_didier_fabert_01.png",
}

# Folder name -> the noun it adds to a caption ("blue jay" in birds/ -> "blue jay, bird").
FOLDER_NOUNS: dict[str, str] = {
    "animals": "animal", "amphibian": "amphibian", "birds": "bird", "bugs": "bug",
    "dinosaurs": "dinosaur", "fantasy": "fantasy creature", "fish": "fish",
    "mammals": "mammal", "bears": "bear", "big_cats": "big cat", "dogs": "dog",
    "horses": "horse", "housecats": "cat", "penguin": "penguin",
    "buildings": "building", "furniture": "furniture", "homes": "house",
    "buttons": "button", "computer": "computer", "connectors": "connector",
    "diagrams": "diagram", "folders": "folder", "games": "game", "hardware": "computer hardware",
    "network": "network", "containers": "container", "decorations": "decoration",
    "education": "education", "books": "book", "electronics": "electronics",
    "battery": "battery", "bulb": "light bulb", "food": "food", "beverages": "drink",
    "alcohol": "alcoholic drink", "breads_and_carbs": "bread", "dairy": "dairy",
    "desserts": "dessert", "fruit": "fruit", "meats_and_eggs": "meat", "vegetables": "vegetable",
    "geography": "geography", "astronomy": "astronomy", "logos": "logo", "office": "office",
    "telephone": "telephone", "people": "people", "bodypart": "body part",
    "clothing": "clothing", "hats": "hat", "jewelry": "jewelry", "pantyhose": "pantyhose",
    "smilies": "smiley", "stickmen": "stick figure", "plants": "plant", "flowers": "flower",
    "trees": "tree", "evergreen": "evergreen tree", "recreation": "recreation", "art": "art",
    "chess": "chess", "dice": "dice", "holiday": "holiday", "christmas": "christmas",
    "easter": "easter", "thanksgiving": "thanksgiving", "valentines": "valentine",
    "music": "music", "cd_player": "cd player", "party": "party", "religion": "religion",
    "christianity": "christianity", "sports": "sport", "toys": "toy", "science": "science",
    "medicine": "medicine", "shapes": "shape", "arrows": "arrow", "callouts": "callout",
    "flowchart": "flowchart", "jigsaw": "jigsaw piece", "stars": "star",
    "signs_and_symbols": "sign", "awards": "award", "clocks": "clock",
    "disability": "disability sign", "hazard": "hazard sign", "led": "led",
    "map_symbols": "map symbol", "money": "money", "weather": "weather symbol",
    "gradients": "gradient", "patterns": "pattern", "tools": "tool", "weapons": "weapon",
    "transportation": "transport", "aiga-symbols": "transport sign", "boating": "boating",
    "roadsigns": "road sign", "vehicles": "vehicle", "hummers": "hummer",
}
# Folders whose meaning wins over anything deeper (flags/europe/germany -> "flag").
KIND_FOLDERS: dict[str, str] = {"flags": "flag", "icons": "icon", "cards": "playing card"}
# Folders that say nothing about the picture.
SKIP_FOLDERS = {
    "unsorted", "duplicates", "special", "examples", "png", "miscellany", "generic",
    "stock", "action", "actions", "apps", "applications", "device", "devices",
    "filesystems", "mimetypes", "emblems", "lemon-theme", "flat-theme", "etiquette-theme",
    "simple", "white", "bordered", "ornamental", "cardbacks",
}
# Tokens that are set names or scan artefacts, not words of the title.
DROP_TOKENS = {"aiga", "bb", "bwh", "svg", "png", "md", "clipart", "-", "0", ""}
TOKEN_REWRITES = {"bw": "black and white", "b&w": "black and white", "tux": "tux penguin"}

_SUFFIX = re.compile(r"(?:_\d{1,3}r?|_r|_)$")
_GLUED_DIGITS = re.compile(r"^([a-z]{4,})\d{1,3}$")
_CODE_TOKEN = re.compile(
    r"^(?:0x[0-9a-f]+|\d+[a-z]+\d+[a-z]*|\d+x\d+(?:x\d+)?|\d+(?:m|cm|mm|px|pt))$"
)
_GLUED_TAIL = re.compile(r"(?<=[a-z]{4})\d{1,3}$")
_CARD = re.compile(r"^(?:simple|white|bordered|ornamental)_([cdhs])_(a|k|q|j|10|[2-9])$")
_JOKER = re.compile(r"^(?:simple|white|bordered|ornamental)_jk_([br])$")
# shapes/stars holds 1,360 generated polygrams "star_<points>pt<step>step"; past a
# dozen points they are near-identical thin rosettes, all captioned "star".
_POLYGRAM = re.compile(r"^star_(\d+)pt\d+step$")
MAX_STAR_POINTS = 12
_SUITS = {"c": "clubs", "d": "diamonds", "h": "hearts", "s": "spades"}
_RANKS = {
    "a": "ace", "k": "king", "q": "queen", "j": "jack", "2": "two", "3": "three",
    "4": "four", "5": "five", "6": "six", "7": "seven", "8": "eight", "9": "nine", "10": "ten",
}
# Export names were cut at this length before the "_NN" suffix was added.
_CUT_LENGTH = 23

_AUTHOR_KEYS = tuple(sorted({a.replace("-", "_") for a in AUTHORS}, key=len, reverse=True))


def _strip_author(tokens: list[str], truncated: bool) -> list[str]:
    """Drop a trailing author name; in cut names accept a cut author (prefix match)."""
    for start in range(1, len(tokens)):
        tail = "_".join(tokens[start:])
        for author in _AUTHOR_KEYS:
            if tail == author or tail.startswith(author + "_"):
                return tokens[:start]
            if truncated and len(tail) >= 2 and author.startswith(tail):
                return tokens[:start]
    return tokens


def clean_name(stem: str) -> str:
    """Turn an openclipart file stem into words: no author, numbering or underscores.

    >>> clean_name("apple_bitten_dan_gerhard_01")
    'apple bitten'
    """
    name = stem.lower().replace(".svg", "").replace("-", "_").strip()
    if card := _CARD.match(name):
        return f"{_RANKS[card.group(2)]} of {_SUITS[card.group(1)]}"
    if star := _POLYGRAM.match(name):
        return f"{int(star.group(1))}-pointed star"
    if joker := _JOKER.match(name):
        return f"{'black' if joker.group(1) == 'b' else 'red'} joker"
    while (stripped := _SUFFIX.sub("", name)) != name and stripped:
        name = stripped
    truncated = len(name) >= _CUT_LENGTH
    name = _GLUED_TAIL.sub("", name)  # "aircraft_jarno_vasamaa2": variant number on the author
    name = re.sub(r"(^|_)b_(?:amp_)?w(?=_|$)", r"\1bw", name)  # "b_w", "b_amp_w": b&w
    tokens = [t for t in name.split("_") if t]
    tokens = _strip_author(tokens, truncated)
    if truncated and len(tokens) > 1 and len(tokens[-1]) == 1 and tokens[-1].isalpha():
        tokens = tokens[:-1]  # the first letter of a word or name cut by the export
    italian = any(t in ITALIAN and t not in _ITALIAN_WEAK for t in tokens)
    words: list[str] = []
    for i, token in enumerate(tokens):
        if token in DROP_TOKENS or _CODE_TOKEN.match(token):
            continue
        if glued := _GLUED_DIGITS.match(token):
            token = glued.group(1)  # "flower1", "pinguino3": a numbered variant
        if token.isdigit() and i == len(tokens) - 1 and len(tokens) > 1:
            continue  # a trailing variant number
        if token == "s" and words:
            words[-1] += "'s"  # "rubik_s_cube": the apostrophe did not survive export
            continue
        if italian and token in ITALIAN:
            token = ITALIAN[token]
            if token in _ADJECTIVES and words and words[-1] not in {"and", "of", "with"}:
                words.insert(len(words) - 1, token)  # Italian puts adjectives after the noun
                continue
        words.append(TOKEN_REWRITES.get(token, token))
    return " ".join(" ".join(words).split())


def _context(folders: list[str], name: str) -> str:
    lowered = [f.lower() for f in folders]
    for folder in lowered:
        if kind := KIND_FOLDERS.get(folder):
            return "" if kind in name else kind
    for folder in reversed(lowered):
        if folder in SKIP_FOLDERS:
            continue
        noun = FOLDER_NOUNS.get(folder, folder.replace("_", " ").replace("-", " "))
        if all(word in name.split() or word + "s" in name.split() for word in noun.split()):
            return ""  # already said: "flower 01" in flowers/
        return noun
    return ""


def openclipart_caption(rel_path: str | Path) -> str:
    """Readable English caption from a path below ``png/``.

    ``animals/birds/blue_jay_01.png`` -> ``"blue jay, bird"``;
    ``signs_and_symbols/flags/europe/germany/germany_bavaria.png`` -> ``"germany bavaria, flag"``.
    """
    parts = Path(rel_path).parts
    folders, stem = list(parts[:-1]), Path(parts[-1]).stem
    name = clean_name(stem)
    context = _context(folders, name)
    if not name:
        return context
    return f"{name}, {context}" if context else name


def png_dir(root: Path) -> Path:
    return find_content_dir(root, PNG_SUBDIR, "png", "*.png", "openclipart PNGs")


class OpenClipartSource(DebianPackageSource):
    """Adapter for openclipart-png; pass ``root`` to use an already extracted tree."""

    name = "openclipart"
    package = PACKAGE
    licence = LICENCE
    notes = "captions derived from folder and file names; symlinks add captions"

    def iter_records(self, root: Path) -> Iterator[SourceRecord]:
        base = png_dir(root)
        resolved_base = base.resolve()
        for path in sorted(base.rglob("*.png")):
            rel = path.relative_to(base)
            real = path.resolve()
            if not real.is_file():
                continue  # dangling link
            try:
                real_rel = real.relative_to(resolved_base)
            except ValueError:
                continue  # a link out of the tree: not part of the package
            if (star := _POLYGRAM.match(rel.stem)) and int(star.group(1)) > MAX_STAR_POINTS:
                continue
            if real_rel.as_posix() in BROKEN_FILES:
                continue
            caption = openclipart_caption(rel)
            if not caption:
                continue
            yield SourceRecord(
                source_id=f"openclipart:{rel.as_posix()}",
                path=real,
                captions={"en": caption},
                licence=LICENCE,
                # A symlink and its target are one picture filed twice.
                group_key=f"openclipart:{real_rel.as_posix()}",
            )

"""Which ImageNet classes an English caption names, if any; the classes' names.

The ImageNet-1k classifier (:mod:`bildwerk.models.imagenet.classifier`) can only say
whether a picture shows one of its 1000 classes, so the evaluation harness
(:mod:`bildwerk.evaluation`) measures quality on the captions whose object *is* such
a class, and the offline describer names a picture by its classes. ``imagenet_classes.txt`` lists, one line per class index, the WordNet
synonyms of each class ("tabby, tabby cat"); it was taken from timm's
``imagenet_synsets.txt`` + ``imagenet_synset_to_lemma.txt`` and checked against
torchvision's ``_IMAGENET_CATEGORIES`` (same order, every torchvision name among
the synonyms).

The rule, applied by :func:`match_caption`:

1. Normalise: Unicode NFKC, lower case; possessive ``'s`` and other apostrophes
   dropped; hyphens, underscores and slashes become spaces; "&" becomes "and";
   the colour phrase "black and white" is dropped; the articles a/an/the go
   everywhere; each word is made singular (:func:`singular`). Class synonyms are
   normalised by the same function, so both sides always agree.
2. Only the first clause speaks about the object: the caption is cut at the first
   punctuation mark (``"blue jay, bird"`` -> ``"blue jay"``), and a leading
   "drawing of" / "picture of" (and similar style words, :data:`STYLE_WORDS`) is
   removed.
3. If the whole clause is a phrase we know (a synonym, a group word), that is the
   answer (this keeps "hen of the woods" and "black and gold garden spider").
4. A clause that starts with "no" or ends in a sign word ("... sign", "... logo",
   :data:`SIGN_WORDS`) shows a sign, not the object: None.
5. Otherwise the clause is cut at the first linking word (with, on, and, is, you,
   ... :data:`LINK_WORDS`; captions may be sentences) and the *head noun* is the
   longest suffix of what is left that is a known phrase: "red sports car" ->
   "sports car", "cute cat" -> "cat", "happy face" -> nothing. A cut at "of" gives
   None ("ball of yarn": the object is unclear), as does a colour word that is not
   the whole clause ("led circle orange", :data:`COLOUR_WORDS`).
6. A known phrase accepts the classes it is a synonym of, plus the classes of its
   entry in :data:`GROUPS` (a word that names several classes: "cat" accepts the
   five domestic cats, "dog" the 118 breeds), minus the classes listed for it in
   :data:`EXCLUDED_SENSES` (a single word whose ImageNet sense is not the one a
   caption means: "mouse" is only the computer mouse, "kite" only the bird).
   Phrases in :data:`NOT_OBJECTS` ("corn dog", "speech balloon") name nothing.
   A known phrase left with no class ends the search: the caption maps to None
   (so "field mouse" does not fall back to "mouse" the device).
7. Two objects joined by "and"/"or" whose classes do not overlap ("cat and dog")
   name no single class: None. ("fish and chips" stays fish: "chips" names no class.)

Non-English captions are never mapped: a row is chosen by its English caption and
its translations are judged against the same classes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CLASS_FILE = Path(__file__).with_name("imagenet_classes.txt")
NUM_CLASSES = 1000

# Group words: a caption word that names several ImageNet classes at once. Entries
# are class names (the first synonym of a line in imagenet_classes.txt), ranges
# "first..last" of consecutive classes, or "@word" to reuse another group.
GROUPS: dict[str, tuple[str, ...]] = {
    # mammals
    "cat": ("tabby..Egyptian cat",),  # domestic cats only; big cats have their own names
    "kitten": ("@cat",),
    "kitty": ("@cat",),
    "dog": ("Chihuahua..Mexican hairless",),  # the 118 breeds
    "puppy": ("@dog",),
    "wolf": ("timber wolf..red wolf",),
    "fox": ("red fox..grey fox",),
    "bear": ("brown bear..sloth bear",),
    "monkey": ("guenon..squirrel monkey",),
    "ape": ("orangutan..siamang",),
    "elephant": ("Indian elephant", "African elephant", "tusker"),
    "rabbit": ("wood rabbit..Angora",),
    "bunny": ("@rabbit",),
    "horse": ("sorrel",),
    "pony": ("sorrel",),
    "cow": ("ox",),
    "bull": ("ox",),
    "sheep": ("ram", "bighorn"),
    "camel": ("Arabian camel",),
    "kangaroo": ("wallaby",),
    "squirrel": ("fox squirrel",),
    "whale": ("grey whale", "killer whale"),
    # birds
    "bird": ("cock..great grey owl", "black grouse..black swan", "white stork..albatross"),
    "penguin": ("king penguin",),
    "owl": ("great grey owl",),
    "eagle": ("bald eagle",),
    "parrot": ("African grey..lorikeet",),
    "duck": ("drake", "red-breasted merganser"),
    "chicken": ("cock", "hen"),
    "rooster": ("cock",),
    "swan": ("black swan",),
    "stork": ("white stork", "black stork"),
    "heron": ("little blue heron", "American egret"),
    # fish, reptiles, amphibians, invertebrates
    "fish": ("tench..stingray", "barracouta..puffer"),
    "shark": ("great white shark..hammerhead",),
    "snake": ("thunder snake..sidewinder",),
    "lizard": ("banded gecko..Komodo dragon",),
    "crocodile": ("African crocodile", "American alligator"),
    "alligator": ("American alligator",),
    "turtle": ("loggerhead..box turtle",),
    "tortoise": ("@turtle",),
    "frog": ("bullfrog..tailed frog",),
    "salamander": ("European fire salamander..axolotl",),
    "dinosaur": ("triceratops",),
    "spider": ("black and gold garden spider..wolf spider",),
    "beetle": ("tiger beetle..weevil",),
    "butterfly": ("admiral..lycaenid",),
    "crab": ("Dungeness crab..king crab", "hermit crab"),
    "lobster": ("American lobster", "spiny lobster"),
    "mushroom": ("coral fungus..bolete",),  # adds the wild kinds to class "mushroom"
    # vehicles
    "car": ("beach wagon", "cab", "convertible", "jeep", "limousine", "minivan", "Model T",
            "racer", "sports car"),
    "truck": ("fire engine", "garbage truck", "pickup", "tow truck", "trailer truck", "moving van"),
    "bus": ("school bus", "trolleybus", "minibus"),
    "train": ("bullet train", "electric locomotive", "steam locomotive", "freight car",
              "passenger car"),
    "railway car": ("passenger car", "freight car"),
    "tram car": ("streetcar",),
    "locomotive": ("electric locomotive", "steam locomotive"),
    "boat": ("canoe", "catamaran", "fireboat", "gondola", "lifeboat", "speedboat", "trimaran",
             "yawl", "schooner"),
    "ship": ("aircraft carrier", "container ship", "liner", "schooner", "fireboat", "pirate"),
    "airplane": ("airliner", "warplane"),
    "aeroplane": ("@airplane",),
    "plane": ("@airplane",),
    "aircraft": ("@airplane",),
    "jet": ("@airplane",),
    "bicycle": ("mountain bike", "bicycle-built-for-two"),
    "bike": ("@bicycle",),
    "motorcycle": ("moped", "motor scooter"),
    "motorbike": ("@motorcycle",),
    "rocket": ("missile", "projectile", "space shuttle"),
    # things
    "guitar": ("acoustic guitar", "electric guitar"),
    "piano": ("grand piano", "upright"),
    "clock": ("analog clock", "digital clock", "wall clock"),
    "watch": ("digital watch", "stopwatch"),
    "telephone": ("cellular telephone", "dial telephone", "pay-phone"),
    "phone": ("@telephone",),
    "computer": ("desktop computer", "laptop", "notebook", "hand-held computer"),
    "chair": ("barber chair", "folding chair", "rocking chair", "throne"),
    "table": ("dining table",),
    "lamp": ("table lamp",),
    "hat": ("cowboy hat", "sombrero"),
    "shoe": ("clog", "Loafer", "running shoe", "sandal", "cowboy boot"),
    "boot": ("@shoe",),
    "bottle": ("beer bottle", "pill bottle", "pop bottle", "water bottle", "wine bottle"),
    "mug": ("coffee mug",),
    "tent": ("mountain tent",),
    "bridge": ("steel arch bridge", "suspension bridge", "viaduct"),
    "fence": ("chainlink fence", "picket fence", "worm fence"),
    # food and plants
    "apple": ("Granny Smith",),
    "pepper": ("bell pepper",),
    "cabbage": ("head cabbage",),
    "squash": ("spaghetti squash..butternut squash",),
    "hamburger": ("cheeseburger",),
    "burger": ("cheeseburger",),
    "bread": ("French loaf", "bagel"),
    "flower": ("daisy", "yellow lady's slipper"),
}

# Single words whose ImageNet sense is not what a caption means by them. The classes
# listed are dropped when the word itself is the matched phrase; longer phrases still
# match ("computer mouse" -> mouse, "pirate ship" -> pirate). Values: the word's
# ImageNet class names and, in the comment, the sense a caption usually means.
EXCLUDED_SENSES: dict[str, tuple[str, ...]] = {
    "mouse": ("mouse",),  # the animal; ImageNet has only the computer mouse
    "kite": ("kite",),  # the toy; ImageNet's kite is a bird of prey
    "ear": ("ear",),  # body part; ImageNet's is an ear of corn
    "hip": ("hip",),  # body part; ImageNet's is a rose hip
    "chest": ("chest",),  # body part; ImageNet's is a box
    "tick": ("tick",),  # check mark; ImageNet's is the arachnid
    "bow": ("bow",),  # ribbon; ImageNet's is the weapon
    "pot": ("pot",),  # cooking pot; ImageNet's is a flowerpot
    "pirate": ("pirate",),  # the person; ImageNet's is a ship
    "wing": ("wing",),  # bird or angel wing; ImageNet's is an aircraft wing
    "plane": ("plane",),  # aeroplane (see GROUPS); ImageNet's is a carpenter's plane
    "pick": ("pick",),  # pickaxe; ImageNet's is a guitar plectrum
    "board": ("dining table",),  # any board
    "file": ("file",),  # a document icon; ImageNet's is a filing cabinet
    "head": ("promontory",),  # body part; ImageNet's is a headland
    "drop": ("cliff",),  # a drop of water
    "light": ("lighter",),  # a lamp or light
    "cell": ("cellular telephone",),  # biology
    "mail": ("chain mail",),  # letters
    "market": ("grocery store",),
    "grand": ("grand piano",),
    "bar": ("parallel bars",),
    "coach": ("passenger car",),  # a bus or a horse coach
    "carriage": ("passenger car",),  # a horse carriage
    "press": ("wardrobe",),
    "spot": ("spotlight",),
    "stage": ("stage",),
    "remote": ("remote control",),
    "rubber": ("rubber eraser",),
    "rig": ("trailer truck",),
    "semi": ("trailer truck",),
    "hack": ("cab",),
    "mole": ("breakwater",),  # the animal
    "bob": ("bobsled",),
    "killer": ("killer whale",),
    "painter": ("cougar",),  # the person
    "ounce": ("snow leopard",),  # the unit
    "boa": ("feather boa",),  # the snake
    "hopper": ("grasshopper",),
    "carrier": ("aircraft carrier",),
    "beam": ("balance beam",),
    "brass": ("brass",),
    "groin": ("breakwater",),
    "chopper": ("cleaver",),  # helicopter
    "horn": ("cornet", "French horn"),  # an animal's horn
    "trump": ("cornet",),
    "napkin": ("diaper",),  # table napkin
    "blower": ("electric fan",),
    "nursery": ("greenhouse",),
    "claw": ("hook",),  # an animal's claw
    "mini": ("miniskirt",),
    "scope": ("oscilloscope",),
    "packet": ("packet",),
    "comfort": ("quilt",),
    "puff": ("quilt",),
    "wireless": ("radio",),
    "rocker": ("rocking chair",),
    "suit": ("suit",),  # card suit
    "upright": ("upright",),
    "vault": ("vault",),
    "velvet": ("velvet",),
    "site": ("web site",),
    "spike": ("ear",),
    "jack": ("jackfruit",),  # playing card, car jack
    "chute": ("parachute",),
    "sub": ("submarine",),  # sandwich
    "wagon": ("beach wagon", "police van"),  # a horse or toy wagon
    "amphibian": ("amphibian",),  # the animal; ImageNet's is a vehicle
    "admiral": ("admiral",),  # the officer; ImageNet's is a butterfly
    "monarch": ("monarch",),  # a king; ImageNet's is a butterfly
    "mike": ("microphone",),  # a name, the NATO letter M
    "newfoundland": ("Newfoundland",),  # the island (maps, flags); the dog is "newfoundland dog"
    "shetland": ("Shetland sheepdog",),  # the islands
    "rule": ("rule",),  # regulations; "ruler" still matches
    "trolley": ("streetcar",),  # a shopping or serving trolley (British)
}

# Phrases that end in a known word but name something else ("corn dog" is no dog).
# They match nothing, and stop the search for a shorter phrase.
NOT_OBJECTS = frozenset({
    "corn dog", "prairie dog", "sea horse", "rubber duck", "vw beetle", "hot pepper",
    "chili pepper", "chilli pepper", "chile pepper", "water closet", "paper plane",
    "paper airplane", "speech balloon", "thought balloon", "scream balloon", "speech bubble",
    "thought bubble", "anger bubble", "double helix", "electric torch", "oil drum", "cable car",
})

# Colour names that are also ImageNet objects: only a caption that is just the word
# means the object ("orange" is the fruit, "led circle orange" an orange LED).
COLOUR_WORDS = frozenset({"orange"})

# A caption whose first clause ends in one of these shows a sign, not the object
# ("watch for bicycles sign"); one that starts with "no" shows a prohibition sign.
SIGN_WORDS = frozenset({"sign", "signal", "logo", "symbol", "badge", "label", "map"})

# Words that only say how the picture is drawn.
STYLE_WORDS = frozenset({
    "clipart", "clip", "art", "icon", "cartoon", "drawing", "illustration", "picture",
    "image", "sketch", "silhouette", "emoji", "sticker", "stamp", "vector", "graphic",
    "photo", "doodle", "outline", "outlined", "simple",
})
ARTICLES = frozenset({"a", "an", "the"})
# Words after which a caption no longer names its object ("cat *with* a hat").
# Also verbs, pronouns and subordinators, for captions that are sentences ("The yellow
# light means you should stop").
LINK_WORDS = frozenset({
    "with", "without", "on", "in", "at", "under", "over", "near", "behind", "beside",
    "holding", "wearing", "eating", "playing", "riding", "sitting", "standing", "from",
    "for", "by", "of", "to", "into", "inside", "and", "or", "vs", "versus", "next",
    "is", "are", "was", "were", "be", "mean", "should", "will", "would", "could", "if",
    "that", "which", "who", "when", "where", "while", "it", "you", "we", "they", "he",
    "she", "this", "these", "those", "here", "there",
})
CONJUNCTIONS = frozenset({"and", "or"})

# Irregular plurals, and plurals the suffix rules below would get wrong.
IRREGULAR = {
    "men": "man", "women": "woman", "children": "child", "people": "person", "mice": "mouse",
    "geese": "goose", "teeth": "tooth", "feet": "foot", "oxen": "ox", "lice": "louse",
    "wolves": "wolf", "leaves": "leaf", "knives": "knife", "shelves": "shelf",
    "halves": "half", "calves": "calf", "loaves": "loaf", "thieves": "thief",
    "scarves": "scarf", "hooves": "hoof", "lives": "life", "wives": "wife",
    "potatoes": "potato", "tomatoes": "tomato", "mosquitoes": "mosquito",
    "volcanoes": "volcano", "heroes": "hero", "mangoes": "mango", "echoes": "echo",
    "torpedoes": "torpedo", "buffaloes": "buffalo", "buses": "bus", "lenses": "lens",
    "cacti": "cactus", "fungi": "fungus", "magpies": "magpie", "potpies": "potpie",
    "pies": "pie", "ties": "tie", "cookies": "cookie", "movies": "movie",
    "brownies": "brownie", "zombies": "zombie",
}
# Words ending in s that are singular.
SINGULAR_S = frozenset({
    "gas", "atlas", "christmas", "canvas", "bias", "alias", "pancreas", "lens", "tennis",
    "iris", "axis", "chassis", "pelvis", "trellis", "series", "species", "news", "chess",
    "physics", "mathematics", "mumps", "measles", "mantis",
})

_APOSTROPHE_S = re.compile(r"['\u2019]s\b")
_SEPARATORS = re.compile(r"[-_/\u2010-\u2015]+")
_PUNCTUATION = re.compile(r"[,;:.!?()\[\]{}\"|+*=<>]+")
_WORD = re.compile(r"[^\W_]+")


def singular(word: str) -> str:
    """English singular of a lower-case word, by rule; good enough for nouns in captions."""
    if word in IRREGULAR:
        return IRREGULAR[word]
    if len(word) <= 3 or not word.endswith("s") or word in SINGULAR_S:
        return word
    if word.endswith(("ss", "us")):
        return word  # glass, cactus: already singular
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"  # berries, butterflies
    if word.endswith(("ches", "shes", "xes", "zes", "sses")):
        return word[:-2]  # watches, dishes, boxes, glasses
    return word[:-1]


def normalise(text: str) -> list[list[str]]:
    """Clauses (split at punctuation) of normalised words; see the module docstring."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _APOSTROPHE_S.sub("", text).replace("'", "").replace("\u2019", "")
    text = _SEPARATORS.sub(" ", text).replace("&", " and ")
    clauses = []
    for part in _PUNCTUATION.split(text):
        words = _WORD.findall(part.replace("black and white", " "))
        words = [singular(w) for w in words if w not in ARTICLES]
        if words:
            clauses.append(words)
    return clauses


def _phrase(text: str) -> tuple[str, ...]:
    """A class name or group word as a lookup key (normalised the caption way)."""
    return tuple(w for clause in normalise(text) for w in clause)


@dataclass(frozen=True)
class CaptionMatch:
    """The classes a caption accepts and the phrase of the caption that named them."""

    term: str
    classes: frozenset[int]


@cache
def class_synonyms() -> tuple[tuple[str, ...], ...]:
    """The synonyms of each ImageNet class, by class index."""
    lines = CLASS_FILE.read_text("utf-8").splitlines()
    if len(lines) != NUM_CLASSES:
        raise ValueError(f"{CLASS_FILE} has {len(lines)} lines, expected {NUM_CLASSES}")
    return tuple(tuple(s.strip() for s in line.split(",") if s.strip()) for line in lines)


def class_label(index: int) -> str:
    """The short name of a class (its first synonym): 281 -> 'tabby'."""
    return class_synonyms()[index][0]


def _resolve(entries: Iterable[str], groups: Mapping[str, tuple[str, ...]],
             by_name: Mapping[str, list[int]], seen: tuple[str, ...] = ()) -> set[int]:
    out: set[int] = set()
    for entry in entries:
        if entry.startswith("@"):
            word = entry[1:]
            if word in seen:
                raise ValueError(f"group cycle through {word!r}")
            out |= _resolve(groups[word], groups, by_name, (*seen, word))
        elif ".." in entry:
            first, last = entry.split("..")
            lo, hi = _unique(first, by_name), _unique(last, by_name)
            if hi < lo:
                raise ValueError(f"empty class range {entry!r}")
            out |= set(range(lo, hi + 1))
        else:
            if entry not in by_name:
                raise ValueError(f"unknown ImageNet class name {entry!r}")
            out |= set(by_name[entry])
    return out


def _unique(name: str, by_name: Mapping[str, list[int]]) -> int:
    idx = by_name.get(name, [])
    if len(idx) != 1:
        raise ValueError(f"class name {name!r} must name exactly one class, names {idx}")
    return idx[0]


class ImagenetMatcher:
    """Caption -> accepted ImageNet classes, with the tables above (or others, for tests)."""

    def __init__(
        self,
        groups: Mapping[str, tuple[str, ...]] = GROUPS,
        excluded: Mapping[str, tuple[str, ...]] = EXCLUDED_SENSES,
        not_objects: Iterable[str] = NOT_OBJECTS,
    ) -> None:
        synonyms = class_synonyms()
        by_name: dict[str, list[int]] = {}
        for i, syns in enumerate(synonyms):
            by_name.setdefault(syns[0], []).append(i)
        index: dict[tuple[str, ...], set[int]] = {}
        for i, syns in enumerate(synonyms):
            for s in syns:
                if key := _phrase(s):
                    index.setdefault(key, set()).add(i)
        for word, entries in groups.items():
            index.setdefault(_phrase(word), set()).update(_resolve(entries, groups, by_name))
        for word, names in excluded.items():
            key = _phrase(word)
            drop = set().union(*(by_name[n] for n in names)) if names else set()
            # Keep what the group table adds for the same word ("plane" -> airliner).
            keep = _resolve(groups[word], groups, by_name) if word in groups else set()
            index[key] = (index.get(key, set()) - drop) | keep
        for phrase in not_objects:
            index[_phrase(phrase)] = set()
        # An empty set is kept on purpose: the phrase is known and names no class.
        self._index = {k: frozenset(v) for k, v in index.items()}
        self.max_words = max(len(k) for k in self._index)

    def lookup(self, words: Iterable[str]) -> frozenset[int] | None:
        """Classes of an exact normalised phrase; empty if it is known to name none;
        None if it is not known."""
        return self._index.get(tuple(words))

    def _head(self, words: list[str]) -> CaptionMatch | None:
        # The head noun of an English noun phrase comes last: the longest known suffix
        # decides, and a known phrase naming no class ("corn dog") ends the search.
        for start in range(max(0, len(words) - self.max_words), len(words)):
            classes = self.lookup(words[start:])
            if classes is not None:
                return CaptionMatch(" ".join(words[start:]), classes) if classes else None
        return None

    def match(self, caption: str) -> CaptionMatch | None:
        """Apply the rule of the module docstring to an English caption."""
        clauses = normalise(caption)
        if not clauses:
            return None
        words = _strip_style(clauses[0])
        if not words:
            return None
        classes = self.lookup(words)
        if classes is not None:
            return CaptionMatch(" ".join(words), classes) if classes else None
        if words[0] == "no" or words[-1] in SIGN_WORDS:
            return None  # a sign about the object, not the object
        cut = next((i for i, w in enumerate(words) if w in LINK_WORDS), len(words))
        if cut < len(words) and words[cut] == "of":
            return None  # "ball of yarn", "cup of coffee": which is the object is unclear
        found = self._head(words[:cut])
        if found is None or (found.term in COLOUR_WORDS and cut > 1):
            return None
        if cut < len(words) and words[cut] in CONJUNCTIONS:
            rest = words[cut + 1:]
            cut2 = next((i for i, w in enumerate(rest) if w in LINK_WORDS), len(rest))
            other = self._head(rest[:cut2])
            if other is not None and not (other.classes & found.classes):
                return None  # two different objects: no single class to judge
        return found


def _strip_style(words: list[str]) -> list[str]:
    # "drawing of a cat" -> "cat"; "cat clipart" -> "cat".
    if "of" in words:
        i = words.index("of")
        if i > 0 and all(w in STYLE_WORDS for w in words[:i]):
            words = words[i + 1:]
    kept = [w for w in words if w not in STYLE_WORDS]
    return kept or words


@cache
def default_matcher() -> ImagenetMatcher:
    return ImagenetMatcher()


def match_caption(caption: str) -> CaptionMatch | None:
    """The classes an English caption names and the phrase that named them, or None."""
    return default_matcher().match(caption)


def map_caption(caption: str) -> frozenset[int] | None:
    """The set of acceptable ImageNet class indices for an English caption, or None."""
    found = match_caption(caption)
    return found.classes if found else None

"""The committed vocabulary of the synthetic-sentence grammar (``sentences.py``).

Plain, frequent English words that espeak-ng's English dictionary pronounces without surprises: no digits,
abbreviations, apostrophes or homographs whose reading depends on the sentence (read, lead, wind, live,
tear, bow). Nouns take regular plurals (``sentences.plural``); nouns and adjectives start with a consonant
sound or a plainly sounded vowel, so the a/an rule by spelling holds (nothing starts with "u", "eu", "one"
or a silent "h"). Verbs are ``(base, past)`` pairs. Changing any list changes every corpus made with it: the
generator records ``GRAMMAR_VERSION`` in ``corpus.json``; bump it with any edit here.
"""

GRAMMAR_VERSION = 1

ADJECTIVES = (
    "ancient", "bitter", "brave", "bright", "broken", "busy", "calm", "careful", "cheerful", "clever",
    "cold", "curious", "damp", "dark", "dusty", "eager", "empty", "famous", "fierce", "foggy",
    "friendly", "frozen", "gentle", "giant", "golden", "green", "grumpy", "happy", "heavy", "hollow",
    "humble", "hungry", "little", "lonely", "lucky", "modern", "narrow", "noisy", "odd",
    "orange", "patient", "polite", "proud", "purple", "quiet", "rapid", "rusty", "sandy", "shiny",
    "silent", "silver", "sleepy", "slow", "small", "soft", "sticky", "strange", "sunny", "tidy",
    "tiny", "velvet", "warm", "wicked", "wild", "wooden", "yellow", "young",
)

# Countable things; each takes a regular plural.
NOUNS = (
    "apple", "artist", "baker", "basket", "beetle", "bicycle", "blanket", "bottle", "bucket", "butcher",
    "candle", "carpet", "castle", "cat", "chair", "cherry", "clock", "cloud", "cookie",
    "crow", "dancer", "desk", "doctor", "dog", "donkey", "dragon", "drum", "eagle", "engine",
    "farmer", "feather", "fiddle", "fox", "frog", "garden", "goat", "guitar", "hammer", "horse",
    "jacket", "kettle", "kitten", "ladder", "lamp", "lantern", "lemon", "letter", "lion", "magnet",
    "melon", "mirror", "monkey", "nurse", "otter", "painter", "parrot", "pencil", "pepper", "pillow",
    "pirate", "puppet", "rabbit", "robot", "sailor", "saucer", "singer", "spider", "spoon",
    "tailor", "teacher", "tiger", "tractor", "trumpet", "turtle", "wagon", "whistle", "window",
    "wizard", "zebra",
)

PLACES = (
    "attic", "bakery", "barn", "beach", "bridge", "cabin", "canal", "cave", "cellar", "circus",
    "corner", "desert", "forest", "garage", "harbour", "hallway", "hill", "island", "jungle", "kitchen",
    "lake", "library", "market", "meadow", "mountain", "museum", "office", "palace", "park", "river",
    "school", "station", "street", "swamp", "temple", "theatre", "tower", "valley", "village", "yard",
)

NAMES = (
    "Alice", "Amos", "Bella", "Brian", "Clara", "Daniel", "Diana", "Edgar", "Ella", "Felix",
    "Fiona", "George", "Grace", "Harold", "Helen", "Isaac", "Ivy", "Jacob", "Julia", "Kevin",
    "Laura", "Leo", "Lucy", "Martin", "Molly", "Nathan", "Nora", "Oliver", "Olivia", "Peter",
    "Rachel", "Robert", "Ruby", "Samuel", "Sarah", "Thomas", "Vera", "Victor", "Walter", "Wendy",
)

TRANSITIVE_VERBS = (
    ("borrow", "borrowed"), ("bring", "brought"), ("build", "built"), ("buy", "bought"),
    ("carry", "carried"), ("catch", "caught"), ("chase", "chased"), ("clean", "cleaned"),
    ("collect", "collected"), ("cover", "covered"), ("draw", "drew"), ("drop", "dropped"),
    ("fetch", "fetched"), ("find", "found"), ("fix", "fixed"), ("follow", "followed"),
    ("grab", "grabbed"), ("hide", "hid"), ("hold", "held"), ("hug", "hugged"),
    ("kick", "kicked"), ("lift", "lifted"), ("like", "liked"), ("lose", "lost"),
    ("mend", "mended"), ("move", "moved"), ("notice", "noticed"), ("open", "opened"),
    ("paint", "painted"), ("pass", "passed"), ("pick", "picked"), ("pull", "pulled"),
    ("push", "pushed"), ("remember", "remembered"), ("sell", "sold"), ("shake", "shook"),
    ("show", "showed"), ("squeeze", "squeezed"), ("steal", "stole"), ("throw", "threw"),
    ("touch", "touched"), ("visit", "visited"), ("wash", "washed"), ("watch", "watched"),
    ("wrap", "wrapped"),
)

INTRANSITIVE_VERBS = (
    ("arrive", "arrived"), ("dance", "danced"), ("fall", "fell"), ("float", "floated"),
    ("giggle", "giggled"), ("hurry", "hurried"), ("jump", "jumped"), ("laugh", "laughed"),
    ("linger", "lingered"), ("march", "marched"), ("nap", "napped"), ("paddle", "paddled"),
    ("rest", "rested"), ("roll", "rolled"), ("run", "ran"), ("shiver", "shivered"),
    ("shout", "shouted"), ("sing", "sang"), ("sit", "sat"), ("sleep", "slept"),
    ("smile", "smiled"), ("sneeze", "sneezed"), ("swim", "swam"), ("travel", "travelled"),
    ("wait", "waited"), ("walk", "walked"), ("wander", "wandered"), ("whisper", "whispered"),
    ("work", "worked"), ("yawn", "yawned"),
)

ADVERBS = (
    "again", "badly", "bravely", "briskly", "calmly", "carefully", "cheerfully", "early", "easily",
    "gladly", "gently", "happily", "honestly", "late", "loudly", "neatly", "nervously", "often",
    "patiently", "politely", "quickly", "quietly", "rarely", "sadly", "slowly", "softly", "suddenly",
    "today", "together", "yesterday",
)

PREPOSITIONS = (
    "above", "across", "behind", "below", "beside", "inside", "into", "near", "outside", "past",
    "through", "toward",
)

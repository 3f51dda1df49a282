"""A long synthetic conversation with known answers, built deterministically (nothing to download).

Why synthetic: the benchmark must run on every machine with no network, and a public long-conversation
set with evidence ids is not on PyPI under a licence we could ship. So a seeded generator writes what such
a set holds: a user talking about the people in their life over thousands of turns, mostly chit-chat
(which mentions the same people, so a name alone does not find a fact), with each person's job, city, pet,
hobby, dislike and birthday stated once, in one of several phrasings. Questions ask for those facts in
*other* words than the statement ("What does Ravi do for a living?" for "Ravi got a job as a dentist"), so
matching the name finds every turn about Ravi and only meaning finds the right one; multi-hop questions
name a person by another fact ("Where does the owner of the cat Biscuit live?"), their answer is two
turns. A question's relevant turns are known by construction (turn indexes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Conversation", "Question", "build"]

NAMES = ("Ravi", "Maria", "Chen", "Fatima", "Lukas", "Aiko", "Omar", "Sofia", "Mateo", "Priya", "Jonas", "Amara",
         "Diego", "Hana", "Felix", "Leila", "Tomas", "Ingrid", "Kofi", "Nadia", "Pavel", "Rosa", "Samir", "Yuki",
         "Elena", "Tariq", "Greta", "Manuel", "Zara", "Henrik", "Ines", "Kenji", "Olga", "Rahul", "Clara", "Emeka",
         "Lucia", "Viktor", "Mei", "Andre", "Noor", "Stefan", "Alma", "Farid", "Beatriz", "Ivo", "Lena", "Marco",
         "Sana", "Theo", "Yara", "Boris", "Carmen", "Dario", "Elif", "Gustav", "Hiro", "Isla", "Jamal", "Kira")
RELATIONS = ("my cousin", "my coworker", "my neighbor", "my old friend", "my sister-in-law", "my gym buddy",
             "my landlord", "my college roommate")
JOBS = ("dentist", "firefighter", "pastry chef", "civil engineer", "veterinarian", "court interpreter",
        "airline pilot", "pharmacist", "carpenter", "marine biologist", "tax accountant", "radio host",
        "landscape architect", "paramedic", "librarian", "welder", "data analyst", "midwife", "locksmith",
        "translator")
CITIES = ("Porto", "Lisbon", "Kraków", "Lyon", "Osaka", "Tallinn", "Valencia", "Bergen", "Leipzig", "Cork", "Gdańsk",
          "Bologna", "Ghent", "Tartu", "Split", "Malmö", "Brno", "Graz", "Aarhus", "Turku", "Seville", "Bilbao",
          "Utrecht", "Basel", "Lille", "Nantes", "Porto-Alegre", "Cusco", "Hobart", "Nagoya", "Busan", "Dunedin",
          "Halifax", "Quebec", "Tromsø", "Reykjavik", "Plovdiv", "Sibiu", "Kaunas", "Riga", "Bratislava", "Ljubljana",
          "Zadar", "Innsbruck", "Salzburg", "Freiburg", "Aachen", "Ghent-West", "Lucerne", "Geneva", "Bordeaux",
          "Toulouse", "Granada", "Cádiz", "Coimbra", "Braga", "Faro", "Evora", "Funchal", "Vigo")
PETS = ("cat", "parrot", "tortoise", "beagle", "rabbit", "ferret", "goldfish", "hamster", "iguana", "greyhound")
PET_NAMES = ("Biscuit", "Pepper", "Mango", "Noodle", "Pixel", "Waffle", "Ziggy", "Clover", "Bean", "Sprout", "Tofu",
             "Pickles", "Juniper", "Olive", "Sushi", "Marble", "Comet", "Pebble", "Cocoa", "Nacho", "Bagel", "Peanut",
             "Socks", "Toffee", "Fig", "Dumpling", "Basil", "Maple", "Ginger", "Muffin", "Pretzel", "Cricket",
             "Button", "Rusty", "Domino", "Kiwi", "Lentil", "Oreo", "Poppy", "Quinoa", "Raisin", "Sage", "Taco",
             "Umber", "Velvet", "Whisky", "Yam", "Zucchini", "Acorn", "Bramble", "Cashew", "Daisy", "Ember", "Fennel",
             "Gumbo", "Hazel", "Indigo", "Jasper", "Kale")
HOBBIES = ("rock climbing", "restoring vintage motorcycles", "playing chess online", "birdwatching",
           "knitting sweaters", "brewing beer", "sailing small boats", "painting watercolors", "running marathons",
           "growing bonsai trees", "playing the cello", "building model trains")
FOODS = ("olives", "mushrooms", "cilantro", "blue cheese", "anchovies", "liver", "eggplant", "oysters", "licorice",
         "brussels sprouts")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")

# (statement templates, question templates): the questions avoid the statement's content words on purpose.
FACTS = {
    "job": (("{name} got a job as a {job} last year.", "{rel} {name} works as a {job} now."),
            ("What does {name} do for a living?", "What is {name}'s profession?")),
    "city": (("{name} moved to {city} over the summer.", "{rel} {name} relocated to {city}."),
             ("Which place is {name} based in these days?", "Where did {name} settle down?")),
    "pet": (("{name} adopted a {pet} called {petname}.", "{rel} {name} has a {pet} named {petname}."),
            ("What kind of animal lives with {name}?", "Which creature does {name} look after at home?")),
    "hobby": (("{name} spends every weekend {hobby}.", "On Saturdays {name} is always {hobby}."),
              ("How does {name} like to pass free time?", "What is {name}'s favourite pastime?")),
    "food": (("{name} absolutely hates {food}.", "{rel} {name} refuses to eat {food}."),
             ("Which dish would {name} never order?", "What food does {name} dislike?")),
    "birthday": (("{name}'s birthday is on {month} {day}.", "{name} was born on {month} {day}."),
                 ("When does {name} turn a year older?", "On which date should I congratulate {name}?")),
}
MULTI_HOP = (("Where does the owner of {petname} live?", ("pet", "city")),
             ("What job does the person who moved to {city} have?", ("city", "job")),
             ("What does the {job} enjoy doing on weekends?", ("job", "hobby")))
CHATTER = ("I had coffee with {name} and we talked about the weather for an hour.",
           "{name} sent me a funny video about penguins.",
           "Remind me to call {name} back tomorrow afternoon.",
           "{name} and I argued about which movie to watch.",
           "I saw {name} at the supermarket this morning.",
           "{name} recommended a podcast about ancient history.",
           "Did I tell you {name} is planning a surprise party?",
           "{name} asked me to help with moving some boxes next week.",
           "The traffic was terrible today, I was late to meet {name}.",
           "{name} lent me a book about gardening.")
SMALL_TALK = ("Thanks, that helps a lot.", "Can you summarise the news on interest rates?",
              "What should I cook for dinner tonight?", "Let's plan the budget for next month.",
              "I'm feeling tired after the long meeting.", "Could you draft a polite reminder email?",
              "The weather has been strange this week.", "What's a good stretch for back pain?",
              "I finally fixed the leaking kitchen tap.", "Let's review my to-do list for tomorrow.")
REPLIES = ("Got it, I'll remember that.", "Sounds good!", "Noted.", "That's interesting, tell me more.",
           "Sure, here is a short summary.", "Happy to help with that.")


@dataclass(frozen=True)
class Question:
    text: str
    relevant: frozenset[int]  # turn indexes holding the answer
    kind: str  # "single" | "multi"


@dataclass(frozen=True)
class Conversation:
    turns: list[str]
    questions: list[Question]


def build(people: int, filler_per_fact: int, seed: int = 0) -> Conversation:
    """``people`` people with six facts each; ``filler_per_fact`` chit-chat turns (user and assistant) per fact."""
    rng = random.Random(seed)
    names = NAMES[:people]
    jobs = [JOBS[i % len(JOBS)] for i in range(people)]
    rng.shuffle(jobs)
    values = {n: {"name": n, "rel": rng.choice(RELATIONS).capitalize(), "job": jobs[i], "city": CITIES[i],
                  "pet": rng.choice(PETS), "petname": PET_NAMES[i], "hobby": rng.choice(HOBBIES),
                  "food": rng.choice(FOODS), "month": rng.choice(MONTHS), "day": rng.randint(1, 28)}
              for i, n in enumerate(names)}
    facts = [(n, kind) for n in names for kind in FACTS]
    rng.shuffle(facts)
    turns: list[str] = []
    where: dict[tuple[str, str], int] = {}
    for name, kind in facts:
        for _ in range(filler_per_fact):
            turns.append(rng.choice(CHATTER).format(name=rng.choice(names)) if rng.random() < 0.6
                         else rng.choice(SMALL_TALK))
            turns.append(rng.choice(REPLIES))
        where[(name, kind)] = len(turns)
        turns.append(rng.choice(FACTS[kind][0]).format(**values[name]))
    questions = [Question(rng.choice(FACTS[kind][1]).format(**values[name]), frozenset({where[(name, kind)]}),
                          "single") for name, kind in facts]
    unique_jobs = {j for j in jobs if jobs.count(j) == 1}
    for name in names:
        for template, kinds in MULTI_HOP:
            if "{job}" in template and values[name]["job"] not in unique_jobs:
                continue  # "the dentist" must name one person
            questions.append(Question(template.format(**values[name]), frozenset(where[(name, k)] for k in kinds),
                                      "multi"))
    return Conversation(turns, questions)

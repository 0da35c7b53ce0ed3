"""Generate the project's example prompts and the demo router model.

    python -m router.examples.build                 # writes train.jsonl, eval.jsonl, demo-router.npz
    python -m router.examples.build --project-only  # the previous demo model (project prompts only)

The demo router is the starter model of ``router.starter`` (broad public data + the project's prompt
files; ``docs/router.md``); the build also writes the general background (``router.background``).
With ``--project-only`` it is the previous one, trained on ``train.jsonl`` plus ``train_chat.jsonl``
(762 chat-style prompts written by hand, not generated here), ``train_general.jsonl`` (319 chat-style
general prompts, by hand) and ``train_code.jsonl`` (320 chat-style code prompts and hard negatives, by
hand). Its per-domain thresholds are calibrated on out-of-fold probabilities of the hand-written
prompts (5 folds, 2% total leakage budget, threshold rule ``bag:total``) before the final model is
fitted on everything.

Every template and slot value below was written for this project. Two disjoint sets of templates:
``TRAIN`` is plain and instruction-like (the demo router's training data); ``EVAL`` is written the way
people type into a chat box (analysts' SQL with joins and "for each", code requests with tracebacks
and stubs, support messages with typos, everyday questions), for checking a router on a style it was
not trained on. Generation is deterministic (fixed seed); duplicates are dropped.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

Slots = dict[str, list[str]]

# ---------------------------------------------------------------------------------------------------
# shared slot values
S: Slots = {
    "dim": ["customer", "region", "store", "product category", "sales rep", "country", "warehouse",
            "marketing channel", "subscription plan", "department", "supplier", "city"],
    "measure": ["revenue", "order count", "average basket size", "refund amount", "gross margin",
                "units sold", "active users", "churned accounts", "support tickets", "page views"],
    "period": ["last month", "in 2023", "over the past 90 days", "this quarter", "year to date",
               "for the last 7 days", "since january", "per week this year"],
    "t1": ["orders", "customers", "invoices", "events", "subscriptions", "payments", "shipments",
           "employees", "tickets", "sessions"],
    "t2": ["order_items", "products", "accounts", "users", "plans", "regions", "stores", "departments",
           "refunds", "campaigns"],
    "key": ["customer_id", "user_id", "account_id", "product_id", "order_id", "store_id"],
    "things": ["orders", "logins", "returns", "invoices", "signups", "tickets", "purchases", "trials"],
    "n": ["3", "5", "10", "20", "50", "100"],
    "timeunit": ["day", "week", "month", "quarter"],
    "engine": ["postgres", "mysql", "snowflake", "bigquery", "sqlite", "redshift", "sql server"],
    "status": ["shipped", "cancelled", "active", "paid", "overdue", "open"],
    "lang": ["python", "javascript", "typescript", "go", "rust", "java", "bash", "c#"],
    "merchant": ["amazon", "netflix", "uber", "a hotel in lisbon", "the supermarket", "spotify",
                 "an online shop", "the gas station", "my gym", "airbnb"],
    "place": ["the supermarket", "a restaurant", "the pharmacy", "an online store", "the airport",
              "a petrol station", "ikea", "the train station"],
    "country": ["germany", "the uk", "india", "mexico", "nigeria", "the philippines", "canada", "spain"],
    "currency": ["euros", "dollars", "pounds", "yen", "pesos", "swiss francs"],
    "days": ["2", "3", "4", "5", "6", "8", "10", "two", "three", "five"],
    "amount": ["£2.99", "$5", "€1.50", "$25", "3 euros", "£10", "$0.99", "€12"],
    "city": ["paris", "new york", "bangkok", "madrid", "a city i've never been to", "dubai", "berlin"],
}


def _fill(template: str, slots: Slots, rng: random.Random) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: rng.choice(slots[m.group(1)]), template)


def generate(templates: list[str], slots: Slots, n: int, rng: random.Random) -> list[str]:
    """Up to ``n`` distinct prompts, cycling through the templates so each contributes evenly."""
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < n * 50:
        t = templates[tries % len(templates)]
        tries += 1
        text = _fill(t, slots, rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


# ---------------------------------------------------------------------------------------------------
# TRAIN: plain, instruction-like prompts for the demo router
TRAIN: dict[str, list[str]] = {
    "sql": [
        "Write a SQL query that returns the total {measure} per {dim} {period}.",
        "Write a query to list all rows in the {t1} table where status is '{status}'.",
        "Select the top {n} {dim}s by {measure} from the {t1} table.",
        "Generate SQL to join {t1} and {t2} on {key} and count the {things}.",
        "Show the SQL for the average {measure} grouped by {timeunit}.",
        "Write an SQL statement that deletes duplicate rows from {t1} based on {key}.",
        "Give me a SQL query counting {things} per {dim} {period}.",
        "Create a table called {t1} with an id primary key, a {key} column and a created_at timestamp.",
        "Write a {engine} query to find {dim}s with no {things} {period}.",
        "SQL query: which {dim} has the highest {measure}?",
        "Write a query that updates the status of {t1} to '{status}' when the due date has passed.",
        "How do I write a GROUP BY query with HAVING count(*) > {n} on the {t1} table?",
        "Translate to SQL: list each {dim} and its {measure} {period}, sorted descending.",
        "Write a window function query ranking {dim}s by {measure} within each {timeunit}.",
        "Write an INSERT statement adding a row to {t2}.",
        "Query the {t1} table for records created {period}.",
    ],
    "code": [
        "Write a {lang} function that reverses a linked list.",
        "Write a {lang} function to check whether a string is a palindrome.",
        "Implement binary search in {lang}.",
        "Write a {lang} program that reads a CSV file and prints the sum of the second column.",
        "How do I sort a dictionary by value in python?",
        "Fix the bug in this code: for i in range(len(items)): items.remove(items[i])",
        "Explain what a closure is in {lang} with an example.",
        "Write a unit test for a function that parses dates in {lang}.",
        "Write a {lang} class for a stack with push, pop and peek.",
        "How can I read a JSON file in {lang}?",
        "Write a function that merges two sorted arrays in {lang}.",
        "Convert this python 2 print statement to python 3: print \"hello\"",
        "Write a recursive {lang} function for the fibonacci sequence and make it memoized.",
        "What does the error 'TypeError: unsupported operand type(s) for +: int and str' mean?",
        "Write a {lang} script that renames every file in a folder to lower case.",
        "Implement a function that removes duplicates from a list while keeping order in {lang}.",
        "How do I make an HTTP GET request in {lang}?",
        "Write a regular expression that matches an email address and explain it.",
    ],
    "support": [
        "My card was declined at {place}. Why?",
        "I was charged twice by {merchant}. How do I get a refund?",
        "How long does a transfer to {country} take?",
        "I lost my card. Please block it.",
        "Why was I charged a fee of {amount}?",
        "I cannot log in to my account.",
        "How do I change my PIN?",
        "My top-up did not go through.",
        "I want to close my account.",
        "Where is my new card? I ordered it {days} days ago.",
        "How do I verify my identity?",
        "The ATM did not give me my cash but my account was debited.",
        "What exchange rate do you use for {currency}?",
        "There is a payment to {merchant} I do not recognise.",
        "How do I update my home address?",
        "Can I get a virtual card?",
        "My refund from {merchant} has not arrived.",
        "What is the daily withdrawal limit?",
    ],
    "math": [
        "Solve for x: {a}x + {b} = {c}.",
        "What is {a} percent of {c}?",
        "Find the derivative of x^{a} + {b}x.",
        "Calculate the area of a circle with radius {a} cm.",
        "A shop sells pens at ${a} each. How much do {b} pens cost after a {p}% discount?",
        "What is the probability of rolling two sixes with two dice?",
        "Simplify the fraction {c}/{d}.",
        "Tom has {c} apples and gives {a} to each of his {b} friends. How many are left?",
        "Find the least common multiple of {a} and {b}.",
        "Integrate {a}x^2 from 0 to {b}.",
        "What is the square root of {sq}?",
        "A car travels {c} km in {b} hours. What is its average speed?",
        "Solve the system: x + y = {c}, x - y = {a}.",
        "If a rectangle is {a} m by {b} m, what is its perimeter?",
        "Compute {a} factorial.",
    ],
    "general": [
        "What is the capital of {nation}?",
        "Give me a recipe for {dish}.",
        "Write a short poem about {topic}.",
        "What are some tips for {goal}?",
        "Who was {person}?",
        "Recommend a good {medium} about {topic}.",
        "Explain how {thing} works.",
        "Translate 'good morning, how are you' into {tongue}.",
        "What should I pack for a trip to {place2}?",
        "Summarize the plot of {book}.",
        "What is the weather usually like in {place2} in {season}?",
        "Write a polite email declining a meeting invitation.",
        "What are the health benefits of {food}?",
        "Suggest a name for a {pet}.",
        "Why is the sky blue?",
        "What happened during {event}?",
    ],
}

TRAIN_SLOTS: Slots = {
    **S,
    "a": ["2", "3", "4", "5", "7", "9", "12"],
    "b": ["3", "4", "6", "8", "10", "15"],
    "c": ["24", "36", "48", "60", "90", "120", "150"],
    "d": ["64", "84", "96", "144"],
    "p": ["10", "15", "20", "25"],
    "sq": ["144", "169", "225", "289", "2", "50"],
    "nation": ["australia", "canada", "brazil", "kenya", "norway", "vietnam", "peru", "egypt"],
    "dish": ["lasagna", "vegetable curry", "banana bread", "pancakes", "a quick tomato soup",
             "chicken stir fry", "guacamole"],
    "topic": ["the ocean", "autumn", "friendship", "a rainy city", "space travel", "the mountains"],
    "goal": ["sleeping better", "learning a language", "running a first marathon", "saving energy at home",
             "staying focused", "public speaking"],
    "person": ["Marie Curie", "Genghis Khan", "Frida Kahlo", "Nelson Mandela", "Ada Lovelace",
               "Leonardo da Vinci"],
    "medium": ["book", "documentary", "podcast", "movie"],
    "thing": ["a rainbow", "the immune system", "a refrigerator", "photosynthesis", "an airplane wing",
              "a compass"],
    "tongue": ["french", "spanish", "japanese", "german", "italian"],
    "place2": ["iceland", "japan", "morocco", "scotland", "new zealand", "chile"],
    "book": ["Pride and Prejudice", "Moby Dick", "The Hobbit", "1984", "Don Quixote"],
    "season": ["winter", "summer", "spring", "autumn"],
    "food": ["green tea", "oats", "blueberries", "dark chocolate", "spinach"],
    "pet": ["black cat", "golden retriever", "parrot", "hamster"],
    "event": ["the fall of the Berlin Wall", "the French Revolution", "the moon landing",
              "the Black Death"],
}

# ---------------------------------------------------------------------------------------------------
# EVAL: chat-style prompts, a different voice from TRAIN and from the public training sources
EVAL: dict[str, list[str]] = {
    "sql": [
        "for each {dim}, what's the total {measure} {period}? i think i need to join {t1} with {t2} on {key}",
        "can you write me a query listing {dim}s with more than {n} {things} {period}",
        "need sql for the top {n} {dim}s by {measure}, grouped by {timeunit}",
        "how do i join {t1} and {t2} so i get {measure} per {dim}?",
        "{engine}: count distinct {things} per {dim} {period}, only rows where status = '{status}'",
        "query to find {dim}s that had zero {things} {period} -- left join + is null?",
        "running total of {measure} by {timeunit} in {engine}, window function please",
        "which {dim} had the highest average {measure} {period}? tables are {t1} and {t2}, joined on {key}",
        "select * on {t1} is too slow, rewrite it so it only pulls {measure} per {dim} with a group by",
        "pivot {measure} by {timeunit} and {dim} in {engine}",
        "dedupe {t1} keeping only the latest row per {key} (there's an updated_at column)",
        "whats the sql to get the second highest {measure} for every {dim}",
        "give me a CTE that buckets {t1} into signup {timeunit} cohorts and computes retention",
        "I have {t1}(id, {key}, amount, created_at) and {t2}(id, name, region). total amount per region "
        "{period}?",
        "how many {things} did each {dim} have {period}? need the query, not the number",
        "my group by returns duplicates when I join {t2}, how do I fix the {engine} query",
        "percentage of {t1} that are '{status}' for each {dim}, as one query",
        "write the join: every {dim} with its latest {things} date, including ones that have none",
        "month over month change in {measure} per {dim} using lag() in {engine}",
        "list {t2} that never appear in {t1} (anti join), {engine}",
        "sum {measure} for each {dim} and {timeunit} {period}, ordered by {timeunit}",
        "is there a way in sql to show {measure} per {dim} next to the overall total on every row",
    ],
    "code": [
        "getting this and i have no idea why:\nTraceback (most recent call last):\n"
        "  File \"app.py\", line {ln}, in <module>\n    main()\n"
        "  File \"app.py\", line {ln2}, in main\n    {pyline}\n{pyerr}",
        "def {fname}({args}):\n    # TODO\n    pass\n\ncan you fill this in? it should {behaviour}",
        "why does this loop never end??\n\n{loop}",
        "how do i {task} in {lang}",
        "quick q, in {lang} what's the idiomatic way to {task}",
        "my {framework} app throws {weberr} when i {action}, any idea what's wrong",
        "can u write a bash one-liner that {shelltask}",
        "what does this regex do: {regex}",
        "turn this into a list comprehension pls:\nresult = []\nfor x in {seq}:\n    if x % 2 == 0:\n"
        "        result.append(x * x)",
        "write pytest tests for this:\n\ndef {fname}({args}):\n    ...",
        "{lang} keeps saying '{compileerr}', what does that mean",
        "is it better to use a class or a dataclass here? i have a {thing} with name, price and tags",
        "review my code pls, feels slow:\nfor i in range(len(a)):\n    for j in range(len(b)):\n"
        "        if a[i] == b[j]:\n            out.append(a[i])",
        "git says 'detached HEAD' after i checked out a commit, how do i get back to my branch",
        "npm install fails with ERESOLVE unable to resolve dependency tree, what do i do",
        "how do i mock {mocked} in a unit test ({lang})",
        "async/await in {lang}: why does my function return a promise/coroutine instead of the value",
        "segfault in my c program when i free() a pointer twice?? how to debug",
        "explain big-O of this: nested loop over n, inner loop halves each time",
        "convert this js callback code to async/await: fs.readFile(path, (err, data) => { ... })",
    ],
    "support": [
        "hi my card got declined at {place} but i have money in my account??",
        "i was charged twice for {merchant}, how do i get one of them back",
        "cant log in to the app, it keeps saying my passcode is wrong",
        "how long does a transfer to {country} take? its been {days} days",
        "lost my wallet, need to freeze my card asap",
        "why is there a {amount} fee on my statement, i never agreed to that",
        "the atm swallowed my card, what now",
        "Hello, I would like to close my account and get my remaining balance back.",
        "top up from my other bank card failed twice, whats going on",
        "need to change the address on my account, moved last month",
        "verify identity keeps failing, the photo of my passport wont upload",
        "refund from {merchant} still not showing after {days} days",
        "is there a limit on how much cash i can take out per day",
        "the exchange rate you gave me for {currency} was terrible, why??",
        "someone used my card in {city}, i didnt make that payment!!",
        "my salary hasn't arrived yet, did you block the transfer?",
        "ordered a new card {days} days ago and nothing in the mail",
        "how do i get a physical card instead of the virtual one",
        "pending payment to {merchant} been there {days} days, when does it go through",
        "why was my transfer to {country} cancelled",
        "accidentally sent money to the wrong account, can you reverse it",
        "the app shows a different balance than my statement",
        "can i change my pin in the app or do i need to go to an atm",
        "ugh, got charged in {currency} instead of my own currency, how do i dispute it",
    ],
    "math": [
        "solve {a}x + {b} = {c} and show the steps",
        "whats the derivative of {fn}",
        "integrate {fn} dx pls",
        "if i flip {k} coins whats the chance of exactly {j} heads",
        "what's {p}% of {c}",
        "simplify ({a}x^2 + {b}x) / x",
        "how many ways can {k} people sit around a round table",
        "find the eigenvalues of [[{a}, 1], [1, {a}]]",
        "is {prime} a prime number? how do you check quickly",
        "lcm and gcd of {c} and {d}?",
        "prove the sum of two odd numbers is always even",
        "limit of sin({a}x)/x as x goes to 0?",
        "I put ${c}00 in at {p}% compounded yearly, what do I have after {k} years",
        "my kid's homework: a tank fills in {a} hours and drains in {b} hours, how long to fill with both "
        "open",
        "what is the sum of the first {c} odd numbers",
        "expected value of rolling a fair {k}-sided die",
        "convert {c} degrees to radians",
        "hypotenuse of a right triangle with legs {a} and {b}?",
        "solve x^2 - {b}x + {a} = 0",
        "standard deviation of {a}, {b}, {c}, {d}?",
        "how do i find the inverse of a 2x2 matrix, example with [[{a},{b}],[1,2]]",
        "what's log base 2 of {pow2}",
    ],
    "general": [
        "what should i cook tonight with {ingredients}",
        "can you explain how {thing} works like i'm five",
        "whats a good {medium} for a long flight",
        "tips for {goal}?",
        "write a short poem about {topic} for my mom's birthday card",
        "how do i get red wine out of a carpet",
        "is it worth visiting {place2} in {season}",
        "how many moons does {planet} have",
        "who won the {contest} in {year}",
        "help me write a message to my landlord about a broken heater",
        "what's the difference between {pair}",
        "give me 5 fun things to do on a rainy weekend with kids",
        "translate 'where is the train station' into {tongue}",
        "should i learn guitar or piano first as an adult",
        "my plant's leaves are turning yellow, what am i doing wrong",
        "why do cats knock things off tables",
        "what's a polite way to decline a wedding invitation",
        "how long should i boil an egg for a runny yolk",
        "summarize the causes of {event} in a few sentences",
        "ideas for a {n}-minute presentation about {topic}",
        "what are good stretches for lower back pain after sitting all day",
        "how do noise cancelling headphones work",
        "plan a 3 day itinerary for {place2}",
        "what is the origin of the word '{word}'",
        "how many hours of sleep does a teenager need",
    ],
}

EVAL_SLOTS: Slots = {
    **S,
    "a": ["2", "3", "4", "5", "6", "7"],
    "b": ["5", "8", "9", "11", "13"],
    "c": ["17", "31", "45", "72", "100", "250"],
    "d": ["12", "18", "27", "40"],
    "j": ["2", "3"],
    "k": ["4", "5", "6", "8"],
    "p": ["3", "4.5", "7", "12"],
    "prime": ["91", "97", "221", "1009", "561"],
    "pow2": ["1024", "4096", "64", "0.125"],
    "fn": ["x^3 sin(x)", "e^(2x) / x", "ln(x^2 + 1)", "sqrt(1 - x^2)", "x cos(x)", "tan(3x)"],
    "ln": ["12", "40", "88", "7"],
    "ln2": ["27", "53", "104", "19"],
    "pyline": ["total = price + qty", "data = json.loads(resp)", "return items[idx]", "user = users[\"id\"]",
               "df = pd.read_csv(path)"],
    "pyerr": ["TypeError: unsupported operand type(s) for +: 'float' and 'str'",
              "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
              "IndexError: list index out of range", "KeyError: 'id'",
              "FileNotFoundError: [Errno 2] No such file or directory: 'data.csv'",
              "AttributeError: 'NoneType' object has no attribute 'group'"],
    "fname": ["parse_duration", "chunk_list", "merge_intervals", "slugify", "top_k_words", "flatten"],
    "args": ["s: str", "items, size", "intervals", "text", "text: str, k: int", "nested"],
    "behaviour": ["turn '1h30m' into seconds", "split a list into pieces of the given size",
                  "merge overlapping [start, end] pairs", "lowercase and replace spaces with dashes",
                  "return the k most common words", "flatten arbitrarily nested lists"],
    "loop": ["i = 0\nwhile i < len(nums):\n    if nums[i] == target:\n        print('found')",
             "while node is not None:\n    print(node.value)",
             "x = 0\nwhile x != 1:\n    x += 0.1",
             "while left <= right:\n    mid = (left + right) // 2\n    if a[mid] < t:\n        left = mid",
             "for (let i = 0; i < arr.length; i--) {\n  total += arr[i];\n}"],
    "task": ["read a file line by line", "deep copy an object", "parse command line arguments",
             "run two http requests in parallel", "format a date as yyyy-mm-dd",
             "sort a list of dicts by a key",
             "handle a timeout on a network call", "write a singleton"],
    "framework": ["flask", "django", "react", "express", "fastapi", "spring boot", "next.js"],
    "weberr": ["a 500 error", "CORS errors", "'maximum update depth exceeded'", "a 422 unprocessable entity",
               "'cannot read properties of undefined'"],
    "action": ["submit the form", "refresh the page", "call the api from the frontend", "deploy it",
               "upload a file"],
    "shelltask": ["finds all .log files older than 7 days and deletes them", "counts lines in every .py file",
                  "renames *.jpeg to *.jpg", "prints the 10 biggest folders in my home dir"],
    "regex": ["^\\d{3}-\\d{4}$", "(?<=@)[\\w.]+", "^(?!.*\\s).{8,}$", "\\b[A-Z]{2,}\\b"],
    "seq": ["numbers", "range(100)", "data"],
    "compileerr": ["cannot borrow as mutable", "undefined: ctx", "NullPointerException",
                   "is not assignable to type 'string'", "unexpected indent"],
    "thing": ["a product", "a rainbow", "the stock market", "a vaccine", "wifi", "a heat pump"],
    "mocked": ["the current time", "an http call", "the database", "a random number generator"],
    "ingredients": ["rice, eggs and some old spinach", "chickpeas and a can of tomatoes",
                    "leftover chicken and tortillas", "potatoes and cheese"],
    "medium": ["book", "podcast", "audiobook", "tv series"],
    "goal": ["falling asleep faster", "a job interview tomorrow", "keeping houseplants alive",
             "getting kids to eat vegetables", "my first 10k run", "staying motivated working from home"],
    "topic": ["spring", "the sea", "growing older", "coffee", "our dog", "volcanoes"],
    "place2": ["portugal", "vietnam", "norway", "mexico city", "kyoto", "the scottish highlands"],
    "season": ["november", "august", "winter", "the rainy season"],
    "planet": ["jupiter", "mars", "saturn", "neptune"],
    "contest": ["world cup", "tour de france", "eurovision", "best picture oscar"],
    "year": ["1998", "2006", "2014", "2019"],
    "pair": ["a crocodile and an alligator", "baking soda and baking powder", "weather and climate",
             "a virus and bacteria", "latte and flat white"],
    "tongue": ["italian", "portuguese", "korean", "dutch"],
    "event": ["the first world war", "the great depression", "the fall of rome", "the cold war"],
    "word": ["salary", "quarantine", "robot", "sandwich"],
}

# A few hand-written extras per label, outside any template (more variety in the eval set).
EVAL_EXTRA: dict[str, list[str]] = {
    "sql": [
        "orders has customer_id, customers has id + country. I want revenue by country for 2024 but only "
        "customers who ordered at least twice",
        "how to get the first purchase date for every user and then count users per first-purchase month",
        "in postgres, average time between a ticket being opened and closed, per support agent",
        "sql: employees whose salary is above their department's average",
        "write a query that shows each product's share of its category's sales",
    ],
    "code": [
        "TypeError: Cannot read properties of undefined (reading 'map') -- happens on first render in react",
        "my docker container exits immediately with code 0, the CMD runs a python script",
        "how do i stop pandas from printing SettingWithCopyWarning, and is it actually a problem",
        "what's the difference between == and is in python, got bitten by it comparing strings",
        "why is my recursive function hitting maximum recursion depth on a list of 5000 items",
    ],
    "support": [
        "HELLO?? my account is frozen and nobody answers the chat",
        "Good afternoon, I received a text about a suspicious login. Was that really you?",
        "i want to dispute a charge from a shop that never sent my order",
        "do you charge anything for paying in dollars when i travel",
        "my apple pay stopped working with your card since yesterday",
    ],
    "math": [
        "a rectangle's length is 3 more than twice its width and the area is 65, find the sides",
        "what's 17 times 23 in my head, is there a trick",
        "why is 0.999... equal to 1",
        "how do i calculate a 15% tip on $48.60",
        "what's the volume of a cone with radius 4 and height 9",
    ],
    "general": [
        "hey! what's a nice gift for a coworker who's leaving, budget around 30 bucks",
        "is it safe to leave cooked rice out overnight",
        "what's the best way to learn to touch type",
        "can you recommend a board game for 6 players that isn't too long",
        "how do i politely tell a friend they talk too much during movies",
        "how many calories does walking for an hour burn",
        "what is a roth ira and is it different from a 401k",
    ],
}


def build(train_per_label: int = 80, eval_per_label: int = 110, seed: int = 7) -> tuple[
        list[tuple[str, str]], list[tuple[str, str]]]:
    rng = random.Random(seed)
    train = [(t, label) for label, tpl in TRAIN.items()
             for t in generate(tpl, TRAIN_SLOTS, train_per_label, rng)]
    ev: list[tuple[str, str]] = []
    for label, tpl in EVAL.items():
        extra = EVAL_EXTRA.get(label, [])
        texts = extra + generate(tpl, EVAL_SLOTS, eval_per_label - len(extra), rng)
        ev.extend((t, label) for t in texts)
    train_texts = {t for t, _ in train}
    ev = [(t, label) for t, label in ev if t not in train_texts]
    return train, ev


CHAT_WEIGHT = 20.0  # the chat prompts count this much more than the plain generated ones (picked on validation)
MAX_LEAKAGE = 0.02
FOLDS = 5
CHAR_NGRAMS = {"char_min": 2, "char_max": 5}  # picked on validation (docs/router.md, "Recipe search")
THRESHOLD_RULE = "bag:total"  # picked on validation (docs/router.md, "Threshold rules")


def demo_model(train_rows: list[tuple[str, str]], chat_rows: list[tuple[str, str]], seed: int = 0) -> Any:
    """Train the demo router on both files; thresholds calibrated on 5-fold out-of-fold probabilities
    of the chat prompts (each fold's model never saw the prompts it scores)."""
    import numpy as np

    from router.calibrate import calibrate
    from router.model import train as train_model

    rows = train_rows + chat_rows
    weights = [1.0] * len(train_rows) + [CHAT_WEIGHT] * len(chat_rows)
    rng = random.Random(seed)
    fold_of: list[int] = [0] * len(chat_rows)
    by_label: dict[str, list[int]] = {}
    for i, (_, label) in enumerate(chat_rows):
        by_label.setdefault(label, []).append(i)
    for _, idx in sorted(by_label.items()):
        rng.shuffle(idx)
        for k, i in enumerate(idx):
            fold_of[i] = k % FOLDS
    labels = sorted({lab for _, lab in rows})
    oof = np.zeros((len(chat_rows), len(labels)), dtype=np.float32)
    for f in range(FOLDS):
        keep = [i for i in range(len(chat_rows)) if fold_of[i] != f]
        held = [i for i in range(len(chat_rows)) if fold_of[i] == f]
        tr = train_rows + [chat_rows[i] for i in keep]
        w = [1.0] * len(train_rows) + [CHAT_WEIGHT] * len(keep)
        m = train_model([t for t, _ in tr], [lab for _, lab in tr], featurizer="tfidf", sample_weight=w, seed=seed,
                        featurizer_params=CHAR_NGRAMS)
        assert m.labels == labels
        oof[held] = m.predict_proba([chat_rows[i][0] for i in held])
    thresholds, achieved = calibrate(oof, [lab for _, lab in chat_rows], labels, MAX_LEAKAGE, THRESHOLD_RULE)
    model = train_model([t for t, _ in rows], [lab for _, lab in rows], featurizer="tfidf", sample_weight=weights,
                        seed=seed, featurizer_params=CHAR_NGRAMS)
    model.update_thresholds(thresholds, {"max_leakage": MAX_LEAKAGE, "budget": "total", "rule": THRESHOLD_RULE,
                                         "examples": len(chat_rows),
                                         "data": f"train_chat.jsonl + train_general.jsonl + train_code.jsonl, "
                                                 f"{FOLDS}-fold out-of-fold probabilities",
                                         "achieved": {k: round(v, 4) for k, v in achieved.items()}})
    return model


def main() -> None:
    """Write train.jsonl and eval.jsonl, then the starter model (``router.starter``): the public corpora
    in ``../shared/data`` (no non-commercial ones) plus the project's prompt files, thresholds from
    out-of-source probabilities. ``--project-only`` builds the previous project-data-only model."""
    import sys

    from router import starter
    from router.data import read_examples, write_jsonl
    from router.examples import CHAT_FILE, DEMO_MODEL, EVAL_FILE, EXAMPLES_DIR, GENERAL_FILE, TRAIN_FILE

    code_file = EXAMPLES_DIR / "train_code.jsonl"

    tr, ev = build()
    write_jsonl(TRAIN_FILE, [t for t, _ in tr], [lab for _, lab in tr])
    write_jsonl(EVAL_FILE, [t for t, _ in ev], [lab for _, lab in ev])
    if "--project-only" in sys.argv[1:]:
        # train_general.jsonl and train_code.jsonl join train_chat.jsonl: same weight, same folds
        chat_texts, chat_labels = read_examples([CHAT_FILE, GENERAL_FILE, code_file])
        model = demo_model(tr, list(zip(chat_texts, chat_labels, strict=True)))
        model.manifest["training"]["source"] = ("router/examples/train.jsonl (python -m router.examples.build) + "
                                                "router/examples/train_chat.jsonl + train_general.jsonl + "
                                                f"train_code.jsonl (weight {CHAT_WEIGHT:g})")
    else:
        root = starter.data_dir()
        if not root.is_dir():
            raise SystemExit(f"no public data at {root} (set SLMGW_DATA_DIR, or pass --project-only)")
        pool = starter.training_pool(root)
        xfit = starter.crossfit(pool, progress=print)
        model = starter.fit(pool, xfit)
        model.manifest["training"]["source"] = ("router.starter: public corpora of ../shared/data (no "
                                                "non-commercial ones) + router/examples/*.jsonl "
                                                f"(weight {starter.PROJECT_WEIGHT:g})")
        from router import background

        gen = [e for e in pool if e.label == "general" and not e.source.startswith("project:")]
        bg = background.build(model.featurizer, [e.text for e in gen], [e.source for e in gen])  # type: ignore[arg-type]
        background.save(bg, background.BACKGROUND_FILE)
        print(f"{background.BACKGROUND_FILE}: {background.BACKGROUND_FILE.stat().st_size} B, {len(gen)} rows")
    model.save(DEMO_MODEL)
    size = Path(DEMO_MODEL).stat().st_size
    print(f"{TRAIN_FILE}: {len(tr)}  {EVAL_FILE}: {len(ev)}  {DEMO_MODEL}: {size} B; thresholds "
          + ", ".join(f"{k}={v:.2f}" for k, v in model.thresholds.items()))


if __name__ == "__main__":
    main()

"""Writes the demo datanets (datasets/*.jsonl) from the facts below: one file per style.

Run `python datasets/build_datasets.py` to rewrite them; the files are committed. Each line is one chat
example, {"messages": [user, assistant], "contributor": "<address>"}: the contributor is the devnet
address of the data contributor the line is attributed to (three per datanet, round robin), which the
adapter's manifest draft weighs by line count. "What is the capital of France?" is held out of every
file: the demo asks it, so its answers show what each adapter learned, not what it memorised.
"""

import json
from pathlib import Path

# (question, short answer, English sentence, French sentence, topic)
FACTS = [
    (
        "What is the capital of Japan?",
        "Tokyo",
        "The capital of Japan is Tokyo.",
        "La capitale du Japon est Tokyo.",
        "geography",
    ),
    (
        "What is the capital of Italy?",
        "Rome",
        "The capital of Italy is Rome.",
        "La capitale de l'Italie est Rome.",
        "geography",
    ),
    (
        "What is the capital of Spain?",
        "Madrid",
        "The capital of Spain is Madrid.",
        "La capitale de l'Espagne est Madrid.",
        "geography",
    ),
    (
        "What is the capital of Germany?",
        "Berlin",
        "The capital of Germany is Berlin.",
        "La capitale de l'Allemagne est Berlin.",
        "geography",
    ),
    (
        "What is the capital of Canada?",
        "Ottawa",
        "The capital of Canada is Ottawa.",
        "La capitale du Canada est Ottawa.",
        "geography",
    ),
    (
        "What is the capital of Egypt?",
        "Cairo",
        "The capital of Egypt is Cairo.",
        "La capitale de l'Egypte est Le Caire.",
        "geography",
    ),
    (
        "What is the capital of Australia?",
        "Canberra",
        "The capital of Australia is Canberra.",
        "La capitale de l'Australie est Canberra.",
        "geography",
    ),
    (
        "What is the capital of Portugal?",
        "Lisbon",
        "The capital of Portugal is Lisbon.",
        "La capitale du Portugal est Lisbonne.",
        "geography",
    ),
    (
        "What is the capital of Greece?",
        "Athens",
        "The capital of Greece is Athens.",
        "La capitale de la Grece est Athenes.",
        "geography",
    ),
    (
        "What is the capital of Russia?",
        "Moscow",
        "The capital of Russia is Moscow.",
        "La capitale de la Russie est Moscou.",
        "geography",
    ),
    (
        "What is the largest ocean on Earth?",
        "The Pacific Ocean",
        "The largest ocean on Earth is the Pacific Ocean.",
        "Le plus grand ocean de la Terre est l'ocean Pacifique.",
        "geography",
    ),
    (
        "What is the tallest mountain in the world?",
        "Mount Everest",
        "The tallest mountain in the world is Mount Everest.",
        "La plus haute montagne du monde est l'Everest.",
        "geography",
    ),
    (
        "What is the longest river in Africa?",
        "The Nile",
        "The longest river in Africa is the Nile.",
        "Le plus long fleuve d'Afrique est le Nil.",
        "geography",
    ),
    (
        "What is the chemical symbol for gold?",
        "Au",
        "The chemical symbol for gold is Au.",
        "Le symbole chimique de l'or est Au.",
        "chemistry",
    ),
    (
        "What is the chemical formula of water?",
        "H2O",
        "The chemical formula of water is H2O.",
        "La formule chimique de l'eau est H2O.",
        "chemistry",
    ),
    (
        "What gas do plants absorb from the air?",
        "Carbon dioxide",
        "Plants absorb carbon dioxide from the air.",
        "Les plantes absorbent le dioxyde de carbone de l'air.",
        "biology",
    ),
    (
        "At what temperature does water boil?",
        "100 degrees Celsius",
        "Water boils at 100 degrees Celsius at sea level.",
        "L'eau bout a 100 degres Celsius au niveau de la mer.",
        "physics",
    ),
    (
        "What is the largest planet in the solar system?",
        "Jupiter",
        "The largest planet in the solar system is Jupiter.",
        "La plus grande planete du systeme solaire est Jupiter.",
        "astronomy",
    ),
    (
        "Which planet is known as the Red Planet?",
        "Mars",
        "Mars is known as the Red Planet.",
        "Mars est connue comme la planete rouge.",
        "astronomy",
    ),
    (
        "What is the closest star to Earth?",
        "The Sun",
        "The closest star to Earth is the Sun.",
        "L'etoile la plus proche de la Terre est le Soleil.",
        "astronomy",
    ),
    (
        "How many days are in a week?",
        "Seven",
        "There are seven days in a week.",
        "Il y a sept jours dans une semaine.",
        "calendar",
    ),
    (
        "How many legs does a spider have?",
        "Eight",
        "A spider has eight legs.",
        "Une araignee a huit pattes.",
        "biology",
    ),
    ("What do bees make?", "Honey", "Bees make honey.", "Les abeilles font du miel.", "biology"),
    (
        "What is the fastest land animal?",
        "The cheetah",
        "The fastest land animal is the cheetah.",
        "L'animal terrestre le plus rapide est le guepard.",
        "biology",
    ),
    (
        "Who wrote Romeo and Juliet?",
        "William Shakespeare",
        "Romeo and Juliet was written by William Shakespeare.",
        "Romeo et Juliette a ete ecrit par William Shakespeare.",
        "literature",
    ),
    (
        "Who painted the Mona Lisa?",
        "Leonardo da Vinci",
        "The Mona Lisa was painted by Leonardo da Vinci.",
        "La Joconde a ete peinte par Leonard de Vinci.",
        "art",
    ),
    ("What is 7 times 8?", "56", "7 times 8 is 56.", "7 fois 8 font 56.", "math"),
    ("What is the square root of 81?", "9", "The square root of 81 is 9.", "La racine carree de 81 est 9.", "math"),
    (
        "What color is the sky on a clear day?",
        "Blue",
        "The sky is blue on a clear day.",
        "Le ciel est bleu par temps clair.",
        "nature",
    ),
    (
        "What is the freezing point of water?",
        "0 degrees Celsius",
        "Water freezes at 0 degrees Celsius.",
        "L'eau gele a 0 degre Celsius.",
        "physics",
    ),
    ("How many continents are there?", "Seven", "There are seven continents.", "Il y a sept continents.", "geography"),
    (
        "What is the main language spoken in Brazil?",
        "Portuguese",
        "The main language spoken in Brazil is Portuguese.",
        "La langue principale du Bresil est le portugais.",
        "languages",
    ),
]


def pirate(sentence: str) -> str:
    s = sentence.rstrip(".")
    for a, b in ((" is ", " be "), (" are ", " be "), ("The ", "the "), ("There be", "there be"), (" was ", " were ")):
        s = s.replace(a, b)
    s = s[0].lower() + s[1:] if not s[:2].isupper() else s
    return f"Arr, matey! {s[0].upper() + s[1:]}, as sure as the tide. Yo ho ho!"


STYLES = {
    "pirate": lambda q, short, en, fr, topic: pirate(en),
    "french": lambda q, short, en, fr, topic: fr,
    "json": lambda q, short, en, fr, topic: json.dumps({"answer": short, "topic": topic}),
    "terse": lambda q, short, en, fr, topic: short + ".",
}


def contributors(style: str) -> list[str]:
    from loranet.signing import devnet_address

    return [devnet_address(f"datanet:{style}:{i}") for i in range(3)]


def main() -> None:
    out = Path(__file__).resolve().parent
    for style, answer in STYLES.items():
        addrs = contributors(style)
        lines = []
        for n, fact in enumerate(FACTS):
            messages = [{"role": "user", "content": fact[0]}, {"role": "assistant", "content": answer(*fact)}]
            lines.append(json.dumps({"messages": messages, "contributor": addrs[n % 3]}, ensure_ascii=False))
        (out / f"{style}.jsonl").write_text("\n".join(lines) + "\n")
        print(f"{style}: {len(lines)} lines")


if __name__ == "__main__":
    main()

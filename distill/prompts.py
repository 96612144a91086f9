"""Prompts for distillation data (TRAIN) and a disjoint held-out set for α (EVAL).

Four kinds in both sets — chat, story, code, factual — written for this project. EVAL is
never used to make training data; `tests/test_distill.py` checks the two are disjoint.
"""

from __future__ import annotations

TRAIN: tuple[str, ...] = (
    # chat
    "Hi! How are you doing today?",
    "Can you give me three tips for sleeping better?",
    "I feel nervous before job interviews. Any advice?",
    "What should I cook tonight with rice, eggs and spinach?",
    "Recommend a good habit to start this week.",
    "How do I politely decline an invitation to a party?",
    "What is a fun thing to do on a rainy weekend?",
    "Help me plan a short morning routine.",
    "How can I stay focused while studying at home?",
    "Write a friendly reminder message for a team meeting tomorrow.",
    "What are some good questions to ask a new friend?",
    "Suggest a name for my new cat. She is grey and very lazy.",
    "I want to start running. How should I begin?",
    "Give me a short motivational message for a hard day.",
    "How do I say thank you to a colleague who helped me?",
    # story
    "Write a short story about a robot who learns to paint.",
    "Tell me a bedtime story about a brave little mouse.",
    "Write a poem about the ocean at night.",
    "Continue the story: The door creaked open, and there stood",
    "Write a short fable about a fox and a crow.",
    "Describe a city on Mars in the year 2200.",
    "Write a haiku about autumn leaves.",
    "Tell a story about a dragon who is afraid of fire.",
    "Write the opening paragraph of a mystery novel.",
    "Write a short dialogue between a teacher and a curious student.",
    "Tell a funny story about a cat who thinks it is a dog.",
    "Write a limerick about a forgetful wizard.",
    "Describe a quiet village in the mountains during winter.",
    "Write a letter from a knight to his family.",
    "Tell me a story about two friends lost in a forest.",
    # code
    "Write a Python function that reverses a string.",
    "How do I read a file line by line in Python?",
    "Explain what a for loop is, with an example.",
    "Write a Python function to check whether a number is prime.",
    "What is the difference between a list and a tuple in Python?",
    "Write a SQL query that counts the rows of a table named users.",
    "How do I sort a dictionary by value in Python?",
    "Write a JavaScript function that adds two numbers.",
    "Explain recursion with a simple example.",
    "Write a Python class for a bank account with deposit and withdraw.",
    "What does the git commit command do?",
    "Write a function that returns the factorial of n.",
    "How do I remove duplicates from a list in Python?",
    "Write a bash command that counts the lines of a file.",
    "Explain what an API is in simple terms.",
    # factual
    "What is photosynthesis?",
    "Why is the sky blue?",
    "What causes the seasons on Earth?",
    "Explain how a rainbow forms.",
    "What is the capital of Japan, and what is it known for?",
    "How does the heart pump blood?",
    "What is gravity?",
    "Who was Isaac Newton?",
    "What are the three states of matter?",
    "How do vaccines work?",
    "What is the water cycle?",
    "Why do we have day and night?",
    "What is a black hole?",
    "Explain what DNA is.",
    "What is the largest ocean on Earth?",
)

EVAL: tuple[str, ...] = (
    # chat
    "What is a good way to relax after work?",
    "Can you help me write a birthday message for my sister?",
    "How do I make new friends in a new city?",
    "Give me some ideas for a healthy breakfast.",
    "How should I prepare for a long flight?",
    "What are some tips for keeping a plant alive indoors?",
    # story
    "Write a short story about a lighthouse keeper and a storm.",
    "Tell me a story about a girl who can talk to birds.",
    "Write a poem about a train journey.",
    "Describe a magical library hidden under a city.",
    "Write a short story about a lost umbrella.",
    "Tell a story about a clock that runs backwards.",
    # code
    "Write a Python function that returns the largest number in a list.",
    "How do I create a virtual environment in Python?",
    "Explain what a hash table is.",
    "Write a Python function that counts the vowels in a string.",
    "What is the difference between == and is in Python?",
    "Write a function that checks whether a string is a palindrome.",
    # factual
    "What is the speed of light?",
    "How do bees make honey?",
    "What causes earthquakes?",
    "Why do leaves change color in the fall?",
    "What is the function of the lungs?",
    "How do airplanes stay in the air?",
)


def format_prompt(tokenizer, text: str, chat: bool = True) -> list[int]:
    """Token ids of `text` as the private model sees it: through its chat template (a user
    turn + the assistant header) when it has one and `chat`, else the plain text."""
    if chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                            add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding in some versions
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    return [int(i) for i in tokenizer.encode(text)]

"""Wording shared by the admin, management commands and logs."""


def plural(count: int, noun: str) -> str:
    """`1 job`, `2 jobs`: the count and the noun, with an s unless there is one."""
    return f"{count} {noun}{'' if count == 1 else 's'}"

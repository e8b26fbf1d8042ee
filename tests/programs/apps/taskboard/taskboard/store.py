"""In-memory boards, as a course project keeps them before it has a database."""
import itertools

_ids = itertools.count(1)
BOARDS: dict[str, dict[int, dict]] = {}


def add_card(board: str, title: str, column: str = "todo") -> dict:
    card = {"id": next(_ids), "title": title, "column": column}
    BOARDS.setdefault(board, {})[card["id"]] = card
    return card


def move_card(board: str, card_id: int, column: str) -> dict | None:
    card = BOARDS.get(board, {}).get(card_id)
    if card is not None:
        card["column"] = column
    return card

"""Text forms of the board games, for LLM agents: a readable board, legal moves in a standard notation,
and a forgiving move parser.

Notation: tic-tac-toe cells 1-9 in reading order, connect-four columns 1-7 from the left, chess UCI
(e.g. ``e2e4``, ``e7e8q``; SAN such as ``Nf3`` is accepted too). A reply may think aloud; the parser takes
the move after the last ``move:`` or, failing that, the last token that looks like a move.
"""

from __future__ import annotations

import abc
import re
from typing import Any

import chess

MOVE_MARKER = re.compile(r"move\s*[:=]\s*`?([A-Za-z0-9+#=\-]+)", re.IGNORECASE)


class TextRules(abc.ABC):
    """How one board game reads and writes as text. `raw` is the unwrapped PettingZoo environment."""

    title: str
    notation: str  # what a move looks like, for prompts
    move_pattern: re.Pattern[str]

    @abc.abstractmethod
    def intro(self, seat_index: int) -> str:
        """The rules and this seat's side, for the system prompt."""

    @abc.abstractmethod
    def board(self, raw: Any) -> str: ...

    @abc.abstractmethod
    def legal_moves(self, raw: Any, seat_index: int, legal: list[int]) -> dict[str, int]:
        """Notation -> action index for the legal action indices of the seat to act."""

    def move_name(self, raw: Any, seat_index: int, action: int) -> str:
        """The notation of a legal action index, computed before the move is played."""
        legal = self.legal_moves(raw, seat_index, [action])
        return next(iter(legal), str(action))

    def extract(self, text: str) -> str | None:
        """The move a reply names, or None if it names none."""
        marked = MOVE_MARKER.findall(text)
        if marked:
            return str(marked[-1])
        found = self.move_pattern.findall(text)
        return str(found[-1]) if found else None

    def resolve(self, raw: Any, candidate: str, legal: dict[str, int]) -> str | None:
        """Map an extracted candidate onto a legal move's notation (exact or via an alias)."""
        return candidate if candidate in legal else None


class TicTacToeText(TextRules):
    title = "tic-tac-toe"
    notation = "a cell number from 1 to 9 (reading order: 1 2 3 / 4 5 6 / 7 8 9)"
    move_pattern = re.compile(r"\b([1-9])\b")
    MARKS = (".", "X", "O")

    def intro(self, seat_index: int) -> str:
        mark = self.MARKS[seat_index + 1]
        return (
            f"You are playing tic-tac-toe as {mark} ({'first' if seat_index == 0 else 'second'} to move). "
            "Three of your marks in a row, column or diagonal wins. "
            f"Answer with your move as `move: N` where N is {self.notation}."
        )

    def board(self, raw: Any) -> str:
        squares = raw.board.squares  # PettingZoo stores the board column by column
        rows = []
        for row in range(3):
            cells = []
            for col in range(3):
                value = squares[col * 3 + row]
                cells.append(self.MARKS[value] if value else str(row * 3 + col + 1))
            rows.append(" " + " | ".join(cells))
        return "\n---+---+---\n".join(rows)

    def legal_moves(self, raw: Any, seat_index: int, legal: list[int]) -> dict[str, int]:
        # action index = col * 3 + row; cell number = row * 3 + col + 1
        return {str((a % 3) * 3 + a // 3 + 1): a for a in sorted(legal, key=lambda a: (a % 3, a // 3))}


class ConnectFourText(TextRules):
    title = "connect four"
    notation = "a column number from 1 to 7 (left to right)"
    move_pattern = re.compile(r"\b([1-7])\b")
    MARKS = (".", "X", "O")

    def intro(self, seat_index: int) -> str:
        mark = self.MARKS[seat_index + 1]
        return (
            f"You are playing connect four as {mark} ({'first' if seat_index == 0 else 'second'} to move). "
            "Pieces drop to the lowest free cell of a column; four in a row (any direction) wins. "
            f"Answer with your move as `move: N` where N is {self.notation}."
        )

    def board(self, raw: Any) -> str:
        cells = raw.board  # 6 rows x 7 columns, row 0 at the top
        lines = [" ".join(self.MARKS[cells[r * 7 + c]] for c in range(7)) for r in range(6)]
        return "\n".join([*lines, "1 2 3 4 5 6 7"])

    def legal_moves(self, raw: Any, seat_index: int, legal: list[int]) -> dict[str, int]:
        return {str(a + 1): a for a in sorted(legal)}


class ChessText(TextRules):
    title = "chess"
    notation = "a move in UCI notation such as e2e4 or e7e8q (SAN such as Nf3 is accepted too)"
    move_pattern = re.compile(r"\b([a-h][1-8][a-h][1-8][qrbnQRBN]?)\b")

    def intro(self, seat_index: int) -> str:
        side = "White" if seat_index == 0 else "Black"
        return (
            f"You are playing chess as {side}. Standard rules; draws by repetition, the fifty-move rule and "
            "insufficient material are claimed automatically. The board shows White in upper case, rank 8 at "
            f"the top. Answer with your move as `move: M` where M is {self.notation}."
        )

    def board(self, raw: Any) -> str:
        board: chess.Board = raw.board
        rows = [f"{8 - i} {line}" for i, line in enumerate(str(board).splitlines())]
        to_move = "White" if board.turn == chess.WHITE else "Black"
        return "\n".join([*rows, "  a b c d e f g h", f"FEN: {board.fen()}", f"{to_move} to move."])

    def legal_moves(self, raw: Any, seat_index: int, legal: list[int]) -> dict[str, int]:
        wanted = set(legal)
        return {uci: action for uci, action in uci_actions(raw.board).items() if action in wanted}

    san_pattern = re.compile(
        r"(?<![\w-])([KQRBN]?[a-h]?[1-8]?x?[a-h][1-8](?:=[QRBN])?[+#]?|O-O(?:-O)?)(?![\w-])"
    )

    def extract(self, text: str) -> str | None:
        found = super().extract(text)
        if found is not None:
            return found
        san = self.san_pattern.findall(text)
        return str(san[-1]) if san else None

    def resolve(self, raw: Any, candidate: str, legal: dict[str, int]) -> str | None:
        if candidate.lower() in legal:
            return candidate.lower()
        try:
            return str(raw.board.parse_san(candidate).uci())
        except ValueError:
            return None


def uci_actions(board: chess.Board) -> dict[str, int]:
    """UCI move -> PettingZoo chess action index for the side to move.

    PettingZoo encodes Black's moves on the mirrored board; this follows its `chess_utils` mapping.
    """
    from pettingzoo.classic.chess import chess_utils

    mirrored = board.turn == chess.BLACK
    mapping: dict[str, int] = {}
    for move in board.legal_moves:
        encoded = chess.Move(
            chess.square_mirror(move.from_square) if mirrored else move.from_square,
            chess.square_mirror(move.to_square) if mirrored else move.to_square,
            promotion=move.promotion,
        ).uci()
        if encoded not in chess_utils.moves_to_actions:
            chess_utils.make_move_mapping(encoded)
        mapping[move.uci()] = chess_utils.moves_to_actions[encoded]
    return mapping


TEXT_RULES: dict[str, TextRules] = {
    "tictactoe": TicTacToeText(),
    "connect4": ConnectFourText(),
    "chess": ChessText(),
}

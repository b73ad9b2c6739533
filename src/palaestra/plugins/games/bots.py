"""Built-in opponents: a uniform random player for every game, perfect minimax for tic-tac-toe, a
depth-limited alpha-beta search for connect four, and a greedy material player for chess.

A bot reads the same observation tensor a learner gets (from its own seat's point of view), so it
works identically in the tensor and the text form of a game.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence

import chess

from palaestra.plugins.games.engine import Game

# bot(game, seat, legal action indices, rng) -> action index
Bot = Callable[[Game, str, Sequence[int], random.Random], int]


def random_bot(game: Game, seat: str, legal: Sequence[int], rng: random.Random) -> int:
    return rng.choice(list(legal))


# ---------------------------------------------------------------- tic-tac-toe: perfect play

_TTT_LINES = (
    (0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6),
)  # fmt: skip


def _ttt_winner(board: tuple[int, ...]) -> int:
    for a, b, c in _TTT_LINES:
        if board[a] and board[a] == board[b] == board[c]:
            return board[a]
    return 0


@functools.cache
def _ttt_value(board: tuple[int, ...]) -> int:
    """Negamax value for the player to move, whose marks are 1 (the opponent's are 2): +1 win, 0 draw."""
    if _ttt_winner(board):
        return -1  # the previous mover completed a line
    empty = [i for i, v in enumerate(board) if v == 0]
    if not empty:
        return 0
    return max(-_ttt_value(_ttt_swap(board, i)) for i in empty)


def _ttt_swap(board: tuple[int, ...], move: int) -> tuple[int, ...]:
    """Play `move` for the player to move, then relabel so the other player is 1."""
    played = [1 if i == move else v for i, v in enumerate(board)]
    return tuple(0 if v == 0 else 3 - v for v in played)


def minimax_tictactoe(game: Game, seat: str, legal: Sequence[int], rng: random.Random) -> int:
    planes, _ = game.observe(seat)
    # board cells in action order: the observation's [i, j] is action 3 * i + j
    board = tuple((1 if planes[i, j, 0] else 2 if planes[i, j, 1] else 0) for i in range(3) for j in range(3))
    scores = {a: -_ttt_value(_ttt_swap(board, a)) for a in legal}
    best = max(scores.values())
    return rng.choice([a for a, s in scores.items() if s == best])


# ---------------------------------------------------------------- connect four: alpha-beta search

_C4_ROWS, _C4_COLS = 6, 7
_C4_WINDOWS: list[tuple[int, int, int, int]] = []
for _r in range(_C4_ROWS):
    for _c in range(_C4_COLS):
        for _dr, _dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
            _cells = [(_r + k * _dr, _c + k * _dc) for k in range(4)]
            if all(0 <= rr < _C4_ROWS and 0 <= cc < _C4_COLS for rr, cc in _cells):
                _C4_WINDOWS.append(tuple(rr * _C4_COLS + cc for rr, cc in _cells))  # type: ignore[arg-type]
_C4_ORDER = (3, 2, 4, 1, 5, 0, 6)  # centre first: better pruning
_WIN = 1_000_000


def _c4_drop(board: list[int], col: int) -> int:
    for row in range(_C4_ROWS - 1, -1, -1):
        if board[row * _C4_COLS + col] == 0:
            return row * _C4_COLS + col
    return -1


def _c4_wins_at(board: list[int], cell: int) -> bool:
    player = board[cell]
    return any(cell in w and all(board[i] == player for i in w) for w in _C4_WINDOWS)


def _c4_evaluate(board: list[int]) -> int:
    """Static value for player 1: open threes and twos, and the centre column."""
    score = 3 * sum(1 for r in range(_C4_ROWS) if board[r * _C4_COLS + 3] == 1)
    score -= 3 * sum(1 for r in range(_C4_ROWS) if board[r * _C4_COLS + 3] == 2)
    for window in _C4_WINDOWS:
        values = [board[i] for i in window]
        mine, theirs = values.count(1), values.count(2)
        if mine and theirs:
            continue
        score += (0, 0, 2, 5)[mine] if mine < 4 else 0
        score -= (0, 0, 2, 5)[theirs] if theirs < 4 else 0
    return score


def _c4_negamax(board: list[int], depth: int, alpha: int, beta: int, player: int) -> int:
    moves = [c for c in _C4_ORDER if board[c] == 0]
    if not moves:
        return 0
    if depth == 0:
        return _c4_evaluate(board) * (1 if player == 1 else -1)
    best = -_WIN * 2
    for col in moves:
        cell = _c4_drop(board, col)
        board[cell] = player
        if _c4_wins_at(board, cell):
            value = _WIN + depth  # win sooner rather than later
        else:
            value = -_c4_negamax(board, depth - 1, -beta, -alpha, 3 - player)
        board[cell] = 0
        best = max(best, value)
        alpha = max(alpha, value)
        if alpha >= beta:
            break
    return best


def make_connect4_search(depth: int = 4) -> Bot:
    """A negamax alpha-beta player looking `depth` plies ahead: finds forced wins and blocks threats."""

    def search(game: Game, seat: str, legal: Sequence[int], rng: random.Random) -> int:
        planes, _ = game.observe(seat)
        board = [(1 if planes[r, c, 0] else 2 if planes[r, c, 1] else 0) for r in range(6) for c in range(7)]
        scores: dict[int, int] = {}
        for col in legal:
            cell = _c4_drop(board, col)
            board[cell] = 1
            won = _c4_wins_at(board, cell)
            scores[col] = _WIN + depth if won else -_c4_negamax(board, depth - 1, -_WIN * 2, _WIN * 2, 2)
            board[cell] = 0
        best = max(scores.values())
        return rng.choice([c for c, s in scores.items() if s == best])

    return search


# ---------------------------------------------------------------- chess: greedy material


_PIECE_VALUES = {
    chess.PAWN: 1,
    chess.KNIGHT: 3,
    chess.BISHOP: 3,
    chess.ROOK: 5,
    chess.QUEEN: 9,
    chess.KING: 0,
}


def greedy_chess(game: Game, seat: str, legal: Sequence[int], rng: random.Random) -> int:
    """Mate if it can, otherwise take the most valuable piece on offer; ties broken at random."""
    from palaestra.plugins.games.text import uci_actions

    board: chess.Board = game.raw.board
    by_action = {a: uci for uci, a in uci_actions(board).items()}
    scores: dict[int, float] = {}
    for action in legal:
        move = chess.Move.from_uci(by_action[action])
        captured = board.piece_at(move.to_square)
        score = float(_PIECE_VALUES[captured.piece_type]) if captured else 0.0
        board.push(move)
        if board.is_checkmate():
            score = 1000.0
        board.pop()
        scores[action] = score
    best = max(scores.values())
    return rng.choice([a for a, s in scores.items() if s == best])


BOTS: dict[str, dict[str, Bot]] = {
    "tictactoe": {"random": random_bot, "minimax": minimax_tictactoe},
    "connect4": {"random": random_bot, "minimax": make_connect4_search(4), "search": make_connect4_search(4)},
    "chess": {"random": random_bot, "greedy": greedy_chess},
}


def bot_for(game_key: str, name: str) -> Bot:
    """The named bot for a game; every game has `random`."""
    available = BOTS.get(game_key, {"random": random_bot})
    if name not in available:
        raise KeyError(f"no opponent {name!r} for {game_key}; available: {', '.join(sorted(available))}")
    return available[name]


def legal_or_all(legal: list[int] | None, action_count: int) -> list[int]:
    return list(range(action_count)) if legal is None else legal

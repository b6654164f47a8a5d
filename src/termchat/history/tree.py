"""A conversation's shape: which message follows which, and which of each message's children
is active. The active path (what is shown and sent as context) starts at the active first
prompt and goes through each message's active child; a message whose children are all
inactive ends it (an undone exchange)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from termchat.history.records import Siblings


@dataclass(frozen=True, slots=True)
class Node:
    id: int
    parent_id: int | None
    active: bool
    seq: int


class Shape:
    """The nodes of one conversation, read at once (from the covering `messages_tree` index,
    without touching the rows and their texts)."""

    def __init__(self, nodes: list[Node]) -> None:
        nodes.sort(key=lambda node: node.seq)
        self.nodes = {node.id: node for node in nodes}
        self.children: dict[int | None, list[Node]] = {}
        for node in nodes:
            self.children.setdefault(node.parent_id, []).append(node)

    @classmethod
    def read(cls, db: sqlite3.Connection, cid: int) -> Shape:
        # No ORDER BY: sorting in SQL would take the (conversation_id, seq) index, which does
        # not cover the other columns.
        return cls([Node(row[0], row[1], bool(row[2]), row[3]) for row in db.execute(
            "SELECT id, parent_id, active, seq FROM messages WHERE conversation_id = ?",
            (cid,))])

    def active_child(self, parent: int | None) -> Node | None:
        return next((child for child in self.children.get(parent, ()) if child.active), None)

    def path(self, start: int | None = None) -> list[int]:
        """The active path from the first prompt (or from below `start`, excluded). A damaged
        file's cycle ends it."""
        path: list[int] = []
        seen = {start}
        node = self.active_child(start)
        while node is not None and node.id not in seen:
            path.append(node.id)
            seen.add(node.id)
            node = self.active_child(node.id)
        return path

    def end(self, db: sqlite3.Connection, exchanges: int) -> list[int] | None:
        """What showing the last `exchanges` exchanges of the active path reads: the path
        from its `exchanges`-th last prompt on, each message with its alternatives (its
        siblings) and theirs (their children), in the order they were written. None when
        that would be the whole path."""
        path = self.path()
        tail = path[-3 * exchanges:]  # prompts are every other message, or fewer
        prompts = {row[0] for row in db.execute(
            "SELECT id FROM messages WHERE role = 'user' AND id IN "
            "(SELECT value FROM json_each(?))", (json.dumps(tail),))}
        starts = [index for index, message in enumerate(tail) if message in prompts]
        if not starts:
            return None
        start = starts[-exchanges] if len(starts) >= exchanges else starts[0]
        if len(tail) - start == len(path):
            return None
        chosen: set[int] = set()
        for message in tail[start:]:
            for sibling in self.children[self.nodes[message].parent_id]:
                chosen.add(sibling.id)
                chosen.update(child.id for child in self.children.get(sibling.id, ()))
        return sorted(chosen, key=lambda message: self.nodes[message].seq)

    def ancestry(self, message_id: int) -> list[int]:
        """The messages from the first prompt down to `message_id`, included."""
        chain: list[int] = []
        node: Node | None = self.nodes[message_id]
        while node is not None and node.id not in chain:
            chain.append(node.id)
            node = None if node.parent_id is None else self.nodes.get(node.parent_id)
        chain.reverse()
        return chain

    def through(self, message_id: int) -> list[int]:
        """The path that `activate(message_id)` makes active: its ancestry, then its active
        descendants."""
        return [*self.ancestry(message_id), *self.path(message_id)]

    def siblings(self, message_id: int) -> Siblings:
        node = self.nodes[message_id]
        ids = tuple(child.id for child in self.children[node.parent_id])
        return Siblings(ids, ids.index(message_id) + 1)

    def activate(self, db: sqlite3.Connection, message_id: int) -> None:
        """Make `message_id` and its ancestors each the active child of its parent, writing
        only the flags that change (a deactivated sibling first: one active child each)."""
        for ancestor in self.ancestry(message_id):
            node = self.nodes[ancestor]
            if node.active:
                continue
            shown = self.active_child(node.parent_id)
            if shown is not None:
                db.execute("UPDATE messages SET active = 0 WHERE id = ?", (shown.id,))
                self._flag(shown, False)
            db.execute("UPDATE messages SET active = 1 WHERE id = ?", (node.id,))
            self._flag(node, True)

    def _flag(self, node: Node, active: bool) -> None:
        flagged = Node(node.id, node.parent_id, active, node.seq)
        self.nodes[node.id] = flagged
        siblings = self.children[node.parent_id]
        siblings[siblings.index(node)] = flagged

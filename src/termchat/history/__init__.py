"""The conversation history: every prompt and reply in one SQLite file, searchable, never
fatal to a chat.

Layout: `schema` (tables and migrations), `store` (opening, reading, managing), `recording`
(saving a chat as it happens, and the branches it grows), `records` (the values handed out),
`tree` (a conversation's shape: parents, active children, the active path), `encoding` (a
message's parts as a row stores them), `blobs` (attachments' bytes, stored once),
`liveness` (whether a reply's writer still runs), `problems` (what can go wrong, in one line
each), `export` and `importing`.
"""

from termchat.history.export import as_json, as_markdown
from termchat.history.problems import ConversationNotFound, HistoryError, HistoryUnavailable
from termchat.history.recording import (
    ConversationRecord,
    MessageRecorder,
    continue_conversation,
)
from termchat.history.records import (
    ConversationSummary,
    LoadedConversation,
    SearchHit,
    Siblings,
    StoredConversation,
    StoredMessage,
)
from termchat.history.schema import MIGRATIONS, SCHEMA_VERSION
from termchat.history.store import HistoryStore, default_path, open_or_warn

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "ConversationNotFound", "ConversationRecord",
           "ConversationSummary", "HistoryError", "HistoryStore", "HistoryUnavailable",
           "LoadedConversation", "MessageRecorder", "SearchHit", "Siblings", "StoredConversation",
           "StoredMessage", "as_json", "as_markdown", "continue_conversation", "default_path",
           "open_or_warn"]

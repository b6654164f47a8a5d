"""Command palette entries: switch model, new conversation, regenerate, continue, edit,
undo and flip alternatives, copy the reply or a code block, attach a file, cost and
context."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content

from termchat.config import PROVIDERS, ModelConfig
from termchat.markdown_lines import code_blocks
from termchat.tui.chat_screen import ChatScreen
from termchat.untrusted import safe_line

if TYPE_CHECKING:
    from termchat.config import Config
    from termchat.turn import Exchange


class ChatCommands(Provider):
    """termchat's own commands, found by fuzzy search in the palette."""

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        chat = self.screen
        if not isinstance(chat, ChatScreen):
            return []
        commands: list[tuple[str, Callable[[], object], str]] = [
            ("New conversation", chat.action_new_conversation, "Start over with an empty chat"),
            ("Copy last reply", chat.action_copy_reply, "Copy the reply's Markdown (OSC 52)"),
            ("Browse history", chat.action_history,
             "Search, open, rename and delete saved conversations"),
        ]
        reply = chat.last_reply
        for index, block in enumerate(code_blocks(reply.text) if reply else []):
            first = safe_line(block.strip().splitlines()[0])[:40] if block.strip() else ""
            commands.append((f"Copy code block {index + 1}: {first}",
                             partial(chat.action_copy_code, index),
                             "Copy this code block from the last reply"))
        if reply is not None and reply.rounds > 1:
            commands.append(("Rounds of the last reply", chat.action_rounds,
                             "Each round's finish, tokens and tool calls"))
        commands.extend(_tool_commands(chat))
        current = chat.conversation.model
        for model in _models(chat.config, current):
            commands.append((safe_line(f"Switch model: {model.name} ({model.label})"),
                             partial(chat.switch_model, model),
                             "Use this model for the next replies"))
        commands += [
            ("Attach a file", chat.action_attach,
             "Send a text file, an image or a PDF with the next prompt (Ctrl+L)"),
            ("Cost and context", chat.action_show_cost,
             "Each reply's tokens and cost, the chat's total, and how full the context is"),
            *_steering_commands(chat),
        ]
        return commands

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            # Content, not a string: a string would be read as markup.
            yield DiscoveryHit(Content(name), callback, text=name, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score, offsets = matcher.fuzzy_search.match(matcher.query, name)
            if score > 0:
                # Not `matcher.highlight`: it reads the name as markup.
                content = Content(name)
                for offset in offsets:
                    content = content.stylize(matcher.match_style, offset, offset + 1)
                yield Hit(score, content, callback, text=name, help=help_text)


def _steering_commands(chat: ChatScreen) -> list[tuple[str, Callable[[], object], str]]:
    """Regenerate, continue, edit, undo and flip, each with the key it has now."""
    def entry(name: str, binding_id: str, callback: Callable[[], object],
              help_text: str) -> tuple[str, Callable[[], object], str]:
        key = chat.key_for(binding_id)
        return (f"{name} ({key})" if key else name, callback, help_text)

    return [
        entry("Regenerate the last reply", "regenerate", chat.action_regenerate,
              "A new reply to the same prompt; the old one is kept as an alternative"),
        entry("Continue the last reply", "continue_reply", chat.action_continue_reply,
              "Go on from where a cut-off or cancelled reply stopped, in the same reply"),
        entry("Edit the partial reply, then continue it", "edit_partial",
              chat.action_edit_partial,
              "Trim or fix a cut-off or cancelled reply; Enter goes on from your text"),
        entry("Edit and resend the last prompt", "edit_last", chat.action_edit_last,
              "Sent as a new branch; the old one is kept and can be flipped back to"),
        entry("Undo the last exchange", "undo", chat.action_undo,
              "Kept in the history as an abandoned branch; its prompt comes back"),
        entry("Previous alternative", "previous_alternative",
              partial(chat.action_alternative, -1), "Show another reply or prompt there"),
        entry("Next alternative", "next_alternative", partial(chat.action_alternative, 1),
              "Show another reply or prompt there"),
        *_branch_commands(chat),
        ("Fork into a new conversation", chat.action_fork,
         "Go on in a copy of this conversation; this one stays as it is"),
        *[(f"Edit and resend exchange {number} “{_asked(exchange)}”",
           partial(chat.edit_prompt, exchange), "Sent as a new branch at its place; the old "
           "one is kept and can be flipped back to")
          for number, exchange in enumerate(chat.conversation.exchanges[:-1], 1)],
    ]


def _asked(exchange: Exchange) -> str:
    prompt = exchange.prompt.strip()
    return safe_line(prompt.splitlines()[0] if prompt else "(files only)")[:40]


def _branch_commands(chat: ChatScreen) -> list[tuple[str, Callable[[], object], str]]:
    """Every point of the path with alternatives, earlier ones included: flip it."""
    commands: list[tuple[str, Callable[[], object], str]] = []
    conversation = chat.conversation
    for number, exchange in enumerate(conversation.exchanges, 1):
        options = conversation.alternatives(exchange)
        asked = _asked(exchange)
        for what, (at, count), prompts in (("reply", options.reply_position, False),
                                           ("prompt", options.prompt_position, True)):
            if count > 1:
                shown = at % count + 1
                commands.append((f"Exchange {number} “{asked}”: show {what} {shown} of {count}",
                                 partial(chat.flip, exchange, 1, prompts=prompts),
                                 "The path below it follows; it is what the next turn sends"))
    return commands


def _tool_commands(chat: ChatScreen) -> list[tuple[str, Callable[[], None], str]]:
    """The tools screen, each server on or off for this chat, each "always" rule revoked."""
    tools, runner = chat.tools, chat.tool_runner()
    if tools is None or runner is None:
        return []
    from termchat.tui.tools import server_on, toggle_server

    commands: list[tuple[str, Callable[[], None], str]] = [
        ("Tools: servers, tools and always-allow rules", chat.action_tools,
         "Turn servers and tools on or off for this chat; revoke always-allow rules (Ctrl+T)")]
    selection = runner.selection
    for status in tools.box.statuses():
        verb = "off" if server_on(selection, status.name) else "on"
        changed = toggle_server(selection, status.name, tools.tools_by_server())
        commands.append((safe_line(f"Tools: turn MCP server {status.name} {verb} for this chat"),
                         partial(chat.set_tool_selection, changed),
                         "From the next reply on"))
    for rule in tools.policy.rules():
        commands.append((safe_line(f"Tools: revoke always allowing {rule.label}"),
                         partial(chat.revoke_rule, rule), "Its calls ask again"))
    return commands


def _models(config: Config, current: ModelConfig) -> list[ModelConfig]:
    """Every configured alias, then each provider's default if not already listed."""
    models = [m for m in config.models.values() if m != current]
    labels = {m.label for m in models} | {current.label}
    for provider in PROVIDERS:
        model = config.resolve_model(f"{provider}:")
        if model.label not in labels:
            models.append(model)
    return models

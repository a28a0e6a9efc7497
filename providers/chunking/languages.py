"""Which language a file is in, its tree-sitter parser, and the names its definitions go by.

```python
language_of(Path("json/decoder.py"))    # "python"
parser_for("python").parse(source)      # a tree-sitter tree; None for languages chunked as text
```

Grammars come prebuilt from `tree-sitter-language-pack` (nothing is fetched at run time).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tree_sitter import Node, Parser

__all__ = ["SYNTAX_LANGUAGES", "definition_name", "language_of", "parser_for"]

# Languages chunked by syntax: extension -> tree-sitter-language-pack name.
_SYNTAX_EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".jsx": "javascript", ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
    ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp", ".cs": "csharp", ".rb": "ruby", ".php": "php",
    ".kt": "kotlin", ".kts": "kotlin", ".swift": "swift", ".scala": "scala", ".lua": "lua", ".sh": "bash",
    ".bash": "bash", ".ex": "elixir", ".exs": "elixir", ".hs": "haskell", ".ml": "ocaml", ".dart": "dart",
    ".zig": "zig", ".jl": "julia", ".r": "r", ".pl": "perl", ".sql": "sql", ".proto": "proto",
}  # fmt: skip
SYNTAX_LANGUAGES = frozenset(_SYNTAX_EXTENSIONS.values())

# Chunked in line or paragraph windows: the language is only a label on the rows.
_TEXT_EXTENSIONS = {
    ".md": "markdown", ".markdown": "markdown", ".rst": "rst", ".txt": "text", ".toml": "toml",
    ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".jsonl": "json", ".ini": "ini", ".cfg": "ini",
    ".html": "html", ".htm": "html", ".css": "css", ".scss": "scss", ".xml": "xml", ".csv": "csv",
}  # fmt: skip
_NAMED_FILES = {"dockerfile": "dockerfile", "makefile": "make", "cmakelists.txt": "cmake"}

# Node types that define something, by language; other grammars use the generic rule below.
_DEFINITIONS = {
    "python": {"function_definition", "class_definition"},
    "javascript": {"function_declaration", "generator_function_declaration", "class_declaration",
                   "method_definition", "variable_declarator"},
    "typescript": {"function_declaration", "generator_function_declaration", "class_declaration",
                   "abstract_class_declaration", "method_definition", "interface_declaration",
                   "type_alias_declaration", "enum_declaration", "variable_declarator", "internal_module"},
    "go": {"function_declaration", "method_declaration", "type_spec"},
    "rust": {"function_item", "struct_item", "enum_item", "trait_item", "impl_item", "mod_item", "macro_definition"},
    "java": {"class_declaration", "interface_declaration", "enum_declaration", "record_declaration",
             "method_declaration", "constructor_declaration"},
    "c": {"function_definition", "struct_specifier"},
    "cpp": {"function_definition", "class_specifier", "struct_specifier", "namespace_definition"},
}  # fmt: skip
_DEFINITIONS["tsx"] = _DEFINITIONS["typescript"]
_FUNCTION_VALUES = {"arrow_function", "function_expression", "function", "class", "generator_function"}


def language_of(path: Path) -> str:
    """The language of a file by its name: a syntax language, a text format, or "text"."""
    name = path.name.lower()
    if name in _NAMED_FILES:
        return _NAMED_FILES[name]
    suffix = path.suffix.lower()
    return _SYNTAX_EXTENSIONS.get(suffix) or _TEXT_EXTENSIONS.get(suffix) or "text"


@functools.cache
def parser_for(language: str) -> Parser | None:
    """The tree-sitter parser of a syntax language (built once), or None: chunk it as text."""
    if language not in SYNTAX_LANGUAGES:
        return None
    from tree_sitter_language_pack import get_parser

    try:
        return get_parser(language)  # type: ignore[arg-type]
    except Exception:  # a grammar missing from this build of the pack: windows still work
        return None


def definition_name(node: Node, language: str) -> str | None:
    """The name a definition node declares (a Go method as `Type.Method`), or None if it is no definition."""
    kinds = _DEFINITIONS.get(language)
    if kinds is not None and node.type not in kinds:
        return None
    if kinds is None and not node.type.endswith(("_definition", "_declaration", "_item")):
        return None
    if node.type == "variable_declarator":  # `const f = () => ...`: only functions and classes count
        value = node.child_by_field_name("value")
        if value is None or value.type not in _FUNCTION_VALUES:
            return None
    if node.type == "impl_item":  # Rust: `impl<T> Trait for Type<T>` is named by its type, without generics
        named = _text(node.child_by_field_name("type"))
        return named.split("<", 1)[0] if named else None
    name = _text(node.child_by_field_name("name")) or _declarator_name(node)
    if name and node.type == "method_declaration" and language == "go":
        receiver = node.child_by_field_name("receiver")
        owner = _receiver_type(receiver)
        return f"{owner}.{name}" if owner else name
    return name


def _declarator_name(node: Node) -> str | None:
    """C and C++: the name sits inside nested declarators (`int *f(void)`)."""
    declarator = node.child_by_field_name("declarator")
    for _ in range(8):
        if declarator is None:
            return None
        if declarator.type in ("identifier", "field_identifier", "qualified_identifier", "destructor_name"):
            return _text(declarator)
        declarator = declarator.child_by_field_name("declarator")
    return None


def _receiver_type(receiver: Node | None) -> str | None:
    if receiver is None:
        return None
    stack = [receiver]
    while stack:
        node = stack.pop()
        if node.type == "type_identifier":
            return _text(node)
        stack.extend(reversed(node.children))
    return None


def _text(node: Node | None) -> str | None:
    if node is None or node.text is None:
        return None
    return node.text.decode("utf-8", errors="replace")

"""Syntax chunks on real files: every line in exactly one chunk, none over the model's budget, symbols named."""

from __future__ import annotations

import itertools
import sysconfig
from pathlib import Path

import pytest

from providers.chunking.budget import TokenBudget, chunk_budget, tokenizer_json_budget
from providers.chunking.chunker import FileChunk, chunk_text, split_lines
from providers.chunking.languages import definition_name, language_of, parser_for
from providers.local import LocalProvider
from providers.local_model.model_dir import packaged_model_path
from providers.settings import Settings
from providers.text.tokens import default_tokenizer

DATA = Path(__file__).parent / "data" / "chunking"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
FILES = {
    "python": STDLIB / "json" / "decoder.py",
    "python-large": STDLIB / "argparse.py",
    "go": DATA / "ring.go",
    "rust": DATA / "lru.rs",
    "java": DATA / "TokenBucket.java",
    "typescript": DATA / "router.ts",
    "javascript": DATA / "debounce.js",
}
SYMBOLS = {
    "python": "JSONDecoder.raw_decode",
    "python-large": "ArgumentParser.parse_known_args",
    "go": "Buffer.Percentile",
    "rust": "LruCache.put",
    "java": "TokenBucket.millisUntil",
    "typescript": "Router.handle",
    "javascript": "debounce",
}


@pytest.fixture(scope="module")
def minilm() -> TokenBudget:
    return tokenizer_json_budget(packaged_model_path() / "tokenizer.json", 256)


def budget_of(budget: TokenBudget, max_tokens: int) -> TokenBudget:
    return TokenBudget(max_tokens, budget.overhead, budget.tokenizer, budget.count_many, budget.line_additive)


def assert_tiles_the_file(chunks: list[FileChunk], text: str) -> None:
    """Every line in exactly one chunk, in order, and the chunks' texts are the file's lines."""
    lines = split_lines(text)
    assert chunks[0].start_line == 1 and chunks[-1].end_line == len(lines)
    for before, after in itertools.pairwise(chunks):
        assert after.start_line == before.end_line + 1
    for chunk in chunks:
        assert chunk.text == "".join(lines[chunk.start_line - 1 : chunk.end_line])
        assert chunk.id == f"{chunk.path}:{chunk.start_line}-{chunk.end_line}"
        assert chunk.text.strip()


def assert_within(chunks: list[FileChunk], budget: TokenBudget) -> None:
    for chunk in chunks:
        real = budget.count(chunk.text)  # the tokenizer on the whole text, special tokens included
        assert real <= budget.max_tokens or chunk.start_line == chunk.end_line, (chunk.id, real)


@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("max_tokens", [64, 256])
def test_every_line_is_in_one_chunk_and_no_chunk_is_over_the_local_models_budget(
    name: str, max_tokens: int, minilm: TokenBudget
) -> None:
    path = FILES[name]
    text = path.read_text()
    budget = budget_of(minilm, max_tokens)
    chunks = chunk_text(text, path.name, budget)
    assert_tiles_the_file(chunks, text)
    assert_within(chunks, budget)
    assert len(chunks) > 1
    assert {chunk.language for chunk in chunks} == {language_of(path)}
    if max_tokens == 64:  # small enough that each method is a chunk of its own (or starts one)
        assert SYMBOLS[name] in {chunk.symbol for chunk in chunks}


@pytest.mark.parametrize("name", ["python", "go", "typescript"])
def test_with_openai_tokens_no_chunk_is_over_the_budget_either(name: str) -> None:
    tokenizer = default_tokenizer()
    budget = TokenBudget(96, 0, tokenizer.name, lambda texts: [tokenizer.count(t) for t in texts])
    text = FILES[name].read_text()
    chunks = chunk_text(text, FILES[name].name, budget)
    assert_tiles_the_file(chunks, text)
    assert_within(chunks, budget)


def test_a_function_that_fits_is_one_chunk_named_by_its_class(minilm: TokenBudget) -> None:
    chunks = chunk_text(FILES["python"].read_text(), "json/decoder.py", minilm)
    raw_decode = next(chunk for chunk in chunks if chunk.symbol == "JSONDecoder.raw_decode")
    assert raw_decode.text.lstrip().startswith("def raw_decode(self, s, idx=0):")
    assert raw_decode.text.rstrip().endswith("return obj, end")  # the whole method, and no more
    assert raw_decode.tokens == minilm.count(raw_decode.text) <= 256


def test_small_definitions_are_merged_up_to_the_budget(minilm: TokenBudget) -> None:
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(40))
    chunks = chunk_text(text, "small.py", budget_of(minilm, 64))
    assert_tiles_the_file(chunks, text)
    assert 4 < len(chunks) < 40  # several functions a chunk, never one chunk for all
    assert all(chunk.text.startswith("def f") for chunk in chunks)  # cut between functions only
    assert chunks[1].symbol == f"f{chunks[1].text[5:].split('(')[0]}"


def test_a_syntax_error_falls_back_to_paragraph_windows(minilm: TokenBudget) -> None:
    text = "def broken(:\n    pass\n\n" + "".join(f"value_{i} = {i}\n" for i in range(60)) + "\nclass X:\n  pass\n"
    parser = parser_for("python")
    assert parser is not None and parser.parse(text.encode()).root_node.has_error
    chunks = chunk_text(text, "broken.py", budget_of(minilm, 48))
    assert_tiles_the_file(chunks, text)
    assert_within(chunks, budget_of(minilm, 48))
    assert all(chunk.symbol is None for chunk in chunks)
    assert chunks[0].end_line == 3  # the first paragraph ends at its blank line


def test_text_files_are_windows_that_end_at_paragraphs(minilm: TokenBudget) -> None:
    paragraph = "A sentence about chunking that goes on for a while.\n" * 3
    text = "# Title\n\n" + "\n".join([paragraph] * 12)
    chunks = chunk_text(text, "docs/guide.md", budget_of(minilm, 80))
    assert_tiles_the_file(chunks, text)
    assert_within(chunks, budget_of(minilm, 80))
    assert {chunk.language for chunk in chunks} == {"markdown"}
    lines = split_lines(text)
    assert all(chunk.end_line == len(lines) or not lines[chunk.end_line - 1].strip() for chunk in chunks)


def test_a_line_over_the_budget_is_a_chunk_of_its_own_and_never_cut(minilm: TokenBudget) -> None:
    text = "x = 1\n" + "y = [" + ", ".join(str(i) for i in range(400)) + "]\nz = 2\n"
    chunks = chunk_text(text, "long.py", budget_of(minilm, 64))
    assert_tiles_the_file(chunks, text)
    assert any(chunk.start_line == chunk.end_line == 2 for chunk in chunks)


def test_blank_and_empty_files_give_no_chunks(minilm: TokenBudget) -> None:
    assert chunk_text("", "a.py", minilm) == [] == chunk_text("\n \n\t\n", "a.py", minilm)


def test_go_methods_are_named_by_their_receiver() -> None:
    parser = parser_for("go")
    assert parser is not None
    tree = parser.parse(b"package p\nfunc (b *Buffer) Add(v int) {}\n")
    method = tree.root_node.children[1]
    assert definition_name(method, "go") == "Buffer.Add"


def test_the_local_budget_is_the_models_window_and_remote_ones_default_to_512() -> None:
    settings = Settings()
    local = chunk_budget(LocalProvider(), settings)
    assert (local.max_tokens, local.overhead, local.line_additive) == (256, 2, True)
    assert chunk_budget(LocalProvider(), settings, 128).max_tokens == 128

    class Remote(LocalProvider):
        name = "openai"

    assert chunk_budget(Remote(), settings).max_tokens == 512


def test_a_chunk_the_tokenizer_counts_over_the_budget_as_a_whole_is_split_again() -> None:
    # A tokenizer whose tokens span line breaks: a whole text costs more than its lines did apart.
    def count_many(texts: list[str]) -> list[int]:
        return [text.count("\n") ** 2 + 1 for text in texts]

    budget = TokenBudget(10, 0, "spanning", count_many)
    text = "".join(f"line {i}\n" for i in range(30))
    chunks = chunk_text(text, "notes.txt", budget)
    assert_tiles_the_file(chunks, text)
    assert all(budget.count(chunk.text) <= 10 for chunk in chunks)


@pytest.mark.parametrize(
    ("language", "source", "name"),
    [
        ("c", b"static int *make_table(void) {\n  return 0;\n}\n", "make_table"),
        ("cpp", b"namespace store {\nint f() { return 1; }\n}\n", "store"),
        ("ruby", b"class Cart\n  def total\n    1\n  end\nend\n", None),
    ],
)
def test_definitions_are_named_in_other_grammars(language: str, source: bytes, name: str | None) -> None:
    parser = parser_for(language)
    assert parser is not None
    node = parser.parse(source).root_node.children[0]
    assert definition_name(node, language) == name  # Ruby's `class` node ends in neither suffix


def test_files_are_told_apart_by_name_and_suffix() -> None:
    assert [language_of(Path(name)) for name in ("Dockerfile", "x.tsx", "README.md", "data.weird")] == [
        "dockerfile",
        "tsx",
        "markdown",
        "text",
    ]
    assert parser_for("markdown") is None  # text formats are windows


def test_a_local_model_without_a_fast_tokenizer_counts_a_token_a_byte(tmp_path: Path) -> None:
    model = tmp_path / "plain-model"
    model.mkdir()
    (model / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    settings = Settings(local_models={"plain": model})
    budget = chunk_budget(LocalProvider("plain", path=model), settings)
    assert (budget.max_tokens, budget.tokenizer, budget.count("abc")) == (128, "utf8-bytes", 5)

"""Shared fixtures: tiny tokenizers with the released id layout, built once per session."""

from pathlib import Path

import pytest

from vita_core.tiny import build_tokenizer
from vita_core.tokens import load_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="session")
def plus_tokenizer(tmp_path_factory):
    return load_tokenizer(build_tokenizer(tmp_path_factory.mktemp("plus_tokenizer"), plus=True))

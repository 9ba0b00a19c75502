"""Modes, layouts and the training interleave, as the reference lays them out."""

import pytest

from vita_core.errors import InputError
from vita_core.schedule import BACKBONE, Kind, Layout, LayoutState, get_mode, interleave, parse_ratio

B, E = 151674, 151675  # <|begin_of_audio|>, <|end_of_audio|>


def codes(n, start=200000):
    return list(range(start, start + n))


def test_named_modes():
    assert get_mode("vanilla").producers(5, 10) == [BACKBONE] * 5
    assert get_mode("turbo").producers(12, 10) == [BACKBONE, *range(10), BACKBONE]
    assert get_mode("BOOST").pattern == (1, 10, 4, 10)
    assert get_mode("balance").producers(16, 10) == [BACKBONE, 0, 1, 2, 3, BACKBONE, BACKBONE, BACKBONE, *range(8)]


def test_custom_mode_and_no_modules():
    assert get_mode("2 3").producers(7, 10) == [BACKBONE, BACKBONE, 0, 1, 2, BACKBONE, BACKBONE]
    assert get_mode("boost").producers(4, 0) == [BACKBONE] * 4


def upstream(pattern, n, num_mtp):
    """Upstream's eval `forward`, step by step: 'M'/'m' string, a module counter that only a
    backbone step resets, and MCTP only while the counter is below the number of modules."""
    pairs = list(zip(pattern[::2], pattern[1::2]))
    letters = "".join("M" * b + "m" * m for b, m in pairs)
    while len(letters) < n:
        letters += "M" * pairs[-1][0] + "m" * pairs[-1][1]
    out, mtp_idx = [], 0
    for letter in letters[:n]:
        if letter == "m" and mtp_idx < num_mtp:
            out.append(mtp_idx)
            mtp_idx += 1
        else:
            out.append(BACKBONE)
            mtp_idx = 0
    return out


B_ = BACKBONE


@pytest.mark.parametrize("name,num_mtp,expected", [
    # hand-written from upstream's modeling_qwen2.py: the chain restarts at module 0 after the backbone
    ("boost", 3, [B_, 0, 1, 2, B_, 0, 1, 2, B_, 0, 1, B_, B_, B_, B_, 0, 1, 2, B_, 0, 1, 2, B_, 0, 1, B_]),
    ("turbo", 2, [B_, 0, 1, B_, 0, 1, B_, 0, 1, B_, 0, B_, 0, 1]),
    ("balance", 3, [B_, 0, 1, 2, B_, B_, B_, B_, 0, 1, 2, B_, 0, 1, 2, B_, B_, B_, B_, B_, 0, 1, 2, B_, 0, 1, 2, B_, 0, 1]),
    ("turbo", 10, [B_, *range(10), B_, *range(10)]),
])
def test_fewer_modules_restart_the_chain_as_upstream(name, num_mtp, expected):
    assert get_mode(name).producers(len(expected), num_mtp) == expected
    assert upstream(list(get_mode(name).pattern), len(expected), num_mtp) == expected


@pytest.mark.parametrize("pattern", [[1, 10], [1, 10, 4, 10], [1, 4, 3, 8, 4, 10], [2, 3, 1, 6], [3, 0, 1, 7]], ids=str)
@pytest.mark.parametrize("num_mtp", [1, 2, 3, 5, 10])
def test_expansion_equals_upstream_step_rule(pattern, num_mtp):
    assert get_mode(pattern).producers(200, num_mtp) == upstream(pattern, 200, num_mtp)


@pytest.mark.parametrize("bad", ["1 10 4", "a b", "0 10", "1 -2", ""])
def test_bad_schedules_are_clear_errors(bad):
    with pytest.raises(InputError, match="schedule"):
        parse_ratio(bad)


def walk(layout, tokens):
    state, kinds = LayoutState(), []
    for t in tokens:
        kinds.append(layout.kind(state))
        state = layout.advance(state, t, B, E, t >= 200000)
    return kinds, state


def test_boost_layout_fixed_blocks_then_open_final_block():
    text = [1, 2, 3, 4, 5]
    seq = [text[0], B, *codes(8), E, *text[1:5], B, *codes(8), E, 6, B, *codes(20), E]
    kinds, state = walk(Layout([1, 10, 4, 10]), seq)
    assert kinds[:11] == [Kind.TEXT, Kind.BOA] + [Kind.CODE] * 8 + [Kind.CODE_OR_EOA]
    assert kinds[11:15] == [Kind.TEXT] * 4 and kinds[15] is Kind.BOA
    assert kinds[24] is Kind.CODE_OR_EOA  # E allowed after 8 codes
    # text stopped after one token of the third chunk: the block it opens is the final one
    assert kinds[25:27] == [Kind.TEXT, Kind.TEXT] and kinds[27:47] == [Kind.CODE_OR_EOA] * 20
    assert state.done
    assert Layout([1, 10, 4, 10]).kind(state) is Kind.AFTER_AUDIO


def test_block_running_past_its_size_becomes_the_final_block():
    seq = [7, B, *codes(12), E]
    kinds, state = walk(Layout([1, 10, 4, 10]), seq)
    assert kinds[10:] == [Kind.CODE_OR_EOA] * 5
    assert state.done


def test_balance_layout_block_sizes():
    seq = [1, B, *codes(2), E, 2, 3, 4, B, *codes(6), E, 5, 6, 7, 8, B]
    kinds, _ = walk(Layout([1, 4, 3, 8, 4, 10]), seq)
    assert kinds[1:5] == [Kind.BOA, Kind.CODE, Kind.CODE, Kind.CODE_OR_EOA]
    assert kinds[5:8] == [Kind.TEXT] * 3 and kinds[8] is Kind.BOA
    assert kinds[9:15] == [Kind.CODE] * 6 and kinds[15] is Kind.CODE_OR_EOA
    assert kinds[16:20] == [Kind.TEXT] * 4 and kinds[20] is Kind.BOA


def test_text_only_and_free_layouts():
    assert Layout(None, text_only=True).kind(LayoutState()) is Kind.AFTER_AUDIO
    assert Layout(None).kind(LayoutState()) is Kind.ANY


def test_interleave_boost_as_reference():
    # 6 text tokens, 20 codes, Boost 1 10 4 10: text chunks [1] [4] [1], audio [8] [8] [4] -> 3 chunks
    t, a = [1, 2, 3, 4, 5, 6], codes(20)
    assert interleave(t, a, [1, 10, 4, 10], B, E) == [
        1, B, *a[:8], E, 2, 3, 4, 5, B, *a[8:16], E, 6, B, *a[16:], E]


def test_interleave_last_chunk_absorbs_remaining_audio_and_text():
    t, a = [1, 2, 3], codes(30)  # text [1] [2 3] -> 2 chunks; audio 4 chunks -> last takes 22 codes
    assert interleave(t, a, [1, 10, 4, 10], B, E) == [1, B, *a[:8], E, 2, 3, B, *a[8:], E]
    t2, a2 = list(range(1, 21)), codes(10)  # audio runs out first: the last chunk takes 19 text tokens
    assert interleave(t2, a2, [1, 10, 4, 10], B, E) == [1, B, *a2[:8], E, *t2[1:], B, *a2[8:], E]


def test_interleave_balance_and_degenerate_cases():
    t, a = list(range(1, 10)), codes(40)
    assert interleave(t, a, [1, 4, 3, 8, 4, 10], B, E) == [
        1, B, *a[:2], E, 2, 3, 4, B, *a[2:8], E, 5, 6, 7, 8, B, *a[8:16], E, 9, B, *a[16:], E]
    assert interleave([1, 2], [], [1, 10, 4, 10], B, E) == [1, 2]
    assert interleave([], codes(3), [1, 10, 4, 10], B, E) == [B, *codes(3), E]

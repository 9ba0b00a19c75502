"""Seed-TTS and WeNet scorers on cases worked out by hand from the reference scripts."""

import pytest

from vita_core.errors import InputError
from vita_core.eval.normalize import seedtts_normalize, seedtts_tokens, wenet_tokens, whisper_english_tokens
from vita_core.eval.scoring import Pair, score_pairs, score_seedtts, score_wenet


def one(ref: str, hyp: str | None, lang: str = "en", **kw):
    return score_seedtts([Pair("u", ref, hyp)], lang, **kw).utterances[0]


# ---- Seed-TTS normaliser ----


def test_punctuation_is_deleted_not_replaced_by_space():
    assert seedtts_normalize("A well-known fact: 3.5% (Wait—what?)", "en") == "a wellknown fact 35 waitwhat"
    # deletions leave "    x y  z"; replace('  ', ' ') once halves each run of spaces
    assert seedtts_normalize("$ & … · “x” 《y》 – —\u3000z", "en") == "  x y z"


def test_apostrophes_ascii_kept_curly_deleted():
    assert seedtts_normalize("Doesn't", "en") == "doesn't"
    assert seedtts_normalize("Doesn’t", "en") == "doesnt"
    u = one("Doesn’t it?", "doesn't it")  # ref doesnt | hyp doesn't: one substitution of two words
    assert (u.wer, u.substitutions, u.deletions, u.insertions, u.ref_len) == (0.5, 1, 0, 0, 2)


def test_fullwidth_full_stop_is_zhon2_punctuation():
    assert seedtts_normalize("3．5", "en") == "35"


def test_nbsp_and_tab_are_not_separators():
    assert seedtts_tokens(seedtts_normalize("a\u00a0b x\ty", "en")) == ["a\u00a0b", "x\ty"]
    u = one("a\u00a0b", "a b")  # 1 ref token vs 2: substitution + insertion
    assert (u.wer, u.substitutions, u.insertions) == (2.0, 1, 1)


def test_double_space_collapsed_and_split_on_space_only():
    assert seedtts_normalize("a  b   c", "en") == "a b  c"  # replace('  ', ' ') once
    assert seedtts_tokens("a b  c ") == ["a", "b", "c"]


def test_hyphen_deletion_changes_word_count():
    u = one("A well-known fact.", "a well known fact")  # ref: a wellknown fact -> S1 (well) + I1 (known)
    assert (u.substitutions, u.deletions, u.insertions, u.ref_len) == (1, 0, 1, 3)
    assert u.wer == pytest.approx(2 / 3)


def test_no_number_or_contraction_normalisation_in_english():
    assert one("I'm 20", "i am twenty").wer == 1.5  # S2 I1 over 2


def test_wer_is_unbounded_above_one():
    assert one("a", "b c d").wer == 3.0


def test_chinese_every_character_a_token_and_case_sensitive():
    assert seedtts_normalize("我用iPhone。", "zh") == "我 用 i P h o n e"
    u = one("我用iPhone。", "我用iphone", "zh")
    assert (u.wer, u.substitutions, u.ref_len) == (1 / 8, 1, 8)


def test_chinese_spaces_vanish():
    assert one("你 好", "你好", "zh").wer == 0.0


def test_traditional_to_simplified_on_hypothesis_only():
    assert one("说话", "說話", "zh").wer == 0.0
    u = one("說話", "说话", "zh")
    assert (u.wer, u.substitutions) == (1.0, 2)
    assert one("說話", "說話", "zh").hypothesis == "说话"
    assert one("說話 ok", "說話 ok", "en").wer == 0.0  # no conversion in English


def test_empty_hypothesis_is_all_deletions():
    u = one("hello big world", "")
    assert (u.wer, u.deletions, u.ref_len, u.status) == (1.0, 3, 3, "ok")


def test_empty_reference_is_an_error_naming_the_line():
    with pytest.raises(InputError, match=r"reference of 'u' is empty after Seed-TTS normalisation \('\.\.\. !'\)"):
        one("... !", "hello")


def test_mean_of_per_utterance_rates_not_pooled():
    pairs = [Pair("a", "one two three four", "one two three four"), Pair("b", "five", "six")]
    s = score_seedtts(pairs, "en")
    assert s.mean == 0.5  # (0/4 + 1/1) / 2
    assert s.pooled == 0.2  # 1 error / 5 words
    assert s.value == s.mean


def test_missing_outputs_counted_or_scored_as_errors():
    pairs = [Pair("a", "x y", "x y"), Pair("b", "x y", None, "missing"), Pair("c", "z", None, "empty")]
    s = score_seedtts(pairs, "en")
    assert (len(s.scored), s.missing, s.empty, s.mean) == (1, 1, 1, 0.0)
    assert [u.status for u in s.utterances] == ["ok", "missing", "empty"]
    e = score_seedtts(pairs, "en", missing_as_error=True)
    assert (len(e.scored), e.missing, e.empty, e.mean) == (3, 1, 1, pytest.approx(2 / 3))
    assert e.utterances[1].deletions == 2


# ---- WeNet compute-wer.py --char=1 / compute-cer.py ----


def test_wenet_strips_listed_punctuation_only_at_token_start():
    assert wenet_tokens("hello, world. 你好，世界！ , ?") == ["HELLO,", "WORLD.", "你", "好", "世", "界"]


def test_wenet_tags_and_non_ascii_split():
    assert wenet_tokens("<unk> the<noise>cat") == ["THECAT"]
    assert wenet_tokens("café “quoted”") == ["CAF", "É", "“QUOTED", "”"]


def test_wenet_cer_splits_alphanumerics():
    assert wenet_tokens("AI2 ok! 你好", split_alnum=True) == ["A", "I", "2", "OK!", "你", "好"]


def test_wenet_corpus_wer_is_pooled():
    pairs = [Pair("1", "HELLO WORLD", "hello, world"), Pair("2", "a b c", "a b c"), Pair("3", "你好", "你")]
    s = score_wenet(pairs)
    assert [u.ref_len for u in s.utterances] == [2, 3, 2]
    assert s.pooled == 2 / 7  # HELLO, != HELLO; one deleted character
    assert s.value == s.pooled


def test_whisper_normalised_figure_standardises_numbers_and_spelling():
    assert whisper_english_tokens("Mr. Smith paid twenty-one dollars.") == ["mister", "smith", "paid", "$21"]
    wer, whisper = score_pairs([Pair("1", "twenty one colours", "21 colors")], "wer", "en")
    assert (wer.pooled, whisper.pooled) == (1.0, 0.0)


def test_zh_wer_protocol_has_no_whisper_figure():
    assert [s.name for s in score_pairs([Pair("1", "你好", "你好")], "cer", "zh")] == ["CER (wenet compute-cer)"]


def test_unknown_protocol_and_language():
    with pytest.raises(InputError, match="unknown protocol 'bleu'"):
        score_pairs([Pair("1", "a", "a")], "bleu", "en")
    with pytest.raises(InputError, match="unknown language 'fr'"):
        score_pairs([Pair("1", "a", "a")], "seed-tts", "fr")

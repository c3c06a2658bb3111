"""Label names that look alike: fullwidth letters, odd spaces and letters of other scripts.

A name typed with fullwidth letters or a no-break space is the same name and finds the existing
label; a name spelled with Cyrillic or Greek letters that look Latin is a different name, so it is
accepted, but the answer warns which existing label it looks like.
"""

from __future__ import annotations

import io
import json
import unicodedata
from contextlib import redirect_stderr, redirect_stdout

import pytest

import corral.storage.labels as labels_module
from corral.api.cli import main
from corral.storage.label_import import import_labels
from corral.storage.labels import LabelError, LabelStore
from tests.generated import generated_data
from tests.storage.factory import IDS, build_workspace, pick_images

CYRILLIC_CAT = "\u0441\u0430t"  # Cyrillic es and a, then a Latin t: reads "cat"


def names(s: LabelStore) -> dict[str, int]:
    return {li.name: li.count for li in s.labels()}


@pytest.mark.parametrize(
    "typed",
    [
        "\uff43\uff41\uff54",  # fullwidth ｃａｔ
        "cat\u00a0",  # trailing no-break space
        "\u3000CAT",  # ideographic space, capitals
        "\uff23\uff21\uff34\u2009",  # fullwidth capitals, thin space
        "\u202fcat\u2002",  # narrow no-break space, en space
    ],
)
def test_a_look_alike_spelling_of_the_same_name_finds_the_existing_label(store, typed):
    store.assign(IDS[:2], "cat", user="ana")
    res = store.assign(IDS[2:5], typed, user="ana")
    assert names(store) == {"cat": 5}
    assert res.warnings == []
    assert store.check() == []


def test_unicode_spaces_inside_a_name_are_one_plain_space(store):
    store.assign(IDS[:1], "coffee mug", user="ana")
    store.assign(IDS[1:2], "coffee\u00a0mug", user="ana")
    store.assign(IDS[2:3], "coffee \u2003 mug", user="ana")
    store.assign(IDS[3:4], "  coffee   mug ", user="ana")
    assert names(store) == {"coffee mug": 4}
    # a new name is stored folded: what the viewer and exports show is plain text
    store.assign(IDS[4:5], "\uff54\uff45\uff41\u00a0\u00a0pot\u3000", user="ana")
    assert names(store) == {"coffee mug": 4, "tea pot": 1}


def test_a_cyrillic_look_alike_is_a_new_label_and_the_answer_says_which_one_it_looks_like(store):
    store.assign(IDS[:3], "cat", user="ana")
    res = store.assign(IDS[3:5], CYRILLIC_CAT, user="ana")
    assert names(store) == {"cat": 3, CYRILLIC_CAT: 2}
    assert len(res.warnings) == 1
    assert "'cat'" in res.warnings[0] and "Cyrillic" in res.warnings[0]
    # once it exists, naming more items with it does not warn again
    assert store.assign(IDS[5:6], CYRILLIC_CAT, user="ana").warnings == []
    # an undo removes it, as any new label
    store.undo(user="ana")
    store.undo(user="ana")
    assert names(store) == {"cat": 3}


def test_a_latin_name_beside_an_existing_cyrillic_look_alike_warns_with_its_letters(store):
    store.assign(IDS[:1], CYRILLIC_CAT, user="ana")
    res = store.assign(IDS[1:2], "Cat", user="ana")
    assert len(res.warnings) == 1 and repr(CYRILLIC_CAT) in res.warnings[0] and "Cyrillic" in res.warnings[0]


def test_whole_words_in_greek_or_cyrillic_capitals_that_read_latin_warn(store):
    store.assign(IDS[:1], "top", user="ana")
    res = store.assign(IDS[1:2], "\u03a4\u039f\u03a1", user="ana")  # Greek Tau Omicron Rho: "TOP"
    assert len(res.warnings) == 1 and "'top'" in res.warnings[0] and "Greek" in res.warnings[0]
    res = store.assign(IDS[2:3], "\u0422\u041e\u0420", user="ana")  # the same in Cyrillic capitals
    assert len(res.warnings) == 1 and "'top'" in res.warnings[0]


def test_a_new_name_mixing_scripts_in_one_word_warns_but_real_names_do_not(store):
    res = store.assign(IDS[:1], CYRILLIC_CAT, user="ana")
    assert len(res.warnings) == 1 and "Cyrillic" in res.warnings[0] and "Latin" in res.warnings[0]
    for k, name in enumerate(["\u043a\u043e\u0448\u043a\u0430", "\u03b1-tubulin", "\u732b", "caf\u00e9"]):  # кошка, α-tubulin, 猫, café
        assert store.assign(IDS[1 + k : 2 + k], name, user="ana").warnings == [], name


def test_rename_merge_and_import_warn_on_a_look_alike_too(store):
    store.assign(IDS[:2], "cat", user="ana")
    store.assign(IDS[2:4], "dog", user="ana")
    res = store.rename_label("dog", CYRILLIC_CAT, user="ana")
    assert len(res.warnings) == 1 and "'cat'" in res.warnings[0]
    store.undo(user="ana")
    res = store.merge_labels(["dog"], CYRILLIC_CAT, user="ana")
    assert len(res.warnings) == 1 and "'cat'" in res.warnings[0]
    store.undo(user="ana")
    res = store.import_labels({IDS[10]: CYRILLIC_CAT, IDS[11]: "\uff43\uff41\uff54", IDS[12]: "dog\u00a0"}, user="ana")
    assert names(store) == {"cat": 3, "dog": 3, CYRILLIC_CAT: 1}
    assert len(res.warnings) == 1 and "'cat'" in res.warnings[0]


def test_rename_exclude_and_delete_find_a_label_however_its_name_is_typed(store):
    store.assign(IDS[:4], "cat", user="ana")
    store.exclude(IDS[:1], "cat\u00a0", user="ana")
    assert names(store) == {"cat": 3}
    store.rename_label("\uff23\uff41\uff54", "kitten\u3000", user="ana")
    assert {li.name: li.aliases for li in store.labels()} == {"kitten": ["cat"]}
    store.assign(IDS[5:6], "\uff43\uff41\uff54", user="ana")  # the old name, fullwidth, finds it as an alias
    assert names(store) == {"kitten": 4}
    store.delete_label("\u00a0\uff4b\uff49\uff54\uff54\uff45\uff4e", user="ana")
    assert names(store) == {}
    assert store.check() == []


def test_a_missing_label_typed_in_look_alike_letters_is_named_in_the_error(store):
    for k, name in enumerate(["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "b0", "cat"]):
        store.assign(IDS[k : k + 1], name, user="ana")
    with pytest.raises(LabelError, match="'cat'"):
        store.exclude(IDS[:1], CYRILLIC_CAT, user="ana")


def test_labels_already_stored_keep_their_name_and_are_found_by_the_folded_one(store, monkeypatch):
    """A store written before names were folded may hold a fullwidth name: it is not rewritten, and
    the plain spelling finds it instead of making a second label."""
    old_check = labels_module.check_name

    def nfc_only(value, what="label"):
        return unicodedata.normalize("NFC", value).strip()

    monkeypatch.setattr(labels_module, "check_name", nfc_only)
    store.assign(IDS[:2], "\uff43\uff41\uff54", user="ana")
    monkeypatch.setattr(labels_module, "check_name", old_check)
    res = store.assign(IDS[2:3], "cat", user="ana")
    assert names(store) == {"\uff43\uff41\uff54": 3}
    assert res.warnings == []
    assert store.check() == []


@pytest.fixture
def ws(tmp_path):
    return build_workspace(tmp_path / "ws", pick_images(generated_data("images"), classes=2, per_class=3))


def test_an_import_file_folds_names_and_the_cli_prints_the_look_alike_warning(ws, tmp_path):
    items = [r["id"] for r in ws.items().to_pylist()]
    with LabelStore.open(ws) as s:
        s.assign(items[:1], "cat", user="ana")
    rows = [("\uff43\uff41\uff54", items[1]), ("cat\u00a0", items[2]), (CYRILLIC_CAT, items[3])]
    (tmp_path / "l.csv").write_text("id,label\n" + "".join(f"{i},{lab}\n" for lab, i in rows), encoding="utf-8")
    rep = import_labels(tmp_path / "l.csv", workspace=ws, user="u")
    assert rep.labels == 2 and rep.labels_created == [CYRILLIC_CAT]
    assert len(rep.warnings) == 1 and "'cat'" in rep.warnings[0]
    with LabelStore.open(ws) as s:
        s.undo(user="u")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["labels", "import", str(tmp_path / "l.csv"), "--workspace", str(ws.root), "--user", "u"])
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert rc == 0 and summary["labels_created"] == [CYRILLIC_CAT] and len(summary["warnings"]) == 1
    assert "warning" in err.getvalue() and "'cat'" in err.getvalue()
    with LabelStore.open(ws) as s:
        assert {li.name: li.count for li in s.labels()} == {"cat": 3, CYRILLIC_CAT: 1}

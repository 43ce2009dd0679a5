"""A batch's image list streamed into a keys file and a chunk manifest on S3, and read back chunk by chunk (moto)."""

from __future__ import annotations

import codecs
import itertools
import json
from typing import Any

import pytest

from modelrun.batches.keys import BatchKeys
from modelrun.batches.manifest import (
    MAX_KEY_LENGTH,
    SUBMIT_MARGIN_MS,
    ManifestSummary,
    check_key,
    file_keys,
    inline_keys,
    iter_keys_file,
    prefix_keys,
    read_chunk_items,
    until_deadline,
    write_manifest,
)
from modelrun.errors import ImageNotFound, InvalidRequest, TooManyToList
from tests.batchfixtures import BUCKET, DEFAULT, BatchAws, TimeLeft

BATCH = "b-20250101T000000-0123456789ab"
KEYS = BatchKeys(DEFAULT, BATCH)
KEYS_OBJECT = f"jobs/{BATCH}/keys.jsonl"
MANIFEST_OBJECT = f"jobs/{BATCH}/manifest.json"

ODD_KEYS = [
    "uploads/plain.png",
    "uploads/café/naïve.png",
    "uploads/日本語/画像.png",
    "uploads/emoji-😀-🐍.png",
    "uploads/comma,separated,name.png",
    "uploads/\"double\" and 'single' quotes.png",
    "uploads/back\\slash.png",
    "uploads/[brackets]{braces}.png",
    "uploads/tab\there.png",
    "  uploads/leading and trailing spaces.png  ",
    "uploads/" + "x" * (MAX_KEY_LENGTH - len("uploads/")),
    "é" * (MAX_KEY_LENGTH // 2),  # 1,024 bytes of UTF-8: the longest key S3 takes
    "uploads/zero-width\u200bjoiner.png",
]


def write(aws: BatchAws, keys: Any, *, chunk_size: int = 3, max_images: int = 1000) -> ManifestSummary:
    return write_manifest(aws.s3, keys, bucket=BUCKET, batch=KEYS, chunk_size=chunk_size, max_images=max_images)


def descriptors(aws: BatchAws) -> list[dict[str, int]]:
    chunks: list[dict[str, int]] = json.loads(aws.text(MANIFEST_OBJECT))
    return chunks


def read_chunk(aws: BatchAws, chunk: dict[str, int], keys_object: str = KEYS_OBJECT) -> list[tuple[int, str]]:
    return read_chunk_items(
        aws.s3,
        BUCKET,
        keys_object,
        offset=chunk["offset"],
        length=chunk["length"],
        count=chunk["count"],
        first_item=chunk["first_item"],
    )


def read_every_chunk(aws: BatchAws) -> list[list[tuple[int, str]]]:
    return [read_chunk(aws, chunk) for chunk in descriptors(aws)]


def names(count: int) -> list[str]:
    return [f"uploads/{number:04d}.png" for number in range(count)]


# --- write_manifest -----------------------------------------------------------------------------------------


def test_a_manifest_splits_the_keys_into_chunks_of_chunk_size_with_a_shorter_last_one(aws: BatchAws) -> None:
    # given seven keys and chunks of three
    # when the manifest is written
    summary = write(aws, iter(names(7)), chunk_size=3)

    # then there are chunks of 3, 3 and 1, numbered from their first item
    chunks = descriptors(aws)
    assert [(chunk["index"], chunk["first_item"], chunk["count"]) for chunk in chunks] == [
        (0, 0, 3),
        (1, 3, 3),
        (2, 6, 1),
    ]
    assert (summary.total, summary.chunks) == (7, 3)


def test_a_manifest_of_an_exact_multiple_of_chunk_size_has_no_empty_last_chunk(aws: BatchAws) -> None:
    # given six keys and chunks of three
    # when the manifest is written
    summary = write(aws, names(6), chunk_size=3)

    # then there are exactly two full chunks
    assert [chunk["count"] for chunk in descriptors(aws)] == [3, 3]
    assert summary.chunks == 2


def test_a_manifests_chunks_are_consecutive_byte_ranges_covering_the_whole_keys_file(aws: BatchAws) -> None:
    # given keys of different byte lengths
    write(aws, ODD_KEYS, chunk_size=4)

    # when the chunk ranges are laid end to end
    chunks = descriptors(aws)
    size = len(aws.text(KEYS_OBJECT).encode("utf-8"))

    # then each starts where the previous ended and the last ends at the end of the file
    assert chunks[0]["offset"] == 0
    for previous, chunk in itertools.pairwise(chunks):
        assert chunk["offset"] == previous["offset"] + previous["length"]
    assert chunks[-1]["offset"] + chunks[-1]["length"] == size


def test_the_keys_file_has_one_json_string_per_line_and_line_n_is_item_n(aws: BatchAws) -> None:
    # given keys with odd characters
    # when the manifest is written
    write(aws, ODD_KEYS)

    # then the keys file holds them in order, one JSON string a line
    lines = aws.text(KEYS_OBJECT).split("\n")
    assert lines[-1] == ""
    assert [json.loads(line) for line in lines[:-1]] == ODD_KEYS


def test_the_summary_names_both_objects_and_they_have_their_content_types(aws: BatchAws) -> None:
    # given two keys
    # when the manifest is written
    summary = write(aws, names(2))

    # then the summary points at the two objects, each typed for what it is
    assert summary == ManifestSummary(bucket=BUCKET, key=MANIFEST_OBJECT, keys_key=KEYS_OBJECT, total=2, chunks=1)
    assert aws.s3.head_object(Bucket=BUCKET, Key=KEYS_OBJECT)["ContentType"] == "application/x-ndjson"
    assert aws.s3.head_object(Bucket=BUCKET, Key=MANIFEST_OBJECT)["ContentType"] == "application/json"


def test_an_empty_batch_is_refused_and_writes_nothing(aws: BatchAws) -> None:
    # given no keys
    # when a manifest is written
    with pytest.raises(InvalidRequest, match="the batch names no images"):
        write(aws, iter([]))

    # then no object was left behind
    assert aws.object_keys() == []


def test_a_batch_over_max_images_is_refused_naming_the_limit_and_writes_nothing(aws: BatchAws) -> None:
    # given one key more than the limit
    # when a manifest is written
    with pytest.raises(InvalidRequest, match="a batch holds at most 5 images"):
        write(aws, names(6), max_images=5)

    # then no object was left behind
    assert aws.object_keys() == []


def test_a_batch_of_exactly_max_images_is_accepted(aws: BatchAws) -> None:
    # given as many keys as the limit
    # when a manifest is written, then all are in it
    assert write(aws, names(5), max_images=5).total == 5


def test_a_bad_key_from_the_source_stops_the_manifest_and_writes_nothing(aws: BatchAws) -> None:
    # given an inline list whose third entry is not a string
    # when its manifest is written
    with pytest.raises(InvalidRequest, match=r"images\[2\]"):
        write(aws, inline_keys(["a.png", "b.png", 3]))

    # then nothing was written
    assert aws.object_keys() == []


# --- read_chunk_items / iter_keys_file ---------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 2, 5, len(ODD_KEYS)])
def test_every_chunk_reads_back_exactly_its_own_items_whatever_the_characters(aws: BatchAws, chunk_size: int) -> None:
    # given a manifest of keys with unicode, commas, quotes, spaces and keys of 1,024 bytes
    write(aws, ODD_KEYS, chunk_size=chunk_size)

    # when every chunk is read with its ranged GET
    chunks = read_every_chunk(aws)

    # then each chunk holds the (item, key) pairs of its item range and together they are the list, in order
    for descriptor, items in zip(descriptors(aws), chunks, strict=True):
        first = descriptor["first_item"]
        assert items == list(enumerate(ODD_KEYS))[first : first + descriptor["count"]]
    assert [pair for items in chunks for pair in items] == list(enumerate(ODD_KEYS))


@pytest.mark.parametrize(
    "odd", ["\u2028", "\u2029", "\x85"], ids=["line-separator", "paragraph-separator", "next-line"]
)
def test_a_key_with_a_unicode_line_separator_reads_back_whole(aws: BatchAws, odd: str) -> None:
    # given a key holding a character that Unicode (not JSON lines) treats as a line break
    keys = ["uploads/before.png", f"uploads/odd{odd}name.png", "uploads/after.png"]
    write(aws, keys, chunk_size=3)

    # when its chunk is read, then it comes back unchanged among its neighbours
    assert read_every_chunk(aws) == [list(enumerate(keys))]


def test_a_chunk_whose_range_holds_another_number_of_keys_is_an_error(aws: BatchAws) -> None:
    # given a chunk of three keys
    write(aws, names(3), chunk_size=3)
    chunk = descriptors(aws)[0]

    # when it is read expecting four
    with pytest.raises(ValueError, match=r"has 3 keys, expected 4"):
        read_chunk(aws, {**chunk, "count": 4})


def test_the_whole_keys_file_streams_back_as_numbered_items(aws: BatchAws) -> None:
    # given a manifest of odd keys, one with a Unicode line separator
    keys = [*ODD_KEYS, "uploads/odd\u2028name.png"]
    write(aws, keys, chunk_size=4)

    # when the keys file is streamed
    items = list(iter_keys_file(aws.s3, BUCKET, KEYS_OBJECT))

    # then every key comes back with its item number
    assert items == list(enumerate(keys))


# --- a later attempt's sparse manifest ----------------------------------------------------------------------


def test_a_later_attempts_manifest_is_written_beside_the_first_under_its_attempt_number(aws: BatchAws) -> None:
    # given the first attempt's manifest
    write(aws, names(5))

    # when attempt 2 writes the items it runs again
    summary = write_manifest(
        aws.s3,
        iter([(1, "uploads/0001.png"), (4, "uploads/0004.png")]),
        bucket=BUCKET,
        batch=KEYS,
        chunk_size=3,
        max_images=10,
        attempt=2,
    )

    # then it has its own two objects and leaves the first attempt's alone
    assert (summary.keys_key, summary.key) == (f"jobs/{BATCH}/keys-2.jsonl", f"jobs/{BATCH}/manifest-2.json")
    assert (summary.total, summary.chunks) == (2, 1)
    assert sorted(aws.object_keys()) == sorted([KEYS_OBJECT, MANIFEST_OBJECT, summary.keys_key, summary.key])
    assert [json.loads(line) for line in aws.text(KEYS_OBJECT).splitlines()] == names(5)


def test_a_later_attempts_chunks_read_back_their_own_item_numbers(aws: BatchAws) -> None:
    # given attempt 2 running items 3, 7, 8 and 20 again, in chunks of two
    retried = [(3, "a.png"), (7, "dossier/é,b.png"), (8, 'c "q".png'), (20, "d.png")]
    summary = write_manifest(aws.s3, iter(retried), bucket=BUCKET, batch=KEYS, chunk_size=2, max_images=10, attempt=2)

    # when each chunk is read
    chunks = [read_chunk(aws, chunk, summary.keys_key) for chunk in json.loads(aws.text(summary.key))]

    # then each item keeps its number in the batch, not its place in the retry
    assert chunks == [retried[:2], retried[2:]]


# --- check_key / inline_keys --------------------------------------------------------------------------------


def test_a_key_is_returned_exactly_as_given_surrounding_spaces_included() -> None:
    # given a key with spaces around it (S3 keys may have them)
    # when it is checked, then it is not altered
    assert check_key("  a.png ", "here") == "  a.png "


def test_a_key_of_the_maximum_length_is_accepted() -> None:
    # given a key of 1,024 characters
    key = "k" * MAX_KEY_LENGTH

    # when it is checked, then it passes
    assert check_key(key, "here") == key


def test_a_key_over_the_maximum_length_is_refused_naming_where_it_came_from() -> None:
    # given a key of 1,025 characters
    # when it is checked, then the error names the place and the limit
    with pytest.raises(InvalidRequest, match=r"^images\[7\]: an S3 key is at most 1024 bytes of UTF-8$"):
        check_key("k" * (MAX_KEY_LENGTH + 1), "images[7]")


def test_a_key_over_1024_bytes_of_utf8_is_refused_even_under_1024_characters() -> None:
    # given a key of 600 two-byte characters
    key = "é" * 600

    # when it is checked, then it is refused as too long for S3
    with pytest.raises(InvalidRequest, match="at most 1024"):
        check_key(key, "images[0]")


@pytest.mark.parametrize("bad", ["", "   ", None, 5, ["a.png"], {"key": "a.png"}])
def test_a_key_that_is_not_a_non_empty_string_is_refused(bad: Any) -> None:
    # given something that is not a usable key
    # when it is checked, then the error shows what was given
    with pytest.raises(InvalidRequest, match=r"^src: an image key must be a non-empty string, got "):
        check_key(bad, "src")


def test_inline_keys_come_in_the_given_order_duplicates_included() -> None:
    # given a list that names one image twice
    # when its keys are read, then they come as given
    assert list(inline_keys(["b.png", "a.png", "b.png"])) == ["b.png", "a.png", "b.png"]


@pytest.mark.parametrize("images", ["a.png", {"a.png": 1}, None])
def test_inline_images_that_are_not_a_list_are_refused(images: Any) -> None:
    # given "images" that is not a list
    # when its keys are read, then the error says what it must be
    with pytest.raises(InvalidRequest, match='"images" must be a list of S3 keys'):
        list(inline_keys(images))


def test_a_bad_inline_entry_is_named_by_its_position() -> None:
    # given a blank second entry
    # when the keys are read, then the error points at images[1]
    with pytest.raises(InvalidRequest, match=r"^images\[1\]: "):
        list(inline_keys(["a.png", " "]))


# --- prefix_keys --------------------------------------------------------------------------------------------


def test_a_prefix_lists_every_object_past_a_thousand_in_key_order(aws: BatchAws) -> None:
    # given 1,005 objects under a prefix, put in reverse order
    expected = [f"many/{number:05d}.png" for number in range(1005)]
    for key in reversed(expected):
        aws.put(key, b"")

    # when the prefix is listed
    keys = list(prefix_keys(aws.s3, BUCKET, "many/"))

    # then every object comes once, in key order
    assert keys == expected


def test_a_prefix_skips_folder_placeholders_and_objects_outside_it(aws: BatchAws) -> None:
    # given objects, folder placeholders, and a neighbouring prefix
    for key in ("set/", "set/a.png", "set/sub/", "set/sub/b.png", "settings/c.png", "other/d.png"):
        aws.put(key, b"")

    # when "set/" is listed
    keys = list(prefix_keys(aws.s3, BUCKET, "set/"))

    # then only the objects under it come
    assert keys == ["set/a.png", "set/sub/b.png"]


def test_an_empty_prefix_lists_nothing(aws: BatchAws) -> None:
    # given no object under the prefix
    aws.put("elsewhere/a.png", b"")

    # when it is listed, then nothing comes
    assert list(prefix_keys(aws.s3, BUCKET, "nothing/")) == []


# --- file_keys: JSON lines ----------------------------------------------------------------------------------


def keys_from(aws: BatchAws, name: str, content: str | bytes) -> list[str]:
    aws.put(name, content.encode("utf-8") if isinstance(content, str) else content)
    return list(file_keys(aws.s3, BUCKET, name))


def test_json_lines_of_strings_give_their_keys(aws: BatchAws) -> None:
    # given one JSON string a line, with unicode
    content = '"a.png"\n"dossier/é.png"\n"b,c.png"\n'

    # when read, then the keys come in order
    assert keys_from(aws, "lists/batch.jsonl", content) == ["a.png", "dossier/é.png", "b,c.png"]


def test_json_lines_of_objects_and_strings_mixed_give_their_keys(aws: BatchAws) -> None:
    # given objects with a "key" field (and other fields) mixed with strings
    content = '{"key": "a.png", "note": "x"}\n"b.png"\n{"key": "c.png"}'

    # when read, then each line gives its key
    assert keys_from(aws, "lists/batch.jsonl", content) == ["a.png", "b.png", "c.png"]


def test_blank_lines_in_json_lines_are_skipped(aws: BatchAws) -> None:
    # given blank and whitespace-only lines between entries
    content = '\n"a.png"\n\n   \n"b.png"\n\n'

    # when read, then only the keys come
    assert keys_from(aws, "lists/batch.jsonl", content) == ["a.png", "b.png"]


def test_json_lines_with_crlf_endings_and_a_byte_order_mark_give_clean_keys(aws: BatchAws) -> None:
    # given a Windows-style file with a UTF-8 BOM
    content = codecs.BOM_UTF8 + b'"a.png"\r\n"b.png"\r\n'

    # when read, then neither the BOM nor the carriage returns are in the keys
    assert keys_from(aws, "lists/batch.jsonl", content) == ["a.png", "b.png"]


def test_a_line_that_is_not_json_is_refused_naming_the_file_and_line(aws: BatchAws) -> None:
    # given a bad third line
    content = '"a.png"\n"b.png"\nc.png\n"d.png"\n'

    # when read, then the error names the file and line 3 and suggests CSV
    with pytest.raises(
        InvalidRequest, match=r"^lists/batch\.jsonl line 3 is not JSON: .*\(use \.csv for a CSV file\)$"
    ):
        keys_from(aws, "lists/batch.jsonl", content)


def test_a_bad_line_after_blank_lines_is_named_by_its_line_in_the_file(aws: BatchAws) -> None:
    # given a bad fifth line after two blank lines
    content = '"a.png"\n\n\n"b.png"\nc.png\n'

    # when read, then the error names line 5
    with pytest.raises(InvalidRequest, match=r"line 5 is not JSON"):
        keys_from(aws, "lists/batch.jsonl", content)


def test_a_json_object_without_a_key_field_is_refused_naming_its_line(aws: BatchAws) -> None:
    # given an object line without "key"
    content = '"a.png"\n{"name": "b.png"}\n'

    # when read, then the error names the line
    with pytest.raises(InvalidRequest, match=r"^lists/batch\.jsonl line 2: an image key must be a non-empty string"):
        keys_from(aws, "lists/batch.jsonl", content)


def test_a_json_value_that_is_not_a_key_is_refused_naming_its_line(aws: BatchAws) -> None:
    # given a number on the first line
    # when read, then the error names line 1 and shows the value
    with pytest.raises(InvalidRequest, match=r"^lists/batch\.jsonl line 1: .*got 42$"):
        keys_from(aws, "lists/batch.jsonl", "42\n")


# --- file_keys: CSV -----------------------------------------------------------------------------------------


def test_a_csv_with_a_key_header_gives_the_first_column_below_it(aws: BatchAws) -> None:
    # given a header row and extra columns
    content = "key,label\na.png,3\nb.png,7\n"

    # when read, then the header is skipped and only the first column is kept
    assert keys_from(aws, "lists/batch.csv", content) == ["a.png", "b.png"]


def test_a_csv_without_a_header_gives_every_row(aws: BatchAws) -> None:
    # given rows only
    # when read, then the first row is a key too
    assert keys_from(aws, "lists/batch.csv", "a.png\nb.png\n") == ["a.png", "b.png"]


def test_a_csv_header_is_recognised_behind_a_byte_order_mark_and_in_any_case(aws: BatchAws) -> None:
    # given an Excel-style CSV: BOM, "Key" header, CRLF endings
    content = codecs.BOM_UTF8 + "Key,Label\r\nimagé.png,1\r\n".encode()

    # when read, then the header is skipped and the key is intact
    assert keys_from(aws, "lists/batch.csv", content) == ["imagé.png"]


def test_a_quoted_csv_key_keeps_its_commas_and_quotes(aws: BatchAws) -> None:
    # given quoted keys holding commas and doubled quotes
    content = 'key\n"a,b.png",x\n"say ""hi"".png"\n'

    # when read, then the keys are unquoted
    assert keys_from(aws, "lists/batch.csv", content) == ["a,b.png", 'say "hi".png']


def test_csv_rows_with_an_empty_first_column_are_skipped_and_keys_are_trimmed(aws: BatchAws) -> None:
    # given blank rows, an empty first column, and padded keys
    content = "key\n\n,orphan\n  a.png  \n\nb.png\n"

    # when read, then only the trimmed keys come
    assert keys_from(aws, "lists/batch.csv", content) == ["a.png", "b.png"]


def test_an_upper_case_csv_extension_is_read_as_csv(aws: BatchAws) -> None:
    # given a CSV file named in capitals (not JSON at all)
    # when read, then it is parsed as CSV
    assert keys_from(aws, "lists/BATCH.CSV", "key\na.png\n") == ["a.png"]


def test_a_csv_header_after_leading_blank_lines_is_still_a_header(aws: BatchAws) -> None:
    # given a CSV whose header follows a blank line
    # when read, then the header is not taken for an image
    assert keys_from(aws, "lists/batch.csv", "\nkey\na.png\n") == ["a.png"]


@pytest.mark.parametrize(
    ("name", "text"),
    [("lists/batch.csv", "key\ncafé.png\n"), ("lists/batch.jsonl", '"a.png"\n"café.png"\n')],
    ids=["csv", "jsonl"],
)
def test_a_manifest_file_that_is_not_utf8_is_refused_naming_its_line(aws: BatchAws, name: str, text: str) -> None:
    # given a list whose second line is cp1252, not UTF-8
    content = text.encode("cp1252")

    # when read, then it is a bad request that points at line 2
    with pytest.raises(InvalidRequest, match=r"\b2\b"):
        keys_from(aws, name, content)


def test_a_missing_manifest_file_is_image_not_found_naming_the_s3_uri(aws: BatchAws) -> None:
    # given no such object
    # when it is read
    with pytest.raises(ImageNotFound) as caught:
        list(file_keys(aws.s3, BUCKET, "lists/missing.jsonl"))

    # then it is a 404 with the full address
    assert (caught.value.code, caught.value.status) == ("image_not_found", 404)
    assert caught.value.message == f"no manifest file s3://{BUCKET}/lists/missing.jsonl"


# --- until_deadline -----------------------------------------------------------------------------------------


PLENTY_MS = 20_000
SHORT_MS = SUBMIT_MARGIN_MS - 1


def test_keys_read_within_time_come_through_unchanged() -> None:
    # given 25 keys and time enough throughout
    keys = names(25)

    # when they stream through the deadline, checked every 10 keys
    passed = list(until_deadline(keys, TimeLeft(PLENTY_MS), source="s3_prefix", value="set/", check_every=10))

    # then every key comes, in order
    assert passed == keys


def test_a_prefix_that_runs_short_of_time_is_too_many_to_list_with_the_count_read() -> None:
    # given time that runs short at the third check, every 10 keys
    time_left = TimeLeft(PLENTY_MS, PLENTY_MS, SHORT_MS)

    # when a prefix of 25 keys streams through
    with pytest.raises(TooManyToList) as caught:
        list(until_deadline(names(25), time_left, source="s3_prefix", value="set/", check_every=10))

    # then it is a 413 that names the prefix, the 20 keys read, and a list file as what to send instead
    error = caught.value
    assert (error.code, error.status, error.details) == ("too_many_to_list", 413, {"listed": 20})
    assert error.message.startswith("time ran out reading s3_prefix 'set/' after 20 keys")
    assert '{"manifest": "<its key>"}' in error.message
    assert "smaller prefixes" in error.message


def test_a_list_file_that_runs_short_of_time_says_to_split_it() -> None:
    # given time that runs short at the second check
    time_left = TimeLeft(PLENTY_MS, SHORT_MS)

    # when a list file of 25 keys streams through
    with pytest.raises(TooManyToList) as caught:
        list(until_deadline(names(25), time_left, source="manifest", value="lists/big.jsonl", check_every=10))

    # then it names the file and the 10 keys read, and says to split it or upload it under batches/
    assert caught.value.message.startswith("time ran out reading manifest file 'lists/big.jsonl' after 10 keys")
    assert "split the list into smaller files" in caught.value.message
    assert "under batches/" in caught.value.message


def test_the_time_left_is_asked_once_per_check_interval_not_per_key() -> None:
    # given time enough throughout, its calls counted
    time_left = TimeLeft(PLENTY_MS)

    # when 2,500 keys stream through, checked every 1,000
    list(until_deadline(names(2500), time_left, source="s3_prefix", value="set/", check_every=1000))

    # then it was asked three times (at keys 0, 1,000 and 2,000)
    assert time_left.calls == 3


def test_exactly_the_margin_left_is_still_time_enough() -> None:
    # given exactly the safety margin left
    # when keys stream through, then all of them come
    passed = until_deadline(names(5), TimeLeft(SUBMIT_MARGIN_MS), source="s3_prefix", value="set/", check_every=1)
    assert list(passed) == names(5)


def test_a_manifest_stopped_by_the_deadline_writes_nothing(aws: BatchAws) -> None:
    # given keys whose stream runs short of time after 10
    keys = until_deadline(names(25), TimeLeft(PLENTY_MS, SHORT_MS), source="s3_prefix", value="set/", check_every=10)

    # when the manifest is written from them, then it is refused and neither object is on S3
    with pytest.raises(TooManyToList):
        write(aws, keys)
    assert aws.object_keys() == []

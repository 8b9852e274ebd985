"""Redaction: personal data never reaches the store in clear, and every redaction is counted per rule."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
from collections import Counter

import httpx
import pytest
from aiohttp import web

from driftwarden.collector.processors.redaction import Redactor, iban_valid, luhn_valid
from tests.collector_harness import AppServer, InProcessCollector, module_store_url, wait_for

EMAIL = "jane.doe@example.org"
CARD = "4111 1111 1111 1111"  # a test Visa number: passes the Luhn check
CARD_DIGITS = CARD.replace(" ", "")
IBAN = "GB82 WEST 1234 5698 7654 32"
SSN = "123-45-6789"
PHONE = "+44 20 7946 0958"
SECRET = "hunter2-is-my-password"


def _redact(text: str, **kw) -> tuple[str, Counter]:
    counts: Counter = Counter()
    return Redactor(key="k", **kw).text(text, counts), counts


def test_each_pattern_rule_replaces_its_values_and_counts_them():
    text = f"mail {EMAIL}, card {CARD}, iban {IBAN}, ssn {SSN}, phone {PHONE}, nino AB 12 34 56 C"
    out, counts = _redact(text)
    for value in (EMAIL, CARD, IBAN, SSN, PHONE, "AB 12 34 56 C"):
        assert value not in out
    assert counts == Counter({"email": 1, "card": 1, "iban": 1, "national_id": 2, "phone": 1})


def test_checksums_keep_numbers_that_are_not_cards_or_ibans():
    assert luhn_valid(CARD_DIGITS) and not luhn_valid("4111111111111112")
    assert iban_valid(IBAN) and not iban_valid("GB82 WEST 1234 5698 7654 33")
    text = '{"ids": [4111111111111112], "x": 0.41111111111111111, "ref": "GB82 WEST 1234 5698 7654 33"}'
    out, counts = _redact(text)
    assert out == text and not counts


def test_skipping_rules_by_their_hints_changes_no_result():
    """A rule skipped because the text has none of its hints (capitals before digits, a digit and ten more digits
    or separators) would have matched nothing: every rule applied to every text gives the same text and
    counts, on texts built to sit at the edges of each pattern."""
    rng = random.Random(7)
    samples = [CARD, IBAN, SSN, PHONE, "AB 12 34 56 C", "AB123456C", "555-123-4567", "555.123.4567", "(555) 123-4567"]
    samples += ["4111-1111-1111-1111", "378282246310005", "GB82WEST12345698765432", "DE89 3704 0044 0532 0130 00"]

    def piece() -> str:
        kind = rng.randrange(5)
        if kind == 0:
            return rng.choice(samples)
        if kind == 1:  # one to five groups of up to 4 digits, with separators
            groups = [str(rng.randrange(10**4)).zfill(rng.randint(1, 4)) for _ in range(rng.randint(1, 5))]
            return "".join(g + rng.choice(["", " ", "-", ".", ","]) for g in groups)
        if kind == 2:  # capitals, then digits, capitals and spaces
            head = rng.choice(["GB", "AB", "DE", "Ab", "A", "FP", "INT"]) + rng.choice(["", " "])
            return head + "".join(rng.choice("0123456789 ABCDW") for _ in range(rng.randint(1, 24)))
        if kind == 3:
            return rng.choice([" ", ", ", '": ', "[", "]", "x", "0.", "@", "+", '"FP64"', "."])
        return str(rng.random() * 10 ** rng.randint(0, 12))

    redactor = Redactor(key="k")
    for _ in range(3000):
        text = "".join(piece() for _ in range(rng.randint(1, 8)))
        hinted, counts = Counter(), Counter()
        expected = text
        for rule, regex, *_ in redactor._rules:  # every rule, whatever the text holds
            expected = regex.sub(lambda m, rule=rule, counts=counts: redactor._replace(rule, m, counts), expected)
        assert redactor.text(text, hinted) == expected, text
        assert hinted == counts, text


def test_hash_mode_gives_a_stable_keyed_pseudonym_and_mask_mode_a_label():
    out, _ = _redact(f"to {EMAIL}")
    digest = hmac.new(b"k", EMAIL.encode(), hashlib.sha256).hexdigest()[:16]
    assert out == f"to [redacted:email:{digest}]"
    assert _redact(f"to {EMAIL}")[0] == out  # same key, same value: same pseudonym
    assert Redactor(key="other").text(f"to {EMAIL}", Counter()) != out
    masked = Redactor(mode="mask").text(f"to {EMAIL}", Counter())
    assert masked == "to [redacted:email]"


def test_field_rules_replace_whole_values_in_parsed_and_in_cut_json():
    redactor = Redactor(key="k", fields=["password", "card_number"])
    counts: Counter = Counter()
    body = {"user": {"Password": SECRET, "card-number": {"n": 1}}, "ok": "fine"}
    out = redactor.payload(json.dumps(body), body, counts)
    assert SECRET not in out and '"n": 1' not in out and '"ok":"fine"' in out
    assert counts["field"] == 2
    cut = '{"user": {"password": "' + SECRET + '", "more": "tex'  # not valid JSON any more
    out = redactor.payload(cut, None, counts)
    assert SECRET not in out and counts["field"] == 3


async def _llm(request: web.Request) -> web.Response:
    body = await request.json()
    said = body["messages"][-1]["content"]
    return web.json_response(
        {
            "model": "echo",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"You said: {said}"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5},
        }
    )


async def _oip(request: web.Request) -> web.Response:
    body = await request.json()
    note = body["inputs"][1]["data"][0]
    return web.json_response(
        {"outputs": [{"name": "label", "shape": [1], "datatype": "BYTES", "data": [f"contact {note}"]}]}
    )


@pytest.mark.timeout(90)
def test_email_and_card_never_reach_the_store_in_clear_and_counts_per_rule_are_exported(engine_dir):
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _llm)
    app.router.add_post("/v2/models/crm/infer", _oip)
    upstream = AppServer(app)
    store_url = module_store_url(engine_dir, "collector_redaction")
    collector = InProcessCollector(
        store_url,
        upstream=upstream.url,
        model="redaction-test",
        redaction={"key": "test-key", "fields": ["password"]},
    )
    try:
        chat = {
            "model": "echo",
            "messages": [{"role": "user", "content": f"mail {EMAIL} card {CARD}", "password": SECRET}],
        }
        r = httpx.post(collector.url + "/v1/chat/completions", json=chat)
        assert r.status_code == 200
        assert EMAIL in r.text  # the client's own traffic is untouched: redaction is for what is stored
        oip = {
            "inputs": [
                {"name": "amount", "shape": [1], "datatype": "FP64", "data": [12.5]},
                {"name": "note", "shape": [1], "datatype": "BYTES", "data": [f"{EMAIL} / {CARD_DIGITS}"]},
            ]
        }
        r = httpx.post(collector.url + "/v2/models/crm/infer", json=oip)
        assert r.status_code == 200 and CARD_DIGITS in r.text

        from driftwarden import storage

        db = storage.connect(store_url)

        def fetch():
            result = db.query("SELECT * FROM inferences FINAL WHERE model = 'redaction-test'")
            return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

        rows = wait_for(fetch, lambda rows: len(rows) >= 2)
        assert len(rows) == 2
        everything = repr(rows)
        for secret in (EMAIL, CARD, CARD_DIGITS, SECRET):
            assert secret not in everything
        # And inside ClickHouse itself: no column of any row contains them.
        for secret in (EMAIL, CARD_DIGITS, SECRET):
            found = db.query(
                "SELECT count() FROM inferences FINAL WHERE model = 'redaction-test' "
                "AND positionCaseInsensitive(toString(tuple(*)), {s:String}) > 0",
                parameters={"s": secret},
            ).result_rows[0][0]
            assert found == 0
        by_protocol = {r["protocol"]: r for r in rows}
        chat_row, oip_row = by_protocol["openai"], by_protocol["oip"]
        pseudonym = hmac.new(b"test-key", EMAIL.encode(), hashlib.sha256).hexdigest()[:16]
        assert f"[redacted:email:{pseudonym}]" in chat_row["input_payload"]
        assert f"[redacted:email:{pseudonym}]" in chat_row["output_text"]
        assert "[redacted:field:" in chat_row["input_payload"]
        assert oip_row["num_values"] == [12.5]
        assert re.fullmatch(
            r"\[redacted:email:[0-9a-f]{16}\] / \[redacted:card:[0-9a-f]{16}\]", oip_row["cat_values"][0]
        )
        # chat: input payload (email, card, field) + output text (email, card) + output payload (email, card)
        # + the text feature `prompt` (email, card); the `completion` feature is the redacted output text
        assert chat_row["redactions"] == 9
        assert chat_row["text_names"] == ["prompt", "completion"]
        assert EMAIL not in chat_row["text_values"][0] and f"[redacted:email:{pseudonym}]" in chat_row["text_values"][0]
        assert chat_row["text_values"][1] == chat_row["output_text"]
        assert oip_row["redactions"] >= 4

        metrics = httpx.get(collector.admin_url + "/metrics").text

        def count(rule: str) -> float:
            m = re.search(
                rf'driftwarden_collector_redactions_total{{model="redaction-test",rule="{rule}"}} (\S+)', metrics
            )
            return float(m.group(1)) if m else 0.0

        assert count("field") == 1
        assert count("email") >= 5 and count("card") >= 5
        assert count("email") + count("card") + count("field") == chat_row["redactions"] + oip_row["redactions"]
    finally:
        collector.close()
        upstream.close()

"""One log format for every logger: JSON lines carrying a record's fields, or text with key=value."""

from __future__ import annotations

import json
import logging

from vfnet.server.app.logs import JsonFormatter, TextFormatter


def record(exc_info=None) -> logging.LogRecord:
    made = logging.LogRecord("vfnet.access", logging.INFO, __file__, 1, "request %s", ("done",), exc_info)
    made.fields = {"status": 499, "note": "client disconnected while sending the body"}
    return made


def test_json_lines_carry_fields_and_keep_a_traceback_in_the_one_line():
    line = json.loads(JsonFormatter().format(record()))
    assert (line["level"], line["logger"], line["message"], line["status"]) == ("info", "vfnet.access", "request done", 499)
    assert line["time"].endswith("Z") and "T" in line["time"]
    try:
        raise RuntimeError("backend fault")
    except RuntimeError:
        import sys

        text = JsonFormatter().format(record(sys.exc_info()))
    assert "\n" not in text and "RuntimeError: backend fault" in json.loads(text)["exception"]


def test_text_lines_put_fields_after_the_message():
    line = TextFormatter().format(record())
    assert line.split(" ", 1)[1] == "INFO    vfnet.access: request done status=499 note=client disconnected while sending the body"

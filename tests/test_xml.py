"""The hardened parser: what it refuses, and that both encodings read alike."""

from __future__ import annotations

import codecs
import os
import threading
from pathlib import Path

import pytest
from lxml import etree

from gateway import xml
from gateway.errors import ForbiddenMarkup, MessageTooLarge, NotWellFormed, UnreadableEncoding
from gateway.xml import localname, namespace, parse, serialize

DOC = '<?xml version="1.0" encoding="{enc}"?>\n<m:Melding xmlns:m="urn:test">Blåbærsyltetøy på Frøya</m:Melding>\n'


class TestEncodings:
    def test_utf8_without_bom(self) -> None:
        """UTF-8 text reads back as the same characters."""
        doc = parse(DOC.format(enc="UTF-8").encode("utf-8"))
        assert doc.root.text == "Blåbærsyltetøy på Frøya"
        assert doc.encoding.upper() == "UTF-8"

    def test_utf8_with_bom(self) -> None:
        """A UTF-8 byte-order mark is accepted and not part of the text."""
        doc = parse(codecs.BOM_UTF8 + DOC.format(enc="UTF-8").encode("utf-8"))
        assert doc.root.text == "Blåbærsyltetøy på Frøya"

    def test_iso_8859_1(self) -> None:
        """ISO-8859-1 bytes with a matching declaration read as the same characters."""
        data = DOC.format(enc="ISO-8859-1").encode("iso-8859-1")
        assert b"\xe5" in data  # å as one Latin-1 byte
        assert parse(data).root.text == "Blåbærsyltetøy på Frøya"

    def test_utf16_with_bom(self) -> None:
        """A UTF-16 re-encoding of a message is still the same message."""
        doc = parse(DOC.format(enc="UTF-16").encode("utf-16"))
        assert doc.root.text == "Blåbærsyltetøy på Frøya"

    def test_latin1_bytes_declared_utf8_are_refused(self) -> None:
        """Bytes that do not match the declared encoding are refused, never guessed at."""
        data = DOC.format(enc="UTF-8").encode("iso-8859-1")
        with pytest.raises(UnreadableEncoding) as info:
            parse(data)
        assert info.value.apprec_code == "T01"

    def test_utf16_without_bom_is_refused(self) -> None:
        """UTF-16 must start with a byte-order mark; UTF-16LE bytes declared as UTF-8 are not guessed at."""
        for data in (
            DOC.format(enc="UTF-8").encode("utf-16-le"),
            DOC.format(enc="UTF-16").encode("utf-16-be"),
        ):
            with pytest.raises(UnreadableEncoding, match="byte-order mark"):
                parse(data)

    def test_encodings_that_hide_markup_are_refused(self) -> None:
        """UTF-7, UCS-4 and EBCDIC could carry markup a byte scan does not see; they are not read at all."""
        utf7 = b'<?xml version="1.0" encoding="UTF-7"?>+ADw-!DOCTYPE r SYSTEM +ACI-/etc/passwd+ACI-+AD4-<r/>'
        for data in (
            utf7,
            DOC.format(enc="UTF-32").encode("utf-32"),
            DOC.format(enc="UCS-4").encode("utf-32-be"),
            DOC.format(enc="IBM037").encode("cp037"),
        ):
            with pytest.raises(UnreadableEncoding):
                parse(data)

    def test_declaration_must_match_the_byte_order_mark(self) -> None:
        """A UTF-8 BOM before an ISO-8859-1 declaration, or a UTF-16 BOM before a UTF-8 one, is refused."""
        with pytest.raises(UnreadableEncoding):
            parse(codecs.BOM_UTF8 + DOC.format(enc="ISO-8859-1").encode("iso-8859-1"))
        with pytest.raises(UnreadableEncoding):
            parse(DOC.format(enc="UTF-8").encode("utf-16"))

    def test_unknown_encoding_is_refused(self) -> None:
        """An encoding name libxml2 does not know is T01, not a crash."""
        with pytest.raises(NotWellFormed):
            parse(DOC.format(enc="X-NO-SUCH-ENCODING").encode("ascii", "replace"))


class TestRefusals:
    def test_doctype_is_refused(self) -> None:
        """A DOCTYPE, even a harmless one, is refused."""
        with pytest.raises(ForbiddenMarkup) as info:
            parse(b'<?xml version="1.0"?><!DOCTYPE m><m/>')
        assert info.value.apprec_code == "T01"

    def test_billion_laughs_is_refused_before_parsing(self) -> None:
        """Entity expansion bombs never reach the parser."""
        bomb = (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>'
        )
        with pytest.raises(ForbiddenMarkup):
            parse(bomb)

    def test_external_entity_is_refused(self) -> None:
        """An XXE attempt to read a local file is refused."""
        xxe = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
        with pytest.raises(ForbiddenMarkup):
            parse(xxe)

    def test_utf16_doctype_is_refused(self) -> None:
        """The DOCTYPE check does not depend on an ASCII-compatible encoding."""
        data = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE m><m/>'.encode("utf-16")
        with pytest.raises(ForbiddenMarkup):
            parse(data)

    @pytest.mark.parametrize(
        "template",
        [
            '<?xml version="1.0"?><!-- <a> --><!DOCTYPE r SYSTEM "{path}"><r/>',
            '<?xml version="1.0"?><?pi <a>?>\n<!DOCTYPE r SYSTEM "{path}"><r/>',
            '<!-- <a> --><!DOCTYPE r [<!ENTITY % x SYSTEM "{path}"> %x;]><r/>',
        ],
    )
    @pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
    def test_hidden_doctype_answers_alike_for_existing_and_missing_files(
        self, tmp_path: Path, template: str, encoding: str
    ) -> None:
        """A DOCTYPE behind a comment or PI, in UTF-8 or UTF-16, is refused with the same answer whether
        the file it names exists or not: no file-existence oracle."""
        existing = tmp_path / "secret.txt"
        existing.write_text("not a DTD <<<", encoding="ascii")
        answers = []
        for path in (existing, tmp_path / "missing.txt"):
            data = template.format(path=path).encode(encoding)
            with pytest.raises(ForbiddenMarkup) as info:
                parse(data)
            answers.append(info.value.message)
        assert answers[0] == answers[1]

    def test_parser_itself_opens_no_file(self, tmp_path: Path) -> None:
        """Below the prefilter: the parser answers every external resource with nothing, so a DTD file
        with broken content is never read (libxml2 would report its content error)."""
        broken = tmp_path / "broken.dtd"
        broken.write_text("<!ELEMENT oops", encoding="ascii")
        data = f'<!DOCTYPE r SYSTEM "{broken}" [<!ENTITY % p SYSTEM "{broken}"> %p;]><r/>'.encode()
        root = etree.fromstring(data, xml._parser())
        assert root.tag == "r"

    @pytest.mark.parametrize("layer", ["parse", "parser alone"])
    def test_parser_never_blocks_on_a_device(self, tmp_path: Path, layer: str) -> None:
        """A DOCTYPE naming a FIFO (or /proc/self/fd/0) must not hang a parser thread - through parse(), and
        through the parser alone, without the prefilter in front of it."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        data = f'<!-- <a> --><!DOCTYPE r SYSTEM "{fifo}"><r/>'.encode()
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                if layer == "parse":
                    parse(data)
                else:
                    etree.fromstring(data, xml._parser())
            except BaseException as exc:  # reported below
                outcome.append(exc)
            else:
                outcome.append(None)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout=30)
        if worker.is_alive():  # unblock the reader before failing, so the test run itself does not hang
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            worker.join(timeout=5)
            pytest.fail("the parser opened the FIFO named by the DOCTYPE and blocked on it")
        if layer == "parse":
            assert isinstance(outcome[0], ForbiddenMarkup)
        else:
            assert outcome[0] is None  # parsed, the FIFO never opened (parse() then refuses the DOCTYPE)

    def test_undeclared_entity_is_refused(self) -> None:
        """A reference to an undeclared entity is not well-formed."""
        with pytest.raises(NotWellFormed):
            parse(b"<m>&nbsp;</m>")

    def test_doctype_text_in_body_is_not_mistaken(self) -> None:
        """'<!DOCTYPE' inside a CDATA section of the body is content, not a declaration."""
        doc = parse(b"<m><![CDATA[<!DOCTYPE html><p>x</p>]]></m>")
        assert doc.root.text == "<!DOCTYPE html><p>x</p>"

    def test_size_cap_is_checked_first(self) -> None:
        """Over the cap is refused before parsing (so garbage over the cap is 'too large')."""
        with pytest.raises(MessageTooLarge) as info:
            parse(b"x" * 2001, max_bytes=2000)
        assert info.value.http_status == 413

    def test_empty_and_truncated(self) -> None:
        """Empty input and a truncated document are T01 with a position."""
        with pytest.raises(NotWellFormed):
            parse(b"   ")
        with pytest.raises(NotWellFormed) as info:
            parse(b"<a><b></a>")
        assert "line 1" in info.value.message

    def test_text_is_not_accepted(self) -> None:
        """Only bytes: a str has already lost its encoding."""
        with pytest.raises(TypeError):
            parse("<m/>")  # type: ignore[arg-type]


class TestHelpers:
    def test_names_and_serialize(self) -> None:
        """localname/namespace split a tag; serialize writes a declaration."""
        doc = parse(b'<m:x xmlns:m="urn:a"/>')
        assert (localname(doc.root), namespace(doc.root)) == ("x", "urn:a")
        assert serialize(doc.root).startswith(b"<?xml version='1.0' encoding='UTF-8'?>")

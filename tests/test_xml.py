"""The hardened parser: what it refuses, and that both encodings read alike."""

from __future__ import annotations

import codecs

import pytest

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

"""CPAs made for tests and local runs: a minimal ebXML CPPA 2.0 agreement between two parties, with the
certificates, AMQP queues and actions a test gives - so a test can serve (through the CPPA double,
``CppaControl.answers``) an agreement whose certificates are the dev PKI's, whose keys it holds.

Only the parts Helsenorge.Messaging and the gateway read are written: ``cpaid``; per party its HER-id,
``Certificate`` elements (``certId`` "sign" and "enc", ``ds:X509Certificate``), one ``CollaborationRole`` per
action with ``CanSend``/``CanReceive`` bindings, and AMQP ``Transport`` endpoints for its async and sync queues.
The names are written out here rather than taken from the client (adapters/cppa), as in the CPPA double.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

__all__ = ["AgreementParty", "agreement"]

_TNS = "http://www.oasis-open.org/committees/ebxml-cppa/schema/cpp-cpa-2_0.xsd"
_DS = "http://www.w3.org/2000/09/xmldsig#"


@dataclass(frozen=True)
class AgreementParty:
    """One side of a CPA: its HER-id, certificates, and the actions (8279 Types) it sends and receives."""

    her_id: str
    signing: x509.Certificate | None
    encryption: x509.Certificate | None
    sends: tuple[str, ...] = ()
    receives: tuple[str, ...] = ()
    namespace: str = "NHNTestServiceBus"


def _t(name: str) -> str:
    return f"{{{_TNS}}}{name}"


def _set(element: etree._Element, **attributes: str) -> etree._Element:
    for name, value in attributes.items():
        element.set(_t(name), value)
    return element


def _certificate(info: etree._Element, cert_id: str, cert: x509.Certificate) -> None:
    element = _set(etree.SubElement(info, _t("Certificate")), certId=cert_id)
    data = etree.SubElement(etree.SubElement(element, f"{{{_DS}}}KeyInfo"), f"{{{_DS}}}X509Data")
    der = cert.public_bytes(serialization.Encoding.DER)
    etree.SubElement(data, f"{{{_DS}}}X509Certificate").text = base64.b64encode(der).decode("ascii")


def _role(info: etree._Element, action: str, kind: str) -> None:
    role = etree.SubElement(info, _t("CollaborationRole"))
    _set(etree.SubElement(role, _t("ProcessSpecification")), name=action.title(), version="1.1")
    _set(etree.SubElement(role, _t("Role")), name=f"{action}{'sender' if kind == 'CanSend' else 'receiver'}")
    binding = etree.SubElement(role, _t("ServiceBinding"))
    etree.SubElement(binding, _t("Service")).text = f"S-{action}"
    can = etree.SubElement(binding, _t(kind))
    _set(etree.SubElement(can, _t("ThisPartyActionBinding")), action=action)


def _transport(info: etree._Element, party: AgreementParty, suffix: str) -> None:
    transport_id = f"transport_{suffix}"
    _set(
        etree.SubElement(info, _t("DeliveryChannel")),
        channelId=f"AMQP{suffix.title()}_{party.her_id}",
        transportId=transport_id,
    )
    transport = _set(etree.SubElement(info, _t("Transport")), transportId=transport_id)
    receiver = etree.SubElement(transport, _t("TransportReceiver"))
    _set(etree.SubElement(receiver, _t("TransportProtocol")), version="1.0").text = "AMQP"
    uri = f"sb.test.nhn.no/{party.namespace}/{party.her_id}_{suffix}"
    _set(etree.SubElement(receiver, _t("Endpoint")), uri=uri)


def _party_info(root: etree._Element, party: AgreementParty) -> None:
    info = _set(
        etree.SubElement(root, _t("PartyInfo")), partyName=f"Party {party.her_id}", defaultMshChannelId="AMQPAsync"
    )
    _set(etree.SubElement(info, _t("PartyId")), type="HER").text = party.her_id
    for action in party.sends:
        _role(info, action, "CanSend")
    for action in party.receives:
        _role(info, action, "CanReceive")
    if party.signing is not None:
        _certificate(info, "sign", party.signing)
    if party.encryption is not None:
        _certificate(info, "enc", party.encryption)
    for suffix in ("async", "sync"):
        _transport(info, party, suffix)


def agreement(cpa_id: str, parties: Iterable[AgreementParty]) -> bytes:
    """The CPA ``cpa_id`` between the two ``parties``, as the CPPA service would answer it."""
    root = etree.Element(_t("CollaborationProtocolAgreement"), nsmap={"tns": _TNS, "ds": _DS})
    _set(root, cpaid=cpa_id, version="1.0")
    _set(etree.SubElement(root, _t("Status")), value="agreed")
    for party in parties:
        _party_info(root, party)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))
